// Package gateway is the HTTP/JSON face of the middle layer: an
// [http.Handler] that answers batches of numbers sent as JSON, so that a
// program in any language can use the example system with nothing but an
// HTTP client.
//
// Endpoints (openapi.json beside this file describes them in OpenAPI 3, and
// is served at GET /v1/openapi.json):
//
//   - POST /v1/process takes a JSON array of integers and answers a JSON
//     array with an object per number, in input order, as `client -json`
//     prints them: {"input": -3, "output": 9, "backend": "x"}. With
//     Content-Type application/x-ndjson the body is one number per line and
//     the answer streams back one object per line, a chunk at a time.
//   - GET /v1/routes describes the routing table: each route's name and the
//     addresses of its replicas.
//
// Query parameters of POST /v1/process: partial=1 answers each failed
// number in its place, {"input": 7, "backend": "z", "error": "..."}, and
// counts them in the Fanout-Failed header (a trailer for NDJSON); without
// it, a failure is one error. timeout=D (a Go duration, such as 1s or
// 250ms), or the Request-Timeout header, is the call's deadline, which
// travels on to the backends (default [DefaultTimeout]; for NDJSON, the
// deadline of each chunk).
//
// Every error is JSON, {"error": "...", "code": "..."}, with a status:
// 400 bad_request (a body that is not an array of integers: the message
// and "index" name the first bad element), 413 too_large, 415
// unsupported_media_type, 404 not_found, 405 method_not_allowed, 503
// overloaded (with Retry-After), 504 deadline, 502 backend_failed (naming
// the number, in "input", and the backend, in "backend").
package gateway

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// OpenAPI is the OpenAPI 3 document of the endpoints, served at GET
// /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Defaults of a [Config].
const (
	DefaultMaxBodyBytes = 1 << 20 // 1 MiB: about 100,000 numbers of 8 digits
	DefaultMaxRequests  = 64
	DefaultTimeout      = 10 * time.Second
	MaxTimeout          = 10 * time.Minute

	// ChunkSize and ChunksInFlight shape an NDJSON stream: it is sent to the
	// backend in calls of ChunkSize numbers, ChunksInFlight at once, and
	// answered a chunk at a time, in order. Half the transport client's
	// chunk: calls of 131,072 streamed no faster and took the middle
	// layer's memory up by half (PERFORMANCE.md, section 6b).
	ChunkSize      = 1 << 16
	ChunksInFlight = 4

	// StallTimeout bounds how long a stream may go without a chunk of its
	// body arriving or being written.
	StallTimeout = time.Minute
)

// Route is one route of the routing table, as GET /v1/routes describes it.
type Route struct {
	Name     string   `json:"name"`
	Replicas []string `json:"replicas"`
	Fallback string   `json:"fallback,omitempty"` // the route its numbers go to when every replica is down
	Shadow   []string `json:"shadow,omitempty"`   // the replicas of a candidate its calls are mirrored to
}

// Config describes a gateway.
type Config struct {
	// Backend answers the numbers: the middle layer's own backend, in
	// process ([xyz.PerItem] over its router), or any other.
	Backend fanout.Backend[int64, xyz.Result]

	// Routes is the routing table GET /v1/routes describes.
	Routes []Route

	// MaxBodyBytes bounds a JSON request body; past it, 413. An NDJSON body
	// is not bounded: it streams in bounded memory. 0 means
	// [DefaultMaxBodyBytes].
	MaxBodyBytes int64

	// MaxRequests bounds the requests served at once; past it, 503 at once.
	// 0 means [DefaultMaxRequests].
	MaxRequests int

	// Log gets a line for each request that failed on the server's side
	// (5xx). nil for nowhere.
	Log *slog.Logger
}

// New returns the gateway cfg describes.
func New(cfg Config) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = DefaultMaxRequests
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g := &gateway{cfg: cfg, slots: make(chan struct{}, cfg.MaxRequests)}
	routes, err := json.Marshal(struct {
		Routes []Route `json:"routes"`
	}{cfg.Routes})
	if err != nil {
		panic(err) // strings only
	}
	g.routes = append(routes, '\n')
	return g
}

type gateway struct {
	cfg    Config
	slots  chan struct{} // a token per request served
	routes []byte        // the answer of GET /v1/routes
}

// Codes of the error answers, in their "code" field.
const (
	codeBadRequest    = "bad_request"
	codeTooLarge      = "too_large"
	codeMediaType     = "unsupported_media_type"
	codeNotFound      = "not_found"
	codeMethod        = "method_not_allowed"
	codeOverloaded    = "overloaded"
	codeDeadline      = "deadline"
	codeBackendFailed = "backend_failed"
	codeCancelled     = "cancelled"
)

// apiError is an error answer.
type apiError struct {
	status  int
	Error   string  `json:"error"`
	Code    string  `json:"code"`
	Index   *int    `json:"index,omitempty"`   // of the bad element (400) or the failed number (502)
	Input   *int64  `json:"input,omitempty"`   // the number that failed (502)
	Backend *string `json:"backend,omitempty"` // the backend that failed it (502)
}

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, Code: code, Error: fmt.Sprintf(format, args...)}
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case g.slots <- struct{}{}:
		defer func() { <-g.slots }()
	default:
		g.fail(w, r, newError(http.StatusServiceUnavailable, codeOverloaded,
			"overloaded: %d requests already in flight; try again later", cap(g.slots)))
		return
	}
	switch r.URL.Path {
	case "/v1/process":
		if g.method(w, r, http.MethodPost) {
			g.process(w, r)
		}
	case "/v1/routes":
		if g.method(w, r, http.MethodGet, http.MethodHead) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(g.routes)
		}
	case "/v1/openapi.json":
		if g.method(w, r, http.MethodGet, http.MethodHead) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(OpenAPI)
		}
	default:
		g.fail(w, r, newError(http.StatusNotFound, codeNotFound, "no such endpoint: %s (see GET /v1/openapi.json)", r.URL.Path))
	}
}

// method reports whether r's method is one of allowed, and answers 405 if
// not.
func (g *gateway) method(w http.ResponseWriter, r *http.Request, allowed ...string) bool {
	for _, m := range allowed {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	g.fail(w, r, newError(http.StatusMethodNotAllowed, codeMethod, "%s takes %s, not %s", r.URL.Path, strings.Join(allowed, " or "), r.Method))
	return false
}

// fail answers e.
func (g *gateway) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	if e.status >= 500 {
		g.cfg.Log.Warn("http request failed", "method", r.Method, "path", r.URL.Path, "status", e.status, "code", e.Code, "err", e.Error)
	}
	h := w.Header()
	h.Del("Trailer")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.Code == codeOverloaded {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(e.status)
	w.Write(e.line())
}

// line returns e as a line of JSON.
func (e *apiError) line() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// options are the query parameters and headers of POST /v1/process.
type options struct {
	partial bool
	timeout time.Duration
}

func parseOptions(r *http.Request) (options, *apiError) {
	o := options{timeout: DefaultTimeout}
	q := r.URL.Query()
	if v := q.Get("partial"); v != "" {
		p, err := strconv.ParseBool(v)
		if err != nil {
			return o, newError(http.StatusBadRequest, codeBadRequest, "partial=%q: want 1 or 0 (true or false)", v)
		}
		o.partial = p
	}
	for _, t := range []struct{ name, value string }{
		{"timeout", q.Get("timeout")},
		{"Request-Timeout", r.Header.Get("Request-Timeout")},
	} {
		if t.value == "" {
			continue
		}
		d, err := time.ParseDuration(t.value)
		if err != nil || d <= 0 || d > MaxTimeout {
			return o, newError(http.StatusBadRequest, codeBadRequest, "%s %q: want a duration such as 1s or 250ms, above 0 and at most %v", t.name, t.value, MaxTimeout)
		}
		o.timeout = d
		break // the query parameter first
	}
	return o, nil
}

// process serves POST /v1/process.
func (g *gateway) process(w http.ResponseWriter, r *http.Request) {
	opts, e := parseOptions(r)
	if e != nil {
		g.fail(w, r, e)
		return
	}
	mt := "application/json"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			mt = ct
		}
	}
	switch mt {
	case "application/json":
		g.processArray(w, r, opts)
	case "application/x-ndjson":
		g.processStream(w, r, opts)
	default:
		g.fail(w, r, newError(http.StatusUnsupportedMediaType, codeMediaType,
			"Content-Type %q: want application/json (an array of integers) or application/x-ndjson (an integer per line)", mt))
	}
}

// bodyError turns an error reading or decoding a body into an answer.
func bodyError(err error, limit int64) *apiError {
	var ie *inputError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ie):
		e := newError(http.StatusBadRequest, codeBadRequest, "%s", ie.msg)
		if ie.index >= 0 {
			e.Index = &ie.index
		}
		return e
	case errors.As(err, &mbe):
		return newError(http.StatusRequestEntityTooLarge, codeTooLarge,
			"the body is larger than %d bytes; send large batches as application/x-ndjson, which streams", limit)
	}
	return newError(http.StatusBadRequest, codeBadRequest, "reading the body: %v", err)
}

// processArray answers a JSON array.
func (g *gateway) processArray(w http.ResponseWriter, r *http.Request, opts options) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(StallTimeout))
	rc.SetWriteDeadline(time.Now().Add(opts.timeout + StallTimeout))
	defer func() {
		rc.SetReadDeadline(time.Time{}) // the connection may serve another request
		rc.SetWriteDeadline(time.Time{})
	}()
	numbers, err := decodeArray(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	if err != nil {
		g.fail(w, r, bodyError(err, g.cfg.MaxBodyBytes))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opts.timeout)
	defer cancel()
	results, failed, e := g.call(ctx, numbers, opts)
	if e != nil {
		g.fail(w, r, e)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Fanout-Failed", strconv.Itoa(failed))
	out := newWriter(w)
	out.array(numbers, results)
	out.flush()
}

// call processes numbers within ctx and returns their answers, failed ones
// included, and how many failed; or, if the call failed as a whole, or
// without opts.partial a number failed, the error to answer.
func (g *gateway) call(ctx context.Context, numbers []int64, opts options) ([]xyz.Result, int, *apiError) {
	results, err := g.cfg.Backend.Process(ctx, numbers)
	pe, _ := err.(*fanout.PartialError)
	if err != nil && pe == nil {
		return nil, 0, callError(ctx, err)
	}
	if err == nil && len(results) != len(numbers) {
		return nil, 0, newError(http.StatusBadGateway, codeBackendFailed, "%v: %d results for %d numbers", fanout.ErrResultCount, len(results), len(numbers))
	}
	if pe == nil {
		return results, 0, nil
	}
	results = xyz.Annotate(results, len(numbers), pe)
	failed := 0
	for i := range results {
		if results[i].Failed() {
			failed++
		}
	}
	if opts.partial {
		return results, failed, nil
	}
	return nil, 0, firstFailure(numbers, results, failed, pe)
}

// callError is the answer to a call that failed as a whole.
func callError(ctx context.Context, err error) *apiError {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusGatewayTimeout, codeDeadline, "no answer within the deadline: %v", err)
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		// The client went away: nobody reads this answer.
		return newError(499, codeCancelled, "the request was cancelled: %v", err)
	case errors.Is(err, fanout.ErrOverloaded):
		return newError(http.StatusServiceUnavailable, codeOverloaded, "%v", err)
	}
	return newError(http.StatusBadGateway, codeBackendFailed, "%v", err)
}

// firstFailure is the answer to a call, without partial=1, some of whose
// numbers failed: the first of them, with its backend and its cause. A
// backend that was overloaded or past the deadline answers 503 or 504, any
// other failure 502.
func firstFailure(numbers []int64, results []xyz.Result, failed int, pe *fanout.PartialError) *apiError {
	first := -1
	var cause error
	for _, re := range pe.Failed {
		if len(re.Indices) > 0 && (first < 0 || re.Indices[0] < first) {
			first, cause = re.Indices[0], re.Err
		}
	}
	for _, ie := range pe.Items {
		if first < 0 || ie.Index < first {
			first, cause = ie.Index, ie.Err
		}
	}
	if first < 0 { // a partial error that lists no number: the backend broke its contract
		return newError(http.StatusBadGateway, codeBackendFailed, "%v", pe)
	}
	r := results[first]
	msg := fmt.Sprintf("%d failed on backend %s: %s", numbers[first], r.Backend, r.Err)
	if failed > 1 {
		msg += fmt.Sprintf(" (%d of the %d numbers failed)", failed, len(numbers))
	}
	e := newError(http.StatusBadGateway, codeBackendFailed, "%s", msg)
	switch {
	case errors.Is(cause, fanout.ErrOverloaded):
		e.status, e.Code = http.StatusServiceUnavailable, codeOverloaded
	case errors.Is(cause, context.DeadlineExceeded):
		e.status, e.Code = http.StatusGatewayTimeout, codeDeadline
	}
	e.Index, e.Input, e.Backend = &first, &numbers[first], &r.Backend
	return e
}
