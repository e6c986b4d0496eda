package wire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Magic opens every hello.
var Magic = [6]byte{'f', 'a', 'n', 'o', 'u', 't'}

// Version is the protocol version this package speaks, client and server
// alike. Until a first tagged release, no other version is served.
const Version = 7

// Served reports whether a server serves clients that speak version v.
func Served(v uint8) bool { return v == Version }

// The status of the server's reply. A client treats any status but
// StatusOK as a refusal, and reports its message.
const (
	StatusOK      = 0
	StatusRefused = 1 // the hellos do not agree: version or codecs
	StatusBusy    = 2 // the server is busy: at its limit of connections, or of handshakes
)

// MaxCodecName is the longest codec name, and MaxServiceName the longest
// service name, a hello can carry.
const (
	MaxCodecName   = 255
	MaxServiceName = 255
)

// Hello is what each side states about itself in the handshake.
type Hello struct {
	Version    uint8
	ReqCodec   string // codec of requests (items)
	RespCodec  string // codec of responses (results)
	MaxMessage uint32 // the largest payload this side accepts

	// Service is, from a server, the service it serves; from a client,
	// the service it requires of its server, or "" for any.
	Service string
}

// AppendHello appends h's encoding. Codec names must be at most
// MaxCodecName bytes long, and the service name MaxServiceName.
func AppendHello(dst []byte, h Hello) []byte {
	dst = append(dst, Magic[:]...)
	dst = append(dst, h.Version)
	dst = append(dst, byte(len(h.ReqCodec)))
	dst = append(dst, h.ReqCodec...)
	dst = append(dst, byte(len(h.RespCodec)))
	dst = append(dst, h.RespCodec...)
	dst = binary.LittleEndian.AppendUint32(dst, h.MaxMessage)
	dst = append(dst, byte(len(h.Service)))
	return append(dst, h.Service...)
}

// The first byte of a TLS record that opens a handshake, or reports an
// alert: what a fanout peer reads when the other side speaks TLS.
const (
	tlsRecordAlert     = 0x15
	tlsRecordHandshake = 0x16
)

// ReadHello reads a hello. A wrong magic fails at once with [ErrProtocol];
// the hello of a version not [Served] is returned with only its Version
// set, without reading further, since its layout may differ.
func ReadHello(r io.Reader) (Hello, error) {
	var h Hello
	var head [len(Magic) + 1]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return h, err
	}
	if [6]byte(head[:6]) != Magic {
		if head[0] == tlsRecordHandshake || head[0] == tlsRecordAlert {
			return h, fmt.Errorf("%w: the peer speaks TLS and this side does not", ErrProtocol)
		}
		return h, fmt.Errorf("%w: bad magic %q, not a fanout peer", ErrProtocol, head[:6])
	}
	h.Version = head[6]
	if !Served(h.Version) {
		return h, nil
	}
	var err error
	if h.ReqCodec, err = readName(r); err != nil {
		return h, err
	}
	if h.RespCodec, err = readName(r); err != nil {
		return h, err
	}
	var max [4]byte
	if _, err := io.ReadFull(r, max[:]); err != nil {
		return h, err
	}
	h.MaxMessage = binary.LittleEndian.Uint32(max[:])
	if h.Service, err = readName(r); err != nil {
		return h, err
	}
	return h, nil
}

func readName(r io.Reader) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// AppendReply appends the server's answer to a hello: its own hello, a
// status and a message (empty when the status is OK), cut to 65,535 bytes.
func AppendReply(dst []byte, h Hello, status uint8, msg string) []byte {
	msg = Truncate(msg, 0xFFFF)
	dst = AppendHello(dst, h)
	dst = append(dst, status)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(msg)))
	return append(dst, msg...)
}

// ReadReply reads the server's answer to a hello. A server of another
// version is an error wrapping [ErrHandshake].
func ReadReply(r io.Reader) (h Hello, status uint8, msg string, err error) {
	if h, err = ReadHello(r); err != nil {
		return h, 0, "", err
	}
	if h.Version != Version {
		return h, 0, "", fmt.Errorf("%w: server speaks protocol version %d, this client %d", ErrHandshake, h.Version, Version)
	}
	status, msg, err = ReadStatus(r)
	return h, status, msg, err
}

// ReadStatus reads the status and message that follow the server's hello.
func ReadStatus(r io.Reader) (status uint8, msg string, err error) {
	var tail [3]byte
	if _, err := io.ReadFull(r, tail[:]); err != nil {
		return 0, "", err
	}
	b := make([]byte, binary.LittleEndian.Uint16(tail[1:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return 0, "", err
	}
	return tail[0], string(b), nil
}

// CheckHello compares a client's hello with the server's and returns the
// reason to refuse it, or "" if they agree.
func CheckHello(server, client Hello) string {
	if !Served(client.Version) {
		return fmt.Sprintf("protocol version %d not supported, server speaks %d", client.Version, server.Version)
	}
	if client.Service != "" && client.Service != server.Service {
		return fmt.Sprintf("service mismatch: client expects service %q, server serves %s", client.Service, serviceName(server.Service))
	}
	if client.ReqCodec != server.ReqCodec || client.RespCodec != server.RespCodec {
		return fmt.Sprintf("codec mismatch: client sends %q and expects %q, server expects %q and sends %q",
			client.ReqCodec, client.RespCodec, server.ReqCodec, server.RespCodec)
	}
	return ""
}

// serviceName quotes a server's service name, or says it has none.
func serviceName(s string) string {
	if s == "" {
		return "no named service"
	}
	return fmt.Sprintf("%q", s)
}
