package fanout

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// idleWorkers returns the number of workers waiting for a function.
func idleWorkers(ws *workers) int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.idle)
}

// startedWorkers returns the number of goroutines ws has started.
func startedWorkers(ws *workers) int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return ws.started
}

// waitIdle waits until n workers of ws are idle.
func waitIdle(t *testing.T, ws *workers, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return idleWorkers(ws) == n },
		5*time.Second, time.Millisecond, "want %d idle workers", n)
}

// runTogether runs n functions on ws that all wait until the last has been
// handed over, so that each needs a worker of its own, and returns once they
// have all returned.
func runTogether(ws *workers, n int) {
	release := make(chan struct{})
	var ran sync.WaitGroup
	ran.Add(n)
	for range n {
		ws.run(func() { <-release; ran.Done() })
	}
	close(release)
	ran.Wait()
}

func TestWorkersRunConcurrently(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ws := &workers{period: 10 * time.Millisecond}
	const n = 8
	var started sync.WaitGroup
	started.Add(n)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	var ran sync.WaitGroup
	ran.Add(n)
	for range n {
		ws.run(func() {
			defer ran.Done()
			started.Done()
			// Each function waits for all of them to have started: only
			// functions that run at once get past this.
			select {
			case <-all:
			case <-time.After(5 * time.Second):
				t.Error("the functions did not all run at once")
			}
		})
	}
	ran.Wait()
	require.Equal(t, n, startedWorkers(ws))
}

func TestWorkersAreReused(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ws := &workers{period: time.Minute}
	var calls atomic.Int64
	for range 5 {
		done := make(chan struct{})
		ws.run(func() { calls.Add(1); close(done) })
		<-done
		waitIdle(t, ws, 1)
	}
	require.EqualValues(t, 5, calls.Load())
	require.Equal(t, 1, startedWorkers(ws), "one worker ran every function")

	// Two at once need two workers; both stay for later calls.
	runTogether(ws, 2)
	waitIdle(t, ws, 2)
	require.Equal(t, 2, startedWorkers(ws))

	endIdle(t, ws)
}

func TestIdleWorkersEnd(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ws := &workers{period: 10 * time.Millisecond}
	runTogether(ws, 4)
	waitIdle(t, ws, 0)
	ws.mu.Lock()
	armed := ws.armed
	ws.mu.Unlock()
	require.False(t, armed, "no sweep is due once no worker is idle")
}

func TestIdleWorkersAreBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ws := &workers{period: time.Minute}
	const n = maxIdleWorkers + 10
	runTogether(ws, n)
	require.Equal(t, n, startedWorkers(ws))
	// Wait until every worker has parked or ended, then count the parked.
	require.Eventually(t, func() bool {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		return len(ws.idle)+ws.turned == n
	}, 5*time.Second, time.Millisecond, "every worker parks or ends once its function returns")
	require.Equal(t, maxIdleWorkers, idleWorkers(ws), "the workers beyond the bound end instead of waiting")
	endIdle(t, ws)
}

// endIdle ends the idle workers of ws now, whatever its idle period.
func endIdle(t *testing.T, ws *workers) {
	t.Helper()
	ws.mu.Lock()
	ws.period = time.Millisecond
	ws.sweeper.Reset(0)
	ws.mu.Unlock()
	waitIdle(t, ws, 0)
}

// TestWorkersUnderChurn runs many functions from many goroutines while
// idle workers are swept every 50 µs, so that workers are taken, parked and
// ended at the same moments: every function must run exactly once.
func TestWorkersUnderChurn(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ws := &workers{period: 50 * time.Microsecond}
	const callers, each = 8, 2000
	counts := make([]atomic.Int32, callers*each)
	var ran sync.WaitGroup
	ran.Add(callers * each)
	var callersDone sync.WaitGroup
	for c := range callers {
		callersDone.Add(1)
		go func() {
			defer callersDone.Done()
			for i := range each {
				ws.run(func() { counts[c*each+i].Add(1); ran.Done() })
				if i%100 == 0 {
					time.Sleep(100 * time.Microsecond) // let some workers be swept
				}
			}
		}()
	}
	callersDone.Wait()
	ran.Wait()
	for i := range counts {
		require.EqualValues(t, 1, counts[i].Load(), "function %d", i)
	}
	waitIdle(t, ws, 0)
}

// TestRouterReusesWorkers checks that a router's calls share its workers:
// the second call with three routes starts no goroutine.
func TestRouterReusesWorkers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// Each call's three routes wait for one another, so that the two on
	// workers need a worker each however fast the machine.
	var barrier atomic.Pointer[sync.WaitGroup]
	routes := map[string]Backend[int, int]{}
	for _, name := range []string{"a", "b", "c"} {
		routes[name] = BackendFunc[int, int](func(_ context.Context, items []int) ([]int, error) {
			wg := barrier.Load()
			wg.Done()
			wg.Wait()
			return items, nil
		})
	}
	names := []string{"a", "b", "c"}
	r, err := NewRouter(ClassifierFunc[int](func(n int) (string, error) { return names[n%3], nil }), routes)
	require.NoError(t, err)
	r.workers.period = time.Minute // no sweep during the test, however slow the machine
	items := []int{0, 1, 2, 3, 4, 5}
	for range 3 {
		wg := new(sync.WaitGroup)
		wg.Add(3)
		barrier.Store(wg)
		out, err := r.Process(context.Background(), items)
		require.NoError(t, err)
		require.Equal(t, items, out)
		waitIdle(t, &r.workers, 2)
	}
	require.Equal(t, 2, startedWorkers(&r.workers), "two routes run on workers, the third on the caller's goroutine")
	endIdle(t, &r.workers)
}
