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
