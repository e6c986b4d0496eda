package transport

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// Codec encodes and decodes batches of T for the wire.
//
// Name identifies the encoding in the handshake: a client and a server agree
// on a call only if their codec names match exactly, so two codecs with
// different byte layouts must have different names.
//
// Append appends the encoding of items to dst and returns the extended slice.
// Decode decodes one encoded batch from data, appends the items to dst and
// returns the extended slice; it must reject malformed input with an error,
// never panic, and must not retain data after it returns. Codecs must be safe
// for concurrent use.
type Codec[T any] interface {
	Name() string
	Append(dst []byte, items []T) ([]byte, error)
	Decode(dst []T, data []byte) ([]T, error)
}

// Int64 returns the codec "int64le": each item as 8 bytes, little-endian
// two's complement, with no framing of its own (the count is the payload
// length divided by 8).
func Int64() Codec[int64] { return int64Codec{} }

// Float64 returns the codec "float64le": each item as the 8 bytes of its IEEE
// 754 binary representation, little-endian.
func Float64() Codec[float64] { return float64Codec{} }

// JSON returns the codec "json": the batch as one JSON array, encoded with
// encoding/json. It carries any type encoding/json can, at the cost of
// reflection; the name does not include the Go type, so both sides must agree
// on T by other means.
func JSON[T any]() Codec[T] { return jsonCodec[T]{} }

type int64Codec struct{}

func (int64Codec) Name() string { return "int64le" }

func (int64Codec) Append(dst []byte, items []int64) ([]byte, error) {
	dst = slices.Grow(dst, 8*len(items))
	for _, v := range items {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(v))
	}
	return dst, nil
}

func (int64Codec) Decode(dst []int64, data []byte) ([]int64, error) {
	if len(data)%8 != 0 {
		return dst, fmt.Errorf("int64le: %d bytes is not a whole number of 8-byte items", len(data))
	}
	m, n := len(dst), len(data)/8
	dst = slices.Grow(dst, n)[:m+n]
	out := dst[m:]
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(data[8*i:]))
	}
	return dst, nil
}

type float64Codec struct{}

func (float64Codec) Name() string { return "float64le" }

func (float64Codec) Append(dst []byte, items []float64) ([]byte, error) {
	dst = slices.Grow(dst, 8*len(items))
	for _, v := range items {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
	}
	return dst, nil
}

func (float64Codec) Decode(dst []float64, data []byte) ([]float64, error) {
	if len(data)%8 != 0 {
		return dst, fmt.Errorf("float64le: %d bytes is not a whole number of 8-byte items", len(data))
	}
	m, n := len(dst), len(data)/8
	dst = slices.Grow(dst, n)[:m+n]
	out := dst[m:]
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:]))
	}
	return dst, nil
}

type jsonCodec[T any] struct{}

func (jsonCodec[T]) Name() string { return "json" }

func (jsonCodec[T]) Append(dst []byte, items []T) ([]byte, error) {
	b, err := json.Marshal(items)
	if err != nil {
		return dst, fmt.Errorf("json: %w", err)
	}
	return append(dst, b...), nil
}

func (jsonCodec[T]) Decode(dst []T, data []byte) ([]T, error) {
	var items []T
	if err := json.Unmarshal(data, &items); err != nil {
		return dst, fmt.Errorf("json: %w", err)
	}
	return append(dst, items...), nil
}
