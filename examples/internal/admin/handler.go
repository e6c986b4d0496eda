package admin

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure [Handler]. The zero value serves a program without a
// name, always ready, with metrics of its own that nothing feeds.
type Options struct {
	// Program names the program in the page's title and in the status:
	// "middle", "x".
	Program string

	// Metrics is what /metrics, /status.json and the page show; nil means
	// a new [NewMetrics] that nothing feeds.
	Metrics *Metrics

	// Ready tells /readyz whether the program is ready for traffic: nil
	// for ready, else the reason it is not, such as "draining" once it is
	// shutting down (see [ReadyUntil]). It is called on every request to
	// /readyz and /status.json, so it must be quick. nil means always
	// ready.
	Ready func() error
}

// ErrDraining is what [ReadyUntil]'s function returns once its context is
// done.
var ErrDraining = errors.New("draining: shutting down")

// ReadyUntil returns a function for [Options.Ready] that reports ready
// until ctx is done, then [ErrDraining]: give it the context whose end
// starts the program's graceful shutdown, so that /readyz answers 503 for
// the whole drain and a load balancer stops sending calls before the
// server stops taking them.
func ReadyUntil(ctx context.Context) func() error {
	return func() error {
		if ctx.Err() != nil {
			return ErrDraining
		}
		return nil
	}
}

//go:embed page.html
var pageHTML string

var page = template.Must(template.New("page").Parse(pageHTML))

// pageData fills the page's template.
type pageData struct {
	Program     string
	RecentCalls int
	RecentAge   string // "60s"
}

// Handler returns the admin endpoint's handler; the package doc lists
// what it serves. It registers pprof's handlers on a mux of its own, never
// on [http.DefaultServeMux].
func Handler(opts Options) http.Handler {
	m := opts.Metrics
	if m == nil {
		m = NewMetrics()
	}
	ready := opts.Ready
	if ready == nil {
		ready = func() error { return nil }
	}
	var body bytes.Buffer
	if err := page.Execute(&body, pageData{
		Program:     opts.Program,
		RecentCalls: RecentCalls,
		RecentAge:   strconv.FormatFloat(RecentAge.Seconds(), 'f', -1, 64) + "s",
	}); err != nil {
		panic("admin: the status page's template: " + err.Error()) // the template is ours: a test catches this
	}
	pageBytes := body.Bytes()

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			text(w, http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
			return
		}
		text(w, http.StatusOK, "ready\n")
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, _ *http.Request) {
		st := m.Status()
		st.Program, st.Ready = opts.Program, true
		if err := ready(); err != nil {
			st.Ready, st.NotReady = false, err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(st) // an error is the client's, gone
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(pageBytes)
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index) // and every named profile under it
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func text(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(body))
}
