package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// Recycler is implemented by a backend that wants the results it returns
// back once a [Server] has encoded them, to reuse their memory: a large
// batch's results cost more to zero and fault in afresh than to fill. The
// server calls Recycle once with every successful answer its backend
// returned (a nil error and one result per item), once it
// is done with it (encoded, or discarded because the client gave up), and
// before it writes the encoded answer; it holds no reference to it after.
// A panic in Recycle is logged, and the answer is sent all the same.
type Recycler[Out any] interface {
	Recycle(out []Out)
}

// Server serves a [fanout.Backend] to [Client]s over yamux sessions.
//
// Each accepted connection first completes the handshake, then carries one
// yamux session. Each stream on it carries calls one after another, run on
// the stream's own goroutine. A Server is safe for concurrent use; Serve may be called on
// several listeners at once.
//
// The server reuses the memory of a request's items for later requests once
// the backend's Process has returned, so a backend must keep no reference to
// them, as [fanout.Backend] requires.
type Server[In, Out any] struct {
	backend fanout.Backend[In, Out]
	recycle func([]Out) // the backend's Recycle, if it is a Recycler
	in      Codec[In]
	out     Codec[Out]
	cfg     config
	hello   wire.Hello

	ctx    context.Context // cancelled by Close: every backend call sees it
	cancel context.CancelFunc

	pending    *semaphore.Weighted // bytes of requests held; nil for no bound
	connShare  int64               // of pending, the most one connection holds
	maxRequest int                 // the largest request payload accepted: maxMessage, or less for the share
	nstreams   atomic.Int64        // streams open over all connections
	items      sync.Pool           // of *[]In: decoded requests, reused once their call is over

	// The calls' watcher (see sweep).
	epoch    time.Time      // calls' start times count from it
	sweeping atomic.Bool    // a sweeper runs; set only under mu
	shed     shedLog        // calls refused as overloaded, logged at most once a second
	sweeps   sync.WaitGroup // the sweeper goroutine, and the reaper's
	reaping  bool           // the reaper runs (see reap); set only under mu

	mu        sync.Mutex
	shutdown  bool // no new listeners, sessions or calls
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]*serverConn // every connection admitted, the one record of its streams
	slots     connSlots                // conns by the state of their handshake (see admit)
	calls     sync.WaitGroup           // calls in flight; Add only under mu while !shutdown
	streams   sync.WaitGroup           // stream goroutines; Add only under mu while !shutdown
	conn      sync.WaitGroup           // connection goroutines

	// hook, if set, is told of the points of the server's work that tests
	// wait for (see hookEvent). Only tests set it, before the server
	// serves; it is nil otherwise.
	hook func(hookEvent)
}

// NewServer returns a server that answers calls with backend, decoding
// requests with in and encoding results with out.
//
// NewServer panics if a codec's name is longer than 255 bytes.
func NewServer[In, Out any](backend fanout.Backend[In, Out], in Codec[In], out Codec[Out], opts ...ServerOption) *Server[In, Out] {
	checkCodecName(in.Name())
	checkCodecName(out.Name())
	cfg := newServerConfig(opts)
	ctx, cancel := context.WithCancel(context.Background())
	var pending *semaphore.Weighted
	maxRequest, share := cfg.maxMessage, int64(0)
	if cfg.maxPending > 0 {
		pending = semaphore.NewWeighted(cfg.maxPending)
		share = cfg.connPending
		if share <= 0 {
			share = cfg.maxPending / 4
		}
		share = max(min(share, cfg.maxPending), 64)
		maxRequest = int(min(int64(maxRequest), share))
	}
	var recycle func([]Out)
	if r, ok := backend.(Recycler[Out]); ok {
		recycle = r.Recycle
	}
	return &Server[In, Out]{
		recycle:    recycle,
		pending:    pending,
		connShare:  share,
		maxRequest: maxRequest,
		backend:    backend,
		in:         in,
		out:        out,
		cfg:        cfg,
		hello:      wire.Hello{Version: wire.Version, ReqCodec: in.Name(), RespCodec: out.Name(), MaxMessage: uint32(maxRequest), Service: cfg.service},
		ctx:        ctx,
		cancel:     cancel,
		epoch:      time.Now(),
		listeners:  make(map[net.Listener]struct{}),
		conns:      make(map[net.Conn]*serverConn),
	}
}

// giveBack hands an answer back to the backend's Recycler. A panic in
// Recycle is logged and goes no further: the answer is encoded already, and
// the server goes on serving.
func (s *Server[In, Out]) giveBack(answer []Out) {
	defer func() {
		if r := recover(); r != nil {
			s.cfg.logger.Error("transport: backend's Recycle panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	s.recycle(answer)
}

// process calls the backend, turning a panic or a broken contract into an
// error for this call only. An empty batch is answered without calling the
// backend (it is how clients probe a server), with no results: out is
// always what the backend returned, the only answers a Recycler is given.
func (s *Server[In, Out]) process(ctx context.Context, items []In) (out []Out, code Code, err error) {
	if len(items) == 0 {
		return nil, 0, nil
	}
	defer func() {
		if r := recover(); r != nil {
			s.cfg.logger.Error("transport: backend panicked", "panic", r, "stack", string(debug.Stack()))
			out, code, err = nil, CodeInternal, fmt.Errorf("backend panicked: %v", r)
		}
	}()
	out, err = s.backend.Process(ctx, items)
	switch {
	case partialOf(err) != nil && out != nil && len(out) != len(items):
		return nil, CodeInternal, fmt.Errorf("%w: a partial answer of %d results for %d items", fanout.ErrResultCount, len(out), len(items))
	case partialOf(err) != nil:
		return out, 0, err // the backend answered some items
	case err == nil && len(out) != len(items):
		return nil, CodeInternal, fmt.Errorf("%w: %d results for %d items", fanout.ErrResultCount, len(out), len(items))
	case err == nil:
		return out, 0, nil
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return nil, CodeDeadline, err
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return nil, CodeCanceled, err
	}
	return nil, CodeBackend, err
}
