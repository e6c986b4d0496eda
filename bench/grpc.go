package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// The gRPC system is the same scatter-gather with google.golang.org/grpc:
// one unary method, declared by hand instead of generated from a .proto
// file, whose messages are bytes passed through as they are. A request is a
// batch of int64 (appendInt64s); an answer is int64 from a backend and
// answerCodec from the middle layer. Errors are gRPC statuses.

// grpcMethod is the full name of the one method.
const grpcMethod = "/fanoutbench.Scatter/Process"

// maxGRPCMessage lifts gRPC's default limit of 4 MiB on received messages,
// which a 1,000,000-number batch exceeds.
const maxGRPCMessage = 64 << 20

// bytesCodec passes messages of type *[]byte through unchanged.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "bytes" }

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("bytesCodec: cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("bytesCodec: cannot unmarshal into %T", v)
	}
	*b = data.Materialize() // a copy: data is freed when Unmarshal returns
	return nil
}

// processor is the service's interface: what a server registered with
// scatterService implements.
type processor interface {
	Process(ctx context.Context, req []byte) ([]byte, error)
}

// processFunc adapts a function to processor.
type processFunc func(ctx context.Context, req []byte) ([]byte, error)

func (f processFunc) Process(ctx context.Context, req []byte) ([]byte, error) { return f(ctx, req) }

// scatterService declares the service, as generated code would.
var scatterService = grpc.ServiceDesc{
	ServiceName: "fanoutbench.Scatter",
	HandlerType: (*processor)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Process",
		// The servers install no interceptor, so the handler calls the
		// method directly.
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req []byte
			if err := dec(&req); err != nil {
				return nil, err
			}
			resp, err := srv.(processor).Process(ctx, req)
			if err != nil {
				return nil, err
			}
			return &resp, nil
		},
	}},
}

// serveGRPC serves p on l.
func serveGRPC(l net.Listener, p processor) error {
	s := grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}),
		grpc.MaxRecvMsgSize(maxGRPCMessage), grpc.MaxSendMsgSize(maxGRPCMessage))
	s.RegisterService(&scatterService, p)
	return s.Serve(l)
}

// dialGRPC returns a client connection to the server at addr. It connects
// on the first call.
func dialGRPC(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(bytesCodec{}),
			grpc.MaxCallRecvMsgSize(maxGRPCMessage), grpc.MaxCallSendMsgSize(maxGRPCMessage)))
}

// grpcBackend returns the backend of route r.
func grpcBackend(r int) processor {
	return processFunc(func(_ context.Context, req []byte) ([]byte, error) {
		items, err := decodeInt64s(nil, req)
		if err != nil {
			return nil, err
		}
		values, err := computeAll(r, items)
		if err != nil {
			return nil, err
		}
		return appendInt64s(nil, values), nil
	})
}

// grpcMiddle returns the middle layer, which calls the backends at addrs
// (x, y, z), one client connection each.
func grpcMiddle(addrs [3]string) (processor, error) {
	var conns [3]*grpc.ClientConn
	for r, addr := range addrs {
		c, err := dialGRPC(addr)
		if err != nil {
			return nil, err
		}
		conns[r] = c
	}
	return processFunc(func(ctx context.Context, req []byte) ([]byte, error) {
		items, err := decodeInt64s(nil, req)
		if err != nil {
			return nil, err
		}
		results, err := scatterGather(items, func(r int, batch []int64) ([]int64, error) {
			req := appendInt64s(nil, batch)
			var resp []byte
			if err := conns[r].Invoke(ctx, grpcMethod, &req, &resp); err != nil {
				// The backend's own message names the number and route.
				return nil, errors.New(status.Convert(err).Message())
			}
			return decodeInt64s(make([]int64, 0, len(batch)), resp)
		})
		if err != nil {
			return nil, err
		}
		return answerCodec.Append(nil, results)
	}), nil
}

// grpcClient calls the middle layer; all load goroutines share it, and its
// one connection.
type grpcClient struct{ conn *grpc.ClientConn }

func connectGRPC(ctx context.Context, addr string) (target, error) {
	conn, err := dialGRPC(addr)
	if err != nil {
		return nil, err
	}
	return sharedTarget{grpcClient{conn}}, nil
}

func (c grpcClient) Process(ctx context.Context, items []int64) ([]Result, error) {
	req := appendInt64s(nil, items)
	var resp []byte
	if err := c.conn.Invoke(ctx, grpcMethod, &req, &resp); err != nil {
		return nil, err
	}
	return answerCodec.Decode(make([]Result, 0, len(items)), resp)
}

func (c grpcClient) Close() error { return c.conn.Close() }
