package main

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBucketBounds(t *testing.T) {
	values := []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 40, math.MaxInt64, math.MaxUint64}
	for range 10_000 {
		values = append(values, rand.Uint64()>>rand.IntN(64))
	}
	for _, v := range values {
		b := bucket(v)
		require.Less(t, b, len(histogram{}.counts), "value %d", v)
		u := upper(b)
		require.GreaterOrEqual(t, u, v, "value %d", v)
		require.LessOrEqual(t, u-v, v>>subBits, "value %d: bucket too wide", v)
		require.Equal(t, b, bucket(u), "value %d: upper end %d in another bucket", v, u)
		if b > 0 {
			require.Equal(t, b-1, bucket(upper(b-1)), "buckets %d and %d overlap", b-1, b)
			require.Equal(t, upper(b-1)+1, lowerOf(b), "gap before bucket %d", b)
		}
	}
}

// lowerOf returns the smallest value in bucket b, by search.
func lowerOf(b int) uint64 {
	lo, hi := uint64(0), upper(b)
	for lo < hi {
		mid := lo + (hi-lo)/2
		if bucket(mid) < b {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	require.Equal(t, time.Duration(0), h.quantile(0.5))

	for v := 1; v <= 100; v++ {
		h.record(time.Duration(v))
	}
	require.Equal(t, time.Duration(50), h.quantile(0.5))
	require.Equal(t, time.Duration(99), h.quantile(0.99))
	require.Equal(t, time.Duration(100), h.quantile(1))

	var big histogram
	for v := 1; v <= 1_000_000; v++ {
		big.record(time.Duration(v) * time.Microsecond / 1000) // 1ns to 1ms
	}
	p50 := big.quantile(0.5)
	require.InDelta(t, 500*time.Microsecond, p50, float64(500*time.Microsecond)/128)

	var merged histogram
	merged.merge(&h)
	merged.merge(&h)
	require.Equal(t, uint64(200), merged.total)
	require.Equal(t, time.Duration(50), merged.quantile(0.5))
}

// TestHistogramP999 checks the 0.999-quantile, loadgen's p99.9: its rank
// is exact, ceil(0.999*n) counted in integers, whatever the count (no
// float rounding moves it a call up or down); it is within a bucket's
// 1/128 above the true value, as the other quantiles are; and it picks out
// a tail of more than 0.1% of the calls, not one of 0.1% or less.
func TestHistogramP999(t *testing.T) {
	// Below 256ns a bucket holds one value: the quantile is the value at
	// the rank itself.
	for n := 1; n <= 255; n++ {
		var h histogram
		for v := 1; v <= n; v++ {
			h.record(time.Duration(v))
		}
		rank := (999*n + 999) / 1000 // ceil(0.999*n)
		require.Equal(t, time.Duration(rank), h.quantile(0.999), "%d values", n)
	}
	for _, n := range []uint64{1000, 1001, 9999, 10_000, 123_457, 1_000_000, 10_000_000} {
		want := (999*n + 999) / 1000
		require.Equal(t, want, uint64(math.Ceil(0.999*float64(n))), "rank among %d values", n)
	}

	var big histogram
	for v := 1; v <= 1_000_000; v++ {
		big.record(time.Duration(v)) // 1ns to 1ms, one each
	}
	p999, want := big.quantile(0.999), 999_000*time.Nanosecond
	require.GreaterOrEqual(t, p999, want)
	require.Less(t, float64(p999-want), float64(want)/128)

	for _, tc := range []struct {
		slow int
		want time.Duration
	}{
		{10, time.Millisecond},       // 0.1% of 10,000: p99.9 is a fast call
		{11, 100 * time.Millisecond}, // a call more: p99.9 is a slow one
	} {
		var h histogram
		for range 10_000 - tc.slow {
			h.record(time.Millisecond)
		}
		for range tc.slow {
			h.record(100 * time.Millisecond)
		}
		got := h.quantile(0.999)
		require.GreaterOrEqual(t, got, tc.want, "%d slow calls of 10,000", tc.slow)
		require.Less(t, float64(got-tc.want), float64(tc.want)/128, "%d slow calls of 10,000", tc.slow)
	}
}
