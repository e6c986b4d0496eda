package dnstest_test

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/seed-c94cd834/fanout/examples/internal/dnstest"
)

func Example() {
	s, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr())
	}}
	lookup := func() {
		addrs, err := r.LookupHost(context.Background(), "x.fanout.test")
		slices.Sort(addrs)
		fmt.Println(addrs, err != nil)
	}

	s.Set("x.fanout.test", dnstest.A("10.77.0.21"), dnstest.A("10.77.0.22"))
	lookup()
	s.Set("x.fanout.test", dnstest.A("10.77.0.22"), dnstest.A("10.77.0.23"))
	lookup()
	s.Set("x.fanout.test")
	lookup()
	// Output:
	// [10.77.0.21 10.77.0.22] false
	// [10.77.0.22 10.77.0.23] false
	// [] true
}
