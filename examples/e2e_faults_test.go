// End-to-end tests of slow, overloaded, failing and stopping backends: real
// processes, as in e2e_test.go. No test asserts how long anything took:
// each waits for the states it needs (a line in a program's log, a
// program's exit), with only a guard against a hang.
package examples_test

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/transport"
)

// skipShort skips a test that runs the programs under go test -short.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs the programs")
	}
}

// startReplicas starts n replicas of backend route, with args, on free
// loopback ports.
func startReplicas(t *testing.T, route string, n int, args ...string) []*server {
	var replicas []*server
	for range n {
		replicas = append(replicas, startServer(t, route, append([]string{"-listen", "127.0.0.1:0"}, args...)...))
	}
	return replicas
}

// startMiddle starts a middle layer, with args, in front of the replicas of
// x, y and z given.
func startMiddle(t *testing.T, x, y, z []*server, args ...string) *server {
	return startServer(t, "middle", append([]string{"-listen", "127.0.0.1:0",
		"-x", addrs(x), "-y", addrs(y), "-z", addrs(z)}, args...)...)
}

// addrs returns the addresses of servers, comma-separated.
func addrs(servers []*server) string {
	var a []string
	for _, s := range servers {
		a = append(a, s.addr)
	}
	return strings.Join(a, ",")
}

// TestSlowBackend runs a system whose x backend takes 10s to answer, behind
// a middle layer that lets one call at a time into each route.
func TestSlowBackend(t *testing.T) {
	skipShort(t)
	const (
		delayed   = `msg="call delayed"`
		cancelled = `msg="call cancelled"`
	)
	x := startServer(t, "x", "-listen", "127.0.0.1:0", "-delay", "10s", "-log-level", "debug")
	y, z := startReplicas(t, "y", 1), startReplicas(t, "z", 1)
	addr := startMiddle(t, []*server{x}, y, z, "-max-inflight", "1", "-log-level", "debug").addr

	t.Run("timeout", func(t *testing.T) {
		// The call ends before its deadline, at the middle layer's deadline
		// for its routes, not with the backend's answer, which it would
		// have had after 10s: the middle layer answers that x did not
		// answer in time.
		out := runProgram(t, "", "client", "-addr", addr, "-timeout", "1s", "-3")
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "client: -3 failed on backend x: x could not process -3: ")
		require.Regexp(t, `deadline exceeded \(the route's deadline passed, [0-9]+ms before the call's\)\n$`, out.stderr)
		require.Empty(t, out.stdout)
		x.waitLog(t, cancelled, 1) // the deadline reached x, which gave up
	})

	t.Run("overloaded", func(t *testing.T) {
		first := startProgram(t, "", "client", "-addr", addr, "-3")
		x.waitLog(t, delayed, 2)

		// x has its one call in flight: its numbers fail at once, as
		// overloaded (not at the client's deadline), y's and z's are
		// answered.
		out := runProgram(t, "", "client", "-addr", addr, "-5", "4")
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "client: -5 failed on backend x: x could not process -5: ")
		require.Contains(t, out.stderr, "overloaded")
		require.Empty(t, out.stdout)

		out = runProgram(t, "", "client", "-addr", addr, "-partial", "-json", "-5", "4")
		require.Equal(t, 1, out.code)
		var got []map[string]any
		require.NoError(t, json.Unmarshal([]byte(out.stdout), &got), out.stdout)
		require.Len(t, got, 2)
		require.Equal(t, "x", got[0]["backend"])
		require.Contains(t, got[0]["error"], "overloaded")
		require.Equal(t, map[string]any{"input": 4.0, "output": 2.0, "backend": "y"}, got[1])

		// Ctrl-C: the client gives up, and so does x, before its 10s are up:
		// x logs a cancelled call only while it waits.
		require.NoError(t, first.cmd.Process.Signal(syscall.SIGINT))
		out = first.wait(t)
		require.Equal(t, 130, out.code, out.stderr)
		require.Equal(t, "client: interrupted\n", out.stderr)
		require.Empty(t, out.stdout)
		x.waitLog(t, cancelled, 2)
		require.Contains(t, x.log(), `err="context canceled"`)
	})
}

// TestMaxCalls bounds the calls in flight per connection: on a backend,
// whose extra calls the middle layer reports as its route's failures, and
// on the middle layer, whose extra calls the client reports.
func TestMaxCalls(t *testing.T) {
	skipShort(t)
	const delayed = `msg="call delayed"`
	x := startServer(t, "x", "-listen", "127.0.0.1:0", "-max-calls", "1", "-delay", "10s", "-log-level", "debug")
	y, z := startReplicas(t, "y", 1), startReplicas(t, "z", 1)

	t.Run("backend", func(t *testing.T) {
		addr := startMiddle(t, []*server{x}, y, z).addr
		first := startProgram(t, "", "client", "-addr", addr, "-3")
		x.waitLog(t, delayed, 1)

		out := runProgram(t, "", "client", "-addr", addr, "-partial", "-5", "4")
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stdout, "-5 -> failed (backend x): x could not process -5: ")
		require.Contains(t, out.stdout, "server overloaded: stream limit of 1 reached on this connection")
		require.Contains(t, out.stdout, "4 -> 2 (backend y)\n")

		require.NoError(t, first.cmd.Process.Signal(syscall.SIGINT))
		require.Equal(t, 130, first.wait(t).code)
	})

	t.Run("middle", func(t *testing.T) {
		// loadgen's four callers share one connection; the first call holds
		// the only slot, x holding it up, and the others are refused.
		// loadgen runs until it has reported the first refusal, and is then
		// stopped with Ctrl-C, so that its run does not depend on how fast
		// the machine is.
		addr := startMiddle(t, []*server{x}, y, z, "-max-calls", "1").addr
		load := startProgram(t, "", "loadgen", "-addr", addr, "-concurrency", "4", "-duration", "45s", "-timeout", "2s")
		load.waitLog(t, "loadgen: first problem: ", 1)
		require.NoError(t, load.cmd.Process.Signal(syscall.SIGINT))
		out := load.wait(t)
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "loadgen: first problem: remote "+addr+": server overloaded: stream limit of 1 reached on this connection")
	})
}

// TestMaxConns runs x with -max-conns 1: the middle layer that connected
// first is served, a second middle layer's calls to x are refused with the
// limit named, and the first is served on.
func TestMaxConns(t *testing.T) {
	skipShort(t)
	x := startServer(t, "x", "-listen", "127.0.0.1:0", "-max-conns", "1")
	y, z := startReplicas(t, "y", 1), startReplicas(t, "z", 1)
	first := startMiddle(t, []*server{x}, y, z).addr
	second := startMiddle(t, []*server{x}, y, z).addr

	out := runProgram(t, "", "client", "-addr", first, "-3")
	require.Equal(t, 0, out.code, out.stderr)
	require.Equal(t, textOutput(t, -3), out.stdout)

	out = runProgram(t, "", "client", "-addr", second, "-partial", "-5", "4")
	require.Equal(t, 1, out.code)
	require.Contains(t, out.stdout, "-5 -> failed (backend x): x could not process -5: ")
	require.Contains(t, out.stdout, "server at its limit of 1 connections")
	require.Contains(t, out.stdout, "4 -> 2 (backend y)\n")
	x.waitLog(t, "connection refused: server at its limit of 1 connections", 1)

	out = runProgram(t, "", "client", "-addr", first, "-7", "8")
	require.Equal(t, 0, out.code, out.stderr)
	require.Equal(t, textOutput(t, -7, 8), out.stdout)
}

// TestShutdownLetsCallsFinish stops a backend with SIGTERM while it is
// processing a call: the call is answered, then the backend exits with
// status 0.
func TestShutdownLetsCallsFinish(t *testing.T) {
	skipShort(t)
	x := startServer(t, "x", "-listen", "127.0.0.1:0", "-delay", "1s", "-grace", "5s", "-log-level", "debug")
	addr := startMiddle(t, []*server{x}, startReplicas(t, "y", 1), startReplicas(t, "z", 1)).addr

	client := startProgram(t, "", "client", "-addr", addr, "-3", "4")
	x.waitLog(t, `msg="call delayed"`, 1)
	require.NoError(t, x.cmd.Process.Signal(syscall.SIGTERM))

	out := client.wait(t)
	require.Equal(t, 0, out.code, out.stderr)
	require.Equal(t, textOutput(t, -3, 4), out.stdout)
	require.Equal(t, 0, x.wait(t))
	require.Contains(t, x.log(), `msg="x stopped"`)
	require.NotContains(t, x.log(), "grace period over")
}

// TestDelayFractionFlag checks -delay-fraction on the backends: a value
// outside 0..1 is bad usage, naming the flag and the value, and the backend
// does not start; 0 delays no call, however long -delay; without -delay the
// flag is accepted and delays nothing.
func TestDelayFractionFlag(t *testing.T) {
	skipShort(t)
	for _, tc := range []struct{ name, value string }{
		{"x", "2"}, {"y", "2"}, {"z", "2"}, {"x", "-0.5"}, {"x", "NaN"},
	} {
		out := runProgram(t, "", tc.name, "-listen", "127.0.0.1:0", "-delay", "1s", "-delay-fraction", tc.value)
		require.Equal(t, 2, out.code, "%s -delay-fraction %s: %s", tc.name, tc.value, out.stderr)
		require.Contains(t, out.stderr, tc.name+": -delay-fraction must be between 0 and 1, not "+tc.value+"\n")
		require.Contains(t, out.stderr, "-delay-fraction float", "the usage follows")
		require.NotContains(t, out.stderr, " ready")
		require.Empty(t, out.stdout)
	}

	// Were x to delay its call by a minute, the call would fail at its
	// deadline, long before.
	x := startServer(t, "x", "-listen", "127.0.0.1:0", "-delay", "1m", "-delay-fraction", "0", "-log-level", "debug")
	y := startServer(t, "y", "-listen", "127.0.0.1:0", "-delay-fraction", "0.5", "-log-level", "debug")
	for _, tc := range []struct {
		backend *server
		in      []int64
		want    []int64
	}{
		{x, []int64{-3, -4}, []int64{9, 16}},
		{y, []int64{4, 6}, []int64{2, 3}},
	} {
		c := transport.NewClient(tc.backend.addr, transport.Int64(), transport.Int64(),
			transport.WithService(tc.backend.name), transport.WithLogger(nil))
		for range 10 {
			ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
			got, err := c.Process(ctx, tc.in)
			cancel()
			require.NoError(t, err, tc.backend.name)
			require.Equal(t, tc.want, got, tc.backend.name)
		}
		c.Close()
		// Once it has exited, all of its log is in.
		require.NoError(t, tc.backend.cmd.Process.Signal(syscall.SIGTERM))
		require.Equal(t, 0, tc.backend.wait(t), tc.backend.log())
		require.NotContains(t, tc.backend.log(), `msg="call delayed"`, tc.backend.name)
	}
}

// TestFailover runs x as two replicas and kills them one after the other
// while the system is under load.
func TestFailover(t *testing.T) {
	skipShort(t)
	// Each replica of x waits a millisecond in each call, so that calls are
	// in flight when it is killed, and logs the call (at Debug level), so
	// that the test sees which replica serves the load.
	const delayed = `msg="call delayed"`
	xs := startReplicas(t, "x", 2, "-delay", "1ms", "-log-level", "debug")
	addr := startMiddle(t, xs, startReplicas(t, "y", 1), startReplicas(t, "z", 1)).addr

	t.Run("one replica killed", func(t *testing.T) {
		// Calls in flight on the killed replica, and calls that would have
		// gone to it, go to the other: loadgen sees no error. loadgen runs
		// until the other replica has served calls since the kill, and is
		// then stopped with Ctrl-C.
		load := startProgram(t, "", "loadgen", "-addr", addr, "-duration", "45s", "-concurrency", "8", "-json")
		xs[0].waitLog(t, delayed, 50) // the load reaches the replica killed
		xs[0].kill(t)
		xs[1].waitLog(t, delayed, xs[1].count(delayed)+50)
		require.NoError(t, load.cmd.Process.Signal(syscall.SIGINT))
		requireCleanLoad(t, load.wait(t))

		for range 10 {
			out := runProgram(t, "", "client", "-addr", addr, "-3", "4", "-7", "7")
			require.Equal(t, 0, out.code, out.stderr)
			require.Equal(t, textOutput(t, -3, 4, -7, 7), out.stdout)
		}
	})

	t.Run("every replica killed", func(t *testing.T) {
		// Each call fails promptly, naming the route, first after trying
		// both replicas, then because both are ejected.
		xs[1].kill(t)
		for range 12 {
			// Promptly: the call fails as unavailable, not at its deadline.
			out := runProgram(t, "", "client", "-addr", addr, "-3", "4")
			require.Equal(t, 1, out.code)
			require.Contains(t, out.stderr, "client: -3 failed on backend x: x could not process -3: ")
			require.Contains(t, out.stderr, "unavailable")
			require.NotContains(t, out.stderr, "deadline exceeded")
			require.Empty(t, out.stdout)
		}
		out := runProgram(t, "", "client", "-addr", addr, "-3")
		require.Contains(t, out.stderr, "all 2 replicas are ejected")

		out = runProgram(t, "", "client", "-addr", addr, "4", "7")
		require.Equal(t, 0, out.code, "the other routes still answer: %s", out.stderr)
		require.Equal(t, textOutput(t, 4, 7), out.stdout)
	})
}
