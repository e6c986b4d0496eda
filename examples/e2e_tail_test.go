// End-to-end tests of tail tolerance: answers before the caller's
// deadline, hedged calls, fallback routes and shadow routes, with real
// processes as in e2e_test.go.
package examples_test

import (
	"encoding/json"
	"regexp"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// clientJSON is one answer of client -json.
type clientJSON struct {
	Input   int64  `json:"input"`
	Output  *int64 `json:"output"`
	Backend string `json:"backend"`
	Error   string `json:"error"`
}

func parseClientJSON(t *testing.T, stdout string) []clientJSON {
	t.Helper()
	var got []clientJSON
	require.NoError(t, json.Unmarshal([]byte(stdout), &got), stdout)
	return got
}

// TestAnswersBeforeTheDeadline is the first example: y takes 5s,
// and a client that gives the call 1s still gets x's and z's answers, and
// y's number failed with an error that names y and the deadline.
func TestAnswersBeforeTheDeadline(t *testing.T) {
	skipShort(t)
	y := startServer(t, "y", "-listen", "127.0.0.1:0", "-delay", "5s")
	addr := startMiddle(t, startReplicas(t, "x", 1), []*server{y}, startReplicas(t, "z", 1)).addr
	deadlineNote := regexp.MustCompile(`^y could not process 4: .*deadline exceeded \(the route's deadline passed, [0-9]+ms before the call's\)$`)

	out := runProgram(t, "", "client", "-addr", addr, "-partial", "-timeout", "1s", "-json", "--", "-1", "4", "3")
	require.Equal(t, 1, out.code, out.stderr)
	require.NotContains(t, out.stderr, "no answer within")
	got := parseClientJSON(t, out.stdout)
	require.Len(t, got, 3)
	require.Equal(t, clientJSON{Input: -1, Output: ptr(int64(1)), Backend: "x"}, got[0])
	require.Equal(t, int64(4), got[1].Input)
	require.Equal(t, "y", got[1].Backend)
	require.Nil(t, got[1].Output)
	require.Regexp(t, deadlineNote, got[1].Error)
	require.Equal(t, clientJSON{Input: 3, Output: ptr(int64(10)), Backend: "z"}, got[2])
	y.waitLog(t, `msg="call cancelled"`, 1) // the route's deadline reached y, which gave up

	// Without -partial the call fails, naming y and its deadline.
	out = runProgram(t, "", "client", "-addr", addr, "-timeout", "1s", "--", "-1", "4", "3")
	require.Equal(t, 1, out.code)
	require.Empty(t, out.stdout)
	require.Regexp(t, `^client: 4 failed on backend y: y could not process 4: .*deadline exceeded \(the route's deadline passed, [0-9]+ms before the call's\)`, out.stderr)
}

func ptr[T any](v T) *T { return &v }

// TestFallbackRoute kills x's only replica: its numbers go to the
// fallback x, labelled x-fallback, with no error and no wrong answer under
// load, and back to x once it is up again.
func TestFallbackRoute(t *testing.T) {
	skipShort(t)
	x := startServer(t, "x", "-listen", "127.0.0.1:0")
	fallback := startServer(t, "x", "-listen", "127.0.0.1:0")
	middle := startMiddle(t, []*server{x}, startReplicas(t, "y", 1), startReplicas(t, "z", 1), "-fallback-x", fallback.addr)

	answeredBy := func(backend string) {
		t.Helper()
		out := runProgram(t, "", "client", "-addr", middle.addr, "-json", "--", "-3", "4")
		require.Equal(t, 0, out.code, out.stderr)
		require.Equal(t, []clientJSON{
			{Input: -3, Output: ptr(int64(9)), Backend: backend},
			{Input: 4, Output: ptr(int64(2)), Backend: "y"},
		}, parseClientJSON(t, out.stdout))
	}
	answeredBy("x")

	x.kill(t)
	answeredBy("x-fallback")
	answeredBy("x-fallback")
	requireCleanLoad(t, runProgram(t, "", "loadgen", "-addr", middle.addr, "-duration", "2s", "-concurrency", "4", "-json"))

	// x comes back on its address. While every replica is ejected, each
	// call probes them (the first probes may find the client still waiting
	// to dial again), so calls answered by the fallback bring x back; once
	// it is readmitted it answers again.
	readmitted := `msg="fanout: replica readmitted" route=x `
	n := middle.count(readmitted)
	startServer(t, "x", "-listen", x.addr)
	for calls := 0; middle.count(readmitted) == n; calls++ {
		require.Less(t, calls, 1000, "x was not readmitted")
		out := runProgram(t, "", "client", "-addr", middle.addr, "-json", "--", "-3")
		require.Equal(t, 0, out.code, out.stderr)
		got := parseClientJSON(t, out.stdout)
		require.Len(t, got, 1)
		require.Equal(t, int64(9), *got[0].Output)
		require.Contains(t, []string{"x", "x-fallback"}, got[0].Backend)
	}
	answeredBy("x")
}

// TestShadowRoute mirrors y's calls to a candidate y that is too slow to
// answer within the shadow's timeout: the callers do not wait for it, and
// the middle layer counts and logs its failures.
func TestShadowRoute(t *testing.T) {
	skipShort(t)
	candidate := startServer(t, "y", "-listen", "127.0.0.1:0", "-delay", "1m")
	same := startServer(t, "z", "-listen", "127.0.0.1:0")
	middle := startMiddle(t, startReplicas(t, "x", 1), startReplicas(t, "y", 1), startReplicas(t, "z", 1),
		"-shadow-y", candidate.addr, "-shadow-z", same.addr)

	for range 5 {
		// Within 2s, far less than the candidate's minute.
		out := runProgram(t, "", "client", "-addr", middle.addr, "-timeout", "2s", "--", "-3", "4", "5")
		require.Equal(t, 0, out.code, out.stderr)
		require.Equal(t, textOutput(t, -3, 4, 5), out.stdout)
	}
	middle.waitLog(t, `msg="fanout: shadow candidate failed" route=y errors=1 new=1 err=`, 1)

	require.NoError(t, middle.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, middle.wait(t), middle.log())
	log := middle.log()
	// Each of the 5 calls mirrored y's number, and the candidate answered
	// none within the shadow's timeout (or was cancelled when the middle
	// layer stopped, which is not counted); z's candidate matched.
	m := regexp.MustCompile(`msg="shadow summary" route=y mirrored=5 dropped=0 matches=0 mismatches=0 errors=([0-9])`).FindStringSubmatch(log)
	require.NotNil(t, m, log)
	errors, _ := strconv.Atoi(m[1])
	require.GreaterOrEqual(t, errors, 1)
	require.Contains(t, log, `msg="shadow summary" route=z mirrored=5 dropped=0 matches=5 mismatches=0 errors=0`)
	require.NotContains(t, log, "shadow mismatch")
}

// TestHedging runs two replicas of each route, each delaying a share of its
// calls by 3s, under load, with -hedge: the delayed calls are hedged on the
// other replica, and cancelled there once the hedge answers (a delayed
// call that is not hedged completes after its 3s, and logs no
// cancellation), so loadgen sees no error and no wrong answer. Hedging
// starts once a route has 100 answers; until then a delayed call waits.
func TestHedging(t *testing.T) {
	skipShort(t)
	slow := []string{"-delay", "3s", "-delay-fraction", "0.02"}
	xs, ys, zs := startReplicas(t, "x", 2, slow...), startReplicas(t, "y", 2, slow...), startReplicas(t, "z", 2, slow...)
	middle := startMiddle(t, xs, ys, zs, "-hedge")
	load := startProgram(t, "", "loadgen", "-addr", middle.addr, "-duration", "1m", "-concurrency", "8", "-json")
	// A delayed call cancelled: its hedge won.
	xs[0].waitLog(t, `msg="call cancelled"`, 1)
	xs[1].waitLog(t, `msg="call cancelled"`, 1)
	require.NoError(t, load.cmd.Process.Signal(syscall.SIGINT))
	requireCleanLoad(t, load.wait(t))

	require.NoError(t, middle.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, middle.wait(t), middle.log())
	m := regexp.MustCompile(`msg=hedges route=x calls=[0-9]+ sent=([0-9]+) won=([0-9]+) `).FindStringSubmatch(middle.log())
	require.NotNil(t, m, middle.log())
	won, _ := strconv.Atoi(m[2])
	require.GreaterOrEqual(t, won, 2, "the two cancelled calls lost to their hedges")
}
