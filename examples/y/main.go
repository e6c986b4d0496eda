// Command y is the y backend of the example system. It gets the even
// numbers >= 0 and answers n/2.
//
// It serves batches of int64 over the fanout transport and logs one line,
// "y ready" with the address it bound, when it is ready to serve.
//
// Usage:
//
//	y [-listen ADDR] [-grace D] [-delay D] [-delay-fraction F] [-max-calls N] [-max-conns N]
//	  [-max-request-mb N] [-log-level LEVEL]
//	  [-tls-cert FILE -tls-key FILE -tls-ca FILE]
//
// Flags:
//
//	-listen ADDR       address to listen on (default 127.0.0.1:7002; port 0 picks a free one)
//	-grace D           on SIGINT or SIGTERM, how long to let calls in flight finish
//	                   before closing (default 5s); the program then exits with status 0
//	-delay D           wait D in each call before processing it, as a slow backend
//	                   would (default 0), or in the share of calls -delay-fraction
//	                   gives. A call cancelled or past its deadline during the
//	                   wait ends at once, and is logged:
//	                   level=INFO msg="call cancelled" numbers=1 err="context canceled" waited=1.2s
//	                   (the start of each wait is logged at DEBUG level: msg="call delayed")
//	-delay-fraction F  the share of calls that -delay delays, drawn at random per
//	                   call, from 0 (none) to 1 (every call, the default): with
//	                   -delay 100ms -delay-fraction 0.05, about one call in 20
//	                   waits 100ms, which shows as tail latency (loadgen's p99
//	                   and p99.9). Without -delay it does nothing; a value
//	                   outside 0..1 is bad usage
//	-max-calls N       calls in flight per connection (default 1024); more are
//	                   refused at once as overloaded
//	-max-conns N       connections served at once (default 1024); a client past
//	                   it is refused in the handshake with a message naming the
//	                   limit, and its calls fail as unavailable
//	-max-request-mb N  MiB of requests held at once, over all connections
//	                   (default 16); more wait until earlier calls answer (those
//	                   over 64 KiB holding only their header)
//	-log-level LEVEL   least important level logged: DEBUG, INFO, WARN or ERROR (default INFO)
//	-tls-cert FILE     with -tls-key and -tls-ca: serve mutual TLS with this certificate,
//	-tls-key FILE      its key, and only to clients whose certificate the CA in
//	-tls-ca FILE       -tls-ca signed (the three go together; see examples/README.md)
//
// Exit status: 0 after a shutdown, 1 if it could not listen or serve, 2 for
// bad usage.
package main

import (
	"os"

	"github.com/seed-c94cd834/fanout/examples/internal/node"
)

// about is the first line of -h: what the program does.
const about = "y is the example system's y backend: it answers each even number n >= 0 with n/2."

func main() {
	os.Exit(node.BackendMain("y", about, "127.0.0.1:7002", os.Args[1:]))
}
