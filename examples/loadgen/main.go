// Command loadgen puts load on the middle layer of the example system and
// measures it. It runs concurrent callers that send batches of random
// numbers, a mix of all three routes in ranges whose results fit in an
// int64, and checks every answer (value and backend) against the routing
// table: the backend must be the route that owns the number, or that
// route's fallback (x-fallback for x, see middle -fallback-x). It shows
// its progress on standard error while it runs, and prints a summary to
// standard output at the end.
//
// Usage:
//
//	loadgen [-addr ADDR] [-batch N] [-concurrency C] [-duration D] [-timeout D] [-json]
//	  [-plot FILE.png] [-tls-cert FILE -tls-key FILE -tls-ca FILE]
//
// Flags:
//
//	-addr ADDR       address of the middle layer (default 127.0.0.1:7000)
//	-batch N         numbers per call (default 10)
//	-concurrency C   callers, each with one call in flight (default 64)
//	-duration D      how long to send new calls (default 10s); calls in flight
//	                 at the end are waited for. SIGINT or SIGTERM ends the run early.
//	-timeout D       a call that takes longer fails (default 10s)
//	-json            print the summary as one JSON object, and no progress
//	-plot FILE.png   at the end, draw the latency over time in FILE.png (below)
//	-tls-cert FILE   with -tls-key and -tls-ca: speak mutual TLS, presenting this
//	-tls-key FILE    certificate and key, and trusting only a middle layer whose
//	-tls-ca FILE     certificate the CA in -tls-ca signed (the three go together)
//
// Progress: when standard error is a terminal (a console on Windows), one
// line rewritten in place five times a second, and ended before the
// summary:
//
//	[########------------] 4.0s/10s  12345 answered  3512 req/s  0 errors  0 wrong
//
// a bar of the duration elapsed, the time elapsed of -duration, the
// requests answered, their rate over the last second, errors and wrong
// answers. Otherwise (a pipe, a file, a log) a line a second:
//
//	loadgen:   4s  12345 requests answered (3512/s)  123450 numbers  0 errors  0 wrong
//
// With -json there is no progress, on a terminal or not. The first problem
// of the run (a failed call or a wrong answer) is reported on standard
// error in any case, on a line of its own.
//
// The summary counts requests, the calls answered, and errors, the calls
// that failed (as a whole or for some of their numbers), apart: a failed
// call is not a request, and when the middle layer fails every call, errors
// exceed requests. The JSON summary has batch, concurrency, requests,
// numbers (numbers answered), errors, wrong (answers that did not match the
// table), seconds (to the millisecond), requests_per_sec, numbers_per_sec,
// and the latency of the answered calls in microseconds: p50_us, p90_us,
// p99_us, p999_us (p99.9), max_us. The text summary gives the same
// latencies on its latency line.
// Percentiles come from a histogram whose buckets are within 0.8% of the
// value they report, p99.9 as well as the others. A percentile is the
// latency of the call at its rank, so with fewer than 1,000 calls answered
// p99.9 is the max, and with fewer than 100, so is p99.
//
// The plot: with -plot, after the summary, loadgen writes a PNG chart of
// the latency over the run. For each second of the run it draws the p50,
// p99 and max latency of the calls answered in that second, each call
// counted in the second it ended (was answered), as lines on a log scale
// in milliseconds, against the seconds since the start; the title names
// the batch, the concurrency and the totals. A second in which no call was
// answered is a shaded gap in the lines; the last second, in which the
// calls in flight at the end were answered, is as long as it lasted. A run
// in which no call was answered still gets a chart, which says so. Each
// second past is kept as its four numbers, so a long run costs little
// memory. The file name must end in .png and its directory must exist and
// be writable: otherwise loadgen exits with status 2 before it starts. If
// the file cannot be written at the end, loadgen says so, naming the file,
// after the summary, and exits with status 1.
//
// Exit status: 0 if every call was answered correctly (and the plot, if
// any, was written), 1 if any failed, any answer was wrong or the plot
// could not be written, 2 for bad usage.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/cli"
	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/tlsflags"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// about is the first line of -h: what the program does.
const about = "loadgen loads the middle layer, checks every answer and reports throughput and latency."

func main() {
	os.Exit(run())
}

type config struct {
	addr        string
	batch       int
	concurrency int
	duration    time.Duration
	timeout     time.Duration
	json        bool
	plot        string // the PNG file to draw the latency over time in; "" for none
}

func run() int {
	var cfg config
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	node.SetUsage(fs, about)
	node.AddrVar(fs, &cfg.addr, "addr", "127.0.0.1:7000", "`address` of the middle layer, host:port", false)
	fs.IntVar(&cfg.batch, "batch", 10, "numbers per call")
	fs.IntVar(&cfg.concurrency, "concurrency", 64, "callers, each with one call in flight")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to send new calls")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "a call that takes longer fails")
	fs.BoolVar(&cfg.json, "json", false, "print the summary as one JSON object, and no progress")
	fs.Var(plotFile{&cfg.plot}, "plot", "at the end, draw the latency over time (p50, p99, max per second) in the PNG file `FILE.png`")
	var tlsFlags tlsflags.Flags
	tlsFlags.Register(fs)
	node.ParseFlags(fs, os.Args[1:])
	if cfg.batch < 1 || cfg.concurrency < 1 || cfg.duration <= 0 || cfg.timeout <= 0 {
		node.Usage(fs, "-batch and -concurrency must be at least 1, -duration and -timeout positive")
	}
	tlsConfig, err := tlsFlags.Config()
	if err != nil {
		node.Usage(fs, "%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal kills

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Room for every caller's call, each with all its chunks in flight: a
	// limit of one slot per caller would send a large call's chunks one
	// after another.
	maxCalls := max(cfg.concurrency*transport.DefaultChunksInFlight, transport.DefaultMaxCalls)
	opts := []transport.ClientOption{transport.WithLogger(log), transport.WithMaxConcurrentCalls(maxCalls)}
	if tlsConfig != nil {
		opts = append(opts, transport.WithTLSConfig(tlsConfig))
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	c, err := transport.Dial(dctx, cfg.addr, transport.Int64(), xyz.ResultCodec(), append(opts, transport.WithService(node.MiddleService))...)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", cli.MiddleLayerError(cfg.addr, err))
		return 1
	}
	defer c.Close()

	start := time.Now()
	stderr := newMeter(os.Stderr, isTerminal(os.Stderr), start, cfg.duration)
	if stderr.terminal {
		stderr.width = terminalWidth(os.Stderr)
	}
	t := &tally{notes: stderr}
	var tl *timeline
	if cfg.plot != "" {
		tl = newTimeline(start, time.Now)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	hists := make([]*histogram, cfg.concurrency)
	for i := range hists {
		hists[i] = new(histogram)
		wg.Go(func() { send(ctx, c, cfg, start.Add(cfg.duration), t, hists[i], tl) })
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	if cfg.json {
		<-done
	} else {
		tick := time.NewTicker(stderr.interval())
		stderr.show(t, tick.C, done)
		tick.Stop()
	}

	for _, h := range hists[1:] {
		hists[0].merge(h)
	}
	elapsed := time.Since(start)
	s := summarize(cfg, t, hists[0], elapsed)
	code := 0
	if s.Errors > 0 || s.Wrong > 0 {
		code = 1
	}
	if err := s.print(os.Stdout, cfg.json); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		code = 1
	}
	if tl != nil {
		if err := writePlot(cfg.plot, s, tl.finish(elapsed)); err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
			code = 1
		}
	}
	return code
}

// tally is what the callers have counted since the start.
type tally struct {
	requests, numbers, errors, wrong atomic.Int64
	reported                         atomic.Bool // the first problem has been printed
	notes                            *meter      // where the first problem is printed
}

func (t *tally) counts() counts {
	return counts{t.requests.Load(), t.numbers.Load(), t.errors.Load(), t.wrong.Load()}
}

// problem prints the first problem of the run, so that the counts come
// with an example of what went wrong.
func (t *tally) problem(format string, args ...any) {
	if t.reported.CompareAndSwap(false, true) {
		t.notes.note(fmt.Sprintf("loadgen: first problem: "+format, args...))
	}
}

// send sends batches to c one after another until end or until ctx is
// done, checking every answer and recording the latency of each in h, and
// in tl unless it is nil.
func send(ctx context.Context, c *transport.Client[int64, xyz.Result], cfg config, end time.Time, t *tally, h *histogram, tl *timeline) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	batch := make([]int64, cfg.batch)
	for ctx.Err() == nil && time.Now().Before(end) {
		for i := range batch {
			batch[i] = number(rng)
		}
		// Calls run to completion (or timeout) even when the run ends.
		cctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
		start := time.Now()
		out, err := c.Process(cctx, batch)
		elapsed := time.Since(start)
		cancel()
		if pe, ok := err.(*fanout.PartialError); ok {
			out, err = xyz.Annotate(out, len(batch), pe), nil
		}
		if err == nil {
			err = failure(batch, out)
		}
		if err != nil {
			t.errors.Add(1)
			t.problem("%v", cli.MiddleLayerError(cfg.addr, err))
			continue
		}
		h.record(elapsed)
		if tl != nil {
			tl.record(elapsed)
		}
		t.requests.Add(1)
		t.numbers.Add(int64(len(batch)))
		for i, n := range batch {
			if !xyz.Correct(n, out[i]) {
				want, _ := xyz.Expected(n)
				t.wrong.Add(1)
				t.problem("%d answered %d by backend %q, want %d by backend %q", n, out[i].Value, out[i].Backend, want.Value, want.Backend)
			}
		}
	}
}

// failure returns an error naming the first number of batch that the
// middle layer answered as failed, or nil if none was.
func failure(batch []int64, out []xyz.Result) error {
	for i, r := range out {
		if r.Failed() {
			return fmt.Errorf("%d failed on backend %s: %s", batch[i], r.Backend, r.Err)
		}
	}
	return nil
}

// Ranges of the numbers sent, chosen so that no result overflows.
const (
	maxNegated = 3037000499              // x: -maxNegated..-1, squares fit
	maxEven    = math.MaxInt64 - 1       // y: 0..maxEven, even
	maxOdd     = (math.MaxInt64-1)/3 - 1 // z: 1..maxOdd, odd, 3n+1 fits
)

// number returns a random number owned by a random route.
func number(rng *rand.Rand) int64 {
	switch rng.IntN(3) {
	case 0:
		return -1 - rng.Int64N(maxNegated)
	case 1:
		return 2 * rng.Int64N(maxEven/2+1)
	default:
		return 2*rng.Int64N(maxOdd/2+1) + 1
	}
}

// summary is the outcome of a run; its JSON form is loadgen -json's output.
type summary struct {
	Batch          int     `json:"batch"`
	Concurrency    int     `json:"concurrency"`
	Requests       int64   `json:"requests"`
	Numbers        int64   `json:"numbers"`
	Errors         int64   `json:"errors"`
	Wrong          int64   `json:"wrong"`
	Seconds        float64 `json:"seconds"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	NumbersPerSec  float64 `json:"numbers_per_sec"`
	P50us          float64 `json:"p50_us"`
	P90us          float64 `json:"p90_us"`
	P99us          float64 `json:"p99_us"`
	P999us         float64 `json:"p999_us"`
	MaxUs          float64 `json:"max_us"`
}

func summarize(cfg config, t *tally, h *histogram, elapsed time.Duration) *summary {
	us := func(q float64) float64 { return float64(h.quantile(q)) / 1e3 }
	s := &summary{
		Batch:       cfg.batch,
		Concurrency: cfg.concurrency,
		Requests:    t.requests.Load(),
		Numbers:     t.numbers.Load(),
		Errors:      t.errors.Load(),
		Wrong:       t.wrong.Load(),
		Seconds:     math.Round(elapsed.Seconds()*1e3) / 1e3, // to the millisecond
		P50us:       us(0.5),
		P90us:       us(0.9),
		P99us:       us(0.99),
		P999us:      us(0.999),
		MaxUs:       us(1),
	}
	s.RequestsPerSec = float64(s.Requests) / elapsed.Seconds()
	s.NumbersPerSec = float64(s.Numbers) / elapsed.Seconds()
	return s
}

func (s *summary) print(w io.Writer, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(s)
	}
	_, err := fmt.Fprintf(w, `batch %d, concurrency %d, %.2fs
requests  %d calls answered (%.0f/s)
numbers   %d numbers answered (%.0f/s)
errors    %d calls failed (not counted in requests)
wrong     %d answers wrong
latency   p50 %.0fµs  p90 %.0fµs  p99 %.0fµs  p99.9 %.0fµs  max %.0fµs (of the calls answered)
`, s.Batch, s.Concurrency, s.Seconds, s.Requests, s.RequestsPerSec, s.Numbers, s.NumbersPerSec,
		s.Errors, s.Wrong, s.P50us, s.P90us, s.P99us, s.P999us, s.MaxUs)
	return err
}
