package dnstest_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c94cd834/fanout/examples/internal/dnstest"
)

// TestMain checks that Close stops every goroutine a Server starts.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// resolver returns a Go resolver that asks s only, over network ("udp" or
// "tcp") whatever the resolver would use.
func resolver(s *dnstest.Server, network string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr())
	}}
}

func TestServer(t *testing.T) {
	s, err := dnstest.Listen("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			r := resolver(s, network)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			lookup := func(name string) ([]string, error) {
				ips, err := r.LookupIPAddr(ctx, name)
				var out []string
				for _, ip := range ips {
					out = append(out, ip.String())
				}
				return out, err
			}

			s.Set("x.fanout.test", dnstest.A("10.77.0.21"), dnstest.A("10.77.0.22"), dnstest.A("2001:db8::23"))
			got, err := lookup("x.fanout.test")
			require.NoError(t, err)
			require.ElementsMatch(t, []string{"10.77.0.21", "10.77.0.22", "2001:db8::23"}, got)

			s.Set("X.Fanout.Test.", dnstest.A("10.77.0.22"))
			got, err = lookup("x.fanout.test")
			require.NoError(t, err)
			require.Equal(t, []string{"10.77.0.22"}, got, "names are not case-sensitive, and Set replaces")

			s.Set("x.fanout.test")
			_, err = lookup("x.fanout.test")
			var dnsErr *net.DNSError
			require.True(t, errors.As(err, &dnsErr), "%v", err)
			require.True(t, dnsErr.IsNotFound, "a name set with no records is gone: %v", err)

			s.Set("_fanout._tcp.y.fanout.test", dnstest.SRV("y1.fanout.test", 7002), dnstest.SRV("y2.fanout.test.", 7012))
			_, srvs, err := r.LookupSRV(ctx, "", "", "_fanout._tcp.y.fanout.test")
			require.NoError(t, err)
			var targets []string
			for _, srv := range srvs {
				targets = append(targets, net.JoinHostPort(srv.Target, strconv.Itoa(int(srv.Port))))
			}
			require.ElementsMatch(t, []string{"y1.fanout.test.:7002", "y2.fanout.test.:7012"}, targets)
		})
	}
	require.Positive(t, s.Asked("x.fanout.test"))
}

// TestRcodes checks the answers' codes: NODATA for a name without records
// of the type asked, NXDOMAIN for a name not set.
func TestRcodes(t *testing.T) {
	s, err := dnstest.Listen("127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	s.Set("z.fanout.test", dnstest.A("10.77.0.41"))
	s.Set("_z._tcp.fanout.test", dnstest.SRV("z.fanout.test", 7003))

	for _, tc := range []struct {
		name    string
		qtype   uint16
		rcode   int
		answers int
	}{
		{"z.fanout.test.", dns.TypeA, dns.RcodeSuccess, 1},
		{"z.fanout.test.", dns.TypeAAAA, dns.RcodeSuccess, 0},
		{"z.fanout.test.", dns.TypeSRV, dns.RcodeSuccess, 0},
		{"_z._tcp.fanout.test.", dns.TypeSRV, dns.RcodeSuccess, 1},
		{"_z._tcp.fanout.test.", dns.TypeA, dns.RcodeSuccess, 0},
		{"nothing.fanout.test.", dns.TypeA, dns.RcodeNameError, 0},
	} {
		m := new(dns.Msg)
		m.SetQuestion(tc.name, tc.qtype)
		in, err := dns.Exchange(m, s.Addr())
		require.NoError(t, err, "%s %s", tc.name, dns.TypeToString[tc.qtype])
		require.Equal(t, tc.rcode, in.Rcode, "%s %s", tc.name, dns.TypeToString[tc.qtype])
		require.Len(t, in.Answer, tc.answers, "%s %s", tc.name, dns.TypeToString[tc.qtype])
		require.True(t, in.Authoritative)
	}
}
