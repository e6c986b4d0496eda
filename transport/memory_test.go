package transport

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// TestServerBoundsTheBytesOfRequestsItHolds sends more large requests at once
// than the server's byte budget holds: the server takes only as many as fit,
// the others wait (they are not refused), and every call is answered.
func TestServerBoundsTheBytesOfRequestsItHolds(t *testing.T) {
	const (
		items   = 1000
		payload = wire.RequestPrefixSize + 8*items // bytes of one request
		fit     = 3                                // requests the budget holds
		callers = 7
	)
	var running, most atomic.Int64
	entered := make(chan struct{}, callers)
	release := make(chan struct{})
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return negate(ctx, in)
	})
	_, c, ev := watchedServer(t, backend, WithMaxPendingBytes(fit*payload), WithMaxPendingBytesPerConnection(fit*payload))

	batch := make([]int64, items)
	for i := range batch {
		batch[i] = int64(i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			out, err := c.Process(context.Background(), batch)
			if err == nil && (len(out) != items || out[5] != -5) {
				err = errors.New("wrong answer")
			}
			errs <- err
		})
	}
	for range fit {
		<-entered
	}
	// The others wait for room, all of them, and none reached the backend.
	ev.Await(t, EventWaitingForRoom, callers-fit)
	require.EqualValues(t, fit, running.Load(), "the server took more requests than its budget holds")
	for range callers {
		release <- struct{}{}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err, "a request that waited for room must be answered")
	}
	require.EqualValues(t, fit, most.Load())

	// A call larger than the whole budget: the server accepts no request
	// larger than a connection's share of it, and says so in the
	// handshake, so the client cuts the call into requests that fit, here
	// each the whole budget, served one after another.
	big := make([]int64, 4*fit*items)
	for i := range big {
		big[i] = int64(i)
	}
	done := make(chan error, 1)
	go func() {
		out, err := c.Process(context.Background(), big)
		if err == nil && (len(out) != len(big) || out[len(big)-1] != -int64(len(big)-1)) {
			err = errors.New("wrong answer")
		}
		done <- err
	}()
	for range 4 {
		<-entered
		release <- struct{}{}
	}
	require.NoError(t, <-done)
}

// recycler is a backend that counts the answers handed back to it.
type recycler struct {
	mu       sync.Mutex
	returned map[*int64]bool // first element of each answer returned
	recycled int
	failing  bool
}

func (r *recycler) Process(ctx context.Context, items []int64) ([]int64, error) {
	r.mu.Lock()
	failing := r.failing
	r.mu.Unlock()
	if failing {
		return nil, errors.New("no")
	}
	out, _ := negate(ctx, items)
	r.mu.Lock()
	r.returned[&out[0]] = true
	r.mu.Unlock()
	return out, nil
}

func (r *recycler) Recycle(out []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.returned[&out[0]] {
		panic("recycled a slice the backend did not return")
	}
	delete(r.returned, &out[0])
	r.recycled++
}

func (r *recycler) state() (recycled, outstanding int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recycled, len(r.returned)
}

func (r *recycler) fail() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failing = true
}

func TestServerHandsEncodedAnswersBackToARecycler(t *testing.T) {
	r := &recycler{returned: map[*int64]bool{}}
	_, c := reuseServer(t, r)
	for i := range int64(5) {
		out, err := c.Process(context.Background(), []int64{i, i + 1})
		require.NoError(t, err)
		require.Equal(t, []int64{-i, -i - 1}, out)
		// The server hands an answer back before it writes it, so the
		// client holding the answer means the backend has it back.
		recycled, outstanding := r.state()
		require.Equal(t, int(i)+1, recycled, "every answer comes back once it is encoded")
		require.Zero(t, outstanding)
	}
	r.fail()
	_, err := c.Process(context.Background(), []int64{1})
	require.Error(t, err)
	recycled, _ := r.state()
	require.Equal(t, 5, recycled, "a failed call has no answer to hand back")

	// An empty probe is answered without the backend: nothing to hand back.
	out, err := c.Process(context.Background(), nil)
	require.NoError(t, err)
	require.Empty(t, out)
	recycled, _ = r.state()
	require.Equal(t, 5, recycled, "the backend returned nothing for a probe")
}

// TestServerRefusesAFrameThatIsNotARequestFromItsHeader sends, while the
// server's byte budget is taken, a frame of another kind larger than a
// stream's window: the server must refuse it from its header, without
// reading (and so holding) its payload, which the budget does not cover.
func TestServerRefusesAFrameThatIsNotARequestFromItsHeader(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, in []int64) ([]int64, error) {
		entered <- struct{}{}
		<-release
		return make([]int64, len(in)), nil
	})
	_, c := reuseServer(t, backend, WithMaxPendingBytes(1024), WithMaxPendingBytesPerConnection(1024))
	letGo := sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // before the server's Close, even if the test fails
	held := make(chan error, 1)
	go func() { _, err := c.Process(context.Background(), make([]int64, 100)); held <- err }()
	<-entered // the budget is taken

	sess := rawClientSession(t, c.Addr(), 1<<20)
	st, err := sess.OpenStream()
	require.NoError(t, err)
	frame := wire.AppendHeader(nil, wire.KindResponse)
	frame = append(frame, make([]byte, 512<<10)...) // twice the stream's window
	require.NoError(t, wire.FinishFrame(frame, 0, 1<<20))
	written := make(chan error, 1)
	go func() { _, err := st.Write(frame); written <- err }()

	st.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang guard, not a speed check
	k, payload, err := wire.ReadFrame(st, 1<<20, nil)
	require.NoError(t, err)
	require.Equal(t, wire.KindError, k)
	code, msg, err := parseError(payload)
	require.NoError(t, err)
	require.Equal(t, CodeBadRequest, code)
	require.Contains(t, msg, "expected a request")
	select {
	case <-written:
		t.Fatal("the server read the payload of a frame it refused")
	default: // the write waits for a window the server never opens
	}
	require.NoError(t, sess.Close())
	letGo()
	select {
	case err := <-held:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the call holding the budget did not return")
	}
}

// panickyRecycler is a backend whose Recycle panics.
type panickyRecycler struct{ recycled atomic.Int64 }

func (p *panickyRecycler) Process(ctx context.Context, items []int64) ([]int64, error) {
	return negate(ctx, items)
}

func (p *panickyRecycler) Recycle([]int64) {
	p.recycled.Add(1)
	panic("recycle failed")
}

func TestServerSurvivesARecyclerThatPanics(t *testing.T) {
	r := &panickyRecycler{}
	_, c := reuseServer(t, r)
	for i := range int64(3) {
		out, err := c.Process(context.Background(), []int64{i, 10})
		require.NoError(t, err, "the answer is encoded before Recycle, and goes out all the same")
		require.Equal(t, []int64{-i, -10}, out)
	}
	require.EqualValues(t, 3, r.recycled.Load())
}
