// Command client is the user-facing program of the example system: it sends
// numbers to the middle layer and prints, for each, its result and the
// backend that computed it.
//
// Usage:
//
//	client [-addr ADDR] [-json] [-partial] [-timeout D]
//	  [-tls-cert FILE -tls-key FILE -tls-ca FILE] [number ...]
//
// Flags:
//
//	-addr ADDR      address of the middle layer (default 127.0.0.1:7000)
//	-json           print one JSON array of {"input", "output", "backend"} objects
//	-partial        when numbers fail, print each in its place, with its backend
//	                and error, go on, and exit with status 1 at the end
//	-timeout D      how long each call may take (default 10s; 0 for no limit). A
//	                job from standard input makes one call per 131072 numbers,
//	                each with the whole timeout
//	-tls-cert FILE  with -tls-key and -tls-ca: speak mutual TLS, presenting this
//	-tls-key FILE   certificate and key, and trusting only a middle layer whose
//	-tls-ca FILE    certificate the CA in -tls-ca signed (the three go together;
//	                see examples/README.md)
//
// Numbers come from the arguments if there are any, negative ones included
// (client -3 4 and client -- -3 4 both work), else from standard input. On a
// terminal, client prompts with "> " on standard error and takes each line as
// one request, printing its answers or its error, until "quit" or "exit" (in
// any case) or end of input (Ctrl-D). Otherwise (a pipe, a file, /dev/null) all of standard input is one
// job, read as it streams in and sent in calls of up to 131072 numbers.
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
// When a backend fails, the middle layer answers each of its numbers with
// the backend's name and error. Without -partial, the first of them stops
// the client with an error such as
//
//	client: -3037000500 failed on backend x: remote 127.0.0.1:7001: x: -3037000500 squared overflows int64
//
// With -partial, each failed number is printed in its place,
//
//	-3037000500 -> failed (backend x): remote 127.0.0.1:7001: x: -3037000500 squared overflows int64
//
// or {"input": -3037000500, "backend": "x", "error": "..."} with -json (the
// array is closed), the client goes on, and at the end it prints how many
// numbers failed and exits with status 1. A call that fails as a whole,
// such as one that takes longer than -timeout ("no answer within 10s
// (-timeout)") or one to a middle layer that is down, stops the client
// either way:
//
//	client: the middle layer at 127.0.0.1:7000 is not reachable: dial tcp 127.0.0.1:7000: connect: connection refused
//
// SIGINT (Ctrl-C) cancels the calls in flight, up to the backends, prints
// "client: interrupted" and exits with status 130; a second one kills the
// client at once.
//
// Exit status: 0 on success; 1 when processing failed (the error names the
// number and the backend); 2 for bad usage (such as a TLS flag without the
// other two) or a token that is not an int64, such as "abc", "1.5" or
// "99999999999999999999"; 130 when interrupted. Standard input is checked
// as it streams in: the answers to the numbers before a bad token are
// printed, then the token and its line ("line 3: "1.5" is not an int64"),
// and the program exits with status 2. After a failure the
// output stops where it happened; with -json the array is left unclosed.
package main

import (
	"context"
	"flag"
	"os"
	"os/signal"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/cli"
	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/tlsflags"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// about is the first line of -h: what the program does.
const about = "client sends numbers to the middle layer and prints each one's result and backend."

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	context.AfterFunc(ctx, stop) // a second SIGINT kills

	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	var addr string
	node.AddrVar(fs, &addr, "addr", "127.0.0.1:7000", "`address` of the middle layer, host:port", false)
	var tlsFlags tlsflags.Flags
	tlsFlags.Register(fs)
	trace := fs.Bool("trace-stderr", false, "trace each call with OpenTelemetry: the call is the root span of a trace that crosses the middle layer to the backends (run them with -trace-stdout); each span is written, as it ends, as a JSON object a line to standard error")
	cmd := cli.New("client", about, fs)
	return cmd.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, func() (fanout.Backend[int64, xyz.Result], func(), error) {
		opts := []transport.ClientOption{transport.WithLogger(nil)}
		tlsConfig, err := tlsFlags.Config()
		if err != nil {
			return nil, nil, &cli.UsageError{Err: err}
		}
		if tlsConfig != nil {
			opts = append(opts, transport.WithTLSConfig(tlsConfig))
		}
		var tracing *node.Tracing
		if *trace {
			if tracing, err = node.NewTracing("client", os.Stderr); err != nil {
				return nil, nil, err
			}
			opts = append(opts, transport.WithPropagator(tracing.Propagator))
		}
		c := transport.NewClient(addr, transport.Int64(), xyz.ResultCodec(), append(opts, transport.WithService(node.MiddleService))...)
		if tracing == nil {
			return c, func() { c.Close() }, nil
		}
		traced := fanout.BackendFunc[int64, xyz.Result](func(ctx context.Context, items []int64) ([]xyz.Result, error) {
			ctx, span := tracing.Root(ctx, "client.call")
			defer span.End()
			return c.Process(ctx, items)
		})
		return traced, func() { c.Close(); tracing.Shutdown(context.Background()) }, nil
	})
}
