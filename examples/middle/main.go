// Command middle is the middle layer of the example system. It takes
// batches of int64, sends each number to the backend that owns it (x for
// negative numbers, y for even numbers >= 0, z for odd positive numbers),
// all backends at once, and answers each number with its result and the
// name of the backend that computed it, in the order of the batch.
//
// A backend may have several replicas; the middle layer spreads its calls
// over them in turn. It connects to a backend on the first call that needs
// it and reconnects after losing it. It logs one line, "middle ready" with
// the address it bound, when it is ready to serve.
//
// Usage:
//
//	middle [-listen ADDR] [-x ADDRS] [-y ADDRS] [-z ADDRS] [-grace D]
//
// Flags:
//
//	-listen ADDR  address to listen on (default 127.0.0.1:7000; port 0 picks a free one)
//	-x ADDRS      address of the x backend, or a comma-separated list of
//	              addresses of its replicas (default 127.0.0.1:7001)
//	-y ADDRS      the same for y (default 127.0.0.1:7002)
//	-z ADDRS      the same for z (default 127.0.0.1:7003)
//	-grace D      on SIGINT or SIGTERM, how long to let calls in flight finish
//	              before closing (default 5s); the program then exits with status 0
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("middle", flag.ExitOnError)
	var f node.Flags
	f.Register(fs, "127.0.0.1:7000")
	replicas := map[string][]string{}
	for i, route := range xyz.Routes() {
		fs.Func(route, fmt.Sprintf("`addresses` of the %s backend's replicas, comma-separated (default 127.0.0.1:%d)", route, 7001+i), func(s string) error {
			addrs := strings.Split(s, ",")
			for i, a := range addrs {
				addrs[i] = strings.TrimSpace(a)
				if addrs[i] == "" {
					return fmt.Errorf("empty address in %q", s)
				}
			}
			replicas[route] = addrs
			return nil
		})
		replicas[route] = []string{fmt.Sprintf("127.0.0.1:%d", 7001+i)}
	}
	node.ParseFlags(fs, os.Args[1:])

	log := node.NewLogger()
	m, err := node.NewMiddle(replicas, transport.WithLogger(log))
	if err != nil {
		log.Error("middle failed", "err", err)
		return 1
	}
	return node.Main(log, "middle", m, f)
}
