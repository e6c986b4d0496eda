package node_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/dnstest"
	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// replicasOf returns the names of the replicas of route's balancer in m
// that are in service.
func replicasOf(m *node.Middle, route string) []string {
	var names []string
	m.Balancers(func(name string, b *fanout.Balancer[int64, int64]) {
		if name != route {
			return
		}
		for _, s := range b.Replicas() {
			if s.State == fanout.ReplicaHealthy {
				names = append(names, s.Name)
			}
		}
	})
	slices.Sort(names)
	return names
}

// waitFor polls cond until it holds; the bound turns a hang into a failure.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMiddleFindsReplicasByDNS: a middle layer given srv: and file: names
// finds its replicas through a real DNS server (SRV records, with their
// ports) and a file, follows them as they change, and fails a route whose
// name has no records with an error saying it has no replicas.
func TestMiddleFindsReplicasByDNS(t *testing.T) {
	dns, err := dnstest.Listen("127.0.0.1:0")
	require.NoError(t, err)
	defer dns.Close()
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dns.Addr())
	}}
	port := func(addr string) uint16 {
		_, p, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		n, err := net.LookupPort("tcp", p)
		require.NoError(t, err)
		return uint16(n)
	}
	x1, x2 := backend(t, "x"), backend(t, "x")
	// SRV targets are names (Go refuses an address): localhost, with the
	// port of each backend, which serves on 127.0.0.1.
	local := func(addr string) string { return net.JoinHostPort("localhost", strconv.Itoa(int(port(addr)))) }
	dns.Set("_x._tcp.fanout.test", dnstest.SRV("localhost.", port(x1)))
	zfile := filepath.Join(t.TempDir(), "z")
	require.NoError(t, os.WriteFile(zfile, []byte(backend(t, "z")+"\n"), 0o644))

	m, err := node.NewMiddle(node.MiddleConfig{
		Replicas: map[string][]string{
			"x": {"srv:_x._tcp.fanout.test"},
			"y": {backend(t, "y")},
			"z": {"file:" + zfile},
		},
		Resolver:     resolver,
		ResolveEvery: 20 * time.Millisecond,
	}, node.Both(quiet))
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, []string{local(x1)}, replicasOf(m, "x"), "in service once NewMiddle returns")
	got, err := m.Backend().Process(context.Background(), []int64{-3, 4, 7})
	require.NoError(t, err)
	assert.Equal(t, []xyz.Result{{Value: 9, Backend: "x"}, {Value: 2, Backend: "y"}, {Value: 22, Backend: "z"}}, got)
	assert.Positive(t, dns.Asked("_x._tcp.fanout.test"))

	// A record added: the replica joins; one removed: it leaves.
	dns.Set("_x._tcp.fanout.test", dnstest.SRV("localhost.", port(x1)), dnstest.SRV("localhost.", port(x2)))
	want := []string{local(x1), local(x2)}
	slices.Sort(want)
	waitFor(t, func() bool { return slices.Equal(replicasOf(m, "x"), want) }, "x2 to join")
	dns.Set("_x._tcp.fanout.test", dnstest.SRV("localhost.", port(x2)))
	waitFor(t, func() bool { return slices.Equal(replicasOf(m, "x"), []string{local(x2)}) }, "x1 to leave")
	got, err = m.Backend().Process(context.Background(), []int64{-2})
	require.NoError(t, err)
	assert.Equal(t, []xyz.Result{{Value: 4, Backend: "x"}}, got)

	// The name gone (NXDOMAIN): no replicas, and x's numbers say so.
	dns.Set("_x._tcp.fanout.test")
	waitFor(t, func() bool { return len(replicasOf(m, "x")) == 0 }, "x's set to empty")
	got, err = m.Backend().Process(context.Background(), []int64{-2, 4})
	var pe *fanout.PartialError
	require.ErrorAs(t, err, &pe, "x's number fails, alone")
	assert.Contains(t, err.Error(), "route x has no replicas")
	require.Len(t, pe.Failed, 1)
	assert.Equal(t, []int{0}, pe.Failed[0].Indices)
	assert.Equal(t, xyz.Result{Value: 2, Backend: "y"}, got[1], "other routes are answered")
}
