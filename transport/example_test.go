package transport_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport"
)

func ExampleNewServer() {
	// Keep the example's output to its result.
	quiet := transport.WithLogger(slog.New(slog.DiscardHandler))

	double := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		out := make([]int64, len(items))
		for i, n := range items {
			out[i] = 2 * n
		}
		return out, nil
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := transport.NewServer(double, transport.Int64(), transport.Int64(), quiet)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Shutdown(context.Background())
		<-served // Serve returns ErrServerClosed
	}()

	ctx := context.Background()
	client, err := transport.Dial(ctx, l.Addr().String(), transport.Int64(), transport.Int64(), quiet)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	out, err := client.Process(ctx, []int64{1, 2, 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out)
	// Output: [2 4 6]
}

func ExampleRemoteError() {
	quiet := transport.WithLogger(slog.New(slog.DiscardHandler))

	picky := fanout.BackendFunc[int64, int64](func(_ context.Context, items []int64) ([]int64, error) {
		for _, n := range items {
			if n == 13 {
				return nil, errors.New("13 is not welcome here")
			}
		}
		return items, nil
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := transport.NewServer(picky, transport.Int64(), transport.Int64(), quiet)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Close()
		<-served
	}()

	client := transport.NewClient(l.Addr().String(), transport.Int64(), transport.Int64(), quiet)
	defer client.Close()

	_, err = client.Process(context.Background(), []int64{12, 13, 14})

	// The server's backend failed: that is a RemoteError, unlike a failure
	// to reach the server.
	var re *transport.RemoteError
	if errors.As(err, &re) {
		fmt.Println("code:", re.Code)
		fmt.Println("message:", re.Message)
	}
	// Output:
	// code: backend error
	// message: 13 is not welcome here
}
