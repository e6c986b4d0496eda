package transport_test

import (
	"encoding/hex"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/transport"
)

func TestCodecInt64RoundTrip(t *testing.T) {
	many := make([]int64, 1000)
	for i := range many {
		many[i] = int64(i)*0x0101010101 - 500
	}
	tests := []struct {
		name  string
		items []int64
	}{
		{"empty", []int64{}},
		{"zero", []int64{0}},
		{"signs", []int64{1, -1, 2, -2}},
		{"extremes", []int64{math.MinInt64, math.MaxInt64, math.MinInt64 + 1, math.MaxInt64 - 1}},
		{"many", many},
	}
	c := transport.Int64()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := c.Append(nil, tc.items)
			require.NoError(t, err)
			require.Len(t, b, 8*len(tc.items))

			got, err := c.Decode([]int64{}, b)
			require.NoError(t, err)
			require.Equal(t, tc.items, got)
		})
	}
}

func TestCodecFloat64RoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		items []float64
	}{
		{"empty", []float64{}},
		{"zeros", []float64{0, math.Copysign(0, -1)}},
		{"infinities", []float64{math.Inf(1), math.Inf(-1)}},
		{"NaN", []float64{math.NaN()}},
		{"NaN payloads", []float64{
			math.Float64frombits(0x7ff8000000000001), // quiet, with payload
			math.Float64frombits(0xfff8000000000000), // negative quiet
			math.Float64frombits(0x7ff0000000000001), // signalling
		}},
		{"finite", []float64{1, -1, math.Pi, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 1e-300}},
	}
	float64Bits := func(fs []float64) []uint64 {
		bits := make([]uint64, len(fs))
		for i, f := range fs {
			bits[i] = math.Float64bits(f)
		}
		return bits
	}
	c := transport.Float64()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := c.Append(nil, tc.items)
			require.NoError(t, err)
			require.Len(t, b, 8*len(tc.items))

			got, err := c.Decode(nil, b)
			require.NoError(t, err)
			// Compare bits: NaN != NaN, and 0 == -0, so == would hide both.
			require.Equal(t, float64Bits(tc.items), float64Bits(got))
		})
	}
}

func TestCodecJSONRoundTrip(t *testing.T) {
	t.Run("int64", func(t *testing.T) {
		c := transport.JSON[int64]()
		for _, items := range [][]int64{
			{},
			{0},
			{1, -2, 3},
			{math.MinInt64, math.MaxInt64}, // beyond float64 precision: must stay exact
		} {
			b, err := c.Append(nil, items)
			require.NoError(t, err)
			got, err := c.Decode([]int64{}, b)
			require.NoError(t, err)
			require.Equal(t, items, got, "encoded as %s", b)
		}
	})

	t.Run("struct", func(t *testing.T) {
		type point struct {
			Name  string            `json:"name"`
			X     float64           `json:"x"`
			Y     float64           `json:"y,omitempty"`
			Tags  []string          `json:"tags"`
			Attrs map[string]string `json:"attrs,omitempty"`
			Next  *point            `json:"next,omitempty"`
		}
		c := transport.JSON[point]()
		items := []point{
			{},
			{Name: "origin", Tags: []string{}},
			{Name: "ünïcödé \"quoted\"\n", X: -1.5, Y: 1e300, Tags: []string{"a", "b"}},
			{Name: "linked", Attrs: map[string]string{"k": "v"}, Next: &point{Name: "tail"}},
		}
		b, err := c.Append(nil, items)
		require.NoError(t, err)
		got, err := c.Decode(nil, b)
		require.NoError(t, err)
		require.Equal(t, items, got)
	})
}

func TestCodecDecodeAppends(t *testing.T) {
	t.Run("int64", func(t *testing.T) {
		c := transport.Int64()
		b, err := c.Append(nil, []int64{3, 4})
		require.NoError(t, err)
		got, err := c.Decode([]int64{1, 2}, b)
		require.NoError(t, err)
		require.Equal(t, []int64{1, 2, 3, 4}, got)
	})
	t.Run("float64", func(t *testing.T) {
		c := transport.Float64()
		b, err := c.Append(nil, []float64{3.5, -4})
		require.NoError(t, err)
		got, err := c.Decode([]float64{1, 2}, b)
		require.NoError(t, err)
		require.Equal(t, []float64{1, 2, 3.5, -4}, got)
	})
	t.Run("json", func(t *testing.T) {
		c := transport.JSON[string]()
		b, err := c.Append(nil, []string{"c", "d"})
		require.NoError(t, err)
		got, err := c.Decode([]string{"a", "b"}, b)
		require.NoError(t, err)
		require.Equal(t, []string{"a", "b", "c", "d"}, got)
	})
	t.Run("append keeps dst", func(t *testing.T) {
		b, err := transport.Int64().Append([]byte("head"), []int64{1})
		require.NoError(t, err)
		require.Equal(t, "head\x01\x00\x00\x00\x00\x00\x00\x00", string(b))
	})
}

func TestCodecDecodeMalformed(t *testing.T) {
	binary := []struct {
		name   string
		decode func([]byte) error
	}{
		{"int64le", func(b []byte) error { _, err := transport.Int64().Decode(nil, b); return err }},
		{"float64le", func(b []byte) error { _, err := transport.Float64().Decode(nil, b); return err }},
	}
	for _, c := range binary {
		for _, n := range []int{1, 7, 9, 15, 17} {
			require.Error(t, c.decode(make([]byte, n)), "%s: %d bytes", c.name, n)
		}
	}

	tests := []struct {
		name string
		data string
	}{
		{"empty", ""},
		{"truncated", "[1,2"},
		{"object", `{"a":1}`},
		{"string item", `["x"]`},
		{"fraction", "[1.5]"},
		{"overflow", "[9223372036854775808]"},
		{"trailing garbage", "[1] x"},
	}
	for _, tc := range tests {
		t.Run("json/"+tc.name, func(t *testing.T) {
			_, err := transport.JSON[int64]().Decode(nil, []byte(tc.data))
			require.Error(t, err)
		})
	}

	t.Run("json/unencodable", func(t *testing.T) {
		_, err := transport.JSON[float64]().Append(nil, []float64{math.NaN()})
		require.Error(t, err)
	})
}

func TestCodecNames(t *testing.T) {
	names := []string{
		transport.Int64().Name(),
		transport.Float64().Name(),
		transport.JSON[int64]().Name(),
	}
	// The names are on the wire: they are part of the protocol.
	require.Equal(t, []string{"int64le", "float64le", "json"}, names)
	seen := make(map[string]bool)
	for _, n := range names {
		require.NotEmpty(t, n)
		require.LessOrEqual(t, len(n), 255, "a codec name must fit the handshake's 1-byte length")
		require.False(t, seen[n], "duplicate codec name %q", n)
		seen[n] = true
	}
}

func TestCodecWireBytes(t *testing.T) {
	int64Tests := []struct {
		v    int64
		want string
	}{
		{0, "0000000000000000"},
		{1, "0100000000000000"},
		{-1, "ffffffffffffffff"},
		{-2, "feffffffffffffff"},
		{0x0102030405060708, "0807060504030201"},
		{math.MinInt64, "0000000000000080"},
		{math.MaxInt64, "ffffffffffffff7f"},
	}
	for _, tc := range int64Tests {
		b, err := transport.Int64().Append(nil, []int64{tc.v})
		require.NoError(t, err)
		require.Equal(t, tc.want, hex.EncodeToString(b), "int64 %d", tc.v)
	}

	float64Tests := []struct {
		v    float64
		want string
	}{
		{0, "0000000000000000"},
		{math.Copysign(0, -1), "0000000000000080"},
		{1, "000000000000f03f"},
		{-2, "00000000000000c0"},
		{math.Inf(1), "000000000000f07f"},
		{math.Inf(-1), "000000000000f0ff"},
	}
	for _, tc := range float64Tests {
		b, err := transport.Float64().Append(nil, []float64{tc.v})
		require.NoError(t, err)
		require.Equal(t, tc.want, hex.EncodeToString(b), "float64 %v", tc.v)
	}

	b, err := transport.Int64().Append(nil, []int64{1, -2})
	require.NoError(t, err)
	require.Equal(t, "0100000000000000"+"feffffffffffffff", hex.EncodeToString(b), "items follow each other with no framing")

	b, err = transport.JSON[int64]().Append(nil, []int64{1, -2, 3})
	require.NoError(t, err)
	require.Equal(t, "[1,-2,3]", string(b))
}

// TestCodecBinaryNoAllocs checks that the binary codecs cost no allocation
// per item (or per call) when the destination is big enough.
func TestCodecBinaryNoAllocs(t *testing.T) {
	const n = 1000
	ints := make([]int64, n)
	floats := make([]float64, n)
	for i := range ints {
		ints[i] = int64(i) - n/2
		floats[i] = float64(i) / 3
	}
	wire := make([]byte, 0, 8*n)
	intDst := make([]int64, 0, n)
	floatDst := make([]float64, 0, n)
	i64, f64 := transport.Int64(), transport.Float64()

	encodedInts, err := i64.Append(nil, ints)
	require.NoError(t, err)
	encodedFloats, err := f64.Append(nil, floats)
	require.NoError(t, err)

	tests := []struct {
		name string
		run  func()
	}{
		{"int64 Append", func() { wire, err = i64.Append(wire[:0], ints) }},
		{"int64 Decode", func() { intDst, err = i64.Decode(intDst[:0], encodedInts) }},
		{"float64 Append", func() { wire, err = f64.Append(wire[:0], floats) }},
		{"float64 Decode", func() { floatDst, err = f64.Decode(floatDst[:0], encodedFloats) }},
	}
	for _, tc := range tests {
		allocs := testing.AllocsPerRun(100, tc.run)
		require.NoError(t, err, tc.name)
		require.Zero(t, allocs, "%s allocates", tc.name)
	}
	require.Len(t, wire, 8*n)
	require.Equal(t, ints, intDst)
}

type longNameCodec struct{ transport.Codec[int64] }

func (longNameCodec) Name() string { return strings.Repeat("n", 256) }

func TestCodecNameTooLongPanics(t *testing.T) {
	long := longNameCodec{transport.Int64()}
	require.PanicsWithValue(t, `transport: codec name "nnnnnnnnnnnnnnnnnnnn"... is 256 bytes long, the limit is 255`, func() {
		transport.NewClient[int64, int64]("127.0.0.1:1", long, transport.Int64())
	})
	require.Panics(t, func() {
		transport.NewServer[int64, int64](doubler, transport.Int64(), long)
	})
}
