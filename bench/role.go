package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

// runRole serves one server of the raw TCP, gRPC or plain yamux system
// until SIGINT or SIGTERM; the benchmark runs it as a process of its own.
// args are
//
//	KIND ROLE -listen ADDR [-x ADDR -y ADDR -z ADDR]
//
// where KIND is "raw", "grpc" or "yamux", ROLE is "x", "y", "z" or
// "middle", and the middle layer takes its backends' addresses (the yamux
// middle layer connects to them before it serves). When it serves, it
// writes "KIND ROLE ready addr=ADDR" to standard error. It returns the exit
// status.
func runRole(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench role raw|grpc|yamux x|y|z|middle -listen ADDR [-x ADDR -y ADDR -z ADDR]")
		return 2
	}
	kind, role := args[0], args[1]
	fs := flag.NewFlagSet(kind+" "+role, flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "`address` to listen on")
	var backends [3]string
	for r, route := range routes {
		fs.StringVar(&backends[r], route, "", "`address` of backend "+route+" (middle only)")
	}
	fs.Parse(args[2:])

	serve, err := roleServer(kind, role, backends)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", kind, role, err)
		return 2
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", kind, role, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "%s %s ready addr=%s\n", kind, role, l.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serve(l) }()
	select {
	case err := <-served:
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", kind, role, err)
		return 1
	case <-ctx.Done():
		return 0 // exiting closes every connection
	}
}

// roleServer returns the function that serves role of kind on a listener.
func roleServer(kind, role string, backends [3]string) (func(net.Listener) error, error) {
	r := slices.Index(routes[:], role)
	if r < 0 && role != "middle" {
		return nil, fmt.Errorf("unknown role %q", role)
	}
	if r < 0 && slices.Contains(backends[:], "") {
		return nil, fmt.Errorf("the middle layer needs -x, -y and -z")
	}
	switch {
	case kind == "raw" && r >= 0:
		return func(l net.Listener) error { return serveRaw(l, rawBackend(r)) }, nil
	case kind == "raw":
		return func(l net.Listener) error { return serveRaw(l, rawMiddle(backends)) }, nil
	case kind == "grpc" && r >= 0:
		return func(l net.Listener) error { return serveGRPC(l, grpcBackend(r)) }, nil
	case kind == "grpc":
		m, err := grpcMiddle(backends)
		if err != nil {
			return nil, err
		}
		return func(l net.Listener) error { return serveGRPC(l, m) }, nil
	case kind == "yamux" && r >= 0:
		return func(l net.Listener) error { return serveYamux(l, rawBackend(r)) }, nil
	case kind == "yamux":
		m, err := yamuxMiddle(backends)
		if err != nil {
			return nil, err
		}
		return func(l net.Listener) error { return serveYamux(l, m) }, nil
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}
