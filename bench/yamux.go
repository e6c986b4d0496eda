package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/hashicorp/yamux"
)

// The plain yamux system is the same scatter-gather over
// github.com/hashicorp/yamux as published, with its default configuration
// and nothing added: no stream reuse, no write coalescing. It is what plain
// yamux costs doing the same work.
//
// Every call is a stream of its own: the caller opens a new stream, writes
// the request as one frame of the raw TCP system (a batch of int64), reads
// the answer frame (a status byte and the results, as in raw.go) and closes
// the stream. A server accepts the streams of every session and serves
// each in a goroutine of its own: it reads one request, writes the answer
// and closes the stream. The middle layer has one session per backend and
// the load client one session to the middle layer, shared by all callers.

// yamuxConfig returns the configuration of every session: yamux's default.
func yamuxConfig() *yamux.Config { return yamux.DefaultConfig() }

// serveYamux serves a yamux session on every connection l accepts and
// answers every stream of it with handle, which returns the encoded
// results of a batch.
func serveYamux(l net.Listener, handle func(items []int64) ([]byte, error)) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			return err
		}
		session, err := yamux.Server(conn, yamuxConfig())
		if err != nil {
			conn.Close()
			return err // the configuration is invalid
		}
		go func() {
			defer session.Close()
			for {
				stream, err := session.Accept()
				if err != nil {
					return // the peer left, or broke the protocol
				}
				go serveYamuxStream(stream, handle)
			}
		}()
	}
}

// serveYamuxStream answers the one call on stream with handle and closes
// the stream.
func serveYamuxStream(stream net.Conn, handle func([]int64) ([]byte, error)) {
	defer stream.Close()
	msg, err := readFrame(stream, nil)
	if err != nil {
		return // the peer left, or broke the protocol
	}
	items, err := decodeInt64s(nil, msg)
	var results []byte
	if err == nil {
		results, err = handle(items)
	}
	stream.Write(sealFrame(appendAnswer(newFrame(nil), results, err)))
}

// yamuxCall sends items on a new stream of session and returns the
// results of a successful answer. It sets the stream's deadline to
// ctx's, if it has one; an error the peer answered is a remoteError.
func yamuxCall(ctx context.Context, session *yamux.Session, items []int64) ([]byte, error) {
	stream, err := session.OpenStream()
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	if deadline, ok := ctx.Deadline(); ok {
		stream.SetDeadline(deadline)
	}
	if _, err := stream.Write(sealFrame(appendInt64s(newFrame(nil), items))); err != nil {
		return nil, err
	}
	msg, err := readFrame(stream, nil)
	if err != nil {
		return nil, err
	}
	return parseAnswer(msg)
}

// dialYamux connects to addr and starts a client session on the
// connection.
func dialYamux(ctx context.Context, addr string) (*yamux.Session, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	session, err := yamux.Client(conn, yamuxConfig())
	if err != nil {
		conn.Close()
		return nil, err
	}
	return session, nil
}

// yamuxMiddle returns the handler of the middle layer, which calls the
// backends at addrs (x, y, z) on one session each, dialed now.
func yamuxMiddle(addrs [3]string) (func([]int64) ([]byte, error), error) {
	var sessions [3]*yamux.Session
	for r, addr := range addrs {
		s, err := dialYamux(context.Background(), addr)
		if err != nil {
			for _, s := range sessions[:r] {
				s.Close()
			}
			return nil, err
		}
		sessions[r] = s
	}
	return func(items []int64) ([]byte, error) {
		results, err := scatterGather(items, func(r int, batch []int64) ([]int64, error) {
			msg, err := yamuxCall(context.Background(), sessions[r], batch)
			var re remoteError
			switch {
			case errors.As(err, &re):
				return nil, err // the backend's own message names the number and route
			case err != nil:
				return nil, fmt.Errorf("call %s: %w", addrs[r], err)
			}
			return decodeInt64s(make([]int64, 0, len(batch)), msg)
		})
		if err != nil {
			return nil, err
		}
		return answerCodec.Append(nil, results)
	}, nil
}

// yamuxClient calls the middle layer; all load goroutines share it, and its
// one session.
type yamuxClient struct{ session *yamux.Session }

func connectYamux(ctx context.Context, addr string) (target, error) {
	s, err := dialYamux(ctx, addr)
	if err != nil {
		return nil, err
	}
	return sharedTarget{yamuxClient{s}}, nil
}

func (c yamuxClient) Process(ctx context.Context, items []int64) ([]Result, error) {
	msg, err := yamuxCall(ctx, c.session, items)
	if err != nil {
		return nil, err
	}
	return answerCodec.Decode(make([]Result, 0, len(items)), msg)
}

func (c yamuxClient) Close() error { return c.session.Close() }
