package transport_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// callLog is a backend that answers n with n*10 and records the size of
// every call it gets and the most calls it had in flight at once. If
// gather is above 1, the first calls wait until gather of them are in
// flight together.
type callLog struct {
	gather int

	mu       sync.Mutex
	sizes    []int
	inFlight int
	most     int
	all      chan struct{} // closed once gather calls were in flight together
	gathered bool          // all is closed
}

func newCallLog(gather int) *callLog {
	return &callLog{gather: gather, all: make(chan struct{})}
}

func (l *callLog) Process(ctx context.Context, items []int64) ([]int64, error) {
	l.mu.Lock()
	l.sizes = append(l.sizes, len(items))
	l.inFlight++
	l.most = max(l.most, l.inFlight)
	if l.inFlight == l.gather && !l.gathered {
		// Later calls may be as many in flight again.
		l.gathered = true
		close(l.all)
	}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.inFlight--
		l.mu.Unlock()
	}()
	if l.gather > 1 {
		select {
		case <-l.all:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make([]int64, len(items))
	for i, n := range items {
		out[i] = n * 10
	}
	return out, nil
}

func (l *callLog) seen() (sizes []int, most int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.sizes...), l.most
}

func sequence(n int) []int64 {
	items := make([]int64, n)
	for i := range items {
		items[i] = int64(i) - int64(n)/2
	}
	return items
}

func requireTimesTen(t *testing.T, items, out []int64) {
	t.Helper()
	require.Len(t, out, len(items))
	for i, n := range items {
		if out[i] != n*10 {
			require.Equal(t, n*10, out[i], "result %d", i)
		}
	}
}

// TestClientSendsLargeCallsInChunks checks that a call larger than the
// chunk size reaches the server as calls of at most that size, several in
// flight at once, and that the results come back whole and in order.
func TestClientSendsLargeCallsInChunks(t *testing.T) {
	backend := newCallLog(3) // the first three chunks wait for each other
	c := client(t, serve(t, backend), transport.WithChunks(100, 3))

	items := sequence(1050)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.Process(ctx, items)
	require.NoError(t, err, "the chunks were not in flight at once")
	requireTimesTen(t, items, out)

	sizes, most := backend.seen()
	require.Len(t, sizes, 11)
	total := 0
	for _, n := range sizes {
		require.LessOrEqual(t, n, 100)
		total += n
	}
	require.Equal(t, 1050, total)
	require.Equal(t, 3, most, "chunks in flight at once")

	// A call of at most the chunk size goes whole.
	out, err = c.Process(ctx, items[:100])
	require.NoError(t, err)
	requireTimesTen(t, items[:100], out)
	sizes, _ = backend.seen()
	require.Equal(t, 100, sizes[len(sizes)-1])
}

func TestClientChunksCanBeTurnedOff(t *testing.T) {
	backend := newCallLog(0)
	c := client(t, serve(t, backend), transport.WithChunks(0, 4))
	items := sequence(300_000) // above the default chunk size
	out, err := c.Process(context.Background(), items)
	require.NoError(t, err)
	requireTimesTen(t, items, out)
	sizes, _ := backend.seen()
	require.Equal(t, []int{300_000}, sizes)
}

// TestChunksRespectTheClientsCallLimit: a chunked call takes only the
// slots that are free, so it neither fails nor makes other calls fail.
func TestChunksRespectTheClientsCallLimit(t *testing.T) {
	backend := newCallLog(0)
	c := client(t, serve(t, backend), transport.WithChunks(10, 4), transport.WithMaxConcurrentCalls(1))
	items := sequence(95)
	out, err := c.Process(context.Background(), items)
	require.NoError(t, err)
	requireTimesTen(t, items, out)
	sizes, most := backend.seen()
	require.Len(t, sizes, 10)
	require.Equal(t, 1, most)
}

// TestFailedChunkFailsTheCall: the first chunk that fails decides the
// call's error, and cancels the chunks still in flight on the server.
func TestFailedChunkFailsTheCall(t *testing.T) {
	cancelled := make(chan struct{}, 16)
	started := make(chan struct{}, 16)
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		if items[0] == 200 {
			<-started // fail once another chunk is in flight
			return nil, fmt.Errorf("cannot take %d", items[0])
		}
		started <- struct{}{}
		<-ctx.Done() // every other chunk waits to be cancelled
		cancelled <- struct{}{}
		return nil, ctx.Err()
	})
	c := client(t, serve(t, backend), transport.WithChunks(100, 4))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Process(ctx, sequence(1000)[500:]) // items 0..499: chunks start at 0, 100, ..., 400
	var re *transport.RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, transport.CodeBackend, re.Code)
	require.Contains(t, re.Message, "cannot take 200")
	require.NoError(t, ctx.Err(), "the call waited for its timeout")
	select {
	case <-cancelled:
	case <-time.After(waitGuard):
		t.Fatal("no chunk in flight was cancelled on the server")
	}
}

// TestChunkedCallEndsWithItsContext: a caller that gives up gets its
// context's error, whichever chunks were done, and the client goes on.
func TestChunkedCallEndsWithItsContext(t *testing.T) {
	release := make(chan struct{})
	waiting := make(chan struct{}, 16)
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		if len(items) > 1 {
			waiting <- struct{}{}
			select { // the chunks of the large call wait to be cancelled
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return items, nil
	})
	defer close(release)
	c := client(t, serve(t, backend), transport.WithChunks(100, 2))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Process(ctx, sequence(1000))
		errc <- err
	}()
	// Give up once chunks are in flight on the server.
	select {
	case <-waiting:
	case <-time.After(waitGuard):
		t.Fatal("no chunk reached the backend")
	}
	cancel()
	require.ErrorIs(t, waitErr(t, errc), context.Canceled)

	out, err := c.Process(context.Background(), []int64{4})
	require.NoError(t, err)
	require.Equal(t, []int64{4}, out)
}

// elsewhere is the int64 codec, but decoding into a slice of its own
// rather than into dst's spare capacity, which codecs may do.
type elsewhere struct{ transport.Codec[int64] }

func (e elsewhere) Decode(dst []int64, data []byte) ([]int64, error) {
	out, err := e.Codec.Decode(nil, data)
	return append(dst[:len(dst):len(dst)], out...), err
}

func TestChunksDecodedElsewhereAreCopied(t *testing.T) {
	addr := serve(t, newCallLog(0))
	c := transport.NewClient(addr, transport.Int64(), elsewhere{transport.Int64()}, quiet, transport.WithChunks(7, 3))
	defer c.Close()
	items := sequence(100)
	out, err := c.Process(context.Background(), items)
	require.NoError(t, err)
	requireTimesTen(t, items, out)
}

// TestRefusedChunkAfterOthersWereSentIsAnInterruption: a chunk the server
// refuses was not delivered, but the chunks before it were, so the call's
// error must not say that sending the call again is safe.
func TestRefusedChunkAfterOthersWereSentIsAnInterruption(t *testing.T) {
	var calls atomic.Int64
	backend := fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		calls.Add(1)
		<-ctx.Done() // hold the stream until the call is abandoned
		return nil, ctx.Err()
	})
	// The server takes two streams per connection and refuses the others.
	addr := serve(t, backend, transport.WithMaxConcurrentCalls(2))
	c := client(t, addr, transport.WithChunks(100, 4))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Process(ctx, sequence(400))
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "the call waited for its timeout")
	require.ErrorIs(t, err, fanout.ErrInterrupted)
	require.NotErrorIs(t, err, fanout.ErrOverloaded)
	require.NotErrorIs(t, err, fanout.ErrUnavailable)
	require.Contains(t, err.Error(), "overloaded")
	require.Positive(t, calls.Load(), "no chunk reached the backend")
}

// TestChunkedCallToNoServerIsUnavailable: when no chunk was delivered the
// call stays safe to send again.
func TestChunkedCallToNoServerIsUnavailable(t *testing.T) {
	c := client(t, freeAddr(t), transport.WithChunks(100, 4))
	_, err := c.Process(context.Background(), sequence(400))
	require.ErrorIs(t, err, fanout.ErrUnavailable)
	require.NotErrorIs(t, err, fanout.ErrInterrupted)
}
