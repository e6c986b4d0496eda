package xyz

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// Result is an answer of the middle layer to one number: the result and
// the name of the backend that computed it, or, if that backend failed,
// the backend's name and the failure.
type Result struct {
	Value   int64
	Backend string

	// Err is empty if the number was processed. Otherwise it is the text of
	// the error that kept the backend in Backend from processing it, and
	// Value is meaningless. Failures do not travel in the result codec:
	// they travel as the transport's partial answers, and [Annotate] sets
	// Err (and Backend) from them where the answer is read.
	Err string
}

// Failed reports whether the number was not processed: r.Err is not empty.
func (r Result) Failed() bool { return r.Err != "" }

// Label returns a backend that passes batches to b, the backend of route,
// and makes its failures say which numbers they concern.
//
// Failures of single numbers (an overflow, in a [*fanout.PartialError]),
// and an error the backend computed itself, already name their number and
// are returned as they are. Any other failure (the backend is down, the
// call timed out) is wrapped with the route and the numbers of the batch,
// so that the user learns which numbers were not processed.
func Label(route string, b fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
	return fanout.BackendFunc[int64, int64](func(ctx context.Context, items []int64) ([]int64, error) {
		values, err := b.Process(ctx, items)
		if _, ok := err.(*fanout.PartialError); ok {
			return values, err
		}
		if err != nil {
			var re *transport.RemoteError
			if errors.Is(err, ErrOverflow) || errors.As(err, &re) && re.Code == transport.CodeBackend {
				return nil, err
			}
			return nil, &labelled{msg: fmt.Sprintf("%s could not process %s: %s", route, describe(items), withoutRedial(err.Error())), err: err}
		}
		return values, nil
	})
}

// labelled is the error of a route whose backend failed, in words for the
// user: which numbers it could not process, and why. It wraps the
// backend's error, so errors.Is and errors.As see the cause.
type labelled struct {
	msg string
	err error
}

func (e *labelled) Error() string { return e.msg }

func (e *labelled) Unwrap() error { return e.err }

// redialNote is what a transport client adds to the error of a call made
// while it waits to dial again: a detail of the middle layer's, not of the
// user's, who reads the failure once.
var redialNote = regexp.MustCompile(` \(next attempt in [^()]*\)$`)

// withoutRedial returns msg without its redial note, if it has one.
func withoutRedial(msg string) string { return redialNote.ReplaceAllString(msg, "") }

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
// answers each number with its value and the route that processed it: the
// route's servers state the service of that name, which the transport
// checks at the handshake, so the route names the server that answered.
// The router's [*fanout.PartialError], the numbers that failed alone and
// the routes that failed as a whole, is returned beside the answers of the
// others, as it is, for the transport to carry to the client (see
// [Annotate]). PerItem fails the call as a whole only when r failed in
// another way, or ctx ended or its deadline passed, in which case the error
// is ctx's (or [context.DeadlineExceeded] if ctx's timer has not fired
// yet), so that a server reports the call as cancelled or past its
// deadline.
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
	pe, _ := err.(*fanout.PartialError)
	if err != nil && pe == nil {
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
	if values == nil {
		return nil, pe // every route failed: no number was answered
	}
	out := p.results(len(items))
	for i, k := range routes {
		out[i] = Result{Value: values[i], Backend: p.names[k]}
	}
	if pe != nil {
		return out, pe
	}
	return out, nil
}

// Annotate returns the answers to n numbers of a call that the middle
// layer answered in part (results, which may be nil if no number was
// answered, and pe): each number pe lists as failed gets the route that
// failed it in Backend and the failure's text in Err. The text is the one
// the server that failed gave ([transport.RemoteError.Message]), not
// wrapped once per hop. results is changed in place when not nil.
func Annotate(results []Result, n int, pe *fanout.PartialError) []Result {
	if results == nil {
		results = make([]Result, n)
	}
	set := func(i int, route string, err error) {
		msg := "failed without a reason" // an empty Err would read as success
		var re *transport.RemoteError
		switch {
		case errors.As(err, &re) && re.Message != "":
			msg = re.Message
		case err != nil && err.Error() != "":
			msg = err.Error()
		}
		results[i] = Result{Backend: route, Err: msg}
	}
	for _, re := range pe.Failed {
		for _, i := range re.Indices {
			set(i, re.Route, re.Err)
		}
	}
	for _, ie := range pe.Items {
		set(ie.Index, ie.Route, ie.Err)
	}
	return results
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

// ResultCodec returns the binary codec of [Result], named "xyz.result/3".
// Each result is encoded as
//
//	value    int64, 8 bytes little-endian
//	length   uint8, length of the backend name in bytes
//	backend  length bytes
//
// and a batch is the concatenation of its results. A result's Err is not
// encoded: a failed number travels as a failure of the transport's partial
// answer, and Append refuses a result whose Err is set. A backend name
// longer than 255 bytes cannot be encoded. Decode checks every length
// before it allocates, and gives the results that share a backend name the
// same string.
func ResultCodec() transport.Codec[Result] {
	return resultCodec{}
}

type resultCodec struct{}

const (
	resultHeader  = 8 + 1 // value and name length
	maxBackendLen = 255
)

func (resultCodec) Name() string { return "xyz.result/3" }

// MinSize is n results with an empty backend name: transport.MinSizer.
func (resultCodec) MinSize(n int) int { return n * resultHeader }

func (resultCodec) Append(dst []byte, items []Result) ([]byte, error) {
	size := 0
	for i := range items {
		r := &items[i]
		if n := len(r.Backend); n > maxBackendLen {
			return dst, fmt.Errorf("xyz: result %d: backend name of %d bytes is longer than %d", i, n, maxBackendLen)
		}
		if r.Err != "" {
			return dst, fmt.Errorf("xyz: result %d: a failure, which travels in a partial answer, not in the result codec", i)
		}
		size += resultHeader + len(r.Backend)
	}
	// Written in place into the room sized above, copying a one-letter name
	// without calling the runtime's copy.
	start := len(dst)
	dst = slices.Grow(dst, size)[:start+size]
	b := dst[start:]
	off := 0
	for i := range items {
		r := &items[i]
		n := len(r.Backend)
		w := b[off : off+resultHeader+n]
		binary.LittleEndian.PutUint64(w, uint64(r.Value))
		w[8] = byte(n)
		if n == 1 {
			w[resultHeader] = r.Backend[0]
		} else {
			copy(w[resultHeader:], r.Backend)
		}
		off += len(w)
	}
	return dst, nil
}

func (resultCodec) Decode(dst []Result, data []byte) ([]Result, error) {
	// Validate and count first, so that a malformed message allocates nothing.
	count := 0
	for off := 0; off < len(data); count++ {
		if left := len(data) - off; left < resultHeader {
			return dst, fmt.Errorf("xyz: result %d: truncated: %d bytes left, a result takes at least %d", count, left, resultHeader)
		}
		n := int(data[off+8])
		off += resultHeader
		if left := len(data) - off; left < n {
			return dst, fmt.Errorf("xyz: result %d: backend name of %d bytes, only %d bytes left", count, n, left)
		}
		off += n
	}

	dst = slices.Grow(dst, count)
	out := dst[len(dst) : len(dst)+count]
	var names interner
	off := 0
	for i := range out {
		r := &out[i]
		r.Value = int64(binary.LittleEndian.Uint64(data[off:]))
		end := off + resultHeader + int(data[off+8])
		r.Backend = names.string(data[off+resultHeader : end])
		r.Err = ""
		off = end
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
