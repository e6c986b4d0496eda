package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/seed-c94cd834/fanout"
)

// takeSlot counts a call in flight, unless the client has the maximum
// already; the caller gives the slot back with c.inFlight.Add(-1).
func (c *Client[In, Out]) takeSlot() bool {
	if c.inFlight.Add(1) > int64(c.cfg.maxCalls) {
		c.inFlight.Add(-1)
		return false
	}
	return true
}

// callChunks sends items in chunks of size items (see [Client.Process]).
// The caller's goroutine sends chunks one after another, and so do up to
// [WithChunks]' inFlight-1 goroutines more, each while it can take a slot
// of [WithMaxConcurrentCalls]: a chunked call never fails for want of a
// slot, it only has fewer chunks in flight. The slots its chunks hold are
// taken from other calls, which can find the limit reached meanwhile.
func (c *Client[In, Out]) callChunks(ctx context.Context, items []In, size int) ([]Out, error) {
	out := make([]Out, len(items))
	chunks := (len(items) + size - 1) / size
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next      atomic.Int64 // the next chunk to send
		delivered atomic.Bool  // a chunk's request may have reached the server
		failed    sync.Once
		err       error // the first failure, set by failed
		wg        sync.WaitGroup
		mu        sync.Mutex
		partial   *fanout.PartialError // the chunks' failed items, guarded by mu
	)
	send := func() {
		for ctx.Err() == nil {
			i := int(next.Add(1) - 1)
			if i >= chunks {
				return
			}
			lo, hi := i*size, min((i+1)*size, len(items))
			sent := false
			res, cerr := c.call(ctx, items[lo:hi], out[lo:lo:hi], &sent)
			if pe := partialOf(cerr); pe != nil {
				// The chunk was answered in part: its failures are the call's.
				mu.Lock()
				partial = addShifted(partial, pe, lo)
				mu.Unlock()
				cerr = nil
			}
			if cerr == nil || sent && !undelivered(cerr) {
				delivered.Store(true)
			}
			if cerr != nil {
				failed.Do(func() { err = cerr; cancel() })
				return
			}
			if len(res) > 0 && &res[0] != &out[lo] {
				copy(out[lo:hi], res) // the codec decoded elsewhere
			}
		}
	}
	for range min(c.cfg.chunkCalls, chunks) - 1 {
		if !c.takeSlot() {
			break
		}
		wg.Go(func() {
			defer c.inFlight.Add(-1)
			send()
		})
	}
	send()
	wg.Wait()
	if err != nil && delivered.Load() && undelivered(err) {
		// The chunk that failed was not delivered, but others may have
		// been: the call as a whole is not safe to send again.
		return nil, fmt.Errorf("%w: a chunk of the call failed after others were sent: %v", fanout.ErrInterrupted, err)
	}
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err // the caller's context ended between two chunks
	}
	if partial != nil {
		sortPartial(partial)
		return out, partial
	}
	return out, nil
}

// undelivered reports whether err says that a request did not reach the
// server's backend, so that sending it again is safe.
func undelivered(err error) bool {
	return errors.Is(err, fanout.ErrUnavailable) || errors.Is(err, fanout.ErrOverloaded)
}
