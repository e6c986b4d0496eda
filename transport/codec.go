package transport

import (
	"encoding/json"
	"fmt"

	"github.com/seed-c94cd834/fanout/transport/internal/wire"
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

// A MinSizer is a [Codec] that can tell, before encoding a batch, the
// fewest bytes a batch of n items can take. It is optional. A [Server]
// whose response codec is one refuses a request whose answer cannot fit
// the client's maximum message size before its backend does the work, and
// a [Client] refuses such a call before sending it; a Client whose request
// codec is one cuts a large call into requests that fit the server's
// maximum ([WithChunks]). MinSize must not overstate: for a codec whose
// items all take the same size, it is exact.
type MinSizer interface {
	MinSize(n int) int
}

// minSize returns the fewest bytes c can encode n items to, or 0 if c does
// not say.
func minSize[T any](c Codec[T], n int) int {
	if ms, ok := c.(MinSizer); ok {
		return ms.MinSize(n)
	}
	return 0
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

func (int64Codec) MinSize(n int) int { return 8 * n }

func (int64Codec) Append(dst []byte, items []int64) ([]byte, error) {
	return wire.AppendInt64s(dst, items), nil
}

func (int64Codec) Decode(dst []int64, data []byte) ([]int64, error) {
	return wire.DecodeInt64s(dst, data)
}

type float64Codec struct{}

func (float64Codec) Name() string { return "float64le" }

func (float64Codec) MinSize(n int) int { return 8 * n }

func (float64Codec) Append(dst []byte, items []float64) ([]byte, error) {
	return wire.AppendFloat64s(dst, items), nil
}

func (float64Codec) Decode(dst []float64, data []byte) ([]float64, error) {
	return wire.DecodeFloat64s(dst, data)
}

type jsonCodec[T any] struct{}

func (jsonCodec[T]) Name() string { return "json" }

// MinSize counts the brackets, one byte per item and the commas.
func (jsonCodec[T]) MinSize(n int) int { return 2 + max(2*n-1, 0) }

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

// checkCodecName panics if a codec's name cannot be sent in the handshake:
// that is a programming error in the codec, found when a server or client is
// built rather than as a confusing handshake failure later.
func checkCodecName(name string) {
	if len(name) > wire.MaxCodecName {
		panic(fmt.Sprintf("transport: codec name %.20q... is %d bytes long, the limit is %d", name, len(name), wire.MaxCodecName))
	}
}
