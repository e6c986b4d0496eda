package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// local is the example system in memory: a router over the labelled
// backends that reports a failed route in its numbers' answers, as the
// middle layer does.
func local(t testing.TB) fanout.Backend[int64, xyz.Result] {
	routes := map[string]fanout.Backend[int64, int64]{}
	for _, route := range xyz.Routes() {
		b, err := xyz.Backend(route)
		require.NoError(t, err)
		routes[route] = xyz.Label(route, b)
	}
	r, err := fanout.NewRouter(fanout.ClassifierFunc[int64](xyz.Classify), routes, fanout.WithPartialResults())
	require.NoError(t, err)
	return xyz.PerItem(r)
}

// blocking is a backend whose calls wait for their context to end. started
// gets a value when a call starts.
func blocking(started chan<- struct{}) fanout.Backend[int64, xyz.Result] {
	return fanout.BackendFunc[int64, xyz.Result](func(ctx context.Context, _ []int64) ([]xyz.Result, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

// command returns a client command with an -addr flag, as the client
// program has.
func command() (*Command, *string) {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7000", "address")
	return New("client", "client sends numbers.", fs), addr
}

type result struct {
	code           int
	stdout, stderr string
}

func runMain(t *testing.T, b fanout.Backend[int64, xyz.Result], stdin string, args ...string) result {
	t.Helper()
	return runMainContext(t, context.Background(), b, stdin, args...)
}

func runMainContext(t *testing.T, ctx context.Context, b fanout.Backend[int64, xyz.Result], stdin string, args ...string) result {
	t.Helper()
	cmd, _ := command()
	var stdout, stderr bytes.Buffer
	code := cmd.Main(ctx, args, strings.NewReader(stdin), &stdout, &stderr, func() (fanout.Backend[int64, xyz.Result], func(), error) {
		return b, func() {}, nil
	})
	return result{code, stdout.String(), stderr.String()}
}

// textLines returns the text output expected for numbers.
func textLines(t testing.TB, numbers ...int64) string {
	var b strings.Builder
	for _, n := range numbers {
		want, err := xyz.Expected(n)
		require.NoError(t, err)
		fmt.Fprintf(&b, "%d -> %d (backend %s)\n", n, want.Value, want.Backend)
	}
	return b.String()
}

func TestParse(t *testing.T) {
	tests := []struct {
		args        []string
		want        []int64
		wantAddr    string
		wantJSON    bool
		wantPartial bool
		wantTimeout time.Duration // 0: the default
		wantErr     string        // empty: no error
	}{
		{args: []string{"-partial", "-timeout", "2s", "7"}, want: []int64{7}, wantPartial: true, wantTimeout: 2 * time.Second},
		{args: []string{"-timeout=0", "-1"}, want: []int64{-1}},
		{args: []string{"-timeout", "-1s"}, wantErr: "-timeout -1s is negative"},
		{args: nil, want: nil},
		{args: []string{"1", "2"}, want: []int64{1, 2}},
		{args: []string{"-3", "4"}, want: []int64{-3, 4}},
		{args: []string{"--", "-3", "4"}, want: []int64{-3, 4}},
		{args: []string{"-json", "-3"}, want: []int64{-3}, wantJSON: true},
		{args: []string{"-3", "-json", "5"}, want: []int64{-3, 5}, wantJSON: true},
		{args: []string{"-addr", "h:1", "-3"}, want: []int64{-3}, wantAddr: "h:1"},
		{args: []string{"--addr=h:2", "0", "--json"}, want: []int64{0}, wantAddr: "h:2", wantJSON: true},
		{args: []string{"-addr", "h:3"}, want: nil, wantAddr: "h:3"},
		{args: []string{"-9223372036854775808", "9223372036854775807"}, want: []int64{math.MinInt64, math.MaxInt64}},
		{args: []string{"+5", "007"}, want: []int64{5, 7}},
		{args: []string{"--", "-json"}, wantErr: `"-json" is not an int64`},
		{args: []string{"1", "abc"}, wantErr: `"abc" is not an int64`},
		{args: []string{"1.5"}, wantErr: `"1.5" is not an int64`},
		{args: []string{"-1.5"}, wantErr: `"-1.5" is not an int64`},
		{args: []string{"-"}, wantErr: `"-" is not an int64`},
		{args: []string{"99999999999999999999"}, wantErr: `"99999999999999999999" is not an int64 (out of range)`},
		{args: []string{"-99999999999999999999"}, wantErr: `"-99999999999999999999" is not an int64 (out of range)`},
		{args: []string{"0x10"}, wantErr: `"0x10" is not an int64`},
		{args: []string{strings.Repeat("7", 100)}, wantErr: `"` + strings.Repeat("7", 40) + `..." is not an int64 (out of range)`},
		{args: []string{"-bogus"}, wantErr: "flag provided but not defined: -bogus"},
		{args: []string{"1", "-addr"}, wantErr: "flag needs an argument: -addr"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd, addr := command()
			cmd.flags.SetOutput(new(bytes.Buffer))
			got, err := cmd.parse(tt.args)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.wantJSON, cmd.json)
			require.Equal(t, tt.wantPartial, cmd.partial)
			if tt.wantTimeout != 0 {
				require.Equal(t, tt.wantTimeout, cmd.timeout)
			} else if !slices.Contains(tt.args, "-timeout=0") {
				require.Equal(t, DefaultTimeout, cmd.timeout)
			}
			if tt.wantAddr != "" {
				require.Equal(t, tt.wantAddr, *addr)
			}
		})
	}
}

func TestMainArguments(t *testing.T) {
	r := runMain(t, local(t), "", "-3", "4", "7", "0", "--", "-5")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "-3 -> 9 (backend x)\n4 -> 2 (backend y)\n7 -> 22 (backend z)\n0 -> 0 (backend y)\n-5 -> 25 (backend x)\n", r.stdout)
	require.Empty(t, r.stderr)
}

func TestMainJSON(t *testing.T) {
	r := runMain(t, local(t), "", "-json", "-3", "4", "7")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, `[
  {"input": -3, "output": 9, "backend": "x"},
  {"input": 4, "output": 2, "backend": "y"},
  {"input": 7, "output": 22, "backend": "z"}
]
`, r.stdout)

	r = runMain(t, local(t), "", "-json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "[]\n", r.stdout)
}

// TestMainStdinJob sends more numbers than fit in a few chunks, so that
// several calls are in flight, and checks every answer in order.
func TestMainStdinJob(t *testing.T) {
	var numbers []int64
	var in strings.Builder
	for i := range chunkSize + 17 {
		n := int64(i*7919) - 1_000_000
		numbers = append(numbers, n)
		in.WriteString(strconv.FormatInt(n, 10))
		in.WriteString([]string{" ", "\n", "\t "}[i%3])
	}
	r := runMain(t, local(t), in.String())
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, textLines(t, numbers...), r.stdout)

	r = runMain(t, local(t), in.String(), "-json")
	require.Equal(t, 0, r.code, r.stderr)
	var got []struct {
		Input   int64  `json:"input"`
		Output  int64  `json:"output"`
		Backend string `json:"backend"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	require.Len(t, got, len(numbers))
	for i, n := range numbers {
		want, err := xyz.Expected(n)
		require.NoError(t, err)
		require.Equal(t, n, got[i].Input)
		require.Equal(t, want.Value, got[i].Output)
		require.Equal(t, want.Backend, got[i].Backend)
	}
}

func TestMainBadTokenInStdin(t *testing.T) {
	// The numbers before the bad token, over a chunk's worth, are answered.
	var numbers []int64
	var in strings.Builder
	for i := range chunkSize + 10 {
		numbers = append(numbers, int64(i))
		fmt.Fprintf(&in, "%d\n", i)
	}
	in.WriteString("1.5 7\n")
	r := runMain(t, local(t), in.String())
	require.Equal(t, 2, r.code)
	require.Equal(t, textLines(t, numbers...), r.stdout)
	require.Equal(t, fmt.Sprintf("client: line %d: \"1.5\" is not an int64\n", chunkSize+11), r.stderr)

	r = runMain(t, local(t), "1\n\n"+strings.Repeat("9", 70_000))
	require.Equal(t, 2, r.code)
	require.Equal(t, "client: line 3: standard input holds a token too long to be an int64\n", r.stderr)
}

// TestScanNamesTheLine checks the line that a bad token in a stream is
// reported on, wherever the token is on it and however the lines end.
func TestScanNamesTheLine(t *testing.T) {
	long := strings.Repeat("12 ", 100_000) // longer than the scanner's first buffers
	tests := []struct {
		in       string
		wantLine int
	}{
		{"abc", 1},
		{"1 2 abc 3", 1},
		{"1\n2\nabc\n", 3},
		{"1\n\n\n  \t abc", 4},
		{"1\r\n2 abc\r\n3\r\n", 2},
		{"1\n2\nabc", 3},
		{"\n\n\nabc\n\n", 4},
		{long + "\n" + long + "abc\n", 2},
		{strings.Repeat("7\n", 100_000) + "abc", 100_001},
	}
	for _, tt := range tests {
		next := scan(strings.NewReader(tt.in))
		var err error
		for err == nil {
			_, err = next()
		}
		want := fmt.Sprintf(`line %d: "abc" is not an int64`, tt.wantLine)
		shown := tt.in[:min(len(tt.in), 30)]
		require.EqualError(t, err, want, "input %q", shown)
		var ue *UsageError
		require.ErrorAs(t, err, &ue, "input %q: bad input is bad usage", shown)
	}
}

func TestMainUsage(t *testing.T) {
	tests := []struct {
		args       []string
		wantCode   int
		wantStderr string
	}{
		{[]string{"abc"}, 2, "client: \"abc\" is not an int64\n"},
		{[]string{"1", "99999999999999999999"}, 2, "client: \"99999999999999999999\" is not an int64 (out of range)\n"},
		{[]string{"-bogus"}, 2, "flag provided but not defined: -bogus\nclient sends numbers.\n\nusage: client"},
		{[]string{"-h"}, 0, "client sends numbers.\n\nusage: client [flags] [number ...]"},
	}
	for _, tt := range tests {
		r := runMain(t, local(t), "", tt.args...)
		require.Equal(t, tt.wantCode, r.code, "args %q", tt.args)
		require.True(t, strings.HasPrefix(r.stderr, tt.wantStderr), "args %q: stderr %q", tt.args, r.stderr)
		require.Empty(t, r.stdout)
	}
}

func TestMainProcessingFails(t *testing.T) {
	r := runMain(t, local(t), "", "1", "-3037000500", "2")
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	require.Equal(t, "client: -3037000500 failed on backend x: x: -3037000500 squared overflows int64\n", r.stderr)

	r = runMain(t, local(t), "4\n9223372036854775807\n-1\n-3037000500\n", "-json")
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	require.Equal(t, "client: 9223372036854775807 failed on backend z: z: 3*9223372036854775807+1 overflows int64 (2 of the 4 numbers of its call failed)\n", r.stderr)

	// One bad number fails only itself: its neighbours on the same backend
	// are answered, and the error names it alone.
	r = runMain(t, local(t), "1\n2\n3\n9223372036854775807\n1\n2\n3\n")
	require.Equal(t, 1, r.code)
	require.Equal(t, "client: 9223372036854775807 failed on backend z: z: 3*9223372036854775807+1 overflows int64\n", r.stderr)
	r = runMain(t, local(t), "1\n2\n3\n9223372036854775807\n1\n2\n3\n", "-partial")
	require.Equal(t, 1, r.code)
	require.Equal(t, "1 -> 4 (backend z)\n2 -> 1 (backend y)\n3 -> 10 (backend z)\n"+
		"9223372036854775807 -> failed (backend z): z: 3*9223372036854775807+1 overflows int64\n"+
		"1 -> 4 (backend z)\n2 -> 1 (backend y)\n3 -> 10 (backend z)\n", r.stdout)
	require.Equal(t, "client: 1 of 7 numbers failed\n", r.stderr)

	// A backend that fails a call as a whole.
	r = runMain(t, fanout.BackendFunc[int64, xyz.Result](func(context.Context, []int64) ([]xyz.Result, error) {
		return nil, errors.New("middle layer down")
	}), "", "1", "-partial")
	require.Equal(t, 1, r.code)
	require.Equal(t, "client: middle layer down\n", r.stderr)
}

func TestMainPartial(t *testing.T) {
	overflow := "x: -3037000500 squared overflows int64"
	r := runMain(t, local(t), "", "-partial", "-3", "4", "-3037000500", "7")
	require.Equal(t, 1, r.code)
	require.Equal(t, "-3 -> 9 (backend x)\n"+
		"4 -> 2 (backend y)\n"+
		"-3037000500 -> failed (backend x): "+overflow+"\n"+
		"7 -> 22 (backend z)\n", r.stdout)
	require.Equal(t, "client: 1 of 4 numbers failed\n", r.stderr)

	r = runMain(t, local(t), "-3\n4\n-3037000500\n7\n", "-partial", "-json")
	require.Equal(t, 1, r.code)
	require.Equal(t, `[
  {"input": -3, "output": 9, "backend": "x"},
  {"input": 4, "output": 2, "backend": "y"},
  {"input": -3037000500, "backend": "x", "error": "`+overflow+`"},
  {"input": 7, "output": 22, "backend": "z"}
]
`, r.stdout)
	require.Equal(t, "client: 1 of 4 numbers failed\n", r.stderr)

	// An error text is a JSON string, quotes and all.
	odd := fanout.BackendFunc[int64, xyz.Result](func(_ context.Context, items []int64) ([]xyz.Result, error) {
		return nil, &fanout.PartialError{Items: []*fanout.ItemError{{Index: 0, Route: "z", Err: errors.New(`"<quoted>"` + "\n")}}}
	})
	r = runMain(t, odd, "", "-partial", "-json", "1")
	require.Equal(t, 1, r.code)
	require.Equal(t, "[\n  {\"input\": 1, \"backend\": \"z\", \"error\": \"\\\"<quoted>\\\"\\n\"}\n]\n", r.stdout)

	r = runMain(t, local(t), "", "-partial", "-3", "4")
	require.Equal(t, 0, r.code, "nothing failed")
	require.Equal(t, textLines(t, -3, 4), r.stdout)
	require.Empty(t, r.stderr)
}

func TestMainTimeout(t *testing.T) {
	// The call reaches the backend with a deadline 50ms after it starts,
	// and ends when its context does.
	type call struct{ deadline, reached time.Time }
	calls := make(chan call, inFlight)
	b := fanout.BackendFunc[int64, xyz.Result](func(ctx context.Context, _ []int64) ([]xyz.Result, error) {
		d, _ := ctx.Deadline() // none: the zero time, which fails below
		calls <- call{d, time.Now()}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	before := time.Now()
	r := runMain(t, b, "", "-timeout", "50ms", "1", "2")
	require.Equal(t, 1, r.code)
	require.Len(t, calls, 1, "the call reached the backend")
	// The call started after before and before it reached the backend.
	c := <-calls
	require.False(t, c.deadline.Before(before.Add(50*time.Millisecond)), "deadline %v after the test began", c.deadline.Sub(before))
	require.False(t, c.deadline.After(c.reached.Add(50*time.Millisecond)), "deadline %v after the call reached the backend", c.deadline.Sub(c.reached))
	require.Equal(t, "client: no answer within 50ms (-timeout): context deadline exceeded\n", r.stderr)
	require.Empty(t, r.stdout)

	// The middle layer has the call's deadline too, and may report it first.
	remote := fanout.BackendFunc[int64, xyz.Result](func(context.Context, []int64) ([]xyz.Result, error) {
		return nil, fmt.Errorf("remote middle: %w", context.DeadlineExceeded)
	})
	r = runMain(t, remote, "", "1")
	require.Equal(t, 1, r.code)
	require.Equal(t, "client: no answer within 10s (-timeout): remote middle: context deadline exceeded\n", r.stderr)
}

func TestMainInterrupted(t *testing.T) {
	// A call in flight is cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, inFlight)
	go func() {
		<-started
		cancel()
	}()
	r := runMainContext(t, ctx, blocking(started), "", "-json", "1")
	require.Equal(t, 130, r.code)
	require.Equal(t, "client: interrupted\n", r.stderr)
	require.Empty(t, r.stdout)

	// So is a job waiting for standard input: cancelled once it has read
	// "1 2" and started its next read, which waits for more.
	ctx, cancel = context.WithCancel(context.Background())
	pr, w := io.Pipe()
	defer w.Close()
	stdin := &readStarts{r: pr, starts: make(chan struct{}, 16)}
	go func() {
		<-stdin.starts
		fmt.Fprintln(w, "1 2") // returns once the read has taken it all
		<-stdin.starts
		cancel()
	}()
	cmd, _ := command()
	var stdout, stderr bytes.Buffer
	code := cmd.Main(ctx, nil, stdin, &stdout, &stderr, func() (fanout.Backend[int64, xyz.Result], func(), error) {
		return local(t), func() {}, nil
	})
	require.Equal(t, 130, code)
	require.Equal(t, "client: interrupted\n", stderr.String())

	// And so is a prompt waiting for a line: cancelled once it has
	// answered "-3" and prompted again.
	ctx, cancel = context.WithCancel(context.Background())
	pr, w = io.Pipe()
	defer w.Close()
	prompts := &watchedOutput{want: "> > ", found: make(chan struct{})}
	go func() {
		fmt.Fprintln(w, "-3")
		<-prompts.found
		cancel()
	}()
	cmd, _ = command()
	stdout.Reset()
	err := cmd.interactive(ctx, local(t), pr, &stdout, prompts)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, textLines(t, -3), stdout.String())
	require.Equal(t, "> > \n", prompts.String())
}

// readStarts is a reader that sends on starts as each Read begins, so that
// a test knows when its reader waits for input.
type readStarts struct {
	r      io.Reader
	starts chan struct{}
}

func (r *readStarts) Read(p []byte) (int, error) {
	r.starts <- struct{}{}
	return r.r.Read(p)
}

// watchedOutput is an output that closes found once what has been written
// to it starts with want.
type watchedOutput struct {
	mu    sync.Mutex
	b     bytes.Buffer
	want  string
	found chan struct{}
	seen  bool
}

func (o *watchedOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.b.Write(p)
	if !o.seen && strings.HasPrefix(o.b.String(), o.want) {
		o.seen = true
		close(o.found)
	}
	return len(p), nil
}

func (o *watchedOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

func TestMainConnectFails(t *testing.T) {
	for _, tt := range []struct {
		err      error
		wantCode int
	}{
		{errors.New("no system"), 1},
		{&UsageError{errors.New("no system")}, 2},
	} {
		cmd, _ := command()
		var stdout, stderr bytes.Buffer
		code := cmd.Main(context.Background(), []string{"1"}, strings.NewReader(""), &stdout, &stderr, func() (fanout.Backend[int64, xyz.Result], func(), error) {
			return nil, nil, tt.err
		})
		require.Equal(t, tt.wantCode, code)
		require.Equal(t, "client: no system\n", stderr.String())
	}
}

func TestRunRefusesMisalignedAnswers(t *testing.T) {
	short := fanout.BackendFunc[int64, xyz.Result](func(_ context.Context, items []int64) ([]xyz.Result, error) {
		return make([]xyz.Result, len(items)-1), nil
	})
	r := runMain(t, short, "", "1", "2")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "1 results for 2 numbers")
	require.Empty(t, r.stdout)
}

// TestRunOverlapsCalls checks that a job has several calls in flight, never
// more than inFlight, and still prints in input order: the first calls
// answer only once inFlight of them have started, in whatever order.
func TestRunOverlapsCalls(t *testing.T) {
	var active, peak, started atomic.Int32
	allStarted := make(chan struct{})
	var once sync.Once
	inner := local(t)
	b := fanout.BackendFunc[int64, xyz.Result](func(ctx context.Context, items []int64) ([]xyz.Result, error) {
		n := active.Add(1)
		defer active.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		if started.Add(1) == inFlight {
			once.Do(func() { close(allStarted) })
		}
		<-allStarted
		return inner.Process(ctx, items)
	})

	numbers := make([]int64, (inFlight+1)*chunkSize)
	for i := range numbers {
		numbers[i] = int64(i)
	}
	cmd, _ := command()
	var out bytes.Buffer
	require.NoError(t, cmd.run(context.Background(), b, chunks(numbers), &out))
	require.Equal(t, int32(inFlight), peak.Load())
	require.Equal(t, textLines(t, numbers...), out.String())
}

func TestInteractive(t *testing.T) {
	// The prompt goes to stderr, with the errors; stdout has the answers.
	cmd, _ := command()
	var stdout, stderr bytes.Buffer
	in := "1 2 -3\n\n  abc 4\n-3037000500\n7\n  quit  \n8\n"
	require.NoError(t, cmd.interactive(context.Background(), local(t), strings.NewReader(in), &stdout, &stderr))
	require.Equal(t, textLines(t, 1, 2, -3)+textLines(t, 7), stdout.String())
	require.Equal(t, "> > > client: \"abc\" is not an int64\n"+
		"> client: -3037000500 failed on backend x: x: -3037000500 squared overflows int64\n> > ", stderr.String())

	cmd, _ = command()
	cmd.json = true
	stdout.Reset()
	stderr.Reset()
	require.NoError(t, cmd.interactive(context.Background(), local(t), strings.NewReader("-3\n5"), &stdout, &stderr))
	require.Equal(t, "[\n  {\"input\": -3, \"output\": 9, \"backend\": \"x\"}\n]\n[\n  {\"input\": 5, \"output\": 16, \"backend\": \"z\"}\n]\n", stdout.String())
	require.Equal(t, "> > > \n", stderr.String(), "end of input ends the prompt's line")

	cmd, _ = command()
	cmd.partial = true
	stdout.Reset()
	stderr.Reset()
	require.NoError(t, cmd.interactive(context.Background(), local(t), strings.NewReader("4 -3037000500\n5\n"), &stdout, &stderr))
	require.Equal(t, "4 -> 2 (backend y)\n-3037000500 -> failed (backend x): x: -3037000500 squared overflows int64\n"+
		textLines(t, 5), stdout.String())
	require.Equal(t, "> client: 1 of 2 numbers failed\n> > \n", stderr.String())
}

// TestInteractiveLeaves checks the ways out of the prompt: quit or exit,
// in any case, with spaces around, and the end of input (Ctrl-D on a
// terminal). What follows them is not read.
func TestInteractiveLeaves(t *testing.T) {
	for _, tt := range []struct{ in, wantStderr string }{
		{"4\nquit\n5\n", "> > "},
		{"4\nexit\n5\n", "> > "},
		{"4\nQUIT\n5\n", "> > "},
		{"4\nExit\n5\n", "> > "},
		{"4\n  quit \t\n5\n", "> > "},
		{"4\n\texit\n5\n", "> > "},
		{"4\nquit", "> > "},
		{"4\n", "> > \n"}, // the end of input ends the prompt's line
	} {
		cmd, _ := command()
		var stdout, stderr bytes.Buffer
		require.NoError(t, cmd.interactive(context.Background(), local(t), strings.NewReader(tt.in), &stdout, &stderr), "input %q", tt.in)
		require.Equal(t, textLines(t, 4), stdout.String(), "input %q", tt.in)
		require.Equal(t, tt.wantStderr, stderr.String(), "input %q", tt.in)
	}
	// Other words are not numbers.
	cmd, _ := command()
	var stdout, stderr bytes.Buffer
	require.NoError(t, cmd.interactive(context.Background(), local(t), strings.NewReader("quit now\nexits\n"), &stdout, &stderr))
	require.Empty(t, stdout.String())
	require.Equal(t, "> client: \"quit\" is not an int64\n> client: \"exits\" is not an int64\n> \n", stderr.String())
}

// TestIsTerminal checks that only a terminal is one: not a pipe, and not
// the null device, which is a character device.
func TestIsTerminal(t *testing.T) {
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	require.False(t, isTerminal(null), os.DevNull)

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	require.False(t, isTerminal(r), "a pipe")
	require.False(t, isTerminal(strings.NewReader("")), "a reader that is not a file")
}

func BenchmarkJob(b *testing.B) {
	var in strings.Builder
	for i := range 1 << 18 {
		fmt.Fprintf(&in, "%d\n", i-1<<17)
	}
	input := in.String()
	be := local(b)
	cmd, _ := command()
	b.ReportAllocs()
	b.SetBytes(int64(len(input)))
	for b.Loop() {
		if err := cmd.run(context.Background(), be, scan(strings.NewReader(input)), io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
