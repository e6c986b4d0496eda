package transport

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
)

// The server finds calls that have run for watchAfter with one sweeper
// goroutine, which ends once no call has run for a while and starts again
// with the next call.

// TestSweeperEndsWhenIdleAndWatchesTheNextCall: a cancelled call reaches
// the backend both while the first sweeper runs and after it has ended for
// want of calls, and Close leaves no sweeper behind (TestMain checks for
// leaked goroutines).
func TestSweeperEndsWhenIdleAndWatchesTheNextCall(t *testing.T) {
	started := make(chan struct{}, 1)
	cancelled := make(chan error, 1)
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		if in[0] != 0 {
			return in, nil // a quick call
		}
		started <- struct{}{}
		<-ctx.Done()
		cancelled <- ctx.Err()
		return nil, ctx.Err()
	})
	_, c, ev := watchedServer(t, backend)

	cancelReaches := func() {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Process(ctx, []int64{0})
			errc <- err
		}()
		<-started
		cancel()
		select {
		case err := <-cancelled:
			require.ErrorIs(t, err, context.Canceled)
		case <-time.After(hangGuard):
			t.Fatal("the backend never saw the client give up")
		}
		require.ErrorIs(t, <-errc, context.Canceled)
	}

	_, err := c.Process(context.Background(), []int64{1})
	require.NoError(t, err)
	ev.Await(t, EventSweepStarted, 1) // a call starts the sweeper
	cancelReaches()

	// With no call running, the sweeper ends after sweepIdle looks, and
	// the next call starts another.
	ev.Await(t, EventSweepEnded, 1)
	cancelReaches()
	require.Equal(t, 2, ev.Count(EventSweepStarted))
}
