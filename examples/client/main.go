// Command client is the user-facing program of the example system: it sends
// numbers to the middle layer and prints, for each, its result and the
// backend that computed it.
//
// Usage:
//
//	client [-addr ADDR] [-json] [number ...]
//
// Flags:
//
//	-addr ADDR  address of the middle layer (default 127.0.0.1:7000)
//	-json       print one JSON array of {"input", "output", "backend"} objects
//
// Numbers come from the arguments if there are any, negative ones included
// (client -3 4 and client -- -3 4 both work), else from standard input. On a
// terminal, client prompts with "> " and takes each line as one request,
// printing its answers or its error, until "quit" or end of input. Otherwise
// all of standard input is one job, read as it streams in and sent in calls
// of up to 65536 numbers.
//
// Output is one line per number, in input order:
//
//	-3 -> 9 (backend x)
//
// or, with -json, one JSON array:
//
//	[
//	  {"input": -3, "output": 9, "backend": "x"}
//	]
//
// Exit status: 0 on success; 1 when processing failed (the error names the
// number and the backend); 2 for bad usage or a token that is not an int64,
// such as "abc", "1.5" or "99999999999999999999". Standard input is checked
// as it streams in: the answers to the numbers before a bad token are
// printed before the program exits with status 2. After a failure the
// output stops where it happened; with -json the array is left unclosed.
package main

import (
	"flag"
	"os"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/cli"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

func main() {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:7000", "`address` of the middle layer")
	cmd := cli.New("client", fs)
	os.Exit(cmd.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, func() (fanout.Backend[int64, xyz.Result], func(), error) {
		c := transport.NewClient(*addr, transport.Int64(), xyz.ResultCodec(), transport.WithLogger(nil))
		return c, func() { c.Close() }, nil
	}))
}
