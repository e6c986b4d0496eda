//go:build linux

// TestMultiHost runs the example system on several hosts for real: each
// host a Linux network namespace with an address of its own, joined by
// veth pairs to a bridge, two middle layers finding the replicas of x, y
// and z through DNS (a server of package dnstest whose zone the test
// changes), every program a real process in its host's namespace. It
// adds a replica's record, removes one, cuts a replica's link and the DNS
// server's, under load, and checks what the middle layers log and that no
// call fails or is answered wrong. It needs root (it creates namespaces,
// links and files in /etc/netns) and iproute2's ip; elsewhere it skips.
package examples_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/seed-c94cd834/fanout/examples/internal/dnstest"
)

// The hosts of the test network. Each is a network namespace named
// fo-<host>-<pid> (the test's pid, so that runs at once do not clash) with
// lo and one interface, eth0, holding the host's address on 10.77.0.0/24.
// The other end of each eth0 is v-<host>, a port of the bridge br0 in the
// namespace fo-br-<pid>, which holds nothing else: the root namespace's
// interfaces are never touched. The addresses are the same in every run,
// each run's network being separate from the others'.
var multiHosts = []struct{ name, addr string }{
	{"client", "10.77.0.2"}, // client and loadgen
	{"m1", "10.77.0.10"},    // middle layer 1, on :7000
	{"m2", "10.77.0.11"},    // middle layer 2, on :7000
	{"x1", "10.77.0.21"},    // replicas of x, on :7001
	{"x2", "10.77.0.22"},
	{"x3", "10.77.0.23"}, // x's third replica: running from the start, in DNS from step 2
	{"y1", "10.77.0.31"}, // replicas of y, on :7002
	{"y2", "10.77.0.32"},
	{"z1", "10.77.0.41"}, // replicas of z, on :7003
	{"z2", "10.77.0.42"},
	{"dns", "10.77.0.53"}, // the DNS server (package dnstest, in the test process), on :53
}

// The names the middle layers resolve, and the ports of the backends.
const (
	xName, yName, zName = "x.fanout.test", "y.fanout.test", "z.fanout.test"
	xPort, yPort, zPort = "7001", "7002", "7003"
	middlePort          = "7000"
)

// multiHostGuard bounds the waits for what follows a cut link: a peer that
// falls silent is noticed only by the transport's keepalive (a ping every
// 15s, failing after 10s without an answer), then the redial must fail.
const multiHostGuard = 90 * time.Second

// testNet is the test network: its namespaces and hosts.
type testNet struct {
	pid    string
	bridge string            // the bridge's namespace
	addrs  map[string]string // each host's address
}

// ns returns the namespace of host.
func (n *testNet) ns(host string) string { return "fo-" + host + "-" + n.pid }

// hostPort returns host's address with port.
func (n *testNet) hostPort(host, port string) string { return net.JoinHostPort(n.addrs[host], port) }

// runIP runs ip with args and fails the test if it fails.
func runIP(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	require.NoError(t, err, "ip %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// skipUnlessNetns skips the test unless it runs as root, not -short, with
// an ip that knows network namespaces. Under CI (which runs as root, with
// iproute2 installed by .ci/run) it fails instead of skipping.
func skipUnlessNetns(t *testing.T) {
	skipShort(t)
	skip := t.Skipf
	if os.Getenv("CI") != "" {
		skip = t.Fatalf
	}
	if os.Geteuid() != 0 {
		skip("multi-host test: needs root, to create network namespaces (CI runs it as root)")
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		skip("multi-host test: ip netns is not available: %v %s", err, out)
	}
}

// newTestNet builds the test network, and tears it down at the end of the
// test, after the processes in it, which are registered later, are killed.
func newTestNet(t *testing.T) *testNet {
	n := &testNet{pid: strconv.Itoa(os.Getpid()), addrs: map[string]string{}}
	n.bridge = n.ns("br")
	var made []string // namespaces made, the bridge's first
	_, err := os.Stat("/etc/netns")
	madeEtc := errors.Is(err, os.ErrNotExist)
	t.Cleanup(func() {
		for _, ns := range made {
			// Nothing but this test's programs runs in its namespaces (the
			// test process itself only opens the DNS server's sockets
			// there): any left would keep a namespace alive.
			if pids, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
				for _, f := range strings.Fields(string(pids)) {
					if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
		}
		for i := len(made) - 1; i >= 0; i-- {
			// Deleting a namespace deletes its end of each veth pair, and
			// so the pair.
			if out, err := exec.Command("ip", "netns", "delete", made[i]).CombinedOutput(); err != nil {
				t.Errorf("ip netns delete %s: %v %s", made[i], err, out)
			}
			os.RemoveAll(filepath.Join("/etc/netns", made[i]))
		}
		if madeEtc {
			os.Remove("/etc/netns") // if empty: another run may be using it
		}
	})
	add := func(ns string) {
		runIP(t, "netns", "add", ns)
		made = append(made, ns)
		runIP(t, "-n", ns, "link", "set", "lo", "up")
	}
	add(n.bridge)
	runIP(t, "-n", n.bridge, "link", "add", "br0", "type", "bridge")
	runIP(t, "-n", n.bridge, "link", "set", "br0", "up")
	for _, h := range multiHosts {
		ns := n.ns(h.name)
		add(ns)
		runIP(t, "-n", n.bridge, "link", "add", "v-"+h.name, "type", "veth", "peer", "name", "eth0", "netns", ns)
		runIP(t, "-n", n.bridge, "link", "set", "v-"+h.name, "master", "br0", "up")
		runIP(t, "-n", ns, "addr", "add", h.addr+"/24", "dev", "eth0")
		runIP(t, "-n", ns, "link", "set", "eth0", "up")
		n.addrs[h.name] = h.addr
	}
	return n
}

// useDNS makes the programs run in host's namespace resolve names with
// the DNS server: ip netns exec mounts /etc/netns/<ns>/resolv.conf over
// /etc/resolv.conf. newTestNet's cleanup removes it.
func (n *testNet) useDNS(t *testing.T, host string) {
	dir := filepath.Join("/etc/netns", n.ns(host))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	conf := "nameserver " + n.addrs["dns"] + "\noptions timeout:1 attempts:2\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644))
}

// serveDNS starts a DNS server on the dns host's address, port 53, in its
// namespace, from the test process itself: a goroutine locks its thread,
// enters the namespace with setns, opens the sockets, and goes back to the
// test's namespace. The sockets stay in the dns namespace whatever thread
// serves them. Should the way back fail, the thread stays locked, and the
// Go runtime ends it with the goroutine rather than run other goroutines
// in the wrong namespace.
func (n *testNet) serveDNS(t *testing.T) *dnstest.Server {
	type result struct {
		s   *dnstest.Server
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		s, err := func() (*dnstest.Server, error) {
			home, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return nil, err
			}
			defer home.Close()
			ns, err := os.Open(filepath.Join("/var/run/netns", n.ns("dns")))
			if err != nil {
				return nil, err
			}
			defer ns.Close()
			if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
				return nil, fmt.Errorf("setns %s: %w", n.ns("dns"), err)
			}
			s, err := dnstest.Listen(n.hostPort("dns", "53"))
			if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
				if s != nil {
					s.Close()
				}
				return nil, fmt.Errorf("setns back from %s: %w", n.ns("dns"), err)
			}
			runtime.UnlockOSThread()
			return s, err
		}()
		done <- result{s, err}
	}()
	r := <-done
	require.NoError(t, r.err)
	t.Cleanup(func() { r.s.Close() })
	return r.s
}

// inNetns returns the command running program name of bin with args in
// namespace ns. ip netns exec executes the program in its own place, so
// the command's process is the program's.
func inNetns(ns, name string, args ...string) []string {
	return append([]string{"netns", "exec", ns, filepath.Join(bin, name)}, args...)
}

// startServerIn is startServer for a server run in namespace ns. If the
// test fails, its log is shown less the lines of its calls.
func startServerIn(t *testing.T, ns, name string, args ...string) *server {
	t.Helper()
	s, err := launchCmd(t, name, exec.Command("ip", inNetns(ns, name, args...)...), func(s *server) {
		var b strings.Builder
		calls := 0
		for line := range strings.Lines(s.log()) {
			if strings.Contains(line, callLine) {
				calls++
				continue
			}
			b.WriteString(line)
		}
		t.Logf("log of %s in %s, less its %d lines of calls:\n%s", name, ns, calls, b.String())
	})
	if err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
	return s
}

// startProgramIn is startProgram for a program run in namespace ns, with
// no standard input. It is killed if it runs for more than two minutes.
func startProgramIn(t *testing.T, ns, name string, args ...string) *program {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	p := &program{name: name, args: args, cmd: exec.CommandContext(ctx, "ip", inNetns(ns, name, args...)...), cancel: cancel,
		exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.exited
	})
	return p
}

// waitLogWithin is s.waitLog for one occurrence of text, within bound
// rather than hangGuard.
func waitLogWithin(t *testing.T, s *server, text string, bound time.Duration) {
	t.Helper()
	select {
	case <-s.logs.found(text):
	case <-s.exited:
		select {
		case <-s.logs.found(text):
		default:
			t.Fatalf("%s exited without logging %s", s.name, text)
		}
	case <-time.After(bound):
		t.Fatalf("%s did not log %s within %v", s.name, text, bound)
	}
}

// replicaLine is the start of what the middle layer logs, msg, about the
// replica at addr of route.
func replicaLine(msg, route, addr string) string {
	return fmt.Sprintf("msg=%q route=%s replica=%s ", msg, route, addr)
}

// callLine is what a backend run with -delay and -log-level debug logs for
// each call it is sent (never for a probe, which is an empty call that
// the transport answers itself).
const callLine = `msg="call delayed"`

// loadReport is what loadgen -json reported for one run, and where it ran.
type loadReport struct {
	step, via string
	Requests  int64
	Errors    int64
	Wrong     int64
	Seconds   float64
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	MaxUs     float64 `json:"max_us"`
}

func (l loadReport) String() string {
	return fmt.Sprintf("%-22s via %-2s %6d requests in %5.1fs, %d errors, %d wrong, p50 %s, p99 %s, max %s", l.step, l.via,
		l.Requests, l.Seconds, l.Errors, l.Wrong, micros(l.P50us), micros(l.P99us), micros(l.MaxUs))
}

// micros formats v microseconds as a duration.
func micros(v float64) string { return (time.Duration(v) * time.Microsecond).String() }

// loadRun is a loadgen running in the client's namespace through a
// middle layer, until it is stopped.
type loadRun struct {
	p         *program
	step, via string
}

// startLoad starts loadgen in the client's namespace through middle host
// via for duration, checking every answer. A call may take up to a
// minute, so that a call caught by a cut link can wait for the middle
// layer to notice and send it elsewhere.
func (n *testNet) startLoad(t *testing.T, step, via string, duration time.Duration) *loadRun {
	p := startProgramIn(t, n.ns("client"), "loadgen", "-addr", n.hostPort(via, middlePort), "-json",
		"-concurrency", "8", "-duration", duration.String(), "-timeout", "60s")
	return &loadRun{p: p, step: step, via: via}
}

// untilStopped is the duration of a load that the test stops.
const untilStopped = 100 * time.Second

// stop ends the run with SIGINT (calls in flight finish) and returns
// loadgen's report, as wait does.
func (l *loadRun) stop(t *testing.T, figures *[]loadReport) loadReport {
	t.Helper()
	require.NoError(t, l.p.cmd.Process.Signal(os.Interrupt))
	return l.wait(t, figures)
}

// wait waits for the end of the run and returns loadgen's report, which it
// logs and adds to figures. It fails the test unless every call was
// answered, and rightly.
func (l *loadRun) wait(t *testing.T, figures *[]loadReport) loadReport {
	t.Helper()
	out := l.p.wait(t)
	r := loadReport{step: l.step, via: l.via}
	require.NoError(t, json.Unmarshal([]byte(out.stdout), &r), "loadgen: %s %s", out.stdout, out.stderr)
	t.Logf("loadgen: %s", r)
	*figures = append(*figures, r)
	require.Positive(t, r.Requests, out.stderr)
	require.Zero(t, r.Wrong, out.stderr)
	require.Zero(t, r.Errors, out.stderr)
	require.Equal(t, 0, out.code, out.stderr)
	return r
}

// establishedTo returns the TCP connections established to port in ns, as
// ss prints them.
func establishedTo(t *testing.T, ns, port string) string {
	return runIP(t, "netns", "exec", ns, "ss", "-Htn", "state", "established", "( sport = :"+port+" )")
}

func TestMultiHost(t *testing.T) {
	skipUnlessNetns(t)
	start := time.Now()
	var figures []loadReport
	t.Cleanup(func() {
		t.Logf("summary: %d loadgen runs in %v", len(figures), time.Since(start).Round(100*time.Millisecond))
		for _, f := range figures {
			t.Logf("  %s", f)
		}
	})

	n := newTestNet(t)
	zone := n.serveDNS(t)
	zone.Set(xName, dnstest.A(n.addrs["x1"]), dnstest.A(n.addrs["x2"]))
	zone.Set(yName, dnstest.A(n.addrs["y1"]), dnstest.A(n.addrs["y2"]))
	zone.Set(zName, dnstest.A(n.addrs["z1"]), dnstest.A(n.addrs["z2"]))

	// x and y log each call they are sent (-delay 1ms, at debug level),
	// which shows where the calls go.
	backends := map[string]*server{}
	for _, b := range []struct{ host, port string }{{"x1", xPort}, {"x2", xPort}, {"y1", yPort}, {"y2", yPort}, {"z1", zPort}, {"z2", zPort}} {
		args := []string{"-listen", n.hostPort(b.host, b.port)}
		if b.host[0] != 'z' {
			args = append(args, "-delay", "1ms", "-log-level", "debug")
		}
		backends[b.host] = startServerIn(t, n.ns(b.host), b.host[:1], args...)
	}
	// x3 runs from the start, unknown to the middle layers until step 2
	// adds its record.
	backends["x3"] = startServerIn(t, n.ns("x3"), "x", "-listen", n.hostPort("x3", xPort), "-delay", "1ms", "-log-level", "debug")
	middles := map[string]*server{}
	for _, m := range []string{"m1", "m2"} {
		n.useDNS(t, m)
		middles[m] = startServerIn(t, n.ns(m), "middle", "-listen", n.hostPort(m, middlePort),
			"-x", "dns:"+xName+":"+xPort, "-y", "dns:"+yName+":"+yPort, "-z", "dns:"+zName+":"+zPort,
			"-resolve-every", "1s")
	}
	t.Logf("network and programs up in %v", time.Since(start).Round(100*time.Millisecond))
	// client runs the client in the client's namespace against middle host
	// m, and checks its answers against the table.
	client := func(t *testing.T, m string) {
		t.Helper()
		numbers := []int64{-3, 4, 7, 0, -5, 9_223_372_036_854_775_806, -3_037_000_499}
		args := []string{"-addr", n.hostPort(m, middlePort), "-json", "--"}
		for _, v := range numbers {
			args = append(args, strconv.FormatInt(v, 10))
		}
		out := startProgramIn(t, n.ns("client"), "client", args...).wait(t)
		require.Equal(t, 0, out.code, out.stderr)
		checkJSON(t, out.stdout, numbers...)
	}

	// step runs a step as a subtest, unless an earlier one failed: each
	// starts from the state the one before left.
	step := func(name string, f func(t *testing.T)) {
		failed := t.Failed()
		t.Run(name, func(t *testing.T) {
			if failed {
				t.Skip("an earlier step failed")
			}
			f(t)
		})
	}

	step("1 replicas found by DNS", func(t *testing.T) {
		for m, middle := range middles {
			for _, r := range []struct{ route, host, port string }{
				{"x", "x1", xPort}, {"x", "x2", xPort}, {"y", "y1", yPort}, {"y", "y2", yPort}, {"z", "z1", zPort}, {"z", "z2", zPort},
			} {
				middle.waitLog(t, replicaLine("fanout: replica joined", r.route, n.hostPort(r.host, r.port)), 1)
			}
			require.Equal(t, 3, middle.count(`msg="transport: replicas changed"`), "%s: one set per route:\n%s", m, middle.log())
			client(t, m)
		}
		require.Positive(t, zone.Asked(xName), "the middle layers asked the test's DNS server")
	})

	step("2 a new record brings traffic", func(t *testing.T) {
		x3 := backends["x3"]
		require.Zero(t, x3.count(callLine), "x3 is sent no call before its record is added")
		added := time.Now()
		zone.Set(xName, dnstest.A(n.addrs["x1"]), dnstest.A(n.addrs["x2"]), dnstest.A(n.addrs["x3"]))
		joined := replicaLine("fanout: replica joined", "x", x3.addr)
		for _, m := range []string{"m1", "m2"} {
			middles[m].waitLog(t, joined, 1)
			t.Logf("%s: x3 joined %v after its record was added: %s", m, time.Since(added).Round(10*time.Millisecond),
				strings.TrimSpace(lineWith(middles[m].log(), "added=["+x3.addr+"]")))
		}
		// One load at a time, so that the calls x3 logs come from that
		// middle layer (the probes are not logged).
		for _, m := range []string{"m1", "m2"} {
			before := x3.count(callLine)
			l := n.startLoad(t, "2 x3 added", m, untilStopped)
			x3.waitLog(t, callLine, before+10)
			l.stop(t, &figures)
		}
		t.Logf("x3 was sent %d calls; both middle layers connected to it:\n%s", x3.count(callLine), establishedTo(t, n.ns("x3"), xPort))
	})

	step("3 a removed record drains", func(t *testing.T) {
		x1 := backends["x1"]
		l := n.startLoad(t, "3 x1 removed", "m1", untilStopped)
		x1.waitLog(t, callLine, x1.count(callLine)+10) // the load reaches x1
		zone.Set(xName, dnstest.A(n.addrs["x2"]), dnstest.A(n.addrs["x3"]))
		for _, m := range []string{"m1", "m2"} {
			middles[m].waitLog(t, replicaLine("fanout: replica removed", "x", x1.addr), 1)
			middles[m].waitLog(t, replicaLine("fanout: replica drained", "x", x1.addr), 1)
			t.Logf("%s: %s", m, strings.TrimSpace(lineWith(middles[m].log(), replicaLine("fanout: replica removed", "x", x1.addr))))
		}
		// The load goes on without x1, then ends: not one call lost.
		for _, h := range []string{"x2", "x3"} {
			backends[h].waitLog(t, callLine, backends[h].count(callLine)+10)
		}
		l.stop(t, &figures)
		// Drained, x1 is closed: no connection to it is left.
		deadline := time.Now().Add(hangGuard)
		for conns := establishedTo(t, n.ns("x1"), xPort); conns != ""; conns = establishedTo(t, n.ns("x1"), xPort) {
			require.True(t, time.Now().Before(deadline), "connections to x1 still open %v after it drained:\n%s", hangGuard, conns)
			time.Sleep(100 * time.Millisecond)
		}
	})

	step("4 a cut link fails over", func(t *testing.T) {
		y1, y2, m1 := backends["y1"], backends["y2"], middles["m1"]
		l := n.startLoad(t, "4 y1 link cut", "m1", untilStopped)
		y1.waitLog(t, callLine, y1.count(callLine)+10) // the load reaches y1
		// A call in flight on y1 at the cut gets no answer and no error
		// until the transport's keepalive declares the connection dead;
		// then the balancer sends it to y2 (the routes are idempotent). It
		// succeeds because loadgen's calls may wait a minute: with a
		// deadline shorter than the keepalive's verdict (loadgen's default
		// 10s) it would fail with its deadline. Calls made meanwhile go to
		// y2, the replica with fewer calls in flight. y1 is ejected once
		// the calls on it fail after the connection died.
		cut := time.Now()
		runIP(t, "-n", n.bridge, "link", "set", "v-y1", "down")
		ejected := replicaLine("fanout: replica ejected", "y", y1.addr)
		waitLogWithin(t, m1, ejected, multiHostGuard)
		t.Logf("m1 ejected y1 %v after the cut: %s", time.Since(cut).Round(100*time.Millisecond), strings.TrimSpace(lineWith(m1.log(), ejected)))
		y2.waitLog(t, callLine, y2.count(callLine)+10) // y's calls go on, to y2
		up := time.Now()
		runIP(t, "-n", n.bridge, "link", "set", "v-y1", "up")
		readmitted := replicaLine("fanout: replica readmitted", "y", y1.addr)
		waitLogWithin(t, m1, readmitted, multiHostGuard)
		t.Logf("m1 readmitted y1 %v after the link came back: %s", time.Since(up).Round(100*time.Millisecond), strings.TrimSpace(lineWith(m1.log(), readmitted)))
		y1.waitLog(t, callLine, y1.count(callLine)+10) // y1 takes calls again
		r := l.stop(t, &figures)
		t.Logf("the cut: calls on y1 waited for the middle layer to notice, up to %s", micros(r.MaxUs))
	})

	step("5 load through both middles", func(t *testing.T) {
		l1, l2 := n.startLoad(t, "5 both middles", "m1", 5*time.Second), n.startLoad(t, "5 both middles", "m2", 5*time.Second)
		l1.wait(t, &figures)
		l2.wait(t, &figures)
	})

	step("6 DNS down keeps the last set", func(t *testing.T) {
		l := n.startLoad(t, "6 DNS host cut", "m2", untilStopped)
		runIP(t, "-n", n.bridge, "link", "set", "v-dns", "down")
		for _, m := range middles {
			waitLogWithin(t, m, `msg="transport: resolving replicas failed; keeping the last set" route=x `, multiHostGuard)
		}
		t.Logf("m2: %s", strings.TrimSpace(lineWith(middles["m2"].log(), `msg="transport: resolving replicas failed; keeping the last set" route=x `)))
		for _, h := range []string{"x2", "x3"} {
			backends[h].waitLog(t, callLine, backends[h].count(callLine)+10) // the load goes on, to the last set
		}
		runIP(t, "-n", n.bridge, "link", "set", "v-dns", "up")
		for _, m := range middles {
			waitLogWithin(t, m, `msg="transport: resolving replicas works again" route=x `, multiHostGuard)
		}
		l.stop(t, &figures)
		for m, middle := range middles {
			// x's set changed at start, in step 2 and in step 3 only.
			require.Equal(t, 3, middle.count(`msg="transport: replicas changed" route=x `), "%s: the outage changed no set", m)
		}
	})
}
