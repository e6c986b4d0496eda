package main

import (
	"math"
	"math/bits"
	"time"
)

// A histogram counts durations in nanoseconds with bounded memory: values
// below 256ns have a bucket each, and every power of two above is split into
// 128 buckets, so a quantile is off by less than 1/128 (0.8%).
type histogram struct {
	counts [(64 - subBits + 1) << subBits]uint64
	total  uint64
}

const subBits = 7 // 1<<subBits buckets per power of two

func bucket(v uint64) int {
	const sub = 1 << subBits
	if v < 2*sub {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1) // v>>shift is in [sub, 2*sub)
	return (shift+1)*sub + int(v>>shift) - sub
}

// upper returns the largest value that falls in bucket b.
func upper(b int) uint64 {
	const sub = 1 << subBits
	if b < 2*sub {
		return uint64(b)
	}
	shift := b/sub - 1
	m := uint64(b%sub + sub)
	if shift+bits.Len64(m+1) > 64 { // the last bucket ends at the largest value
		return math.MaxUint64
	}
	return (m+1)<<shift - 1
}

func (h *histogram) record(d time.Duration) {
	h.counts[bucket(uint64(max(d, 0)))]++
	h.total++
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.total += o.total
}

// quantile returns the q-quantile (0 < q <= 1) of the recorded durations,
// rounded up to the end of its bucket, or 0 if nothing was recorded.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	var seen uint64
	for b, n := range h.counts {
		seen += n
		if seen >= max(rank, 1) {
			return time.Duration(min(upper(b), math.MaxInt64))
		}
	}
	return math.MaxInt64
}
