// End-to-end tests of the middle layer's HTTP/JSON gateway (middle -http):
// real processes, as in e2e_test.go, called over real HTTP, by Go and by
// the Python client. Each test waits for the states it needs (a line in a
// program's log, a program's exit), with only a guard against a hang.
package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// httpURL returns the base URL of the gateway of middle, from the line it
// logs when the gateway is ready (before "middle ready").
func httpURL(t *testing.T, middle *server) string {
	t.Helper()
	for line := range strings.Lines(middle.log()) {
		if addr, ok := readyAddr(strings.TrimSpace(line), "middle http"); ok {
			return "http://" + addr
		}
	}
	t.Fatalf("middle did not log that its HTTP gateway is ready:\n%s", middle.log())
	return ""
}

type httpReply struct {
	status int
	header http.Header
	body   string
}

func httpPost(t *testing.T, url, contentType, body string) httpReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for k, v := range resp.Trailer {
		resp.Header["Trailer-"+k] = v
	}
	return httpReply{resp.StatusCode, resp.Header, string(b)}
}

// httpError decodes an error answer: {"error": ..., "code": ...}.
func httpError(t *testing.T, r httpReply) map[string]any {
	t.Helper()
	var e map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.body), &e), r.body)
	require.NotEmpty(t, e["error"], r.body)
	return e
}

// TestHTTPGateway checks POST /v1/process and GET /v1/routes of a middle
// layer in front of real backends: the answers are byte for byte what
// client -json prints, with and without partial=1; bad bodies are refused
// with 400 naming the element, a body past -http-max-body-mb with 413, and
// the middle layer serves on after each.
func TestHTTPGateway(t *testing.T) {
	skipShort(t)
	x, y, z := startReplicas(t, "x", 1), startReplicas(t, "y", 1), startReplicas(t, "z", 1)
	middle := startMiddle(t, x, y, z, "-http", "127.0.0.1:0", "-http-max-body-mb", "1")
	base := httpURL(t, middle)
	process := base + "/v1/process"

	numbers := []string{"-3", "4", "7", "0", "-1", "9223372036854775806", "-3037000499"}
	r := httpPost(t, process, "application/json", "["+strings.Join(numbers, ", ")+"]")
	require.Equal(t, http.StatusOK, r.status, r.body)
	out := runProgram(t, "", "client", append([]string{"-addr", middle.addr, "-json", "--"}, numbers...)...)
	require.Equal(t, 0, out.code, out.stderr)
	require.Equal(t, out.stdout, r.body, "the gateway answers as client -json prints")
	require.Equal(t, "0", r.header.Get("Fanout-Failed"))

	// A number that overflows: one error, naming the number and its
	// backend; with partial=1, in its place, as client -partial -json.
	in := []string{"1", "2", "9223372036854775807", "-3"}
	r = httpPost(t, process, "application/json", "["+strings.Join(in, ",")+"]")
	require.Equal(t, http.StatusBadGateway, r.status, r.body)
	e := httpError(t, r)
	require.Equal(t, "backend_failed", e["code"])
	require.Equal(t, "9223372036854775807 failed on backend z: z: 3*9223372036854775807+1 overflows int64", e["error"])
	require.Equal(t, "z", e["backend"])
	r = httpPost(t, process+"?partial=1", "application/json", "["+strings.Join(in, ",")+"]")
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, "1", r.header.Get("Fanout-Failed"))
	out = runProgram(t, "", "client", append([]string{"-addr", middle.addr, "-json", "-partial", "--"}, in...)...)
	require.Equal(t, 1, out.code)
	require.Equal(t, out.stdout, r.body)

	for _, tc := range []struct{ body, msg string }{
		{"[1, 1.5]", "element 1 (1.5) is not an integer"},
		{`[1, "a"]`, `element 1 ("a") is not an integer`},
		{"[9223372036854775808]", "element 0 (9223372036854775808) is out of the int64 range"},
		{"[null]", "element 0 (null) is not an integer"},
		{"[1, 2", "the body ends at element 2, before the array is closed"},
		{"", "the body is empty: want a JSON array of integers"},
	} {
		r := httpPost(t, process, "application/json", tc.body)
		require.Equal(t, http.StatusBadRequest, r.status, tc.body)
		e := httpError(t, r)
		require.Equal(t, "bad_request", e["code"])
		require.Equal(t, tc.msg, e["error"])
		require.Equal(t, http.StatusOK, httpPost(t, process, "application/json", "[4]").status, "serving on after %q", tc.body)
	}

	big := "[" + strings.Repeat("1,", 600_000) + "1]" // 1.2 MB
	r = httpPost(t, process, "application/json", big)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status)
	require.Equal(t, "too_large", httpError(t, r)["code"])
	require.Equal(t, http.StatusOK, httpPost(t, process, "application/json", "[4]").status)

	// NDJSON, in order, with the trailer.
	r = httpPost(t, process, "application/x-ndjson", "-3\n4\n7\n")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, `{"input": -3, "output": 9, "backend": "x"}
{"input": 4, "output": 2, "backend": "y"}
{"input": 7, "output": 22, "backend": "z"}
`, r.body)
	require.Equal(t, "0", r.header.Get("Trailer-Fanout-Failed"))

	resp, err := http.Get(base + "/v1/routes")
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, fmt.Sprintf(`{"routes": [{"name": "x", "replicas": [%q]}, {"name": "y", "replicas": [%q]}, {"name": "z", "replicas": [%q]}]}`,
		x[0].addr, y[0].addr, z[0].addr), string(b))

	// And the middle layer still serves its transport clients.
	out = runProgram(t, "", "client", "-addr", middle.addr, "-3", "4")
	require.Equal(t, 0, out.code, out.stderr)
	require.Equal(t, textOutput(t, -3, 4), out.stdout)
}

// TestHTTPOverloadDeadlineAndFailure runs x with -delay 10s behind a
// middle layer that lets one call at a time into each route: an HTTP
// request with timeout=1s holds x's one call, a second is refused as
// overloaded (503, naming x), and the first ends with 504 while x logs the
// cancellation, the deadline having travelled to it. A second middle layer
// allows one HTTP request at a time: a second is refused with 503. With z
// down, z's numbers fail with 502 naming z.
func TestHTTPOverloadDeadlineAndFailure(t *testing.T) {
	skipShort(t)
	x := startServer(t, "x", "-listen", "127.0.0.1:0", "-delay", "10s", "-log-level", "debug")
	y, z := startReplicas(t, "y", 1), startReplicas(t, "z", 1)
	middle := startMiddle(t, []*server{x}, y, z, "-max-inflight", "1", "-http", "127.0.0.1:0")
	process := httpURL(t, middle) + "/v1/process"

	first := make(chan httpReply, 1)
	go func() { first <- httpPost(t, process+"?timeout=1s", "application/json", "[-3]") }()
	x.waitLog(t, `msg="call delayed"`, 1)
	r := httpPost(t, process, "application/json", "[4, -3]")
	require.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	e := httpError(t, r)
	require.Equal(t, "overloaded", e["code"])
	require.Equal(t, "x", e["backend"])
	require.Contains(t, e["error"], "-3 failed on backend x: ")

	r = <-first
	require.Equal(t, http.StatusGatewayTimeout, r.status, r.body)
	require.Equal(t, "deadline", httpError(t, r)["code"])
	x.waitLog(t, `msg="call cancelled"`, 1)

	// The Request-Timeout header, too.
	req, err := http.NewRequest(http.MethodPost, process, strings.NewReader("[-5]"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Request-Timeout", "500ms")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
	x.waitLog(t, `msg="call cancelled"`, 2)

	// One HTTP request at a time.
	one := startMiddle(t, []*server{x}, y, z, "-http", "127.0.0.1:0", "-http-max-requests", "1")
	oneURL := httpURL(t, one) + "/v1/process"
	go func() { first <- httpPost(t, oneURL+"?timeout=1s", "application/json", "[-3]") }()
	x.waitLog(t, `msg="call delayed"`, 3)
	r = httpPost(t, oneURL, "application/json", "[4]")
	require.Equal(t, http.StatusServiceUnavailable, r.status, r.body)
	require.Equal(t, "overloaded", httpError(t, r)["code"])
	require.Equal(t, http.StatusGatewayTimeout, (<-first).status)

	// z down: 502 naming z; with partial=1, z's numbers in their place.
	z[0].kill(t)
	r = httpPost(t, process, "application/json", "[4, 7]")
	require.Equal(t, http.StatusBadGateway, r.status, r.body)
	e = httpError(t, r)
	require.Equal(t, "backend_failed", e["code"])
	require.Equal(t, "z", e["backend"])
	require.Contains(t, e["error"], "7 failed on backend z: z could not process 7")
	r = httpPost(t, process+"?partial=1", "application/json", "[4, 7]")
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, "1", r.header.Get("Fanout-Failed"))
	var got []map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.body), &got))
	require.Equal(t, map[string]any{"input": 4.0, "output": 2.0, "backend": "y"}, got[0])
	require.Equal(t, "z", got[1]["backend"])
	require.Contains(t, got[1]["error"], "z could not process 7")
	require.NotContains(t, got[1], "output")

	// The middle layer serves on, and stops with SIGTERM, the gateway with
	// it.
	require.Equal(t, http.StatusOK, httpPost(t, process, "application/json", "[4]").status)
	require.NoError(t, middle.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, middle.wait(t), middle.log())
	require.Contains(t, middle.log(), `msg="middle stopped"`)
	_, err = http.Post(process, "application/json", strings.NewReader("[4]"))
	require.Error(t, err, "the gateway stopped with the middle layer")
}

// TestHTTPShutdownLetsRequestsFinish sends SIGTERM to a middle layer while
// an HTTP request is waiting for a slow x: the request is answered, then
// the middle layer exits with status 0.
func TestHTTPShutdownLetsRequestsFinish(t *testing.T) {
	skipShort(t)
	x := startServer(t, "x", "-listen", "127.0.0.1:0", "-delay", "1s", "-log-level", "debug")
	middle := startMiddle(t, []*server{x}, startReplicas(t, "y", 1), startReplicas(t, "z", 1), "-http", "127.0.0.1:0", "-grace", "20s")
	process := httpURL(t, middle) + "/v1/process"
	answer := make(chan httpReply, 1)
	go func() { answer <- httpPost(t, process, "application/json", "[-3, 4]") }()
	x.waitLog(t, `msg="call delayed"`, 1)
	require.NoError(t, middle.cmd.Process.Signal(syscall.SIGTERM))
	middle.waitLog(t, `msg="middle shutting down"`, 1)
	r := <-answer
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, "[\n  {\"input\": -3, \"output\": 9, \"backend\": \"x\"},\n  {\"input\": 4, \"output\": 2, \"backend\": \"y\"}\n]\n", r.body)
	require.Equal(t, 0, middle.wait(t), middle.log())
}

// TestHTTPFlags checks that a bad -http address and bad limits are bad
// usage, naming the flag and the value.
func TestHTTPFlags(t *testing.T) {
	skipShort(t)
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"-http", "notanaddress"}, `invalid value "notanaddress" for flag -http: "notanaddress" is not host:port`},
		{[]string{"-http", "127.0.0.1:99999"}, `invalid value "127.0.0.1:99999" for flag -http`},
		{[]string{"-http-max-body-mb", "0"}, "middle: -http-max-body-mb must be at least 1"},
		{[]string{"-http-max-requests", "0"}, "middle: -http-max-requests must be at least 1"},
	} {
		out := runProgram(t, "", "middle", tc.args...)
		require.Equal(t, 2, out.code, "%v: %s", tc.args, out.stderr)
		require.Contains(t, out.stderr, tc.msg)
		require.NotContains(t, out.stderr, "middle ready", "bad usage starts nothing")
	}
}

// TestHTTPStream10M streams ten million numbers as NDJSON through a real
// middle layer and real backends, checks every answer, in order, as it
// streams back, and measures the middle layer's peak memory, which must
// stay bounded (chunks of 65,536 numbers, four in flight), far below what
// the stream would take whole. FANOUT_HTTP_STREAM sets how many numbers.
func TestHTTPStream10M(t *testing.T) {
	skipShort(t)
	total := 10_000_000
	if s := os.Getenv("FANOUT_HTTP_STREAM"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "FANOUT_HTTP_STREAM")
		total = n
	}
	middle := startMiddle(t, startReplicas(t, "x", 1), startReplicas(t, "y", 1), startReplicas(t, "z", 1), "-http", "127.0.0.1:0")
	process := httpURL(t, middle) + "/v1/process?timeout=1m"
	number := func(i int) int64 { return int64(i-total/2) * 301 }

	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriterSize(pw, 64<<10)
		var b []byte
		for i := range total {
			b = strconv.AppendInt(b[:0], number(i), 10)
			b = append(b, '\n')
			if _, err := w.Write(b); err != nil {
				return
			}
		}
		pw.CloseWithError(w.Flush())
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, process, pr)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-ndjson")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	sc := bufio.NewScanner(resp.Body)
	var want []byte
	i := 0
	for ; sc.Scan(); i++ {
		require.Less(t, i, total, "more answers than numbers")
		n := number(i)
		exp, err := xyz.Expected(n)
		require.NoError(t, err)
		want = append(want[:0], `{"input": `...)
		want = strconv.AppendInt(want, n, 10)
		want = append(want, `, "output": `...)
		want = strconv.AppendInt(want, exp.Value, 10)
		want = append(want, `, "backend": "`...)
		want = append(want, exp.Backend...)
		want = append(want, `"}`...)
		if !bytes.Equal(sc.Bytes(), want) {
			t.Fatalf("answer %d: %s, want %s", i, sc.Bytes(), want)
		}
	}
	require.NoError(t, sc.Err())
	require.Equal(t, total, i)
	require.Equal(t, "0", resp.Trailer.Get("Fanout-Failed"))
	elapsed := time.Since(start)
	peak := peakMemory(t, middle.cmd.Process.Pid)
	t.Logf("%d numbers streamed in %v (%.0f numbers/s); the middle layer's peak resident memory: %.1f MiB",
		total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), float64(peak)/(1<<20))
	require.Less(t, peak, int64(200<<20), "the middle layer's peak memory")
}

// TestPythonClient runs examples/python/client.py with python3 against a
// real middle layer, as a user at its prompt would. python3 must be
// installed (.ci/run installs it); FANOUT_NO_PYTHON=1 skips the test on a
// machine without it, on purpose only.
func TestPythonClient(t *testing.T) {
	skipShort(t)
	python, err := exec.LookPath("python3")
	if err != nil {
		if os.Getenv("FANOUT_NO_PYTHON") == "1" {
			t.Skip("python3 is not installed, and FANOUT_NO_PYTHON=1 says to skip")
		}
		t.Fatalf("python3 is not installed (install it, or set FANOUT_NO_PYTHON=1 to skip this test on purpose): %v", err)
	}
	middle := startSystemHTTP(t)
	url := httpURL(t, middle)
	script, err := filepath.Abs(filepath.Join("python", "client.py"))
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, script, "--url", url)
	cmd.Stdin = strings.NewReader("-3 4 7\n\n1.5\n9223372036854775807 2\n0 -1\nQUIT\n5\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	require.Error(t, err, "a failed line makes it exit 1")
	require.Equal(t, 1, cmd.ProcessState.ExitCode(), stderr.String())
	require.Equal(t, textOutput(t, -3, 4, 7)+textOutput(t, 0, -1), stdout.String(), "quit stops it before 5")
	require.Contains(t, stderr.String(), "> ")
	require.Contains(t, stderr.String(), "client.py: '1.5' is not an integer\n")
	require.Contains(t, stderr.String(), "client.py: 9223372036854775807 failed on backend z: z: 3*9223372036854775807+1 overflows int64 (backend_failed, HTTP 502)\n")

	cmd = exec.CommandContext(ctx, python, script, "--url", url, "--partial")
	cmd.Stdin = strings.NewReader("9223372036854775807 2\n")
	out, err := cmd.Output()
	require.Error(t, err)
	require.Equal(t, "9223372036854775807 -> failed (backend z): z: 3*9223372036854775807+1 overflows int64\n2 -> 1 (backend y)\n", string(out))
}

// startSystemHTTP starts x, y, z and a middle layer with its HTTP gateway
// on free loopback ports.
func startSystemHTTP(t *testing.T) *server {
	return startMiddle(t, startReplicas(t, "x", 1), startReplicas(t, "y", 1), startReplicas(t, "z", 1), "-http", "127.0.0.1:0")
}
