// Command y is the y backend of the example system. It gets the even
// numbers >= 0 and answers n/2.
//
// It serves batches of int64 over the fanout transport and logs one line,
// "y ready" with the address it bound, when it is ready to serve.
//
// Usage:
//
//	y [-listen ADDR] [-grace D]
//
// Flags:
//
//	-listen ADDR  address to listen on (default 127.0.0.1:7002; port 0 picks a free one)
//	-grace D      on SIGINT or SIGTERM, how long to let calls in flight finish
//	              before closing (default 5s); the program then exits with status 0
package main

import (
	"os"

	"github.com/seed-c94cd834/fanout/examples/internal/node"
)

func main() {
	os.Exit(node.BackendMain("y", "127.0.0.1:7002", os.Args[1:]))
}
