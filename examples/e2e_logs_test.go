// End-to-end test of what the middle layer logs at its default level while
// a replica is unreachable, comes back and dies: real processes, as in
// e2e_test.go, waiting on log lines, never on time.
package examples_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// freeAddr returns a loopback address where nothing listens.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// keepCalling calls c with numbers, one call after another, until the
// returned stop is called; stop waits for the last call.
func keepCalling(c *transport.Client[int64, xyz.Result], numbers ...int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			c.Process(context.Background(), numbers)
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// TestMiddleLogsReplicaChanges starts a middle layer whose only y replica
// cannot be reached, then starts it, then kills it, and checks that the
// middle layer logs each change once, at the default level: the replica
// unreachable at start, its readmission, its ejection.
func TestMiddleLogsReplicaChanges(t *testing.T) {
	skipShort(t)
	x, z := startReplicas(t, "x", 1), startReplicas(t, "z", 1)
	yAddr := freeAddr(t)
	middle := startServer(t, "middle", "-listen", "127.0.0.1:0", "-x", addrs(x), "-y", yAddr, "-z", addrs(z))
	var (
		unreachable = `level=WARN msg="fanout: replica failed its check; ejected" route=y replica=` + yAddr + " "
		readmitted  = `level=INFO msg="fanout: replica readmitted" route=y replica=` + yAddr + " "
		ejected     = `level=WARN msg="fanout: replica ejected" route=y replica=` + yAddr + " "
	)

	// The check comes before the middle layer is ready: its line is there,
	// and it serves the other routes.
	require.Equal(t, 1, middle.count(unreachable), middle.log())
	require.NotContains(t, middle.log(), "route=x")
	require.NotContains(t, middle.log(), "route=z")
	out := runProgram(t, "", "client", "-addr", middle.addr, "-partial", "-3", "4")
	require.Equal(t, 1, out.code)
	require.Contains(t, out.stdout, "-3 -> 9 (backend x)\n")
	require.Contains(t, out.stdout, "4 -> failed (backend y): y could not process 4: ")
	require.Contains(t, out.stdout, "the only replica is ejected; last failure: ")

	c := transport.NewClient(middle.addr, transport.Int64(), xyz.ResultCodec(), transport.WithLogger(nil))
	defer c.Close()

	// y starts where the middle layer looks for it: the calls that find
	// it ejected probe it, and it is readmitted.
	y := startServer(t, "y", "-listen", yAddr)
	stop := keepCalling(c, 4)
	middle.waitLog(t, readmitted, 1)
	stop()
	out = runProgram(t, "", "client", "-addr", middle.addr, "4")
	require.Equal(t, 0, out.code, out.stderr)
	require.Equal(t, "4 -> 2 (backend y)\n", out.stdout)

	// y dies: the calls that fail on it eject it, once; the calls after
	// fail at once, and are not logged.
	y.kill(t)
	stop = keepCalling(c, 4)
	middle.waitLog(t, ejected, 1)
	stop()
	for range 20 {
		got, err := c.Process(context.Background(), []int64{4})
		pe, ok := err.(*fanout.PartialError)
		require.True(t, ok, "4's failure in a partial answer: %v", err)
		got = xyz.Annotate(got, 1, pe)
		require.Contains(t, got[0].Err, "the only replica is ejected")
	}

	// Once the middle layer has exited, its log is complete.
	c.Close()
	require.NoError(t, middle.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, middle.wait(t), middle.log())
	log := middle.log()
	require.Equal(t, 1, strings.Count(log, unreachable), log)
	require.Equal(t, 1, strings.Count(log, readmitted), log)
	require.Equal(t, 1, strings.Count(log, ejected), log)
	require.NotContains(t, log, "route=x")
	require.NotContains(t, log, "route=z")
	for line := range strings.Lines(log) {
		if strings.Contains(line, "route=y") {
			require.Contains(t, line, "replica="+yAddr+" index=0 ", "every line names the replica")
		}
	}
	require.Contains(t, lineWith(log, ejected), "failures=5 ")
	require.Contains(t, lineWith(log, unreachable), "connection refused")
}

// lineWith returns the first line of log holding text, or "".
func lineWith(log, text string) string {
	for line := range strings.Lines(log) {
		if strings.Contains(line, text) {
			return line
		}
	}
	return ""
}
