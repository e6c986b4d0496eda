package xyz_test

import (
	"bytes"
	"context"
	"math"
	"strconv"
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
	{{Value: 9, Backend: "x"}, {Backend: "z", Err: "z: down"}, {Value: 2, Backend: "y"}, {Backend: "z", Err: "z: down"},
		{Backend: "x", Err: "x: 1"}, {Value: 5, Backend: "z", Err: strings.Repeat("e", 300)}, {Backend: "y", Err: "x: 1"}},
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
	batch := []xyz.Result{
		{Value: -3, Backend: "x"},
		{Value: 258, Backend: "yy"},
		{Backend: "z", Err: "ab"},
		{Backend: "x", Err: "c"},
		{Backend: "z", Err: "ab"},
	}
	data, err := c.Append([]byte{0xAA}, batch)
	require.NoError(t, err)
	require.Equal(t, []byte{
		0xAA, // what dst held before
		0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 'x', 0,
		0x02, 0x01, 0, 0, 0, 0, 0, 0, 2, 'y', 'y', 0,
		0, 0, 0, 0, 0, 0, 0, 0, 1, 'z', 1, 2, 0, 'a', 'b', // the first error text
		0, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 2, 1, 0, 'c', // the second
		0, 0, 0, 0, 0, 0, 0, 0, 1, 'z', 1, // the first again
	}, data)

	got, err := c.Decode([]xyz.Result{{Value: 1, Backend: "kept"}}, data[1:])
	require.NoError(t, err)
	require.Equal(t, append([]xyz.Result{{Value: 1, Backend: "kept"}}, batch...), got)
}

func TestResultCodecErrorTextLimits(t *testing.T) {
	c := xyz.ResultCodec()
	batch := make([]xyz.Result, 255)
	for i := range batch {
		batch[i] = xyz.Result{Backend: "x", Err: strconv.Itoa(i)}
	}
	data, err := c.Append(nil, batch)
	require.NoError(t, err, "255 distinct texts fit")
	got, err := c.Decode(nil, data)
	require.NoError(t, err)
	require.Equal(t, batch, got)

	dst := []byte{1}
	out, err := c.Append(dst, append(batch, xyz.Result{Backend: "x", Err: "one more"}))
	require.EqualError(t, err, "xyz: result 255: more than 255 distinct error texts in one batch")
	require.Equal(t, dst, out)

	long := xyz.Result{Backend: "x", Err: strings.Repeat("e", 65535)}
	data, err = c.Append(nil, []xyz.Result{long})
	require.NoError(t, err, "a text of 65535 bytes fits")
	got, err = c.Decode(nil, data)
	require.NoError(t, err)
	require.Equal(t, []xyz.Result{long}, got)

	out, err = c.Append(dst, []xyz.Result{{Backend: "x", Err: strings.Repeat("e", 65536)}})
	require.EqualError(t, err, "xyz: result 0: error text of 65536 bytes is longer than 65535")
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
		{[]byte{1, 2, 3}, "xyz: result 0: truncated: 3 bytes left, a result takes at least 10"},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 0, 7}, "xyz: result 1: truncated: 1 bytes left, a result takes at least 10"},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 3, 'x', 0}, "xyz: result 0: backend name of 3 bytes and error mark, only 2 bytes left"},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 'x'}, "xyz: result 0: backend name of 1 bytes and error mark, only 1 bytes left"},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 255}, "xyz: result 0: backend name of 255 bytes and error mark, only 0 bytes left"},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 2, 1, 0, 'e'}, "xyz: result 0: error text 2, only 0 met so far"},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 1, 1}, "xyz: result 0: truncated error text length"},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 1, 0, 0}, "xyz: result 0: empty error text"},
		{[]byte{0, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 1, 3, 0, 'e'}, "xyz: result 0: error text of 3 bytes, only 1 bytes left"},
		{[]byte{
			0, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 1, 1, 0, 'e',
			0, 0, 0, 0, 0, 0, 0, 0, 1, 'x', 2, 1, 0, 'e',
		}, "xyz: result 1: error text repeated instead of referred to"},
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

	for i := range batch {
		if i%2 == 0 {
			batch[i].Err = "failure of " + names[i%3]
		}
	}
	data, err = c.Append(nil, batch)
	require.NoError(t, err)
	got, err = c.Decode(nil, data)
	require.NoError(t, err)
	require.Equal(t, batch, got)
	require.Same(t, unsafe.StringData(got[0].Err), unsafe.StringData(got[6].Err), "equal texts share one string")
	allocs = testing.AllocsPerRun(10, func() {
		if _, err := c.Decode(dst, data); err != nil {
			t.Fatal(err)
		}
	})
	require.Equal(t, 6.0, allocs, "one allocation per distinct backend name and error text")
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
