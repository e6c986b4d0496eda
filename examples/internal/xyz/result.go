package xyz

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// Result is an answer of the middle layer to one number: the result and
// the name of the route whose backend computed it, or, if that backend
// failed, the route's name and the failure.
type Result struct {
	Value   int64
	Backend string

	// Err is empty if the number was processed. Otherwise it is the text of
	// the error that kept the route in Backend from processing it, and Value
	// is meaningless; see [PerItem].
	Err string
}

// Failed reports whether the number was not processed: r.Err is not empty.
func (r Result) Failed() bool { return r.Err != "" }

// Label returns a backend that passes batches to b, the backend of route,
// and makes its failures say which numbers they concern.
//
// An error the backend computed itself (an overflow) already names its
// number and is returned as it is. Any other failure (the backend is down,
// the call timed out) is wrapped with the route and the numbers of the
// batch, so that the user learns which numbers were not processed.
func Label(route string, b fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
	return fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		values, err := b.Process(ctx, items)
		if err != nil {
			var re *transport.RemoteError
			if errors.Is(err, ErrOverflow) || errors.As(err, &re) && re.Code == transport.CodeBackend {
				return nil, err
			}
			return nil, fmt.Errorf("%s could not process %s: %w", route, describe(items), err)
		}
		return values, nil
	})
}

// maxNumbersShown bounds how many numbers an error spells out.
const maxNumbersShown = 8

// describe names the numbers of a batch: "7", "numbers 7, 9" or "numbers 7,
// 9, ... (1000 in all)".
func describe(items []int64) string {
	if len(items) == 1 {
		return strconv.FormatInt(items[0], 10)
	}
	b := []byte("numbers ")
	for i, n := range items[:min(len(items), maxNumbersShown)] {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendInt(b, n, 10)
	}
	if len(items) > maxNumbersShown {
		b = fmt.Appendf(b, ", ... (%d in all)", len(items))
	}
	return string(b)
}

// PerItem returns a backend that passes batches to r, a router over the
// labelled routes (see [Label]) built with [fanout.WithPartialResults], and
// answers each number with its value and the route that processed it. It
// reports the failure of a route in the answers to its numbers rather than
// as the call's error: each of them has the route in Backend and the text
// of the route's error in Err, and the answers of the routes that
// succeeded are returned beside them. PerItem returns an error only when
// the call failed as a whole: r failed in another way, or ctx ended or its
// deadline passed, in which case the error is ctx's (or
// [context.DeadlineExceeded] if ctx's timer has not fired yet), so that a
// server reports the call as cancelled or past its deadline.
//
// The router answers plain values and reports the route of each number
// ([fanout.Router.ProcessRoutes]), and PerItem builds the answers once from
// both: a batch's results are not copied route by route, and no number is
// classified twice.
//
// The backend PerItem returns is a [transport.Recycler]: served by a
// transport server, it reuses the memory of each answer once the server has
// encoded it.
func PerItem(r *fanout.Router[int64, int64]) fanout.Backend[int64, Result] {
	return &perItem{r: r, names: r.Routes()}
}

type perItem struct {
	r     *fanout.Router[int64, int64]
	names []string                 // the router's routes, by index
	spare atomic.Pointer[[]Result] // an answer the server has encoded, to reuse

	routes sync.Pool // of *[]int: the route of each number of a call
}

var _ transport.Recycler[Result] = (*perItem)(nil)

func (p *perItem) Process(ctx context.Context, items []int64) ([]Result, error) {
	rp, _ := p.routes.Get().(*[]int)
	if rp == nil {
		rp = new([]int)
	}
	defer p.routes.Put(rp)
	routes := slices.Grow((*rp)[:0], len(items))[:len(items)]
	*rp = routes
	values, err := p.r.ProcessRoutes(ctx, items, routes)
	var pe *fanout.PartialError
	if err != nil && !errors.As(err, &pe) {
		return nil, err
	}
	if pe != nil {
		// Routes that failed once the call's deadline had passed failed
		// because of it: the whole call fails with the deadline's error,
		// even while its context does not say so yet (its timer can fire
		// late on a busy machine, after a backend's own deadline).
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
			return nil, context.DeadlineExceeded
		}
	}
	out := p.results(len(items))
	if values != nil {
		for i, k := range routes {
			out[i] = Result{Value: values[i], Backend: p.names[k]}
		}
	} else {
		clear(out) // every route failed: each answer is set below
	}
	if pe == nil {
		return out, nil
	}
	for _, re := range pe.Failed {
		msg := re.Err.Error()
		if msg == "" { // an empty Err would read as success
			msg = "failed without a reason"
		}
		for _, i := range re.Indices {
			out[i] = Result{Backend: re.Route, Err: msg}
		}
	}
	return out, nil
}

// results returns a slice of n answers to fill, reusing the spare one if it
// fits: large enough, and not more than twice as large, so that small calls
// leave a large spare to the large calls it saves most for.
func (p *perItem) results(n int) []Result {
	sp := p.spare.Swap(nil)
	switch {
	case sp == nil:
	case cap(*sp) >= n && cap(*sp) <= 2*n:
		return (*sp)[:n]
	case cap(*sp) > 2*n:
		p.spare.CompareAndSwap(nil, sp) // keep it for a larger call
	}
	return make([]Result, n)
}

// Recycle takes back an answer the server has encoded (see
// [transport.Recycler]) and keeps it as the spare, unless it already has
// one: one spare serves a stream of large calls, and bounds what is kept.
func (p *perItem) Recycle(out []Result) {
	if cap(out) == 0 || p.spare.Load() != nil {
		return
	}
	sp := new([]Result) // allocated only when kept
	*sp = out
	p.spare.CompareAndSwap(nil, sp)
}

// ResultCodec returns the binary codec of [Result], named "xyz.result/2".
// Each result is encoded as
//
//	value    int64, 8 bytes little-endian
//	length   uint8, length of the backend name in bytes
//	backend  length bytes
//	error    uint8: 0 if the number was processed; k from 1 to 255 if it
//	         failed with the k-th distinct error text of the message
//
// and, when k is one more than the number of error texts met so far in the
// message, that new text follows:
//
//	textlen  uint16 little-endian, at least 1
//	text     textlen bytes
//
// A batch is the concatenation of its results, so a failure shared by many
// numbers, such as a route that is down, carries its text once. Texts are
// numbered in order of first use and are all different, so every batch has
// exactly one encoding. A backend name longer than 255 bytes, an error text
// longer than 65535 bytes, or more than 255 distinct error texts in one
// batch cannot be encoded. Decode checks every length before it allocates,
// and gives the results that share a backend name, or an error text, the
// same string.
func ResultCodec() transport.Codec[Result] {
	return resultCodec{}
}

type resultCodec struct{}

const (
	resultHeader  = 8 + 1 // value and name length
	maxBackendLen = 255
	maxErrTexts   = 255
	maxErrLen     = 0xFFFF
)

func (resultCodec) Name() string { return "xyz.result/2" }

// MinSize is n results with an empty backend name and no error:
// transport.MinSizer.
func (resultCodec) MinSize(n int) int { return n * (resultHeader + 1) }

func (resultCodec) Append(dst []byte, items []Result) ([]byte, error) {
	var texts []string // distinct error texts, in order of first use
	size := 0
	for i := range items {
		r := &items[i]
		if n := len(r.Backend); n > maxBackendLen {
			return dst, fmt.Errorf("xyz: result %d: backend name of %d bytes is longer than %d", i, n, maxBackendLen)
		}
		size += resultHeader + len(r.Backend) + 1
		if r.Err == "" || slices.Contains(texts, r.Err) {
			continue
		}
		if n := len(r.Err); n > maxErrLen {
			return dst, fmt.Errorf("xyz: result %d: error text of %d bytes is longer than %d", i, n, maxErrLen)
		}
		if len(texts) == maxErrTexts {
			return dst, fmt.Errorf("xyz: result %d: more than %d distinct error texts in one batch", i, maxErrTexts)
		}
		texts = append(texts, r.Err)
		size += 2 + len(r.Err)
	}
	// The second pass writes in place into the room the first one sized,
	// and copies a one-letter name without calling the runtime's copy
	// (BenchmarkResultCodecAppend: 221 µs appending, 184 µs in place).
	start := len(dst)
	dst = slices.Grow(dst, size)[:start+size]
	b := dst[start:]
	off := 0
	known := 0 // texts written so far
	for i := range items {
		r := &items[i]
		n := len(r.Backend)
		w := b[off : off+resultHeader+n+1]
		binary.LittleEndian.PutUint64(w, uint64(r.Value))
		w[8] = byte(n)
		if n == 1 {
			w[resultHeader] = r.Backend[0]
		} else {
			copy(w[resultHeader:], r.Backend)
		}
		off += len(w)
		if r.Err == "" {
			w[len(w)-1] = 0
			continue
		}
		k := slices.Index(texts[:known], r.Err)
		if k >= 0 {
			w[len(w)-1] = byte(k + 1)
			continue
		}
		k = known // first use: texts are numbered in this order
		known++
		w[len(w)-1] = byte(k + 1)
		binary.LittleEndian.PutUint16(b[off:], uint16(len(r.Err)))
		off += 2 + copy(b[off+2:], r.Err)
	}
	return dst, nil
}

// span locates a string in a message being decoded.
type span struct{ start, end int }

func (resultCodec) Decode(dst []Result, data []byte) ([]Result, error) {
	// Validate and count first, so that a malformed message allocates nothing.
	var texts [maxErrTexts]span
	known := 0
	count := 0
	for off := 0; off < len(data); count++ {
		if left := len(data) - off; left < resultHeader {
			return dst, fmt.Errorf("xyz: result %d: truncated: %d bytes left, a result takes at least %d", count, left, resultHeader+1)
		}
		n := int(data[off+8])
		off += resultHeader
		if left := len(data) - off; left < n+1 {
			return dst, fmt.Errorf("xyz: result %d: backend name of %d bytes and error mark, only %d bytes left", count, n, left)
		}
		off += n
		k := int(data[off])
		off++
		switch {
		case k <= known:
			continue // processed (0), or a text already met
		case k > known+1:
			return dst, fmt.Errorf("xyz: result %d: error text %d, only %d met so far", count, k, known)
		}
		if left := len(data) - off; left < 2 {
			return dst, fmt.Errorf("xyz: result %d: truncated error text length", count)
		}
		n = int(binary.LittleEndian.Uint16(data[off:]))
		off += 2
		switch left := len(data) - off; {
		case n == 0:
			return dst, fmt.Errorf("xyz: result %d: empty error text", count)
		case left < n:
			return dst, fmt.Errorf("xyz: result %d: error text of %d bytes, only %d bytes left", count, n, left)
		}
		text := data[off : off+n]
		for _, s := range texts[:known] {
			if bytes.Equal(data[s.start:s.end], text) {
				return dst, fmt.Errorf("xyz: result %d: error text repeated instead of referred to", count)
			}
		}
		texts[known] = span{off, off + n}
		known++
		off += n
	}

	dst = slices.Grow(dst, count)
	out := dst[len(dst) : len(dst)+count]
	var names interner
	var errs [maxErrTexts]string
	known = 0
	off := 0
	for i := range out {
		r := &out[i]
		r.Value = int64(binary.LittleEndian.Uint64(data[off:]))
		end := off + resultHeader + int(data[off+8])
		r.Backend = names.string(data[off+resultHeader : end])
		k := int(data[end])
		off = end + 1
		if k > known { // a new text follows: its place was checked above
			errs[known] = string(data[texts[known].start:texts[known].end])
			known++
			off = texts[k-1].end
		}
		r.Err = ""
		if k > 0 {
			r.Err = errs[k-1]
		}
	}
	dst = dst[:len(dst)+count]
	return dst, nil
}

// same reports whether s and b hold the same bytes. Backend names are
// short: comparing them here is quicker than calling the runtime's
// comparison.
func same(s string, b []byte) bool {
	if len(s) != len(b) {
		return false
	}
	for i := range b {
		if s[i] != b[i] {
			return false
		}
	}
	return true
}

// interner hands out one string per distinct backend name of a message, so
// that decoding a batch allocates a name once, not once per result. It keeps
// the first few names: a message names few backends.
type interner struct {
	names [8]string
	n     int
}

func (in *interner) string(b []byte) string {
	for _, s := range in.names[:in.n] {
		if same(s, b) {
			return s
		}
	}
	s := string(b)
	if in.n < len(in.names) {
		in.names[in.n] = s
		in.n++
	}
	return s
}
