package transport

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The handshake opens every connection, before yamux starts. See PROTOCOL.md.
var magic = [6]byte{'f', 'a', 'n', 'o', 'u', 't'}

// protocolVersion is the version this package speaks, client and server
// alike. Until a first tagged release, no other version is served.
const protocolVersion = 3

// served reports whether a server serves clients that speak version v.
func served(v uint8) bool { return v == protocolVersion }

// The status of the server's reply. A client treats any status but
// statusOK as a refusal, and reports its message.
const (
	statusOK      = 0
	statusRefused = 1 // the hellos do not agree: version or codecs
	statusBusy    = 2 // the server is at its connection limit
)

// maxCodecName is the longest codec name the hello can carry.
const maxCodecName = 255

// checkCodecName panics if a codec's name cannot be sent in the handshake:
// that is a programming error in the codec, found when a server or client is
// built rather than as a confusing handshake failure later.
func checkCodecName(name string) {
	if len(name) > maxCodecName {
		panic(fmt.Sprintf("transport: codec name %.20q... is %d bytes long, the limit is %d", name, len(name), maxCodecName))
	}
}

// hello is what each side states about itself.
type hello struct {
	version    uint8
	reqCodec   string // codec of requests (items)
	respCodec  string // codec of responses (results)
	maxMessage uint32 // the largest payload this side accepts
}

func appendHello(dst []byte, h hello) []byte {
	dst = append(dst, magic[:]...)
	dst = append(dst, h.version)
	dst = append(dst, byte(len(h.reqCodec)))
	dst = append(dst, h.reqCodec...)
	dst = append(dst, byte(len(h.respCodec)))
	dst = append(dst, h.respCodec...)
	return binary.LittleEndian.AppendUint32(dst, h.maxMessage)
}

// The first byte of a TLS record that opens a handshake, or reports an
// alert: what a fanout peer reads when the other side speaks TLS.
const (
	tlsRecordAlert     = 0x15
	tlsRecordHandshake = 0x16
)

// readHello reads a hello. A wrong magic fails at once with ErrProtocol; a
// version a server does not serve is returned without reading further,
// since its layout may differ.
func readHello(r io.Reader) (hello, error) {
	var h hello
	var head [len(magic) + 1]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return h, err
	}
	if [6]byte(head[:6]) != magic {
		if head[0] == tlsRecordHandshake || head[0] == tlsRecordAlert {
			return h, fmt.Errorf("%w: the peer speaks TLS and this side does not", ErrProtocol)
		}
		return h, fmt.Errorf("%w: bad magic %q, not a fanout peer", ErrProtocol, head[:6])
	}
	h.version = head[6]
	if !served(h.version) {
		return h, nil
	}
	var err error
	if h.reqCodec, err = readName(r); err != nil {
		return h, err
	}
	if h.respCodec, err = readName(r); err != nil {
		return h, err
	}
	var max [4]byte
	if _, err := io.ReadFull(r, max[:]); err != nil {
		return h, err
	}
	h.maxMessage = binary.LittleEndian.Uint32(max[:])
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

// appendReply appends the server's answer: its own hello, a status and a
// message (empty when the status is OK).
func appendReply(dst []byte, h hello, status uint8, msg string) []byte {
	msg = truncate(msg, 0xFFFF)
	dst = appendHello(dst, h)
	dst = append(dst, status)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(msg)))
	return append(dst, msg...)
}

// readReply reads the server's answer to a hello.
func readReply(r io.Reader) (h hello, status uint8, msg string, err error) {
	if h, err = readHello(r); err != nil {
		return h, 0, "", err
	}
	if h.version != protocolVersion {
		return h, 0, "", fmt.Errorf("%w: server speaks protocol version %d, this client %d", ErrHandshake, h.version, protocolVersion)
	}
	status, msg, err = readStatus(r)
	return h, status, msg, err
}

// readStatus reads the status and message that follow the server's hello.
func readStatus(r io.Reader) (status uint8, msg string, err error) {
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

// checkHello compares a client's hello with the server's and returns the
// reason to refuse it, or "" if they agree.
func checkHello(server, client hello) string {
	if !served(client.version) {
		return fmt.Sprintf("protocol version %d not supported, server speaks %d", client.version, server.version)
	}
	if client.reqCodec != server.reqCodec || client.respCodec != server.respCodec {
		return fmt.Sprintf("codec mismatch: client sends %q and expects %q, server expects %q and sends %q",
			client.reqCodec, client.respCodec, server.reqCodec, server.respCodec)
	}
	return ""
}
