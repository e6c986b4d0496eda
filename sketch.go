package fanout

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// latencySketch keeps the latencies of a balancer's recent answered calls,
// in buckets a power of two wide cut in eight (each about 12% wide), and
// their quantile q: the delay after which a call is hedged.
//
// It keeps two windows of sketchWindow latencies, the one filling and the
// one before, so the quantile follows the last 1,024 to 2,048 calls. The
// quantile is recomputed every sketchEvery latencies, and reads as 0 until
// sketchMinimum have been seen: a balancer does not hedge before it knows
// what slow is.
type latencySketch struct {
	q        float64
	quantile atomic.Int64 // in nanoseconds; 0 until sketchMinimum latencies

	mu        sync.Mutex
	cur, prev [sketchBuckets]uint32
	n, total  int // latencies in cur, and ever (up to sketchMinimum)
	pending   int // latencies since the quantile was computed
}

const (
	sketchBuckets = 16 + 60*8 // 0-15ns one each, then eight a power of two
	sketchWindow  = 1024
	sketchEvery   = 16
	sketchMinimum = 100
)

func newLatencySketch(q float64) *latencySketch { return &latencySketch{q: q} }

// bucketOf returns the bucket of a latency of d.
func bucketOf(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 16 {
		return int(v)
	}
	e := bits.Len64(v) - 1 // v is in [2^e, 2^(e+1)), e >= 4
	return 16 + (e-4)*8 + int(v>>(e-3)&7)
}

// bucketTop returns the least latency above bucket i's.
func bucketTop(i int) time.Duration {
	if i < 16 {
		return time.Duration(i + 1)
	}
	e, sub := (i-16)/8+4, (i-16)%8
	return time.Duration(uint64(9+sub) << (e - 3))
}

// observe adds a latency.
func (s *latencySketch) observe(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == sketchWindow {
		s.prev, s.cur, s.n = s.cur, [sketchBuckets]uint32{}, 0
	}
	s.cur[bucketOf(d)]++
	s.n++
	if s.total < sketchMinimum {
		s.total++
	}
	if s.pending++; s.pending >= sketchEvery && s.total >= sketchMinimum {
		s.pending = 0
		s.quantile.Store(int64(s.compute()))
	}
}

// compute returns the quantile of the latencies in both windows: the top of
// the bucket that holds it, so that it errs on the slow side.
func (s *latencySketch) compute() time.Duration {
	var count uint64
	for i := range s.cur {
		count += uint64(s.cur[i]) + uint64(s.prev[i])
	}
	rank := uint64(s.q * float64(count))
	var seen uint64
	for i := range s.cur {
		if seen += uint64(s.cur[i]) + uint64(s.prev[i]); seen > rank {
			return bucketTop(i)
		}
	}
	return bucketTop(sketchBuckets - 1)
}

// delay returns the quantile, or 0 while fewer than sketchMinimum
// latencies have been seen.
func (s *latencySketch) delay() time.Duration { return time.Duration(s.quantile.Load()) }

// hedgeBudget is a token bucket of hedges: each call earns share of a
// hedge, a hedge spends one, and at most a window's worth are saved up:
// what hedgeWindow calls earn, and never fewer than hedgeBurst hedges. So
// over any run of calls, hedges are at most the share of them plus what
// was saved, and a run of slow calls can spend what quiet calls before it
// earned.
type hedgeBudget struct {
	earn   int64        // per call, in millionths of a hedge
	limit  int64        // the most saved up, in millionths of a hedge
	tokens atomic.Int64 // in millionths of a hedge
}

const (
	hedgeToken  = 1_000_000
	hedgeBurst  = 10   // hedges saved up, at least
	hedgeWindow = 1000 // calls whose share of hedges is saved up
)

func newHedgeBudget(share float64) hedgeBudget {
	earn := int64(share * hedgeToken)
	return hedgeBudget{earn: earn, limit: max(hedgeBurst*hedgeToken, hedgeWindow*earn)}
}

// deposit adds a call's share of a hedge.
func (h *hedgeBudget) deposit() {
	if v := h.tokens.Add(h.earn); v > h.limit {
		h.tokens.CompareAndSwap(v, h.limit)
	}
}

// take spends a hedge, if there is one.
func (h *hedgeBudget) take() bool {
	for {
		v := h.tokens.Load()
		if v < hedgeToken {
			return false
		}
		if h.tokens.CompareAndSwap(v, v-hedgeToken) {
			return true
		}
	}
}
