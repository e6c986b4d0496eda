package xyz

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// Result is an answer of the middle layer: a route's result and the name of
// the route whose backend computed it.
type Result struct {
	Value   int64
	Backend string
}

// Tag returns a backend that passes batches to b and labels each of its
// answers with route, so that the answers of a router over tagged backends
// say which backend processed each number.
//
// An error the backend computed itself (an overflow) already names its
// number and is returned as it is. Any other failure (the backend is down,
// the call timed out) is wrapped with the numbers of the batch, so that the
// user learns which numbers were not processed.
func Tag(route string, b fanout.Backend[int64, int64]) fanout.Backend[int64, Result] {
	return fanout.BackendFunc[int64, Result](func(ctx context.Context, items []int64) ([]Result, error) {
		values, err := b.Process(ctx, items)
		if err != nil {
			var re *transport.RemoteError
			if errors.Is(err, ErrOverflow) || errors.As(err, &re) && re.Code == transport.CodeBackend {
				return nil, err
			}
			return nil, fmt.Errorf("%s could not process %s: %w", route, describe(items), err)
		}
		out := make([]Result, len(values))
		for i, v := range values {
			out[i] = Result{Value: v, Backend: route}
		}
		return out, nil
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

// ResultCodec returns the binary codec of [Result], named "xyz.result/1".
// Each result is encoded as
//
//	value    int64, 8 bytes little-endian
//	length   uint8, length of the backend name in bytes
//	backend  length bytes
//
// and a batch is the concatenation of its results. A backend name longer
// than 255 bytes cannot be encoded. Decode checks every length before it
// allocates, and gives results that share a backend name the same string.
func ResultCodec() transport.Codec[Result] {
	return resultCodec{}
}

type resultCodec struct{}

const (
	resultHeader  = 8 + 1 // value and name length
	maxBackendLen = 255
)

func (resultCodec) Name() string { return "xyz.result/1" }

func (resultCodec) Append(dst []byte, items []Result) ([]byte, error) {
	size := 0
	for i := range items {
		if n := len(items[i].Backend); n > maxBackendLen {
			return dst, fmt.Errorf("xyz: result %d: backend name of %d bytes is longer than %d", i, n, maxBackendLen)
		}
		size += resultHeader + len(items[i].Backend)
	}
	dst = slices.Grow(dst, size)
	for i := range items {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(items[i].Value))
		dst = append(dst, byte(len(items[i].Backend)))
		dst = append(dst, items[i].Backend...)
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
	var names interner
	for off := 0; off < len(data); {
		value := int64(binary.LittleEndian.Uint64(data[off:]))
		end := off + resultHeader + int(data[off+8])
		dst = append(dst, Result{Value: value, Backend: names.string(data[off+resultHeader : end])})
		off = end
	}
	return dst, nil
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
		if s == string(b) {
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
