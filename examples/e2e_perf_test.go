package examples_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// TestMergingAndMemoryFlags runs the system with the middle layer's merging
// turned off, and with tiny merged calls and a tiny request budget
// everywhere, and checks that every answer is still right; and that bad
// values of those flags are bad usage.
func TestMergingAndMemoryFlags(t *testing.T) {
	skipShort(t)
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"middle", []string{"-batch", "0"}, "-batch must be at least 1, or -1 to turn merging off"},
		{"middle", []string{"-batch", "-2"}, "-batch must be at least 1, or -1 to turn merging off"},
		{"middle", []string{"-batch-calls", "0"}, "-batch-calls must be at least 1"},
		{"middle", []string{"-max-request-mb", "0"}, "-max-request-mb must be at least 1"},
		{"x", []string{"-max-request-mb", "-1"}, "-max-request-mb must be at least 1"},
		{"y", []string{"-max-conns", "0"}, "-max-conns must be at least 1"},
		{"middle", []string{"-max-conns", "-3"}, "-max-conns must be at least 1"},
	} {
		out := runProgram(t, "", tc.name, tc.args...)
		require.Equal(t, 2, out.code, "%s %v: %s", tc.name, tc.args, out.stderr)
		require.Contains(t, out.stderr, tc.name+": "+tc.msg)
	}

	// A job of 200,000 numbers: the client sends it in calls of 65,536
	// numbers (512 KiB), each larger than half the budget of 1 MiB.
	var numbers []int64
	var in strings.Builder
	for i := range 200_000 {
		n := int64(i-100_000) * 30_011
		numbers = append(numbers, n)
		in.WriteString(strconv.FormatInt(n, 10))
		in.WriteByte('\n')
	}
	local := "127.0.0.1:0"
	for _, middleArgs := range [][]string{
		{"-batch", "-1"},
		{"-batch", "7", "-batch-calls", "1", "-max-request-mb", "1"},
	} {
		t.Run(strings.Join(middleArgs, " "), func(t *testing.T) {
			x := startServer(t, "x", "-listen", local, "-max-request-mb", "1")
			y := startServer(t, "y", "-listen", local, "-max-request-mb", "1")
			z := startServer(t, "z", "-listen", local, "-max-request-mb", "1")
			middle := startServer(t, "middle", append([]string{"-listen", local, "-x", x.addr, "-y", y.addr, "-z", z.addr}, middleArgs...)...)

			out := runProgram(t, in.String(), "client", "-addr", middle.addr)
			require.Equal(t, 0, out.code, out.stderr)
			require.Equal(t, textOutput(t, numbers...), out.stdout)

			requireCleanLoad(t, runProgram(t, "", "loadgen", "-addr", middle.addr, "-duration", "1s", "-concurrency", "32", "-json"))
		})
	}
}

// peakMemory returns the most resident memory process pid has had, from
// Linux's /proc (VmHWM), in bytes; the test is skipped elsewhere.
func peakMemory(t *testing.T, pid int) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc to read a process's peak memory from: %v", err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			require.NoError(t, err, line)
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestMiddleMemoryFollowsItsBudgetNotItsCallers sends a burst of large
// calls at once to a middle layer with a request budget of 2 MiB, 4 calls
// to one middle layer and 32 to another, and compares their peak memory.
// Requests that wait for room in the budget must hold almost nothing, so
// that 8 times the callers cost little more memory: less than 20 times the
// budget more. (Before requests waited for the server's continue frame,
// each waiting stream held a window of payload, and each idle stream the
// buffer of its last request: the 32 callers' middle layer peaked 88 to
// 134 MiB above the 4 callers'. With it, 7 to 25 MiB above, the most with
// this test's client slowed down by the race detector.)
func TestMiddleMemoryFollowsItsBudgetNotItsCallers(t *testing.T) {
	skipShort(t)
	const budget = 2 << 20
	batch := make([]int64, 500_000)
	for i := range batch {
		batch[i] = int64(i-250_000) * 7_919
	}
	peak := func(callers int) int64 {
		x, y, z := startReplicas(t, "x", 1), startReplicas(t, "y", 1), startReplicas(t, "z", 1)
		middle := startMiddle(t, x, y, z, "-max-request-mb", strconv.Itoa(budget>>20))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := transport.Dial(ctx, middle.addr, transport.Int64(), xyz.ResultCodec())
		require.NoError(t, err)
		defer c.Close()
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for range callers {
			wg.Go(func() {
				out, err := c.Process(ctx, batch)
				if err == nil {
					err = checkAnswers(batch, out)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		return peakMemory(t, middle.cmd.Process.Pid)
	}
	few, many := peak(4), peak(32)
	t.Logf("middle layer's peak memory: %d MiB for 4 callers, %d MiB for 32", few>>20, many>>20)
	require.Less(t, many-few, int64(20*budget),
		"8 times the callers took the middle layer's memory from %d MiB to %d MiB", few>>20, many>>20)
}

// checkAnswers checks out, the answers to batch, against the routing
// table.
func checkAnswers(batch []int64, out []xyz.Result) error {
	if len(out) != len(batch) {
		return fmt.Errorf("%d answers for %d numbers", len(out), len(batch))
	}
	for i, n := range batch {
		want, err := xyz.Expected(n)
		if err != nil {
			return err
		}
		if out[i] != want {
			return fmt.Errorf("%d answered %+v, want %+v", n, out[i], want)
		}
	}
	return nil
}
