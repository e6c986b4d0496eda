package transport

import (
	"context"
	"errors"
	"fmt"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

// Sentinel errors of the transport. Errors returned by [Client.Process] wrap
// them (or a network error) and name the server's address.
var (
	// ErrClosed is returned by calls on a [Client] after Close.
	ErrClosed = errors.New("transport: client closed")

	// ErrServerClosed is returned by [Server.Serve] after Shutdown or Close,
	// and matches a [*RemoteError] with [CodeUnavailable].
	ErrServerClosed = errors.New("transport: server closed")

	// ErrMessageTooLarge means a message exceeds the receiver's maximum
	// message size. It matches a [*RemoteError] with [CodeTooLarge].
	ErrMessageTooLarge = wire.ErrMessageTooLarge

	// ErrProtocol means a peer broke the protocol: bad magic, a malformed
	// frame, an unexpected message kind.
	ErrProtocol = wire.ErrProtocol

	// ErrHandshake means the peers could not agree on the protocol version
	// or codecs; the connection was closed.
	ErrHandshake = wire.ErrHandshake
)

// Code classifies a [RemoteError].
type Code uint8

// Error codes carried by an error message on the wire.
const (
	CodeBackend     Code = 1 // the backend's Process returned an error
	CodeBadRequest  Code = 2 // the request could not be decoded
	CodeTooLarge    Code = 3 // the request, or the response, exceeds its receiver's maximum message size
	CodeCanceled    Code = 4 // the call was cancelled
	CodeDeadline    Code = 5 // the call's deadline passed
	CodeUnavailable Code = 6 // the server is shutting down
	CodeInternal    Code = 7 // the backend panicked or broke its contract
	CodeOverloaded  Code = 8 // not processed: the connection, or the server in all, has as many streams open (idle ones included) as it accepts, or the request stalled and lost its room
	CodeStreamIdle  Code = 9 // the server closed a stream idle for its idle timeout; a request sent on it was not read
)

func (c Code) String() string {
	switch c {
	case CodeBackend:
		return "backend error"
	case CodeBadRequest:
		return "bad request"
	case CodeTooLarge:
		return "message too large"
	case CodeCanceled:
		return "canceled"
	case CodeDeadline:
		return "deadline exceeded"
	case CodeUnavailable:
		return "unavailable"
	case CodeInternal:
		return "internal error"
	case CodeOverloaded:
		return "overloaded"
	case CodeStreamIdle:
		return "stream idle"
	}
	return fmt.Sprintf("code %d", uint8(c))
}

// RemoteError is an error that the server reported for a call: its backend
// failed, or it refused the request. Use [errors.As] to tell it apart from a
// transport failure (a dial error, a lost connection), which is never a
// RemoteError.
type RemoteError struct {
	Addr    string // the server's address
	Code    Code
	Message string // the server's error text
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("remote %s: %s", e.Addr, e.Message)
}

// Is makes a RemoteError match the local error its code stands for:
// context.Canceled, context.DeadlineExceeded, [ErrMessageTooLarge],
// [ErrServerClosed] and [fanout.ErrUnavailable] (the server was shutting
// down and did not process the call), [fanout.ErrOverloaded], and
// [fanout.ErrUnavailable] for [CodeStreamIdle] (the request was not read). An error
// the backend itself returned ([CodeBackend]) matches none of them, so a
// [fanout.Balancer] never retries it.
func (e *RemoteError) Is(target error) bool {
	switch e.Code {
	case CodeCanceled:
		return target == context.Canceled
	case CodeDeadline:
		return target == context.DeadlineExceeded
	case CodeTooLarge:
		return target == ErrMessageTooLarge
	case CodeUnavailable:
		return target == ErrServerClosed || target == fanout.ErrUnavailable
	case CodeOverloaded:
		return target == fanout.ErrOverloaded
	case CodeStreamIdle:
		return target == fanout.ErrUnavailable
	}
	return false
}
