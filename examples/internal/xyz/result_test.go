package xyz_test

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

var resultBatches = [][]xyz.Result{
	{},
	{{Value: 9, Backend: "x"}},
	{{Value: 9, Backend: "x"}, {Value: 2, Backend: "y"}, {Value: 4, Backend: "z"}, {Value: 1, Backend: "x"}},
	{{Value: math.MinInt64, Backend: ""}, {Value: math.MaxInt64, Backend: strings.Repeat("b", 255)}},
	{{Value: -1, Backend: "a"}, {Value: 0, Backend: "b"}, {Value: 1, Backend: "c"}, {Value: 2, Backend: "d"},
		{Value: 3, Backend: "e"}, {Value: 4, Backend: "f"}, {Value: 5, Backend: "g"}, {Value: 6, Backend: "h"},
		{Value: 7, Backend: "i"}, {Value: 8, Backend: "j"}, {Value: 9, Backend: "a"}},
}

func TestResultCodecRoundTrip(t *testing.T) {
	c := xyz.ResultCodec()
	for _, batch := range resultBatches {
		data, err := c.Append(nil, batch)
		require.NoError(t, err)
		got, err := c.Decode(nil, data)
		require.NoError(t, err)
		require.Equal(t, len(batch), len(got))
		for i := range batch {
			require.Equal(t, batch[i], got[i])
		}
	}
}

func TestResultCodecLayout(t *testing.T) {
	c := xyz.ResultCodec()
	require.Equal(t, "xyz.result/3", c.Name())
	batch := []xyz.Result{
		{Value: -3, Backend: "x"},
		{Value: 258, Backend: "yy"},
		{Backend: ""},
	}
	data, err := c.Append([]byte{0xAA}, batch)
	require.NoError(t, err)
	require.Equal(t, []byte{
		0xAA, // what dst held before
		0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 'x',
		0x02, 0x01, 0, 0, 0, 0, 0, 0, 2, 'y', 'y',
		0, 0, 0, 0, 0, 0, 0, 0, 0,
	}, data)

	got, err := c.Decode([]xyz.Result{{Value: 1, Backend: "kept"}}, data[1:])
	require.NoError(t, err)
	require.Equal(t, append([]xyz.Result{{Value: 1, Backend: "kept"}}, batch...), got)
}

func TestResultCodecRefusesFailures(t *testing.T) {
	// A failure travels in the transport's partial answer: the codec
	// refuses to encode one rather than drop its text.
	c := xyz.ResultCodec()
	dst := []byte{1}
	out, err := c.Append(dst, []xyz.Result{{Value: 1, Backend: "x"}, {Backend: "z", Err: "z: down"}})
	require.EqualError(t, err, "xyz: result 1: a failure, which travels in a partial answer, not in the result codec")
	require.Equal(t, dst, out)
}

func TestResultCodecRefusesLongBackendName(t *testing.T) {
	c := xyz.ResultCodec()
	dst := []byte{1, 2}
	got, err := c.Append(dst, []xyz.Result{{Value: 1, Backend: "x"}, {Value: 2, Backend: strings.Repeat("n", 256)}})
	require.EqualError(t, err, "xyz: result 1: backend name of 256 bytes is longer than 255")
	require.Equal(t, dst, got)
}

func TestResultCodecDecodeErrors(t *testing.T) {
	tests := []struct {
		data    []byte
		wantErr string
	}{
		{[]byte{1, 2, 3}, "xyz: result 0: truncated: 3 bytes left, a result takes at least 9"},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 7}, "xyz: result 1: truncated: 1 bytes left, a result takes at least 9"},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 3, 'x', 0}, "xyz: result 0: backend name of 3 bytes, only 2 bytes left"},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 255}, "xyz: result 0: backend name of 255 bytes, only 0 bytes left"},
	}
	c := xyz.ResultCodec()
	for _, tt := range tests {
		dst := []xyz.Result{{Value: 5, Backend: "x"}}
		got, err := c.Decode(dst, tt.data)
		require.EqualError(t, err, tt.wantErr, "data %v", tt.data)
		require.Equal(t, dst, got, "data %v", tt.data)
	}
}

func TestResultCodecDecodeAllocations(t *testing.T) {
	c := xyz.ResultCodec()
	// Names longer than a byte: the runtime does not allocate 1-byte strings.
	names := []string{"backend-x", "backend-y", "backend-z"}
	batch := make([]xyz.Result, 3000)
	for i := range batch {
		batch[i] = xyz.Result{Value: int64(i), Backend: names[i%3]}
	}
	data, err := c.Append(nil, batch)
	require.NoError(t, err)

	got, err := c.Decode(nil, data)
	require.NoError(t, err)
	require.Equal(t, batch, got)
	require.Same(t, unsafe.StringData(got[0].Backend), unsafe.StringData(got[3].Backend), "equal names share one string")

	dst := make([]xyz.Result, 0, len(batch))
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := c.Decode(dst, data); err != nil {
			t.Fatal(err)
		}
	})
	require.Equal(t, 3.0, allocs, "one allocation per distinct backend name")

}

// FuzzResultCodec checks that decoding arbitrary bytes never panics, and that
// whatever decodes encodes back to the same bytes (the encoding is
// canonical), so decode(encode(x)) == x for every batch the decoder yields.
func FuzzResultCodec(f *testing.F) {
	c := xyz.ResultCodec()
	for _, batch := range resultBatches {
		data, err := c.Append(nil, batch)
		require.NoError(f, err)
		f.Add(data)
		if len(data) > 0 {
			f.Add(data[:len(data)-1])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := c.Decode(nil, data)
		if err != nil {
			return
		}
		again, err := c.Append(nil, got)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, again), "re-encoding changed the bytes")
		back, err := c.Decode(nil, again)
		require.NoError(t, err)
		require.Equal(t, got, back)
	})
}

// benchResults is the batch the codec benchmarks encode and decode: 65,536
// answers, one route after another.
func benchResults() []xyz.Result {
	batch := make([]xyz.Result, 65536)
	for i := range batch {
		batch[i] = xyz.Result{Value: int64(i), Backend: xyz.Routes()[i%3]}
	}
	return batch
}

func BenchmarkResultCodecDecode(b *testing.B) {
	c := xyz.ResultCodec()
	batch := benchResults()
	data, err := c.Append(nil, batch)
	require.NoError(b, err)
	dst := make([]xyz.Result, 0, len(batch))
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := c.Decode(dst, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResultCodecAppend(b *testing.B) {
	c := xyz.ResultCodec()
	batch := benchResults()
	data, err := c.Append(nil, batch)
	require.NoError(b, err)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if data, err = c.Append(data[:0], batch); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPerItemReusesItsSpareForCallsItFits checks PerItem's reuse of the
// answers handed back to it: a call of about the spare's size gets it, a
// much smaller one leaves it for later, and handing back an answer while a
// spare is kept allocates nothing.
func TestPerItemReusesItsSpareForCallsItFits(t *testing.T) {
	zeros := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		return make([]int64, len(items)), nil
	})
	r, err := fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify),
		map[string]fanout.Backend[int64, int64]{"x": zeros, "y": zeros, "z": zeros}, fanout.WithPartialResults())
	require.NoError(t, err)
	b := xyz.PerItem(r)
	rec := b.(transport.Recycler[xyz.Result])
	process := func(n int) []xyz.Result {
		out, err := b.Process(context.Background(), make([]int64, n))
		require.NoError(t, err)
		require.Len(t, out, n)
		return out
	}
	large := process(1000)
	rec.Recycle(large)
	small := process(10)
	require.NotSame(t, &large[0], &small[0], "a small call leaves the large spare")
	again := process(800)
	require.Same(t, &large[0], &again[0], "a call the spare fits gets it")

	rec.Recycle(again) // the spare again
	require.Zero(t, testing.AllocsPerRun(100, func() { rec.Recycle(small) }), "a spare is kept already")
}
