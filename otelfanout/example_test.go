package otelfanout_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/otelfanout"
	"github.com/seed-c94cd834/fanout/transport"
)

// A middle layer traced end to end: one observer for its server, router
// and balancer, and one propagator for every transport client and server
// on the way, the caller's and the backend's included.
func Example() {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	quiet := transport.WithLogger(slog.New(slog.DiscardHandler))
	prop := transport.WithPropagator(otelfanout.Propagator())
	obs := otelfanout.NewObserver(otelfanout.WithTracerProvider(tp)) // and WithMeterProvider

	// Backend x, on a server of its own.
	x := transport.NewServer(square, transport.Int64(), transport.Int64(), quiet, prop, transport.WithObserver(obs))
	xAddr, stopX := listen(x)
	defer stopX()

	// The middle layer.
	toX := transport.NewClient(xAddr, transport.Int64(), transport.Int64(), quiet, prop)
	defer toX.Close()
	bal, _ := fanout.NewBalancer([]fanout.Backend[int64, int64]{toX},
		fanout.WithBalancerName("x"), fanout.WithBalancerObserver(obs))
	defer bal.Close()
	toAll := fanout.ClassifierFunc[int64](func(int64) (string, error) { return "x", nil })
	router, _ := fanout.NewRouter(toAll, map[string]fanout.Backend[int64, int64]{"x": bal}, fanout.WithObserver(obs))
	middle := transport.NewServer(router, transport.Int64(), transport.Int64(), quiet, prop, transport.WithObserver(obs))
	middleAddr, stopMiddle := listen(middle)
	defer stopMiddle()

	// A caller, in a span of its own.
	client := transport.NewClient(middleAddr, transport.Int64(), transport.Int64(), quiet, prop)
	defer client.Close()
	ctx, span := tp.Tracer("client").Start(context.Background(), "client")
	out, err := client.Process(ctx, []int64{3, 4})
	span.End()
	fmt.Println(out, err)

	stopMiddle() // a server ends a call's span once its answer is written: wait for it
	stopX()
	printTree(spans.GetSpans())
	// Output:
	// [9 16] <nil>
	// client
	//   fanout.serve
	//     fanout.call
	//       fanout.route x
	//         fanout.attempt x
	//           fanout.serve
}

// listen serves srv on a loopback port, and returns its address and a
// function that closes it, once however often it is called, and waits for
// Serve to return.
func listen(srv *transport.Server[int64, int64]) (addr string, stop func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	return l.Addr().String(), sync.OnceFunc(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, transport.ErrServerClosed) {
			fmt.Println(err)
		}
	})
}

// printTree prints the spans' names, each under its parent.
func printTree(spans tracetest.SpanStubs) {
	children := make(map[trace.SpanID][]tracetest.SpanStub)
	for _, s := range spans {
		children[s.Parent.SpanID()] = append(children[s.Parent.SpanID()], s)
	}
	var walk func(parent trace.SpanID, depth int)
	walk = func(parent trace.SpanID, depth int) {
		for _, s := range children[parent] {
			fmt.Println(strings.Repeat("  ", depth) + s.Name)
			walk(s.SpanContext.SpanID(), depth+1)
		}
	}
	walk(trace.SpanID{}, 0)
}
