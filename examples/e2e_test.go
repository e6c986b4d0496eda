// The end-to-end test builds the programs, runs x, y, z and middle as
// separate processes on free loopback ports, and checks client, demo and
// loadgen against them from the outside, as a user would.
package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// bin is the directory holding the built programs.
var bin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "fanout-examples-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	code := build(dir)
	if code == 0 {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// build builds every program into dir with the go command that runs the
// test (go test puts it first in PATH).
func build(dir string) int {
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"./x", "./y", "./z", "./middle", "./client", "./demo", "./loadgen")
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the programs:", err)
		return 1
	}
	return 0
}

// server is a server program running in the background.
type server struct {
	name string
	cmd  *exec.Cmd
	addr string // the address it reported when ready
	logs watchedLog
	out  watchedLog // what it wrote to standard output

	exited chan struct{} // closed once the process has exited
	err    error         // its exit status, set before exited is closed
}

// startServer starts program name with args and waits until it logs that it
// is ready, returning the address it bound. The process is killed at the end
// of the test if it is still running.
func startServer(t *testing.T, name string, args ...string) *server {
	t.Helper()
	s, err := launch(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// launch is startServer for any goroutine: it returns an error where
// startServer fails the test.
func launch(t *testing.T, name string, args ...string) (*server, error) {
	return launchCmd(t, name, exec.Command(filepath.Join(bin, name), args...), nil)
}

// launchCmd is launch of the server program name run by cmd (under ip
// netns exec, say). If the test fails, failed is given the server to log
// what it says of it; nil logs its whole log.
func launchCmd(t *testing.T, name string, cmd *exec.Cmd, failed func(*server)) (*server, error) {
	s := &server{name: name, cmd: cmd, exited: make(chan struct{})}
	s.cmd.Stdout = &s.out
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		s.kill(t)
		switch {
		case !t.Failed():
		case failed != nil:
			failed(s)
		default:
			t.Logf("log of %s:\n%s", name, s.log())
		}
	})

	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.logs.Write([]byte(line + "\n"))
			if addr, ok := readyAddr(line, name); ok {
				ready <- addr
			}
		}
		s.err = s.cmd.Wait() // only after every read from the pipe
		close(s.exited)
	}()
	select {
	case s.addr = <-ready:
		return s, nil
	case <-s.exited:
		return nil, fmt.Errorf("%s exited before it was ready: %v\n%s", name, s.err, s.log())
	case <-time.After(hangGuard):
		return nil, fmt.Errorf("%s not ready after %v:\n%s", name, hangGuard, s.log())
	}
}

// hangGuard is how long a test waits for a state before it gives up: it
// tells a hang from a slow machine, and measures nothing.
const hangGuard = 30 * time.Second

// readyAddr returns the address in the line a server logs when it is
// ready: level=INFO msg="x ready" addr=127.0.0.1:41234.
func readyAddr(line, name string) (string, bool) {
	if !strings.Contains(line, `msg="`+name+` ready"`) {
		return "", false
	}
	for _, field := range strings.Fields(line) {
		if addr, ok := strings.CutPrefix(field, "addr="); ok {
			return addr, true
		}
	}
	return "", false
}

func (s *server) log() string { return s.logs.String() }

// count returns how many times text occurs in the log.
func (s *server) count(text string) int { return s.logs.count(text) }

// waitLog waits until text occurs at least n times in the log; it fails
// the test if the process exits first, or after hangGuard.
func (s *server) waitLog(t *testing.T, text string, n int) {
	t.Helper()
	s.logs.wait(t, s.name, text, n, s.exited)
}

// watchedLog is what a program writes to standard error, safe for the
// program's reader and a test to share. It tells a test when the lines it
// waits for have been written, so that the test waits for that state
// rather than polling or sleeping.
type watchedLog struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	complete int // how many bytes of buf end in a newline
	waiters  []*logWaiter
}

// A logWaiter waits for left more occurrences of text in complete lines.
type logWaiter struct {
	text  []byte
	left  int
	found chan struct{} // closed when left reaches 0
}

// Write adds p to the log and wakes the waiters whose text now occurs in
// complete lines as often as they wait for.
func (l *watchedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	b := l.buf.Bytes()
	end := bytes.LastIndexByte(b, '\n') + 1
	if end <= l.complete {
		return len(p), nil
	}
	lines := b[l.complete:end]
	l.complete = end
	waiting := l.waiters[:0]
	for _, w := range l.waiters {
		if w.left -= bytes.Count(lines, w.text); w.left <= 0 {
			close(w.found)
			continue
		}
		waiting = append(waiting, w)
	}
	clear(l.waiters[len(waiting):])
	l.waiters = waiting
	return len(p), nil
}

func (l *watchedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// count returns how many times text occurs in the log.
func (l *watchedLog) count(text string) int {
	return strings.Count(l.String(), text)
}

// wait waits until text occurs at least n times in the complete lines of
// the log. It fails the test if exited is closed first (the writer has
// written all it will), or after hangGuard.
func (l *watchedLog) wait(t *testing.T, name, text string, n int, exited <-chan struct{}) {
	t.Helper()
	l.mu.Lock()
	w := &logWaiter{text: []byte(text), found: make(chan struct{})}
	w.left = n - bytes.Count(l.buf.Bytes()[:l.complete], w.text)
	if w.left <= 0 {
		l.mu.Unlock()
		return
	}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()

	select {
	case <-w.found:
		return
	case <-exited:
		select {
		case <-w.found: // in the last lines it wrote
			return
		default:
		}
		t.Fatalf("%s exited without logging %s %d times", name, text, n)
	case <-time.After(hangGuard):
		t.Fatalf("%s did not log %s %d times within %v", name, text, n, hangGuard)
	}
}

// kill kills the process, if it is still running, and waits for it.
func (s *server) kill(t *testing.T) {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Kill()
	s.wait(t)
}

// wait waits for the process to exit and returns its exit code.
func (s *server) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(hangGuard):
		t.Fatalf("%s still running after %v", s.name, hangGuard)
	}
	return s.cmd.ProcessState.ExitCode()
}

// output is what a finished program printed, and its exit code.
type output struct {
	stdout, stderr string
	code           int
}

// requireCleanLoad checks the output of loadgen -json: it exited 0, made
// calls, and none failed or was answered wrong.
func requireCleanLoad(t *testing.T, out output) {
	t.Helper()
	require.Equal(t, 0, out.code, out.stderr)
	var s struct{ Requests, Errors, Wrong int64 }
	require.NoError(t, json.Unmarshal([]byte(out.stdout), &s), out.stdout)
	require.Positive(t, s.Requests)
	require.Zero(t, s.Errors, out.stderr)
	require.Zero(t, s.Wrong)
}

// runProgram runs program name with args and stdin (a pipe, so never a
// terminal) to completion.
func runProgram(t *testing.T, stdin, name string, args ...string) output {
	t.Helper()
	return startProgram(t, stdin, name, args...).wait(t)
}

// program is a program running in the background until it exits by itself.
type program struct {
	name   string
	args   []string
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr watchedLog
	cancel context.CancelFunc

	exited chan struct{} // closed once the program has exited
	err    error         // what cmd.Wait returned, set before exited is closed
}

// startProgram starts program name with args and stdin (a pipe, so never a
// terminal). It is killed if it runs for more than a minute.
func startProgram(t *testing.T, stdin, name string, args ...string) *program {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	p := &program{name: name, args: args, cmd: exec.CommandContext(ctx, filepath.Join(bin, name), args...), cancel: cancel,
		exited: make(chan struct{})}
	p.cmd.Stdin = strings.NewReader(stdin)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait() // after it has copied all the output
		close(p.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.exited
	})
	return p
}

// waitLog waits until text occurs at least n times in what the program
// wrote to standard error; it fails the test if the program exits first, or
// after hangGuard.
func (p *program) waitLog(t *testing.T, text string, n int) {
	t.Helper()
	p.stderr.wait(t, p.name, text, n, p.exited)
}

// wait waits for the program to exit and returns what it printed.
func (p *program) wait(t *testing.T) output {
	t.Helper()
	<-p.exited // within the minute startProgram gives it
	var exit *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exit) {
		t.Fatalf("running %s %q: %v", p.name, p.args, p.err)
	}
	p.cancel()
	require.NotEqual(t, -1, p.cmd.ProcessState.ExitCode(), "%s %q was killed: %v", p.name, p.args, p.err)
	return output{p.stdout.String(), p.stderr.String(), p.cmd.ProcessState.ExitCode()}
}

// textOutput is client's output for numbers, by the table.
func textOutput(t *testing.T, numbers ...int64) string {
	var b strings.Builder
	for _, n := range numbers {
		want, err := xyz.Expected(n)
		require.NoError(t, err)
		fmt.Fprintf(&b, "%d -> %d (backend %s)\n", n, want.Value, want.Backend)
	}
	return b.String()
}

// checkJSON checks client's -json output for numbers against the table.
func checkJSON(t *testing.T, stdout string, numbers ...int64) {
	t.Helper()
	var got []struct {
		Input   *int64  `json:"input"`
		Output  *int64  `json:"output"`
		Backend *string `json:"backend"`
	}
	require.NoError(t, json.Unmarshal([]byte(stdout), &got))
	require.Len(t, got, len(numbers))
	for i, n := range numbers {
		want, err := xyz.Expected(n)
		require.NoError(t, err)
		require.NotNil(t, got[i].Input, "object %d has no input", i)
		require.NotNil(t, got[i].Output, "object %d has no output", i)
		require.NotNil(t, got[i].Backend, "object %d has no backend", i)
		require.Equal(t, n, *got[i].Input)
		require.Equal(t, want.Value, *got[i].Output, "input %d", n)
		require.Equal(t, want.Backend, *got[i].Backend, "input %d", n)
	}
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: builds and runs the programs")
	}
	local := "127.0.0.1:0"
	x := startServer(t, "x", "-listen", local)
	y := startServer(t, "y", "-listen", local)
	z := startServer(t, "z", "-listen", local)
	middle := startServer(t, "middle", "-listen", local, "-x", x.addr, "-y", y.addr, "-z", z.addr, "-grace", "2s")
	addr := middle.addr

	t.Run("arguments", func(t *testing.T) {
		out := runProgram(t, "", "client", "-addr", addr, "-3", "4", "7", "0", "--", "-5")
		require.Equal(t, 0, out.code, out.stderr)
		require.Equal(t, "-3 -> 9 (backend x)\n4 -> 2 (backend y)\n7 -> 22 (backend z)\n0 -> 0 (backend y)\n-5 -> 25 (backend x)\n", out.stdout)
		require.Empty(t, out.stderr)
	})

	t.Run("stdin job", func(t *testing.T) {
		// Over two chunks of numbers of every route, of every size.
		var numbers []int64
		var in strings.Builder
		for i := range 150_000 {
			n := int64(i-75_000) * 40_000
			if i%3 == 0 {
				n = int64(i) * 1_000_003_002_001 // large positive: y or z
			}
			numbers = append(numbers, n)
			in.WriteString(strconv.FormatInt(n, 10))
			in.WriteByte(" \n\t"[i%3])
		}
		out := runProgram(t, in.String(), "client", "-addr", addr)
		require.Equal(t, 0, out.code, out.stderr)
		require.Equal(t, textOutput(t, numbers...), out.stdout)

		out = runProgram(t, in.String(), "client", "-json", "-addr", addr)
		require.Equal(t, 0, out.code, out.stderr)
		checkJSON(t, out.stdout, numbers...)
	})

	t.Run("json", func(t *testing.T) {
		out := runProgram(t, "", "client", "-addr", addr, "-json", "-3", "4", "7", "-3037000499", "9223372036854775806")
		require.Equal(t, 0, out.code, out.stderr)
		checkJSON(t, out.stdout, -3, 4, 7, -3037000499, 9223372036854775806)
	})

	t.Run("not an int64", func(t *testing.T) {
		for _, tok := range []string{"abc", "1.5", "99999999999999999999"} {
			out := runProgram(t, "", "client", "-addr", addr, "1", tok, "2")
			require.Equal(t, 2, out.code, "token %q", tok)
			require.Contains(t, out.stderr, strconv.Quote(tok)+" is not an int64")
			require.Empty(t, out.stdout)

			out = runProgram(t, "1 2\n"+tok+"\n3\n", "client", "-addr", addr)
			require.Equal(t, 2, out.code, "token %q on stdin", tok)
			require.Contains(t, out.stderr, strconv.Quote(tok)+" is not an int64")
			require.Equal(t, textOutput(t, 1, 2), out.stdout, "the numbers before the bad token are answered")
		}
	})

	t.Run("overflow", func(t *testing.T) {
		out := runProgram(t, "", "client", "-addr", addr, "1", "-3037000500", "2")
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "client: -3037000500 failed on backend x: ")
		require.Contains(t, out.stderr, "x: -3037000500 squared overflows int64")
		require.Empty(t, out.stdout)

		out = runProgram(t, "", "client", "-addr", addr, "--", "9223372036854775807")
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "z: 3*9223372036854775807+1 overflows int64")
	})

	t.Run("partial", func(t *testing.T) {
		// -3037000500 overflows on x and fails alone: every other number,
		// -3 on x too, is answered.
		overflow := "x: -3037000500 squared overflows int64"
		out := runProgram(t, "", "client", "-addr", addr, "-partial", "-3", "4", "-3037000500", "7")
		require.Equal(t, 1, out.code)
		require.Equal(t, "-3 -> 9 (backend x)\n"+
			"4 -> 2 (backend y)\n"+
			"-3037000500 -> failed (backend x): "+overflow+"\n"+
			"7 -> 22 (backend z)\n", out.stdout)
		require.Equal(t, "client: 1 of 4 numbers failed\n", out.stderr)

		out = runProgram(t, "-3 4 -3037000500 7", "client", "-addr", addr, "-partial", "-json")
		require.Equal(t, 1, out.code)
		var got []map[string]any
		require.NoError(t, json.Unmarshal([]byte(out.stdout), &got), "the array is complete: %s", out.stdout)
		require.Equal(t, []map[string]any{
			{"input": -3.0, "output": 9.0, "backend": "x"},
			{"input": 4.0, "output": 2.0, "backend": "y"},
			{"input": -3037000500.0, "backend": "x", "error": overflow},
			{"input": 7.0, "output": 22.0, "backend": "z"},
		}, got)
		require.Equal(t, "client: 1 of 4 numbers failed\n", out.stderr)
	})

	t.Run("demo", func(t *testing.T) {
		out := runProgram(t, "", "demo", "-json", "-3", "4", "7", "0", "-1")
		require.Equal(t, 0, out.code, out.stderr)
		checkJSON(t, out.stdout, -3, 4, 7, 0, -1)
	})

	t.Run("loadgen", func(t *testing.T) {
		out := runProgram(t, "", "loadgen", "-addr", addr, "-duration", "2s", "-concurrency", "8", "-json")
		require.Equal(t, 0, out.code, out.stderr)
		var s struct {
			Requests, Numbers, Errors, Wrong *int64
			Seconds                          *float64
			NumbersPerSec                    *float64 `json:"numbers_per_sec"`
			RequestsPerSec                   *float64 `json:"requests_per_sec"`
			P50us                            *float64 `json:"p50_us"`
			P99us                            *float64 `json:"p99_us"`
		}
		require.NoError(t, json.Unmarshal([]byte(out.stdout), &s), out.stdout)
		for name, v := range map[string]any{"requests": s.Requests, "numbers": s.Numbers, "errors": s.Errors, "wrong": s.Wrong,
			"seconds": s.Seconds, "numbers_per_sec": s.NumbersPerSec, "requests_per_sec": s.RequestsPerSec, "p50_us": s.P50us, "p99_us": s.P99us} {
			require.NotNil(t, v, "summary lacks %s: %s", name, out.stdout)
		}
		require.Positive(t, *s.Requests)
		require.Equal(t, 10*(*s.Requests), *s.Numbers)
		require.Zero(t, *s.Errors)
		require.Zero(t, *s.Wrong)
		require.Empty(t, out.stderr, "with -json, loadgen shows no progress")
	})

	t.Run("backend killed", func(t *testing.T) {
		x.kill(t)
		out := runProgram(t, "", "client", "-addr", addr, "4", "-3", "5")
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "client: -3 failed on backend x: x could not process -3: ")
		require.Contains(t, out.stderr, x.addr)
		require.NotContains(t, out.stderr, "next attempt", "the middle layer's redial plans are not the user's")
		require.Empty(t, out.stdout)

		out = runProgram(t, "", "client", "-addr", addr, "4", "5")
		require.Equal(t, 0, out.code, "the other backends still answer: %s", out.stderr)
		require.Equal(t, textOutput(t, 4, 5), out.stdout)
	})

	t.Run("backend back", func(t *testing.T) {
		// x comes back on its address. The middle layer tried x since it
		// went down (too few failures to eject it), and backs off from
		// dialing it for a while (its redial backoff, up to a second or
		// two); the first call after that wait reconnects and succeeds.
		// Each call until then fails on x alone, and says so.
		restarted := startServer(t, "x", "-listen", x.addr)
		require.Equal(t, x.addr, restarted.addr)
		deadline := time.Now().Add(15 * time.Second)
		for {
			out := runProgram(t, "", "client", "-addr", addr, "4", "-3", "5")
			if out.code == 0 {
				require.Equal(t, textOutput(t, 4, -3, 5), out.stdout)
				break
			}
			require.Contains(t, out.stderr, "client: -3 failed on backend x: ", "only x may fail while the middle layer backs off")
			require.True(t, time.Now().Before(deadline), "x not used again within 15s: %s", out.stderr)
		}
	})

	t.Run("graceful shutdown", func(t *testing.T) {
		for _, s := range []*server{middle, y, z} {
			require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
			require.Equal(t, 0, s.wait(t), "%s exit status", s.name)
			require.Contains(t, s.log(), s.name+" stopped")
		}
	})
}
