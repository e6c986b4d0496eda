package wire

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// A frame is one message on a stream: kind (1 byte), payload length (4
// bytes, little-endian) and the payload.
const HeaderSize = 5

// Kind is a frame's message kind.
type Kind uint8

// The message kinds.
const (
	KindRequest  Kind = 1 // timeout (8 bytes) + encoded items
	KindResponse Kind = 2 // encoded results
	KindError    Kind = 3 // code (1 byte) + UTF-8 message
	KindContinue Kind = 4 // empty: the server has room for a request's payload: send it now
	KindPartial  Kind = 5 // failures (see AppendFailures) + encoded results, if any
	KindTraced   Kind = 6 // a request that carries a trace: timeout (8 bytes) + trace context (see AppendTrace) + encoded items
	KindWait     Kind = 7 // empty: no room for a large request sent whole; its payload is dropped unread, to be sent again after a continue frame
)

// FlagAsk, set in the kind byte of a request or a traced request, says
// that the client sends the header alone and the payload only after the
// server's continue frame, which the server sends once its byte budget has
// room for the payload.
const FlagAsk = 0x80

// ContinueAbove is the largest request payload that waits for room in the
// server's budget with its payload. A larger one sent whole (without
// [FlagAsk]) is taken at once if the budget has room; otherwise the server
// answers with a wait frame, reads and drops the payload, and asks for it
// again with a continue frame once there is room. So a request waiting for
// room never holds more than a stream window's half of payload in the
// server's yamux buffers, and a large one its header only.
const ContinueAbove = 64 << 10

// ContinueFrame and WaitFrame are the whole continue and wait frames. They
// must only ever be read.
var (
	ContinueFrame = []byte{byte(KindContinue), 0, 0, 0, 0}
	WaitFrame     = []byte{byte(KindWait), 0, 0, 0, 0}
)

// RequestPrefixSize is the fixed part of a request payload: the remaining
// time of the caller's deadline in nanoseconds, 0 for none.
const RequestPrefixSize = 8

// ReadChunk is the most a frame reader allocates ahead of the bytes that
// have actually arrived, so a peer that announces a large message but does
// not send it costs little memory.
const ReadChunk = 64 << 10

// AppendHeader appends a frame header with a zero length; FinishFrame fills
// in the length once the payload has been appended.
func AppendHeader(dst []byte, k Kind) []byte {
	return append(dst, byte(k), 0, 0, 0, 0)
}

// FinishFrame sets the length of the frame that starts at buf[start] and
// checks it against limit: a longer payload is an error wrapping
// [ErrMessageTooLarge].
func FinishFrame(buf []byte, start, limit int) error {
	n := len(buf) - start - HeaderSize
	if n > limit {
		return fmt.Errorf("%w: %d bytes, the peer accepts at most %d", ErrMessageTooLarge, n, limit)
	}
	setLength(buf, start)
	return nil
}

// setLength sets the length of the frame that starts at buf[start] to the
// bytes that follow its header.
func setLength(buf []byte, start int) {
	binary.LittleEndian.PutUint32(buf[start+1:], uint32(len(buf)-start-HeaderSize))
}

// ReadFrame reads one frame from r. The payload is read into buf (which may
// be nil) and grown only as data arrives. A frame longer than limit is
// refused before its payload is read, with an error wrapping
// [ErrMessageTooLarge]; an unknown kind is refused with [ErrProtocol]. A
// clean end of stream before the header is [io.EOF]; one inside a frame is
// [io.ErrUnexpectedEOF].
func ReadFrame(r io.Reader, limit int, buf []byte) (Kind, []byte, error) {
	// The header is read into buf, whose bytes the payload then overwrites,
	// so that reading a frame allocates nothing when buf is big enough.
	hdr := slices.Grow(buf[:0], HeaderSize)[:HeaderSize]
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, hdr[:0], err
	}
	return ReadPayload(r, limit, hdr)
}

// ParseHeader checks a frame header and returns its kind, without
// [FlagAsk], and payload length: an unknown kind, or the flag on a kind
// that is not a request, is an error wrapping [ErrProtocol], a payload
// longer than limit one wrapping [ErrMessageTooLarge].
func ParseHeader(hdr []byte, limit int) (Kind, int, error) {
	k := Kind(hdr[0] &^ FlagAsk)
	if k < KindRequest || k > KindWait {
		return 0, 0, fmt.Errorf("%w: unknown message kind %d", ErrProtocol, hdr[0])
	}
	if hdr[0]&FlagAsk != 0 && k != KindRequest && k != KindTraced {
		return 0, 0, fmt.Errorf("%w: message kind %d: the ask flag (0x80) on a kind that is not a request", ErrProtocol, hdr[0])
	}
	n := binary.LittleEndian.Uint32(hdr[1:])
	if uint64(n) > uint64(limit) {
		return k, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, n, limit)
	}
	return k, int(n), nil
}

// ReadPayload checks a frame header already read into hdr and reads the
// payload that follows into hdr's array, growing it as data arrives; see
// [ReadFrame].
func ReadPayload(r io.Reader, limit int, hdr []byte) (Kind, []byte, error) {
	k, n, err := ParseHeader(hdr, limit)
	if err != nil {
		return k, hdr[:0], err
	}
	buf := hdr[:0]
	for len(buf) < n {
		step := min(n-len(buf), max(ReadChunk, len(buf)))
		m := len(buf)
		buf = slices.Grow(buf, step)[:m+step]
		if _, err := io.ReadFull(r, buf[m:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return k, buf[:0], err
		}
	}
	return k, buf, nil
}

// AppendError appends a complete error frame of code and msg. A message
// longer than the limit is cut, so an error frame always fits.
func AppendError(dst []byte, code uint8, msg string, limit int) []byte {
	msg = Truncate(msg, limit-1)
	start := len(dst)
	dst = AppendHeader(dst, KindError)
	dst = append(dst, code)
	dst = append(dst, msg...)
	setLength(dst, start)
	return dst
}

// ParseError decodes an error frame's payload.
func ParseError(payload []byte) (code uint8, msg string, err error) {
	if len(payload) == 0 {
		return 0, "", fmt.Errorf("%w: empty error message", ErrProtocol)
	}
	return payload[0], string(payload[1:]), nil
}

// Truncate cuts s to at most n bytes without splitting a UTF-8 character.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
