package admin

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/seed-c94cd834/fanout"
	"github.com/stretchr/testify/require"
)

// chromium is where Debian's chromium package puts the browser.
const chromium = "/usr/bin/chromium"

// screenshotEnv names a file the browser test writes a screenshot of the
// page to, when set: docs/status-page.png is made so.
const screenshotEnv = "FANOUT_STATUS_SCREENSHOT"

// The status page in a real browser: it shows every route and replica with
// its state, follows a replica going down while it is open, logs the
// change, and shows a banner while status.json fails.
func TestStatusPageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("skipping the browser test: %s not found (apt-get install chromium); under CI it fails instead", chromium)
		}
		t.Fatalf("%s not found with CI set: .ci/run installs Debian's chromium package, and the browser test does not skip under CI", chromium)
	}

	m, routes := busyMiddle()
	var broken atomic.Bool
	h := Handler(Options{Program: "middle", Metrics: m})
	base := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() && r.URL.Path == "/status.json" {
			http.Error(w, "broken by the test", http.StatusInternalServerError)
			return
		}
		h.ServeHTTP(w, r)
	}))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	// The page redraws its tables on every refresh, so the test reads and
	// waits with JavaScript run in the page (Evaluate, Poll), never with a
	// node found by one call and read by the next, which a redraw may have
	// removed in between.

	// Every route and replica, each healthy.
	require.NoError(t, chromedp.Do(bctx, chromedp.Navigate(base+"/?refresh=100ms")))
	waitPage(t, bctx, `document.querySelectorAll("tr.replica-row").length === 6`)
	title, err := chromedp.Run(bctx, chromedp.Title())
	require.NoError(t, err)
	require.Equal(t, "fanout middle · status", title)
	var want []string
	for _, r := range []string{"x", "y", "z"} {
		for _, p := range routes[r].read() {
			want = append(want, r+" "+p.Name+" "+StateHealthy)
		}
	}
	require.Equal(t, want, evaluate[[]string](t, bctx, rowsJS))
	require.True(t, evaluate[bool](t, bctx, `!document.getElementById("no-changes").hidden`), "no change logged yet")

	// z's second replica goes down while the page is open.
	z2 := routes["z"].read()[1].Name
	routes["z"].set(1, fanout.ReplicaEjected, time.Now().Add(-42*time.Second),
		fmt.Errorf("fanout: transport: dial tcp %s: connect: connection refused: %w", z2, fanout.ErrUnavailable))
	for range 7 {
		observe(m, attempt("z", z2, false), time.Now(), 300*time.Microsecond, fmt.Errorf("connection refused: %w", fanout.ErrUnavailable))
	}
	down := rowSelector("z", z2) + `[data-state="down"]`
	change := fmt.Sprintf(`#changes tr.change[data-route="z"][data-replica=%q][data-from="healthy"][data-to="down"]`, z2)
	waitPage(t, bctx, fmt.Sprintf(`document.querySelector(%q) !== null && document.querySelector(%q) !== null`, down, change))
	want[5] = "z " + z2 + " " + StateDown
	require.Equal(t, want, evaluate[[]string](t, bctx, rowsJS), "the other replicas stay healthy")
	detail := fmt.Sprintf(`tr.replica-detail[data-route="z"][data-replica=%q]`, z2)
	text := evaluate[string](t, bctx, fmt.Sprintf(`document.querySelector(%q).textContent`, detail))
	require.Equal(t, "down for 42s: fanout: transport: dial tcp "+z2+": connect: connection refused: backend unavailable", text)
	require.Equal(t, 1, evaluate[int](t, bctx, `document.querySelectorAll("tr.replica-detail").length`), "only a replica out of service has one")
	colour := evaluate[string](t, bctx, fmt.Sprintf(`getComputedStyle(document.querySelector(%q)).backgroundColor`, down+" .state"))
	require.Equal(t, "rgb(207, 34, 46)", colour, "down is red")
	log := evaluate[string](t, bctx, fmt.Sprintf(`document.querySelector(%q).textContent`, change))
	require.Contains(t, log, "healthy → down")

	if path := os.Getenv(screenshotEnv); path != "" {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // 100: PNG, not JPEG
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, png, 0o644))
		t.Logf("wrote the page's screenshot to %s", path)
	}

	// A failing fetch shows the banner, keeping the last status; the next
	// good one hides it.
	broken.Store(true)
	waitPage(t, bctx, `!document.getElementById("banner").hidden`)
	banner := evaluate[string](t, bctx, `document.getElementById("banner").textContent`)
	require.Contains(t, banner, "Could not fetch status.json: HTTP 500")
	require.Equal(t, want, evaluate[[]string](t, bctx, rowsJS), "the last status stays")
	broken.Store(false)
	waitPage(t, bctx, `document.getElementById("banner").hidden`)
}

// rowsJS lists the replica rows of the page as "route replica state".
const rowsJS = `Array.from(document.querySelectorAll("tr.replica-row"),
	r => r.dataset.route + " " + r.dataset.replica + " " + r.querySelector(".state").textContent)`

// waitPage waits until the JavaScript condition holds in the page, for
// at most 20s.
func waitPage(t *testing.T, ctx context.Context, condition string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](condition,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second)))
	require.NoError(t, err, "waiting for %s", condition)
}

// evaluate returns the value of the JavaScript expression in the page.
func evaluate[T any](t *testing.T, ctx context.Context, expression string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression))
	require.NoError(t, err, expression)
	return v
}

func rowSelector(route, replica string) string {
	return fmt.Sprintf(`tr.replica-row[data-route=%q][data-replica=%q]`, route, replica)
}

// busyMiddle returns Metrics that look like a middle layer's after some
// traffic: routes x, y and z with two replicas each, all healthy, calls
// of each with latencies drawn from a fixed seed, a few in flight; and
// the sources of the routes' replicas.
func busyMiddle() (*Metrics, map[string]*replicas) {
	m := NewMetrics()
	rnd := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	routes := make(map[string]*replicas)
	for i, r := range []string{"x", "y", "z"} {
		src := newReplicas(fmt.Sprintf("127.0.0.1:%d", 7001+i), fmt.Sprintf("127.0.0.1:%d", 7011+i))
		routes[r] = src
		m.AddRoute(r, src.read)
		calls := 1200 + rnd.IntN(800)
		for range calls {
			d := time.Duration(120+rnd.ExpFloat64()*80) * time.Microsecond
			if rnd.IntN(100) == 0 {
				d *= 12 // a slow tail
			}
			p := src.read()[rnd.IntN(2)].Name
			var err error
			if rnd.IntN(400) == 0 {
				err = context.DeadlineExceeded
			}
			observe(m, route(r, 1+rnd.IntN(64)), now.Add(-d), d+30*time.Microsecond, err)
			observe(m, attempt(r, p, false), now.Add(-d), d, err)
		}
		src.rs[i%2].InFlight = i + 1 // the balancer's count
		for range i + 1 {
			w := route(r, 8)
			w.Start = now
			m.Start(context.Background(), &w)
		}
	}
	for range 3000 {
		d := time.Duration(250+rnd.ExpFloat64()*120) * time.Microsecond
		observe(m, fanout.Work{Kind: fanout.WorkServe, Items: 64}, now.Add(-d), d, nil)
	}
	w := fanout.Work{Kind: fanout.WorkServe, Start: now}
	m.Start(context.Background(), &w)
	return m, routes
}
