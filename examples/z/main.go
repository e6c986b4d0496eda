// Command z is the z backend of the example system. It gets the odd
// positive numbers and answers 3n+1, failing with an error that names the
// number when the result would overflow an int64.
//
// It serves batches of int64 over the fanout transport and logs one line,
// "z ready" with the address it bound, when it is ready to serve.
//
// Usage:
//
//	z [-listen ADDR] [-grace D]
//
// Flags:
//
//	-listen ADDR  address to listen on (default 127.0.0.1:7003; port 0 picks a free one)
//	-grace D      on SIGINT or SIGTERM, how long to let calls in flight finish
//	              before closing (default 5s); the program then exits with status 0
package main

import (
	"os"

	"github.com/seed-c94cd834/fanout/examples/internal/node"
)

func main() {
	os.Exit(node.BackendMain("z", "127.0.0.1:7003", os.Args[1:]))
}
