// End-to-end tests of what a newcomer meets first: the prompt and its ways
// out, a standard input that is not a terminal, a bad token in a stream, a
// middle layer that is not there, a bad address, loadgen's summary and
// every program's -h; and that git ignores what the docs make and the
// READMEs speak to users. Real processes, as in e2e_test.go; each test
// waits for the states it needs (a prompt, a line, an exit), with only a
// guard against a hang.
package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// startSystem starts x, y, z and a middle layer in front of them, on free
// loopback ports, and returns the middle layer's address.
func startSystem(t *testing.T) string {
	return startMiddle(t, startReplicas(t, "x", 1), startReplicas(t, "y", 1), startReplicas(t, "z", 1)).addr
}

// closedAddr returns a loopback address where nothing listens: a port that
// was free a moment ago.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// found returns a channel that is closed once text occurs in a complete
// line of the log.
func (l *watchedLog) found(text string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := &logWaiter{text: []byte(text), left: 1, found: make(chan struct{})}
	if bytes.Contains(l.buf.Bytes()[:l.complete], w.text) {
		close(w.found)
	} else {
		l.waiters = append(l.waiters, w)
	}
	return w.found
}

// watchedText is a program's output that a test can wait on for text that
// need not end a line, such as a prompt.
type watchedText struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed at the next write, if a waiter made it
}

func (w *watchedText) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.changed != nil {
		close(w.changed)
		w.changed = nil
	}
	return len(p), nil
}

func (w *watchedText) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// wait waits until text occurs at least n times in what was written. It
// fails the test if exited is closed first (the program has exited and
// all its output is in), or after hangGuard.
func (w *watchedText) wait(t *testing.T, text string, n int, exited <-chan struct{}) {
	t.Helper()
	guard := time.After(hangGuard)
	for {
		w.mu.Lock()
		if strings.Count(w.buf.String(), text) >= n {
			w.mu.Unlock()
			return
		}
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		changed := w.changed
		w.mu.Unlock()
		select {
		case <-changed:
		case <-exited:
			if strings.Count(w.String(), text) >= n {
				return
			}
			t.Fatalf("the program exited before it wrote %q %d times; it wrote %q", text, n, w.String())
		case <-guard:
			t.Fatalf("%q not written %d times within %v; written: %q", text, n, hangGuard, w.String())
		}
	}
}

// TestClientNotOnATerminal checks that a client whose standard input is
// /dev/null, a character device but not a terminal, reads it as an empty
// job: no prompt, and with -json an empty array.
func TestClientNotOnATerminal(t *testing.T) {
	skipShort(t)
	addr := startSystem(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-json"}, "[]\n"},
		{nil, ""},
	} {
		devNull, err := os.Open(os.DevNull)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "client"), append([]string{"-addr", addr}, tc.args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, &stdout, &stderr
		err = cmd.Run()
		cancel()
		devNull.Close()
		require.NoError(t, err, "client %q < %s: %s", tc.args, os.DevNull, stderr.String())
		require.Equal(t, tc.want, stdout.String(), "client %q < %s", tc.args, os.DevNull)
		require.Empty(t, stderr.String(), "client %q < %s", tc.args, os.DevNull)
	}
}

// TestPromptOnTerminal runs the client on a pseudo-terminal, as a user at
// a terminal would: it prompts on standard error, so that standard output
// holds the answers only, prints an error and prompts again, and leaves on
// quit or exit (in any case, with spaces around) and on Ctrl-D.
func TestPromptOnTerminal(t *testing.T) {
	skipShort(t)
	addr := startSystem(t)
	for _, tc := range []struct{ name, leave string }{
		{"QUIT", "QUIT\n"},
		{"exit", "  exit \n"},
		{"Ctrl-D", "\x04"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctl, tty, err := openTerminal()
			if err != nil {
				t.Skipf("no pseudo-terminal: %v", err)
			}
			defer ctl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*hangGuard)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(bin, "client"), "-addr", addr)
			var stdout, stderr watchedText
			cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, &stdout, &stderr
			require.NoError(t, cmd.Start())
			tty.Close() // the client has it
			exited := make(chan struct{})
			var waitErr error
			go func() {
				waitErr = cmd.Wait()
				close(exited)
			}()
			go io.Copy(io.Discard, ctl) // the terminal's echo of what is typed

			stderr.wait(t, "> ", 1, exited)
			fmt.Fprint(ctl, "-3 4\n")
			stdout.wait(t, textOutput(t, -3, 4), 1, exited)
			stderr.wait(t, "> ", 2, exited)
			fmt.Fprint(ctl, "abc\n")
			stderr.wait(t, "client: \"abc\" is not an int64\n> ", 1, exited)
			fmt.Fprint(ctl, tc.leave)
			select {
			case <-exited:
			case <-time.After(hangGuard):
				t.Fatalf("the client did not leave on %q; its standard error: %q", tc.leave, stderr.String())
			}
			require.NoError(t, waitErr, stderr.String())
			require.Equal(t, textOutput(t, -3, 4), stdout.String(), "standard output holds the answers, no prompt")
		})
	}
}

// TestStdinBadTokenNamesItsLine checks that a bad token in a job from
// standard input is reported with its line, after the answers to the
// numbers before it.
func TestStdinBadTokenNamesItsLine(t *testing.T) {
	skipShort(t)
	addr := startSystem(t)
	out := runProgram(t, "1 2\n3\n\n4 1.5 5\n", "client", "-addr", addr)
	require.Equal(t, 2, out.code, out.stderr)
	require.Equal(t, "client: line 4: \"1.5\" is not an int64\n", out.stderr)
	require.Equal(t, textOutput(t, 1, 2, 3, 4), out.stdout)

	out = runProgram(t, "-1\r\n-2 x3\r\n", "client", "-addr", addr, "-json")
	require.Equal(t, 2, out.code, out.stderr)
	require.Equal(t, "client: line 2: \"x3\" is not an int64\n", out.stderr)
}

// TestMiddleLayerNotReachable runs the one-shot programs against an
// address where nothing listens: each says, in one line, that the middle
// layer at that address is not reachable and why, with nothing of the
// transport's inner workings (its redial backoff, its "backend
// unavailable").
func TestMiddleLayerNotReachable(t *testing.T) {
	skipShort(t)
	addr := closedAddr(t)
	for _, tc := range []struct {
		stdin string
		name  string
		args  []string
	}{
		{"", "client", []string{"-addr", addr, "1", "-3"}},
		{"1 -3\n", "client", []string{"-addr", addr}},
		{"", "client", []string{"-addr", addr, "-json", "-partial", "1"}},
		{"", "loadgen", []string{"-addr", addr, "-duration", "1s"}},
	} {
		out := runProgram(t, tc.stdin, tc.name, tc.args...)
		require.Equal(t, 1, out.code, "%s %q: %s", tc.name, tc.args, out.stderr)
		want := tc.name + ": the middle layer at " + addr + " is not reachable: dial tcp " + addr + ": "
		require.True(t, strings.HasPrefix(out.stderr, want), "%s %q: stderr %q, want it to start with %q", tc.name, tc.args, out.stderr, want)
		require.Equal(t, 1, strings.Count(out.stderr, "\n"), "%s %q: one line: %q", tc.name, tc.args, out.stderr)
		for _, inner := range []string{"next attempt", "backend unavailable", "transport:"} {
			require.NotContains(t, out.stderr, inner, "%s %q", tc.name, tc.args)
		}
		require.Empty(t, out.stdout, "%s %q", tc.name, tc.args)
	}
}

// TestAddressFlagsAreChecked checks that every address flag is checked
// before a program starts: a bad one is bad usage (exit status 2) named
// with its flag and value, and a server does not start.
func TestAddressFlagsAreChecked(t *testing.T) {
	skipShort(t)
	free := "127.0.0.1:0"
	for _, tc := range []struct {
		name        string
		args        []string
		flag, value string
	}{
		{"middle", []string{"-listen", free, "-y", "notanaddress"}, "-y", "notanaddress"},
		{"middle", []string{"-listen", free, "-x", "127.0.0.1:7001,127.0.0.1"}, "-x", "127.0.0.1:7001,127.0.0.1"},
		{"middle", []string{"-listen", free, "-z", "127.0.0.1:0"}, "-z", "127.0.0.1:0"},
		{"middle", []string{"-listen", "localhost"}, "-listen", "localhost"},
		{"x", []string{"-listen", "127.0.0.1:70000"}, "-listen", "127.0.0.1:70000"},
		{"y", []string{"-listen", "127.0.0.1:http"}, "-listen", "127.0.0.1:http"},
		{"z", []string{"-listen", ""}, "-listen", ""},
		{"client", []string{"-addr", "nohost", "1"}, "-addr", "nohost"},
		{"loadgen", []string{"-addr", "127.0.0.1:", "-duration", "1s"}, "-addr", "127.0.0.1:"},
	} {
		p := startProgram(t, "", tc.name, tc.args...)
		select {
		case <-p.stderr.found(" ready"):
			t.Fatalf("%s %q started:\n%s", tc.name, tc.args, p.stderr.String())
		case <-p.exited:
		case <-time.After(hangGuard):
			t.Fatalf("%s %q neither started nor exited within %v", tc.name, tc.args, hangGuard)
		}
		out := p.wait(t)
		require.Equal(t, 2, out.code, "%s %q: %s", tc.name, tc.args, out.stderr)
		require.Contains(t, out.stderr, fmt.Sprintf("invalid value %q for flag %s: ", tc.value, tc.flag), "%s %q", tc.name, tc.args)
		require.Empty(t, out.stdout)
	}

	// What the flags document is accepted: port 0 to listen on, host
	// names, IPv6, an empty host, replicas with spaces around the commas.
	// (The middle layer dials its backends on the first call, so none is
	// needed to start it.)
	middle := startServer(t, "middle", "-listen", "localhost:0",
		"-x", "127.0.0.1:7001, [::1]:7011", "-y", ":7002", "-z", "localhost:7003")
	require.NotEmpty(t, middle.addr)
}

// TestLoadgenSummary checks the words of loadgen's text summary (requests
// are the calls answered; a failed call is an error, not a request) and
// that its JSON summary has every field, with seconds to the millisecond.
func TestLoadgenSummary(t *testing.T) {
	skipShort(t)
	addr := startSystem(t)
	out := runProgram(t, "", "loadgen", "-addr", addr, "-duration", "1s", "-concurrency", "2")
	require.Equal(t, 0, out.code, out.stderr)
	require.Regexp(t, `(?m)^requests +\d+ calls answered \(\d+/s\)$`, out.stdout)
	require.Regexp(t, `(?m)^numbers +\d+ numbers answered \(\d+/s\)$`, out.stdout)
	require.Regexp(t, `(?m)^errors +0 calls failed \(not counted in requests\)$`, out.stdout)
	require.Regexp(t, `(?m)^wrong +0 answers wrong$`, out.stdout)
	require.Regexp(t, `(?m)^latency +p50 \d+µs  p90 \d+µs  p99 \d+µs  p99\.9 \d+µs  max \d+µs \(of the calls answered\)$`, out.stdout)

	out = runProgram(t, "", "loadgen", "-addr", addr, "-duration", "1s", "-concurrency", "2", "-json")
	require.Equal(t, 0, out.code, out.stderr)
	require.Regexp(t, `"seconds":\d+(\.\d{1,3})?,`, out.stdout, "seconds to the millisecond")
	var s map[string]any
	require.NoError(t, json.Unmarshal([]byte(out.stdout), &s), out.stdout)
	for _, field := range []string{"batch", "concurrency", "requests", "numbers", "errors", "wrong", "seconds",
		"requests_per_sec", "numbers_per_sec", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"} {
		require.Contains(t, s, field, out.stdout)
	}
}

// TestHelpSaysWhatTheProgramDoes checks the first line of every program's
// -h: what the program does.
func TestHelpSaysWhatTheProgramDoes(t *testing.T) {
	skipShort(t)
	for name, first := range map[string]string{
		"x":       "x is the example system's x backend: it answers each negative number n with n*n.",
		"y":       "y is the example system's y backend: it answers each even number n >= 0 with n/2.",
		"z":       "z is the example system's z backend: it answers each odd positive number n with 3n+1.",
		"middle":  "middle is the router: it sends each number to its backend (x, y or z) and answers in input order.",
		"client":  "client sends numbers to the middle layer and prints each one's result and backend.",
		"demo":    "demo starts the backends (x, y, z and the middle layer) in-process, then acts as client.",
		"loadgen": "loadgen loads the middle layer, checks every answer and reports throughput and latency.",
	} {
		out := runProgram(t, "", name, "-h")
		require.Equal(t, 0, out.code, "%s -h: %s", name, out.stderr)
		line, _, _ := strings.Cut(out.stderr, "\n")
		require.Equal(t, first, line, "%s -h", name)
		require.Empty(t, out.stdout, "%s -h", name)
	}
	out := runProgram(t, "", "demo", "-h")
	require.Contains(t, out.stderr, "starts the backends (x, y, z and the middle layer) in-process")
}

// TestGitignoreCoversWhatTheDocsMake checks that git ignores the files a
// user makes by following the docs: the test CA and certificates of
// examples/README.md, in pki/, and what profiling leaves behind.
func TestGitignoreCoversWhatTheDocsMake(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git")
	}
	if err := exec.Command(git, "-C", "..", "rev-parse", "--is-inside-work-tree").Run(); err != nil {
		t.Skip("not in a git work tree")
	}
	// What the openssl commands of examples/README.md make (ca.srl by
	// -CAcreateserial), keys and certificates made elsewhere, and what
	// go test -cpuprofile and perf record leave.
	made := []string{"pki/ca-key.pem", "pki/ca.pem", "pki/ext.cnf", "pki/ca.srl",
		"pki/node-key.pem", "pki/node.csr", "pki/node.pem", "pki/client-key.pem", "pki/client.csr", "pki/client.pem",
		"key.pem", "examples/server.key", "transport.test", "cpu.prof", "examples/perf.data"}
	for _, path := range made {
		out, err := exec.Command(git, "-C", "..", "check-ignore", "--no-index", path).CombinedOutput()
		require.NoError(t, err, "git does not ignore %s: %s", path, out)
	}
}

// TestReadmesSpeakToUsers checks that the READMEs speak to users, with no
// notes of the work that made them, and that the benchmark tables live in
// PERFORMANCE.md, which the README links to.
func TestReadmesSpeakToUsers(t *testing.T) {
	read := func(path string) string {
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		return string(b)
	}
	root, examples, perf := read("../README.md"), read("README.md"), read("../PERFORMANCE.md")
	for path, text := range map[string]string{"README.md": root, "examples/README.md": examples} {
		for _, note := range []string{"this session", "session's", "scratch", "the former", "the test now", "in this run", "so far"} {
			require.NotContains(t, strings.ToLower(text), note, "%s", path)
		}
	}
	for _, header := range []string{"| figure | fanout | gRPC |", "| command | requests/s |"} {
		require.NotContains(t, root, header, "README.md keeps a summary; the table is in PERFORMANCE.md")
		require.Contains(t, perf, header)
	}
	for _, section := range []string{"The bench, last run", "The example system under loadgen"} {
		require.Contains(t, perf, "\n## "+section+"\n")
		anchor := strings.ToLower(strings.NewReplacer(" ", "-", ",", "").Replace(section))
		require.Contains(t, root, "(PERFORMANCE.md#"+anchor+")", "README.md links to %q", section)
	}
}
