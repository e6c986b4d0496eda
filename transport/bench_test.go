package transport_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/faultproxy"
	"github.com/seed-c94cd834/fanout/transport"
)

// benchItems is the batch size of the codec benchmarks.
const benchItems = 1000

func BenchmarkCodecInt64Append(b *testing.B) {
	c := transport.Int64()
	items := make([]int64, benchItems)
	for i := range items {
		items[i] = int64(i) * -7
	}
	dst := make([]byte, 0, 8*benchItems)
	b.ReportAllocs()
	b.SetBytes(8 * benchItems)
	for b.Loop() {
		var err error
		if dst, err = c.Append(dst[:0], items); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCodecInt64Decode(b *testing.B) {
	c := transport.Int64()
	items := make([]int64, benchItems)
	for i := range items {
		items[i] = int64(i) * -7
	}
	data, err := c.Append(nil, items)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]int64, 0, benchItems)
	b.ReportAllocs()
	b.SetBytes(8 * benchItems)
	for b.Loop() {
		if dst, err = c.Decode(dst[:0], data); err != nil {
			b.Fatal(err)
		}
	}
}

// benchQuiet discards the benchmarks' logs.
var benchQuiet = transport.WithLogger(slog.New(slog.DiscardHandler))

// benchServe serves an echo backend over TCP loopback and returns a client
// connected to it; both are closed when the benchmark ends.
func benchServe(b *testing.B) *transport.Client[int64, int64] {
	b.Helper()
	return benchDial(b, benchEcho(b))
}

// benchEcho serves an echo backend over TCP loopback until the benchmark
// ends and returns its address.
func benchEcho(b *testing.B) string {
	b.Helper()
	echo := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		return items, nil
	})
	srv, addr, stopped := benchServer(b, echo)
	b.Cleanup(func() {
		srv.Close()
		stopped()
	})
	return addr
}

// benchDial returns a client connected to addr, closed when the benchmark
// ends.
func benchDial(b *testing.B, addr string) *transport.Client[int64, int64] {
	b.Helper()
	c, err := transport.Dial(context.Background(), addr, transport.Int64(), transport.Int64(), benchQuiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// benchServer serves backend on a loopback port and returns the server,
// its address, and a function that, once the server is stopped, checks
// how its Serve ended.
func benchServer(b *testing.B, backend fanout.Backend[int64, int64]) (*transport.Server[int64, int64], string, func()) {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := transport.NewServer(backend, transport.Int64(), transport.Int64(), benchQuiet)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	return srv, l.Addr().String(), func() {
		if err := <-served; !errors.Is(err, transport.ErrServerClosed) {
			b.Errorf("Serve: %v", err)
		}
	}
}

func benchBatch(n int) []int64 {
	items := make([]int64, n)
	for i := range items {
		items[i] = int64(i) - int64(n)/2
	}
	return items
}

func BenchmarkClientProcess(b *testing.B) {
	c := benchServe(b)
	ctx := context.Background()
	for _, n := range []int{10, 1000, 10000, 100000, 1000000} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			items := benchBatch(n)
			b.ReportAllocs()
			b.SetBytes(int64(8 * n))
			for b.Loop() {
				out, err := c.Process(ctx, items)
				if err != nil {
					b.Fatal(err)
				}
				if len(out) != n {
					b.Fatalf("%d results for %d items", len(out), n)
				}
			}
		})
	}
}

// BenchmarkClientProcessParallel measures many goroutines sharing one client
// and so one connection: about 64 calls in flight at a time.
func BenchmarkClientProcessParallel(b *testing.B) {
	const n = 10
	c := benchServe(b)
	ctx := context.Background()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((64 + procs - 1) / procs)
	b.ReportAllocs()
	b.SetBytes(8 * n)
	b.RunParallel(func(pb *testing.PB) {
		items := benchBatch(n)
		for pb.Next() {
			out, err := c.Process(ctx, items)
			if err != nil {
				b.Error(err)
				return
			}
			if len(out) != n {
				b.Errorf("%d results for %d items", len(out), n)
				return
			}
		}
	})
}

// BenchmarkServerCloseIdleStreams measures Server.Close and Server.Shutdown
// on a connection whose client keeps 256 idle streams, each with a server
// goroutine waiting for its next request. (yamux's Stream.Read spins while
// its session shuts down; see connStreams.stop.)
func BenchmarkServerCloseIdleStreams(b *testing.B) {
	for _, stop := range []struct {
		name string
		stop func(*transport.Server[int64, int64]) error
	}{
		{"Close", (*transport.Server[int64, int64]).Close},
		{"Shutdown", func(srv *transport.Server[int64, int64]) error { return srv.Shutdown(context.Background()) }},
	} {
		b.Run(stop.name, func(b *testing.B) { benchStopIdleStreams(b, stop.stop) })
	}
}

func benchStopIdleStreams(b *testing.B, stop func(*transport.Server[int64, int64]) error) {
	const streams = 256
	b.ReportAllocs()
	b.StopTimer()
	for range b.N {
		var arrived sync.WaitGroup
		arrived.Add(streams)
		all := make(chan struct{})
		gate := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
			arrived.Done()
			<-all // every call holds its stream until all are open
			return items, nil
		})
		srv, addr, stopped := benchServer(b, gate)
		c := transport.NewClient(addr, transport.Int64(), transport.Int64(), benchQuiet)
		var calls sync.WaitGroup
		for range streams {
			calls.Go(func() {
				if _, err := c.Process(context.Background(), []int64{1}); err != nil {
					b.Error(err)
				}
			})
		}
		arrived.Wait()
		close(all)
		calls.Wait()

		b.StartTimer()
		err := stop(srv)
		b.StopTimer()
		if err != nil {
			b.Error(err)
		}
		srv.Close()
		stopped()
		c.Close()
	}
}

// BenchmarkClientProcessOverLatency makes calls of batch numbers, one after
// another, to an echo server through a proxy that delays every chunk of
// bytes by 1 ms each way (2 ms round trips, as between hosts some way
// apart), with the client's default chunks (131,072 numbers, 4 in flight).
// What a request waits for before its payload goes shows here, where
// loopback's round trips hide it.
func BenchmarkClientProcessOverLatency(b *testing.B) {
	for _, batch := range []int{10, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			p, err := faultproxy.New(benchEcho(b))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { p.Close() })
			p.SetLatency(faultproxy.Both, time.Millisecond)
			c := benchDial(b, p.Addr())
			items := benchBatch(batch)
			b.SetBytes(int64(8 * batch))
			for b.Loop() {
				out, err := c.Process(context.Background(), items)
				if err != nil {
					b.Fatal(err)
				}
				if len(out) != batch {
					b.Fatalf("%d results for %d numbers", len(out), batch)
				}
			}
		})
	}
}
