// Package wire holds the bytes of fanout's transport protocol (see
// transport/PROTOCOL.md): the frames that carry calls on a stream, the hello
// and reply of the connection handshake, and the binary layouts of the
// built-in codecs. It is pure: it reads from an [io.Reader] or appends to a
// byte slice, and never starts a goroutine, holds a connection or keeps
// state between calls. Readers allocate only as bytes arrive, so that a peer
// cannot make them reserve the lengths it announces.
//
// The transport package builds its server and client on it; the fuzz
// targets of the encodings live here.
package wire

import "errors"

// Errors of the protocol. The transport package exports the same values.
var (
	// ErrMessageTooLarge means a message exceeds the receiver's maximum
	// message size.
	ErrMessageTooLarge = errors.New("transport: message too large")

	// ErrProtocol means a peer broke the protocol: bad magic, a malformed
	// frame, an unexpected message kind.
	ErrProtocol = errors.New("transport: protocol error")

	// ErrHandshake means the peers could not agree on the protocol version
	// or codecs.
	ErrHandshake = errors.New("transport: handshake refused")
)
