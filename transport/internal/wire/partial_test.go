package wire

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFailuresRoundTrip(t *testing.T) {
	fs := []Failure{
		{What: FailedItem, Code: 1, Message: "3 is odd", Indices: []int{4}},
		{What: FailedRoute, Route: "m/y", Code: 6, Message: "down", Indices: []int{0, 1, 200, 70000}},
	}
	b, err := AppendFailures(nil, fs, 70001, true)
	require.NoError(t, err)
	// count, then the item: kind, route "", code, message, one index.
	require.Equal(t, []byte{2, FailedItem, 0, 1, 8}, b[:5])
	require.Equal(t, "3 is odd", string(b[5:13]))
	require.Equal(t, []byte{1, 4}, b[13:15])
	b = append(b, "results"...)

	got, answered, rest, err := ParseFailures(b, 70001)
	require.NoError(t, err)
	require.True(t, answered)
	require.Equal(t, fs, got)
	require.Equal(t, "results", string(rest))

	b, err = AppendFailures(nil, fs[1:], 70001, false)
	require.NoError(t, err)
	got, answered, rest, err = ParseFailures(b, 70001)
	require.NoError(t, err)
	require.False(t, answered)
	require.Empty(t, rest)
	require.Equal(t, fs[1:], got)
}

func TestAppendFailuresChecksWhatItSends(t *testing.T) {
	for name, f := range map[string]Failure{
		"no index":                {What: FailedRoute, Code: 1},
		"an index past the batch": {What: FailedItem, Code: 1, Indices: []int{3}},
		"a negative index":        {What: FailedItem, Code: 1, Indices: []int{-1}},
		"indices not increasing":  {What: FailedRoute, Code: 1, Indices: []int{1, 1}},
		"an item with two":        {What: FailedItem, Code: 1, Indices: []int{0, 1}},
		"an unknown kind":         {What: 9, Code: 1, Indices: []int{0}},
	} {
		_, err := AppendFailures(nil, []Failure{f}, 3, true)
		require.ErrorIs(t, err, ErrProtocol, name)
	}
	_, err := AppendFailures(nil, nil, 3, true)
	require.ErrorIs(t, err, ErrProtocol)
}

func TestParseFailuresRefusesMalformedInput(t *testing.T) {
	good, err := AppendFailures(nil, []Failure{{What: FailedRoute, Route: "y", Code: 1, Message: "m", Indices: []int{0, 2}}}, 3, false)
	require.NoError(t, err)
	for name, b := range map[string][]byte{
		"empty":                     {},
		"no failures":               {0, 0},
		"more failures than bytes":  {200, 1, 1, 0, 1, 1, 'e', 1, 0, 0},
		"truncated":                 good[:len(good)-1],
		"an index past the batch":   {1, FailedItem, 0, 1, 1, 'e', 1, 3, 0},
		"indices not increasing":    {1, FailedRoute, 0, 1, 1, 'e', 2, 0, 0, 0},
		"a delta that overflows":    {1, FailedRoute, 0, 1, 1, 'e', 2, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0},
		"more indices than bytes":   {1, FailedRoute, 0, 1, 1, 'e', 100, 0, 0},
		"a text longer than itself": {1, FailedItem, 50, 'y'},
		"an answered byte of 2":     {1, FailedItem, 0, 1, 1, 'e', 1, 0, 2},
		"results after none":        append(good, 1),
	} {
		_, _, _, err := ParseFailures(b, 3)
		require.ErrorIs(t, err, ErrProtocol, name)
	}
}

// FuzzParseFailures checks that any bytes either parse into failures that
// AppendFailures accepts and that parse back the same, or are refused with
// ErrProtocol; never a panic, an index outside the batch or an allocation
// larger than the input justifies.
func FuzzParseFailures(f *testing.F) {
	good, err := AppendFailures(nil, []Failure{
		{What: FailedItem, Code: 1, Message: "odd", Indices: []int{2}},
		{What: FailedRoute, Route: "m/y", Code: 6, Message: "down", Indices: []int{0, 1, 3}},
	}, 4, true)
	require.NoError(f, err)
	f.Add(good, 4)
	f.Add(append(good, 9, 9), 4)
	f.Add(good[:len(good)-2], 4)
	f.Add([]byte{1, FailedItem, 0, 1, 1, 'e', 1, 0, 0}, 1)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		n = min(max(n, 0), 1<<20)
		fs, answered, rest, err := ParseFailures(data, n)
		if err != nil {
			require.ErrorIs(t, err, ErrProtocol)
			return
		}
		for _, fl := range fs {
			for _, i := range fl.Indices {
				require.True(t, i >= 0 && i < n, "index %d of %d", i, n)
			}
		}
		again, err := AppendFailures(nil, fs, n, answered)
		require.NoError(t, err)
		back, answered2, rest2, err := ParseFailures(append(again, rest...), n)
		require.NoError(t, err)
		require.Equal(t, fs, back)
		require.Equal(t, answered, answered2)
		require.Equal(t, rest, rest2)
	})
}
