package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/seed-c94cd834/fanout"
	"github.com/stretchr/testify/require"
)

// serve serves h on loopback for the test's life and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	return srv.URL
}

// get returns the status code and body of a GET of url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// scrape reads base/metrics in the text format and parses it.
func scrape(t *testing.T, base string) metrics {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return metrics(fams)
}

// metrics are the families of one scrape, by name.
type metrics map[string]*dto.MetricFamily

// find returns the metric of family name whose labels are exactly labels
// ("name", "value", ...), or nil.
func (ms metrics) find(name string, labels ...string) *dto.Metric {
	f := ms[name]
	if f == nil {
		return nil
	}
	want := make(map[string]string)
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		match := true
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; !ok || v != l.GetValue() {
				match = false
			}
		}
		if match {
			return m
		}
	}
	return nil
}

// value returns the value of a counter or gauge, failing the test if it is
// not there.
func (ms metrics) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	m := ms.find(name, labels...)
	require.NotNil(t, m, "no %s%v in the scrape", name, labels)
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

// status reads base/status.json.
func status(t *testing.T, base string) Status {
	t.Helper()
	code, body := get(t, base+"/status.json")
	require.Equal(t, http.StatusOK, code, body)
	var st Status
	require.NoError(t, json.Unmarshal([]byte(body), &st))
	return st
}

// observe tells o of a work that started at start, took d and ended
// with err.
func observe(o fanout.Observer, w fanout.Work, start time.Time, d time.Duration, err error) {
	w.Start = start
	ctx := o.Start(context.Background(), &w)
	w.Duration, w.Err = d, err
	o.End(ctx, &w)
}

func route(name string, items int) fanout.Work {
	return fanout.Work{Kind: fanout.WorkRoute, Route: name, Items: items}
}

func attempt(route, replica string, hedge bool) fanout.Work {
	return fanout.Work{Kind: fanout.WorkAttempt, Route: route, Replica: replica, Items: 1, Attempt: 1, Hedge: hedge}
}

// waitFor polls cond every few milliseconds until it holds, and fails the
// test if it does not within 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 10s waiting for %s", what)
		}
		<-tick.C
	}
}

// replicas is a source for AddRoute whose replicas a test changes.
type replicas struct {
	mu sync.Mutex
	rs []fanout.ReplicaStatus
}

func newReplicas(names ...string) *replicas {
	r := new(replicas)
	for i, n := range names {
		r.rs = append(r.rs, fanout.ReplicaStatus{Index: i, Name: n})
	}
	return r
}

func (r *replicas) read() []fanout.ReplicaStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]fanout.ReplicaStatus(nil), r.rs...)
}

// set sets replica i's state, since and error.
func (r *replicas) set(i int, state fanout.ReplicaState, since time.Time, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rs[i].State, r.rs[i].Since, r.rs[i].Err = state, since, err
	if state == fanout.ReplicaHealthy {
		r.rs[i].Since, r.rs[i].Err = time.Time{}, nil
	}
}
