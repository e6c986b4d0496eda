package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// This file is the routing table of the example system, copied from
// examples/internal/xyz (an internal package, which this module cannot
// import), and the encodings that every system under test shares.
//
//	route  gets                              computes
//	x      negative numbers                  n * n
//	y      even numbers >= 0 (0 included)   n / 2
//	z      odd positive numbers              3n + 1
//
// A result that does not fit in an int64 is an error naming the number and
// the route; it never wraps around.

// routes are the names of the routes; a route is known by its index here.
var routes = [3]string{"x", "y", "z"}

// Result is an answer of a middle layer to one number: the value a route
// computed and the name of that route, or, if the route failed, its name
// and the error's text.
type Result struct {
	Value   int64
	Backend string
	Err     string // empty if the number was processed
}

// Exact bounds of the inputs whose results fit in an int64.
const (
	maxSquared = 3037000499              // largest n with n*n <= MaxInt64
	minZ       = (math.MinInt64 - 1) / 3 // smallest n with 3n+1 >= MinInt64
	maxZ       = (math.MaxInt64 - 1) / 3 // largest n with 3n+1 <= MaxInt64
)

// classify returns the index in routes of the route that owns n. Like the
// example's classifier, it computes the route without branches (numbers of
// the three routes arrive mixed), so that the four middle layers classify
// equally fast.
func classify(n int64) int {
	nonNegative := int(^uint64(n) >> 63) // 1 if n >= 0, else 0
	return (1 + int(n&1)) * nonNegative
}

// compute applies the function of route r to n.
func compute(r int, n int64) (int64, error) {
	switch r {
	case 0:
		if n < -maxSquared || n > maxSquared {
			return 0, fmt.Errorf("x: %d squared overflows int64", n)
		}
		return n * n, nil
	case 1:
		return n / 2, nil
	default:
		if n < minZ || n > maxZ {
			return 0, fmt.Errorf("z: 3*%d+1 overflows int64", n)
		}
		return 3*n + 1, nil
	}
}

// computeAll is the work of backend r: it applies the route's function to
// every item, failing with the first overflow.
func computeAll(r int, items []int64) ([]int64, error) {
	out := make([]int64, len(items))
	for i, n := range items {
		v, err := compute(r, n)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// expected returns the answer every system must give for n.
func expected(n int64) (Result, error) {
	r := classify(n)
	v, err := compute(r, n)
	return Result{Value: v, Backend: routes[r]}, err
}

// appendInt64s appends items as 8-byte little-endian values, the request
// encoding of every system (fanout's "int64le").
func appendInt64s(dst []byte, items []int64) []byte {
	dst = slices.Grow(dst, 8*len(items))
	for _, n := range items {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(n))
	}
	return dst
}

// decodeInt64s appends the values encoded in data to dst.
func decodeInt64s(dst []int64, data []byte) ([]int64, error) {
	if len(data)%8 != 0 {
		return dst, fmt.Errorf("%d bytes is not a whole number of int64", len(data))
	}
	dst = slices.Grow(dst, len(data)/8)
	for off := 0; off < len(data); off += 8 {
		dst = append(dst, int64(binary.LittleEndian.Uint64(data[off:])))
	}
	return dst, nil
}

// resultCodec is the codec of a middle layer's answers, the example
// system's result codec (examples/internal/xyz) in one of its versions.
// In both, a batch is the concatenation of its results, and a result is
//
//	value    int64, 8 bytes little-endian
//	length   uint8, length of the route's name
//	backend  length bytes
//
// followed, in version 2 only, by an error mark (version 3, like version 1,
// carries no errors: the example system sends failures in the transport's
// partial answers): 0 if the number was
// processed, or k > 0 if it failed with the k-th distinct error text of the
// message. When k is one more than the number of texts met so far, the new
// text follows: its length (uint16 little-endian, at least 1), then its
// bytes.
//
// It implements transport.Codec[Result].
type resultCodec struct{ version int }

// answerCodec is the codec the raw TCP, gRPC and plain yamux middle layers
// answer with: the version the example middle layer speaks in the current
// tree.
var answerCodec = resultCodec{version: 3}

// Limits of the encoding.
const (
	resultHeader = 8 + 1 // value and name length
	maxErrTexts  = math.MaxUint8
	maxErrLen    = math.MaxUint16
)

func (c resultCodec) Name() string { return fmt.Sprintf("xyz.result/%d", c.version) }

func (c resultCodec) Append(dst []byte, items []Result) ([]byte, error) {
	// Two passes, as in the example's codec, so that the four middle
	// layers encode equally fast: the first checks every result and sizes
	// the encoding, the second writes it in place.
	mark := 0 // version 2: a byte after each name, 0 or an error text's number
	if c.version == 2 {
		mark = 1
	}
	var texts []string // version 2: distinct error texts, in order of first use
	size := 0
	for i := range items {
		r := &items[i]
		if len(r.Backend) > math.MaxUint8 {
			return dst, fmt.Errorf("result %d: backend name %q is too long", i, r.Backend)
		}
		size += resultHeader + len(r.Backend) + mark
		switch {
		case r.Err == "" || slices.Contains(texts, r.Err):
			continue
		case c.version != 2:
			return dst, fmt.Errorf("result %d: version %d cannot carry an error", i, c.version)
		case len(texts) == maxErrTexts || len(r.Err) > maxErrLen:
			return dst, fmt.Errorf("result %d: too many or too long error texts", i)
		}
		texts = append(texts, r.Err)
		size += 2 + len(r.Err)
	}
	start := len(dst)
	dst = slices.Grow(dst, size)[:start+size]
	b := dst[start:]
	off, known := 0, 0 // known: texts written so far
	for i := range items {
		r := &items[i]
		n := len(r.Backend)
		binary.LittleEndian.PutUint64(b[off:], uint64(r.Value))
		b[off+8] = byte(n)
		if n == 1 {
			b[off+resultHeader] = r.Backend[0]
		} else {
			copy(b[off+resultHeader:], r.Backend)
		}
		off += resultHeader + n
		switch {
		case mark == 0:
			continue
		case r.Err == "":
			b[off] = 0
			off++
			continue
		}
		k := slices.Index(texts[:known], r.Err)
		first := k < 0
		if first {
			k = known
			known++
		}
		b[off] = byte(k + 1)
		off++
		if first {
			binary.LittleEndian.PutUint16(b[off:], uint16(len(r.Err)))
			off += 2 + copy(b[off+2:], r.Err)
		}
	}
	return dst, nil
}

// Decode gives the results that share a backend name or an error text the
// same string, as the example's codec does.
func (c resultCodec) Decode(dst []Result, data []byte) ([]Result, error) {
	var names interner
	var texts []string // version 2: the error texts met so far
	for off, i := 0, 0; off < len(data); i++ {
		if len(data)-off < resultHeader {
			return dst, fmt.Errorf("result %d: truncated", i)
		}
		r := Result{Value: int64(binary.LittleEndian.Uint64(data[off:]))}
		end := off + resultHeader + int(data[off+8])
		if end > len(data) {
			return dst, fmt.Errorf("result %d: backend name runs past the end", i)
		}
		r.Backend = names.string(data[off+resultHeader : end])
		off = end
		if c.version == 2 {
			var err error
			if r.Err, off, err = errText(data, off, &texts); err != nil {
				return dst, fmt.Errorf("result %d: %w", i, err)
			}
		}
		dst = append(dst, r)
	}
	return dst, nil
}

// errText reads the error mark at data[off:] and the new text that may
// follow it, and returns the result's error text and the offset after them.
// texts are the texts met so far in the message; a new one is added.
func errText(data []byte, off int, texts *[]string) (string, int, error) {
	if off == len(data) {
		return "", off, fmt.Errorf("no error mark")
	}
	k := int(data[off])
	off++
	switch {
	case k == 0:
		return "", off, nil
	case k <= len(*texts):
		return (*texts)[k-1], off, nil
	case k > len(*texts)+1:
		return "", off, fmt.Errorf("error text %d, only %d met so far", k, len(*texts))
	}
	if len(data)-off < 2 {
		return "", off, fmt.Errorf("truncated error text")
	}
	n := int(binary.LittleEndian.Uint16(data[off:]))
	off += 2
	if n == 0 || len(data)-off < n {
		return "", off, fmt.Errorf("error text of %d bytes, %d left", n, len(data)-off)
	}
	text := string(data[off : off+n])
	*texts = append(*texts, text)
	return text, off + n, nil
}

// same reports whether s and b hold the same bytes; for short names it is
// quicker than the runtime's comparison (as in the example's codec).
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

// interner hands out one string per distinct name of a message, so that a
// batch allocates each name once. It remembers the first few names only.
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
