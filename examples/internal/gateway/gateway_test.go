package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/gateway"
	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// seen records every method, path and status the handler answered in the
// tests, for TestMain to check against the OpenAPI document.
var seen = struct {
	sync.Mutex
	m map[string]bool // "POST /v1/process 200"
}{m: map[string]bool{}}

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 && !testing.Short() {
		if err := checkDocumented(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: the OpenAPI document:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// openAPI is the part of the OpenAPI document the tests read.
type openAPI struct {
	Paths map[string]map[string]struct {
		RequestBody struct {
			Content map[string]struct {
				Examples map[string]struct {
					Query string          `json:"x-query"`
					Value json.RawMessage `json:"value"`
				} `json:"examples"`
			} `json:"content"`
		} `json:"requestBody"`
		Responses map[string]struct {
			Content map[string]struct {
				Examples map[string]struct {
					Value json.RawMessage `json:"value"`
				} `json:"examples"`
			} `json:"content"`
		} `json:"responses"`
	} `json:"paths"`
}

func readOpenAPI(t testing.TB) openAPI {
	var doc openAPI
	require.NoError(t, json.Unmarshal(gateway.OpenAPI, &doc))
	return doc
}

// checkDocumented checks that every method, path and status seen in the
// tests on a documented path is documented. Unknown paths answer 404, which
// no path documents.
func checkDocumented() error {
	var doc openAPI
	if err := json.Unmarshal(gateway.OpenAPI, &doc); err != nil {
		return err
	}
	seen.Lock()
	defer seen.Unlock()
	var missing []string
	for k := range seen.m {
		f := strings.Fields(k)
		methods, ok := doc.Paths[f[1]]
		if !ok {
			if f[2] != "404" {
				missing = append(missing, k)
			}
			continue
		}
		op, ok := methods[strings.ToLower(f[0])]
		if !ok {
			if f[2] != "405" || methods == nil {
				missing = append(missing, k)
			}
			continue
		}
		if _, ok := op.Responses[f[2]]; !ok {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("the handler answered what it does not document: %v", missing)
	}
	return nil
}

// recorder records the status of every answer in seen.
func recorder(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		seen.Lock()
		seen.m[fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, sw.status)] = true
		seen.Unlock()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// startGateway serves cfg's gateway on a loopback port.
func startGateway(t *testing.T, cfg gateway.Config) string {
	srv := httptest.NewServer(recorder(gateway.New(cfg)))
	t.Cleanup(srv.Close)
	return srv.URL
}

// startSystem runs x, y, z and a middle layer in process over real TCP, and
// serves the middle layer's gateway.
func startSystem(t *testing.T) string {
	if testing.Short() {
		t.Skip("starts a system on loopback ports")
	}
	sys, err := node.StartSystem()
	require.NoError(t, err)
	t.Cleanup(func() { sys.Close() })
	return startGateway(t, gateway.Config{Backend: sys.Middle.Backend(), Routes: sys.Middle.Routes()})
}

type reply struct {
	status int
	header http.Header
	body   string
}

func post(t *testing.T, url, contentType, body string) reply {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Header["Trailer-Values"] = nil
	for k, v := range resp.Trailer {
		resp.Header["Trailer-"+k] = v
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// errorBody decodes an error answer.
func errorBody(t *testing.T, r reply) map[string]any {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"), r.body)
	var e map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.body), &e), r.body)
	require.NotEmpty(t, e["error"], r.body)
	require.NotEmpty(t, e["code"], r.body)
	return e
}

// clientJSON is what client -json prints for numbers, by the table.
func clientJSON(t *testing.T, numbers ...int64) string {
	if len(numbers) == 0 {
		return "[]\n"
	}
	var b strings.Builder
	for i, n := range numbers {
		want, err := xyz.Expected(n)
		require.NoError(t, err)
		b.WriteString(map[bool]string{true: "[\n  ", false: ",\n  "}[i == 0])
		fmt.Fprintf(&b, `{"input": %d, "output": %d, "backend": %q}`, n, want.Value, want.Backend)
	}
	b.WriteString("\n]\n")
	return b.String()
}

func TestProcess(t *testing.T) {
	url := startSystem(t) + "/v1/process"
	for _, numbers := range [][]int64{{-3, 4, 7}, {}, {0, -1, 1, 2, -3037000499, 9223372036854775806}} {
		var in []string
		for _, n := range numbers {
			in = append(in, strconv.FormatInt(n, 10))
		}
		r := post(t, url, "application/json", "["+strings.Join(in, ", ")+"]")
		require.Equal(t, http.StatusOK, r.status, r.body)
		require.Equal(t, clientJSON(t, numbers...), r.body)
		require.Equal(t, "0", r.header.Get("Fanout-Failed"))
	}

	// No Content-Type is JSON too; spaces and newlines anywhere.
	r := post(t, url, "", " [ -3 ,\n4 ] \n")
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, clientJSON(t, -3, 4), r.body)

	// One number overflows: one error naming it and its backend, 502.
	r = post(t, url, "application/json", "[1, 9223372036854775807, 2]")
	require.Equal(t, http.StatusBadGateway, r.status, r.body)
	e := errorBody(t, r)
	require.Equal(t, "backend_failed", e["code"])
	require.Equal(t, "9223372036854775807 failed on backend z: z: 3*9223372036854775807+1 overflows int64", e["error"])
	require.Equal(t, "z", e["backend"])
	require.EqualValues(t, 1, e["index"])

	// With partial=1, in its place.
	r = post(t, url+"?partial=1", "application/json", "[1, 9223372036854775807, 2]")
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, "1", r.header.Get("Fanout-Failed"))
	require.Equal(t, `[
  {"input": 1, "output": 4, "backend": "z"},
  {"input": 9223372036854775807, "backend": "z", "error": "z: 3*9223372036854775807+1 overflows int64"},
  {"input": 2, "output": 1, "backend": "y"}
]
`, r.body)
}

func TestBadInput(t *testing.T) {
	url := startSystem(t) + "/v1/process"
	for _, tc := range []struct {
		body, msg string
		index     int // -1 for none
	}{
		{"[1, 1.5]", "element 1 (1.5) is not an integer", 1},
		{`[1, "a"]`, `element 1 ("a") is not an integer`, 1},
		{"[9223372036854775808]", "element 0 (9223372036854775808) is out of the int64 range", 0},
		{"[-9223372036854775809]", "element 0 (-9223372036854775809) is out of the int64 range", 0},
		{"[1, 2, null]", "element 2 (null) is not an integer", 2},
		{"[1, [2]]", "element 1 (an array) is not an integer", 1},
		{`[{"a": 1}]`, "element 0 (an object) is not an integer", 0},
		{"[1e3]", "element 0 (1e3) is not an integer", 0},
		{"[true]", "element 0 (true) is not an integer", 0},
		{"[1, 2", "the body ends at element 2, before the array is closed", 2},
		{"[1, 2,", "the body ends at element 2, before the array is closed", 2},
		{"[01]", "the body is not valid JSON at element 1, before the array is closed: invalid character '1' after array element", 1},
		{"", "the body is empty: want a JSON array of integers", -1},
		{"{}", "the body is an object, not a JSON array of integers", -1},
		{"7", "the body is 7, not a JSON array of integers", -1},
		{"[1] [2]", "the body goes on after the array", -1},
		{"[1]]", "the body goes on after the array", -1},
	} {
		r := post(t, url, "application/json", tc.body)
		require.Equal(t, http.StatusBadRequest, r.status, "%s: %s", tc.body, r.body)
		e := errorBody(t, r)
		require.Equal(t, "bad_request", e["code"], tc.body)
		require.Equal(t, tc.msg, e["error"], tc.body)
		if tc.index >= 0 {
			require.EqualValues(t, tc.index, e["index"], tc.body)
		} else {
			require.NotContains(t, e, "index", tc.body)
		}
		// And the gateway goes on serving.
		require.Equal(t, http.StatusOK, post(t, url, "application/json", "[4]").status)
	}

	for _, q := range []string{"timeout=abc", "timeout=-1s", "timeout=0s", "timeout=11m", "partial=maybe"} {
		r := post(t, url+"?"+q, "application/json", "[4]")
		require.Equal(t, http.StatusBadRequest, r.status, q)
		require.Equal(t, "bad_request", errorBody(t, r)["code"])
	}

	r := post(t, url, "text/plain", "[4]")
	require.Equal(t, http.StatusUnsupportedMediaType, r.status)
	require.Equal(t, "unsupported_media_type", errorBody(t, r)["code"])

	resp, err := http.Get(url)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	require.Equal(t, "POST", resp.Header.Get("Allow"))
	recordGet(t, url)
	recordGet(t, strings.TrimSuffix(url, "/v1/process")+"/nowhere")
}

// recordGet makes a GET request, for its status to be recorded.
func recordGet(t *testing.T, url string) reply {
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func TestTooLarge(t *testing.T) {
	echo := fanout.BackendFunc[int64, xyz.Result](func(ctx context.Context, items []int64) ([]xyz.Result, error) {
		out := make([]xyz.Result, len(items))
		for i, n := range items {
			out[i] = xyz.Result{Value: n, Backend: "echo"}
		}
		return out, nil
	})
	url := startGateway(t, gateway.Config{Backend: echo, MaxBodyBytes: 100}) + "/v1/process"
	body := "[" + strings.Repeat("1, ", 40) + "1]" // 123 bytes
	r := post(t, url, "application/json", body)
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status, r.body)
	e := errorBody(t, r)
	require.Equal(t, "too_large", e["code"])
	require.Contains(t, e["error"], "larger than 100 bytes")
	require.Equal(t, http.StatusOK, post(t, url, "application/json", "[1, 2]").status)

	// NDJSON is not bounded by it: it streams.
	r = post(t, url, "application/x-ndjson", strings.Repeat("1\n", 1000))
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, 1000, strings.Count(r.body, "\n"))
}

// blocking is a backend whose calls wait until their context ends, and
// tell entered when they start.
func blocking(entered chan<- time.Time) fanout.Backend[int64, xyz.Result] {
	return fanout.BackendFunc[int64, xyz.Result](func(ctx context.Context, items []int64) ([]xyz.Result, error) {
		d, _ := ctx.Deadline()
		entered <- d
		<-ctx.Done()
		return nil, ctx.Err()
	})
}

func TestOverloadedAndDeadline(t *testing.T) {
	entered := make(chan time.Time, 1)
	url := startGateway(t, gateway.Config{Backend: blocking(entered), MaxRequests: 1}) + "/v1/process"
	first := make(chan reply, 1)
	start := time.Now()
	go func() { first <- post(t, url+"?timeout=2s", "application/json", "[1]") }()
	deadline := <-entered
	require.WithinDuration(t, start.Add(2*time.Second), deadline, time.Second, "the deadline reaches the backend")

	// The one request allowed is in flight: the next is refused at once.
	r := post(t, url, "application/json", "[1]")
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Equal(t, "overloaded", errorBody(t, r)["code"])

	r = <-first
	require.Equal(t, http.StatusGatewayTimeout, r.status, r.body)
	require.Equal(t, "deadline", errorBody(t, r)["code"])

	// The Request-Timeout header sets the deadline too.
	hreq, err := http.NewRequest(http.MethodPost, url, strings.NewReader("[1]"))
	require.NoError(t, err)
	hreq.Header.Set("Request-Timeout", "1ms")
	start = time.Now()
	resp, err := http.DefaultClient.Do(hreq)
	require.NoError(t, err)
	resp.Body.Close()
	require.WithinDuration(t, start.Add(time.Millisecond), <-entered, time.Second)
	require.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
}

func TestRouteFailures(t *testing.T) {
	// A route refused as overloaded, or failed, in a partial answer.
	var cause error
	b := fanout.BackendFunc[int64, xyz.Result](func(ctx context.Context, items []int64) ([]xyz.Result, error) {
		out := make([]xyz.Result, len(items))
		for i, n := range items {
			out[i] = xyz.Result{Value: n, Backend: "y"}
		}
		return out, &fanout.PartialError{Failed: []*fanout.RouteError{{Route: "x", Indices: []int{1}, Err: cause}}}
	})
	url := startGateway(t, gateway.Config{Backend: b}) + "/v1/process"
	for _, tc := range []struct {
		cause  error
		status int
		code   string
	}{
		{fmt.Errorf("x could not process -1: %w", fanout.ErrOverloaded), http.StatusServiceUnavailable, "overloaded"},
		{fmt.Errorf("x could not process -1: %w", context.DeadlineExceeded), http.StatusGatewayTimeout, "deadline"},
		{fmt.Errorf("x could not process -1: %w", fanout.ErrUnavailable), http.StatusBadGateway, "backend_failed"},
	} {
		cause = tc.cause
		r := post(t, url, "application/json", "[2, -1]")
		require.Equal(t, tc.status, r.status, r.body)
		e := errorBody(t, r)
		require.Equal(t, tc.code, e["code"])
		require.Equal(t, "-1 failed on backend x: "+tc.cause.Error(), e["error"])
		require.Equal(t, "x", e["backend"])
		require.EqualValues(t, -1, e["input"])

		r = post(t, url+"?partial=1", "application/json", "[2, -1]")
		require.Equal(t, http.StatusOK, r.status, r.body)
		require.Equal(t, "1", r.header.Get("Fanout-Failed"))
		require.Contains(t, r.body, `{"input": -1, "backend": "x", "error": `)
	}
}

func TestRoutes(t *testing.T) {
	routes := []gateway.Route{{Name: "x", Replicas: []string{"127.0.0.1:7001", "127.0.0.1:7011"}}, {Name: "y", Replicas: []string{"127.0.0.1:7002"}}}
	url := startGateway(t, gateway.Config{Backend: blocking(nil), Routes: routes})
	r := recordGet(t, url+"/v1/routes")
	require.Equal(t, http.StatusOK, r.status)
	require.JSONEq(t, `{"routes": [{"name": "x", "replicas": ["127.0.0.1:7001", "127.0.0.1:7011"]}, {"name": "y", "replicas": ["127.0.0.1:7002"]}]}`, r.body)
	r = post(t, url+"/v1/routes", "application/json", "[]")
	require.Equal(t, http.StatusMethodNotAllowed, r.status)
	r = recordGet(t, url+"/v1/openapi.json")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, string(gateway.OpenAPI), r.body)
}

// streamLines checks an NDJSON answer to numbers, line by line.
func streamLines(t *testing.T, body string, numbers []int64) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(body))
	i := 0
	for ; sc.Scan(); i++ {
		require.Less(t, i, len(numbers), "more lines than numbers")
		want, err := xyz.Expected(numbers[i])
		require.NoError(t, err)
		exp := fmt.Sprintf(`{"input": %d, "output": %d, "backend": %q}`, numbers[i], want.Value, want.Backend)
		if sc.Text() != exp {
			t.Fatalf("line %d: %s, want %s", i+1, sc.Text(), exp)
		}
	}
	require.Equal(t, len(numbers), i)
}

func TestStream(t *testing.T) {
	url := startSystem(t) + "/v1/process"
	var numbers []int64
	var in bytes.Buffer
	for i := range 200_000 { // four chunks, the last in part
		n := int64(i-100_000) * 7_919
		numbers = append(numbers, n)
		fmt.Fprintf(&in, "%d\n", n)
	}
	r := post(t, url, "application/x-ndjson", in.String())
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Equal(t, "application/x-ndjson", r.header.Get("Content-Type"))
	require.Equal(t, "0", r.header.Get("Trailer-Fanout-Failed"))
	streamLines(t, r.body, numbers)

	// Blank lines, spaces, CRLF and no newline at the end.
	r = post(t, url, "application/x-ndjson; charset=utf-8", "\n -3 \r\n\n4\n7")
	require.Equal(t, http.StatusOK, r.status, r.body)
	streamLines(t, r.body, []int64{-3, 4, 7})

	// Empty.
	r = post(t, url, "application/x-ndjson", "")
	require.Equal(t, http.StatusOK, r.status, r.body)
	require.Empty(t, r.body)

	// A bad line in the first chunk: 400, nothing else.
	r = post(t, url, "application/x-ndjson", "1\n2\n1.5\n3\n")
	require.Equal(t, http.StatusBadRequest, r.status, r.body)
	e := errorBody(t, r)
	require.Equal(t, `line 3 (number 2, "1.5") is not an integer`, e["error"])
	require.EqualValues(t, 2, e["index"])

	// A bad line in the second chunk: the first chunk's answers, then an
	// error line, and the stream ends.
	bad := strings.Repeat("4\n", gateway.ChunkSize) + "5\n[6]\n7\n"
	r = post(t, url, "application/x-ndjson", bad)
	require.Equal(t, http.StatusOK, r.status)
	lines := strings.Split(strings.TrimSuffix(r.body, "\n"), "\n")
	require.Len(t, lines, gateway.ChunkSize+1)
	require.Equal(t, `{"input": 4, "output": 2, "backend": "y"}`, lines[0])
	require.JSONEq(t, fmt.Sprintf(`{"error": "line %d (number %d, \"[6]\") is not an integer", "code": "bad_request", "index": %d}`,
		gateway.ChunkSize+2, gateway.ChunkSize+1, gateway.ChunkSize+1), lines[len(lines)-1])

	// A failed number, without and with partial=1, in the first chunk and
	// in the second.
	r = post(t, url, "application/x-ndjson", "1\n9223372036854775807\n")
	require.Equal(t, http.StatusBadGateway, r.status)
	require.Equal(t, "backend_failed", errorBody(t, r)["code"])
	r = post(t, url+"?partial=1", "application/x-ndjson", "1\n9223372036854775807\n")
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "1", r.header.Get("Trailer-Fanout-Failed"))
	require.Equal(t, `{"input": 1, "output": 4, "backend": "z"}
{"input": 9223372036854775807, "backend": "z", "error": "z: 3*9223372036854775807+1 overflows int64"}
`, r.body)
	r = post(t, url, "application/x-ndjson", strings.Repeat("4\n", gateway.ChunkSize)+"9223372036854775807\n")
	require.Equal(t, http.StatusOK, r.status)
	lines = strings.Split(strings.TrimSuffix(r.body, "\n"), "\n")
	require.Len(t, lines, gateway.ChunkSize+1)
	require.JSONEq(t, fmt.Sprintf(`{"error": "9223372036854775807 failed on backend z: z: 3*9223372036854775807+1 overflows int64",
		"code": "backend_failed", "index": %d, "input": 9223372036854775807, "backend": "z"}`, gateway.ChunkSize), lines[len(lines)-1])
}

// TestOpenAPIExamples sends every request example of the OpenAPI document
// and checks the answer against the response example of the same name.
func TestOpenAPIExamples(t *testing.T) {
	url := startSystem(t)
	doc := readOpenAPI(t)
	checked := 0
	for path, methods := range doc.Paths {
		for method, op := range methods {
			for ct, content := range op.RequestBody.Content {
				for name, ex := range content.Examples {
					body := ex.Value
					if ct != "application/json" {
						var s string
						require.NoError(t, json.Unmarshal(ex.Value, &s))
						body = []byte(s)
					}
					target := url + path
					if ex.Query != "" {
						target += "?" + ex.Query
					}
					hreq, err := http.NewRequest(strings.ToUpper(method), target, bytes.NewReader(body))
					require.NoError(t, err)
					hreq.Header.Set("Content-Type", ct)
					resp, err := http.DefaultClient.Do(hreq)
					require.NoError(t, err)
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					require.NoError(t, err)
					documented, ok := op.Responses[strconv.Itoa(resp.StatusCode)]
					require.True(t, ok, "example %s: status %d is not documented: %s", name, resp.StatusCode, got)
					rct, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
					want, ok := documented.Content[rct].Examples[name]
					if !ok {
						continue // an example without a documented answer
					}
					if rct == "application/json" {
						require.JSONEq(t, string(want.Value), string(got), "example %s", name)
					} else {
						var s string
						require.NoError(t, json.Unmarshal(want.Value, &s))
						require.Equal(t, s, string(got), "example %s", name)
					}
					checked++
				}
			}
		}
	}
	require.GreaterOrEqual(t, checked, 9, "examples checked")
}

// TestStreamFailingWhileItsBodyArrives fails a stream, at its first chunk
// and at its second, while the client is still sending the body, then
// sends the rest of the body and a second request on the same connection.
// The gateway stops reading a failed stream's body, and so must close the
// connection after its answer: net/http cancels a connection's context for
// good once a read of it fails, and a request served on it after that
// would start cancelled (it was answered 200 with an empty body).
func TestStreamFailingWhileItsBodyArrives(t *testing.T) {
	addr := strings.TrimPrefix(startSystem(t), "http://")
	fours := func(n int) string { return strings.Repeat("4\n", n) }
	const failing = "9223372036854775807\n" // z overflows
	for _, tc := range []struct {
		name  string
		sent  string // a failing number in a chunk sent whole, and more
		code  int
		lines int // of the answer, the error's included
	}{
		{"first chunk", fours(gateway.ChunkSize-1) + failing + "4\n", http.StatusBadGateway, 1},
		{"second chunk", fours(2*gateway.ChunkSize-1) + failing + "4\n", http.StatusOK, gateway.ChunkSize + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Minute)) // a hang guard
			// The body is chunked, and its end is not sent yet.
			_, err = fmt.Fprintf(conn, "POST /v1/process HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/x-ndjson\r\n"+
				"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(tc.sent), tc.sent)
			require.NoError(t, err)
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			require.Equal(t, tc.code, resp.StatusCode)
			body, err := io.ReadAll(resp.Body)
			if tc.code == http.StatusOK {
				// The first chunk's answers and the error line, then the
				// connection ends, the stream unended.
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			} else {
				require.NoError(t, err)
				require.True(t, resp.Close, "the answer says the connection closes")
			}
			lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
			require.Len(t, lines, tc.lines)
			var e map[string]any
			require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &e), lines[len(lines)-1])
			require.Equal(t, "backend_failed", e["code"])

			// The end of the body and a second request find the
			// connection closed.
			fmt.Fprintf(conn, "0\r\n\r\nPOST /v1/process HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/x-ndjson\r\nContent-Length: 4\r\n\r\n1\n2\n")
			// (The server may have closed it before they arrived, and then
			// the client's system resets it.)
			rest, err := io.ReadAll(br)
			if !errors.Is(err, syscall.ECONNRESET) {
				require.NoError(t, err, "the connection was not closed")
			}
			require.Empty(t, string(rest))

			// A new connection is served in full.
			r := post(t, "http://"+addr+"/v1/process", "application/x-ndjson", "1\n2\n")
			require.Equal(t, http.StatusOK, r.status)
			streamLines(t, r.body, []int64{1, 2})
		})
	}
}
