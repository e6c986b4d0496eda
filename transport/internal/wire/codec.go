package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// AppendInt64s appends items as "int64le": each as 8 bytes, little-endian
// two's complement.
func AppendInt64s(dst []byte, items []int64) []byte {
	dst = slices.Grow(dst, 8*len(items))
	for _, v := range items {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(v))
	}
	return dst
}

// DecodeInt64s decodes "int64le" data and appends the items to dst. Data
// that is not a whole number of items is an error.
func DecodeInt64s(dst []int64, data []byte) ([]int64, error) {
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

// AppendFloat64s appends items as "float64le": each as the 8 bytes of its
// IEEE 754 binary representation, little-endian.
func AppendFloat64s(dst []byte, items []float64) []byte {
	dst = slices.Grow(dst, 8*len(items))
	for _, v := range items {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
	}
	return dst
}

// DecodeFloat64s decodes "float64le" data and appends the items to dst.
// Data that is not a whole number of items is an error.
func DecodeFloat64s(dst []float64, data []byte) ([]float64, error) {
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
