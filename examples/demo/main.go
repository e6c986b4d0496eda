// Command demo runs the whole example system in one process: it starts the
// x, y and z backends and the middle layer on free loopback ports, talking to
// each other over real TCP connections and the fanout transport, then
// behaves exactly as the client program against them.
//
// Usage:
//
//	demo [-json] [-partial] [-timeout D] [number ...]
//
// Flags:
//
//	-json       print one JSON array of {"input", "output", "backend"} objects
//	-partial    when numbers fail, print each in its place, with its backend
//	            and error, go on, and exit with status 1 at the end
//	-timeout D  how long each call may take (default 10s; 0 for no limit)
//
// Input, output and exit status are those of client: numbers come from the
// arguments if there are any (negative ones included), else from standard
// input, prompting on a terminal; each number is answered with a line such
// as "-3 -> 9 (backend x)". Exit status 0 on success, 1 when processing
// failed, 2 for bad usage or a token that is not an int64, 130 when
// interrupted (SIGINT, Ctrl-C).
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/cli"
	"github.com/seed-c94cd834/fanout/examples/internal/node"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// about is the first line of -h: what the program does.
const about = "demo starts the backends (x, y, z and the middle layer) in-process, then acts as client."

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	context.AfterFunc(ctx, stop) // a second SIGINT kills

	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	cmd := cli.New("demo", about, fs)
	return cmd.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, start)
}

// start starts the system and returns a client of its middle layer.
func start() (fanout.Backend[int64, xyz.Result], func(), error) {
	// Only problems are worth showing: the output is the client's.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sys, err := node.StartSystem(transport.WithLogger(log))
	if err != nil {
		return nil, nil, err
	}
	c := transport.NewClient(sys.Addr, transport.Int64(), xyz.ResultCodec(), transport.WithLogger(log), transport.WithService(node.MiddleService))
	return c, func() {
		c.Close()
		sys.Close()
	}, nil
}
