// Command x is the x backend of the example system. It gets the negative
// numbers and answers n*n, failing with an error that names the number when
// the square would overflow an int64.
//
// It serves batches of int64 over the fanout transport and logs one line,
// "x ready" with the address it bound, when it is ready to serve.
//
// Usage:
//
//	x [-listen ADDR] [-grace D]
//
// Flags:
//
//	-listen ADDR  address to listen on (default 127.0.0.1:7001; port 0 picks a free one)
//	-grace D      on SIGINT or SIGTERM, how long to let calls in flight finish
//	              before closing (default 5s); the program then exits with status 0
package main

import (
	"os"

	"github.com/seed-c94cd834/fanout/examples/internal/node"
)

func main() {
	os.Exit(node.BackendMain("x", "127.0.0.1:7001", os.Args[1:]))
}
