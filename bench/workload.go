package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The workloads.
const (
	smallBatch        = 10        // numbers per call of the latency and throughput workloads
	throughputCallers = 64        // concurrent callers of the throughput workload
	burstCallers      = 64        // bulk calls sent at once to measure fanout's memory bound
	bulkBatch         = 1_000_000 // numbers per call of the bulk workload
	bulkRange         = 1_000_000 // bulk numbers are in [-bulkRange, bulkRange]

	// callTimeout bounds every call; a call that takes longer is an error.
	callTimeout = time.Minute
	// problemsShown is how many problems of a run are printed in full.
	problemsShown = 5
)

// figures are the measurements of one system in one repetition.
type figures struct {
	P50, P99       time.Duration // latency of sequential 10-number calls
	RequestsPerSec float64       // 64 concurrent callers of 10-number calls
	CPUPerRequest  time.Duration // CPU time of middle, x, y and z per call of those
	NumbersPerSec  float64       // sequential 1,000,000-number calls
	PeakRSS        int64         // the middle layer's peak resident set (VmHWM), bytes
	BurstPeakRSS   int64         // the same after a burst of bulk calls at once (fanout only; 0 if not run)
	Wrong, Errors  int64         // wrong answers and failed calls, warm-up included
}

// inputs are the batches sent to every system, the same for all.
type inputs struct {
	small [][]int64 // smallBatch numbers of all routes, from the whole range whose results fit
	bulk  [][]int64 // bulkBatch numbers in [-bulkRange, bulkRange]
}

func newInputs() *inputs {
	rng := rand.New(rand.NewPCG(1, 2))
	batch := func(size int, number func() int64) []int64 {
		b := make([]int64, size)
		for i := range b {
			b[i] = number()
		}
		return b
	}
	in := &inputs{}
	for range 1024 {
		in.small = append(in.small, batch(smallBatch, func() int64 {
			switch rng.IntN(3) {
			case 0:
				return -1 - rng.Int64N(maxSquared)
			case 1:
				return 2 * rng.Int64N(math.MaxInt64/2)
			default:
				return 2*rng.Int64N(maxZ/2) + 1
			}
		}))
	}
	for range 3 {
		in.bulk = append(in.bulk, batch(bulkBatch, func() int64 {
			return rng.Int64N(2*bulkRange+1) - bulkRange
		}))
	}
	return in
}

// measure starts fresh processes of sys, runs every workload against them
// for d each, and stops them. For fanout it then sends burst bulk calls at
// once, if burst is positive, and measures the middle layer's peak memory
// again.
func measure(ctx context.Context, sys system, in *inputs, d time.Duration, burst int, log io.Writer) (figures, error) {
	dep, err := deploy(ctx, sys)
	if err != nil {
		return figures{}, err
	}
	defer dep.stop()
	c := &checker{system: sys.name, log: log}
	var f figures

	// Warm up: connections are made, pools fill, the runtimes settle.
	if _, err := runLoad(ctx, dep.target, throughputCallers, d/5, in.small, c); err != nil {
		return f, err
	}

	lat, err := runLoad(ctx, dep.target, 1, d, in.small, c)
	if err != nil {
		return f, err
	}
	f.P50, f.P99 = percentile(lat.latencies, 0.50), percentile(lat.latencies, 0.99)

	cpuBefore, err := cpuSeconds(dep.servers)
	if err != nil {
		return f, err
	}
	thr, err := runLoad(ctx, dep.target, throughputCallers, d, in.small, c)
	if err != nil {
		return f, err
	}
	cpuAfter, err := cpuSeconds(dep.servers)
	if err != nil {
		return f, err
	}
	f.RequestsPerSec = thr.perSecond(thr.requests)
	if thr.requests > 0 {
		f.CPUPerRequest = time.Duration((cpuAfter - cpuBefore) / float64(thr.requests) * float64(time.Second))
	}

	bulk, err := runLoad(ctx, dep.target, 1, d, in.bulk, c)
	if err != nil {
		return f, err
	}
	f.NumbersPerSec = bulk.perSecond(bulk.numbers)

	if f.PeakRSS, err = dep.middle().peakRSS(); err != nil {
		return f, err
	}
	if sys.name == fanoutName && burst > 0 {
		if err := runBurst(ctx, dep.target, burst, in.bulk, c); err != nil {
			return f, err
		}
		if f.BurstPeakRSS, err = dep.middle().peakRSS(); err != nil {
			return f, err
		}
	}
	f.Wrong, f.Errors = c.wrong.Load(), c.errors.Load()
	return f, ctx.Err()
}

// load is what a run of callers counted.
type load struct {
	requests, numbers int64 // calls answered, and their numbers
	elapsed           time.Duration
	latencies         []time.Duration // of the calls answered
}

func (l load) perSecond(n int64) float64 { return float64(n) / l.elapsed.Seconds() }

// runLoad runs callers goroutines, each sending batches from pool one call
// after another for d (a call in flight at the end is waited for), and
// checks every answer with c.
func runLoad(ctx context.Context, t target, callers int, d time.Duration, pool [][]int64, c *checker) (load, error) {
	clients := make([]caller, callers)
	for i := range clients {
		var err error
		if clients[i], err = t.caller(); err != nil {
			return load{}, err
		}
	}
	loads := make([]load, callers)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for g, client := range clients {
		wg.Go(func() {
			l := &loads[g]
			for i := g * len(pool) / callers; ctx.Err() == nil && time.Now().Before(end); i++ {
				batch := pool[i%len(pool)]
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				t0 := time.Now()
				out, err := client.Process(cctx, batch)
				elapsed := time.Since(t0)
				cancel()
				if err != nil {
					c.failed(err)
					continue
				}
				c.check(batch, out)
				l.requests++
				l.numbers += int64(len(batch))
				l.latencies = append(l.latencies, elapsed)
			}
		})
	}
	wg.Wait()
	total := load{elapsed: time.Since(start)}
	for _, l := range loads {
		total.requests += l.requests
		total.numbers += l.numbers
		total.latencies = append(total.latencies, l.latencies...)
	}
	return total, ctx.Err()
}

// runBurst sends callers bulk calls at once, one per caller, and checks
// their answers.
func runBurst(ctx context.Context, t target, callers int, pool [][]int64, c *checker) error {
	clients := make([]caller, callers)
	for i := range clients {
		var err error
		if clients[i], err = t.caller(); err != nil {
			return err
		}
	}
	var wg sync.WaitGroup
	for g, client := range clients {
		wg.Go(func() {
			batch := pool[g%len(pool)]
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			out, err := client.Process(cctx, batch)
			if err != nil {
				c.failed(err)
				return
			}
			c.check(batch, out)
		})
	}
	wg.Wait()
	return ctx.Err()
}

// checker checks answers against the routing table and counts the problems
// of a system's run, printing the first few.
type checker struct {
	system        string
	log           io.Writer
	wrong, errors atomic.Int64
	shown         atomic.Int64
}

// check counts the answers in out that are not what the table says for
// batch.
func (c *checker) check(batch []int64, out []Result) {
	if len(out) != len(batch) {
		c.wrong.Add(int64(len(batch)))
		c.problem("%d answers for %d numbers", len(out), len(batch))
		return
	}
	for i, n := range batch {
		want, err := expected(n)
		if err != nil || out[i] != want {
			c.wrong.Add(1)
			c.problem("%d answered %d by backend %q (error %q), want %d by backend %q (%v)",
				n, out[i].Value, out[i].Backend, out[i].Err, want.Value, want.Backend, err)
		}
	}
}

func (c *checker) failed(err error) {
	c.errors.Add(1)
	c.problem("call failed: %v", err)
}

func (c *checker) problem(format string, args ...any) {
	if n := c.shown.Add(1); n <= problemsShown {
		fmt.Fprintf(c.log, "PROBLEM (%s): %s\n", c.system, fmt.Sprintf(format, args...))
	}
}

// percentile returns the q-quantile of durations (nearest rank), or 0 for
// none.
func percentile(durations []time.Duration, q float64) time.Duration {
	if len(durations) == 0 {
		return 0
	}
	s := slices.Clone(durations)
	slices.Sort(s)
	return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)]
}
