package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// writer writes answers in the form `client -json` prints them.
type writer struct {
	w   *bufio.Writer
	buf []byte
	enc xyz.JSONEncoder
}

func newWriter(w io.Writer) *writer {
	return &writer{w: bufio.NewWriterSize(w, 64<<10)}
}

// array writes the answers to numbers as one JSON array, an object per
// line, as `client -json` does.
func (w *writer) array(numbers []int64, results []xyz.Result) error {
	if len(numbers) == 0 {
		_, err := w.w.WriteString("[]\n")
		return err
	}
	for i, n := range numbers {
		b := w.buf[:0]
		if i == 0 {
			b = append(b, "[\n  "...)
		} else {
			b = append(b, ",\n  "...)
		}
		b = w.enc.Append(b, n, &results[i])
		w.buf = b
		if _, err := w.w.Write(b); err != nil {
			return err
		}
	}
	_, err := w.w.WriteString("\n]\n")
	return err
}

// lines writes the answers to numbers as NDJSON, an object per line.
func (w *writer) lines(numbers []int64, results []xyz.Result) error {
	for i, n := range numbers {
		b := w.enc.Append(w.buf[:0], n, &results[i])
		b = append(b, '\n')
		w.buf = b
		if _, err := w.w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) flush() error { return w.w.Flush() }

// chunk is one chunk of an NDJSON stream on its way through the backend.
type chunk struct {
	offset  int // index in the stream of the chunk's first number
	numbers []int64
	results []xyz.Result
	failed  int
	err     *apiError     // the chunk's failure; or the body's, with no numbers
	done    chan struct{} // closed when results, failed and err are set
}

// processStream answers an NDJSON stream: it reads the body a chunk of
// ChunkSize numbers at a time, sends each chunk to the backend as a call
// of its own within opts.timeout, up to ChunksInFlight at once, and writes
// the answers of each chunk, in order, as soon as it and the chunks before
// it are answered. Memory is bounded by the chunks in flight, however long
// the stream.
//
// The status is written with the first chunk's answers, so that a failure
// of the first chunk, or a bad line in it, is answered with its status. A
// later failure ends the stream with an error line, {"error": ..., "code":
// ...} (no "input"), in place of the failed chunk's answers. With
// partial=1, the Fanout-Failed trailer counts the failed numbers. A stream
// that fails, or whose client goes, while its body is still being read is
// read no further, and its connection is closed after the answer: one
// started is cut off after its error line.
func (g *gateway) processStream(w http.ResponseWriter, r *http.Request, opts options) {
	rc := http.NewResponseController(w)
	rc.EnableFullDuplex() // answers stream back while the body streams in; where unsupported, as good as it gets
	ctx, cancel := context.WithCancel(r.Context())
	var wg sync.WaitGroup
	read := make(chan struct{}) // closed when the reader has read its last
	started := false            // the status is written
	// reading reports whether the reader may still be reading the body. If
	// so, the handler must not return before it has stopped the read (see
	// the deferred function), and the connection must not serve another
	// request: an answer not yet started says Connection: close.
	reading := func() bool {
		select {
		case <-read:
			return false
		default:
			if !started && r.ProtoMajor == 1 {
				w.Header().Set("Connection", "close")
			}
			return true
		}
	}
	defer func() {
		cancel()
		// A read of the body in progress returns at once. A read of the
		// connection that fails (this one, or net/http's own once the body
		// has been read) cancels the context of every request the
		// connection would serve after this one, and the rest of the body
		// is not read: the connection is closed after this answer.
		stopped := reading()
		if stopped {
			rc.SetReadDeadline(time.Now())
		}
		wg.Wait()
		rc.SetReadDeadline(time.Time{})
		rc.SetWriteDeadline(time.Time{})
		if stopped && started {
			// An answer started cannot say Connection: close: it is cut
			// off after what was written (a failed stream's error line),
			// which closes the connection.
			rc.Flush()
			panic(http.ErrAbortHandler)
		}
	}()

	chunks := make(chan *chunk, ChunksInFlight-1) // with the one being written: ChunksInFlight
	wg.Go(func() {
		defer close(chunks)
		lr := newLineReader(r.Body)
		for {
			rc.SetReadDeadline(time.Now().Add(StallTimeout))
			c := &chunk{offset: lr.index, done: make(chan struct{})}
			var err error
			for len(c.numbers) < ChunkSize {
				var n int64
				if n, err = lr.next(); err != nil {
					break
				}
				c.numbers = append(c.numbers, n)
			}
			last := err != nil
			if last {
				// Before the last chunk is sent: a handler that returns on
				// its answer finds the body read.
				close(read)
			}
			switch {
			case errors.Is(err, io.EOF):
			case err != nil:
				// The chunk's numbers are dropped with it: a chunk is
				// answered in full or not at all.
				c.numbers = nil
				c.err = bodyError(err, 0)
				close(c.done)
			}
			if len(c.numbers) > 0 {
				wg.Go(func() { g.streamCall(ctx, c, opts) })
			}
			if len(c.numbers) > 0 || c.err != nil {
				select {
				case chunks <- c:
				case <-ctx.Done():
					return
				}
			}
			if last {
				return
			}
		}
	})

	out := newWriter(w)
	failed := 0
	start := func() {
		h := w.Header()
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Trailer", "Fanout-Failed")
		w.WriteHeader(http.StatusOK)
		started = true
	}
	for c := range chunks {
		select {
		case <-c.done:
		case <-ctx.Done():
			return
		}
		if c.err != nil {
			if !started {
				reading() // before the header is written
				g.fail(w, r, c.err)
				return
			}
			if c.err.status >= 500 {
				g.cfg.Log.Warn("http stream failed", "status", c.err.status, "code", c.err.Code, "err", c.err.Error)
			}
			out.w.Write(c.err.line())
			out.flush()
			return
		}
		if !started {
			start()
		}
		rc.SetWriteDeadline(time.Now().Add(StallTimeout))
		if out.lines(c.numbers, c.results) != nil || out.flush() != nil {
			return // the client is gone
		}
		rc.Flush()
		failed += c.failed
	}
	if ctx.Err() != nil {
		return
	}
	if !started {
		start() // an empty stream: an empty answer
	}
	w.Header().Set("Fanout-Failed", strconv.Itoa(failed))
}

// streamCall processes c within opts.timeout and closes c.done.
func (g *gateway) streamCall(ctx context.Context, c *chunk, opts options) {
	defer close(c.done)
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	c.results, c.failed, c.err = g.call(ctx, c.numbers, opts)
	if c.err != nil && c.err.Index != nil {
		// Indices in the stream, not in the chunk.
		i := *c.err.Index + c.offset
		c.err.Index = &i
	}
}
