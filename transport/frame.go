package transport

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sync"
	"unicode/utf8"
)

// A frame is one message on a stream: kind (1 byte), payload length (4 bytes,
// little-endian) and the payload. See PROTOCOL.md.
const frameHeaderSize = 5

type kind uint8

const (
	kindRequest  kind = 1 // timeout (8 bytes) + encoded items
	kindResponse kind = 2 // encoded results
	kindError    kind = 3 // code (1 byte) + UTF-8 message
	kindContinue kind = 4 // empty: the server has room for a large request's payload
)

// continueAbove is the largest request payload a client sends with its
// header. The client sends the header of a larger one alone, and its
// payload once the server answers with a continue frame, which the server
// sends once it has room for the payload in its byte budget
// (WithMaxPendingBytes). So a request waiting for room holds its header
// only, not a stream window of its payload in the server's yamux buffers,
// and the memory of requests waiting grows by little with their number.
const continueAbove = 64 << 10

// continueFrame is the whole continue frame. It is only ever read.
var continueFrame = []byte{byte(kindContinue), 0, 0, 0, 0}

// requestPrefixSize is the fixed part of a request payload: the remaining
// time of the caller's deadline in nanoseconds, 0 for none.
const requestPrefixSize = 8

// readChunk is the most a frame reader allocates ahead of the bytes that have
// actually arrived, so a peer that announces a large message but does not
// send it costs little memory.
const readChunk = 64 << 10

// appendFrameHeader appends a frame header with a zero length; finishFrame
// fills in the length once the payload has been appended.
func appendFrameHeader(dst []byte, k kind) []byte {
	return append(dst, byte(k), 0, 0, 0, 0)
}

// finishFrame sets the length of the frame that starts at buf[start] and
// checks it against limit.
func finishFrame(buf []byte, start, limit int) error {
	n := len(buf) - start - frameHeaderSize
	if n > limit {
		return fmt.Errorf("%w: %d bytes, the peer accepts at most %d", ErrMessageTooLarge, n, limit)
	}
	setFrameLength(buf, start)
	return nil
}

// setFrameLength sets the length of the frame that starts at buf[start] to
// the bytes that follow its header.
func setFrameLength(buf []byte, start int) {
	binary.LittleEndian.PutUint32(buf[start+1:], uint32(len(buf)-start-frameHeaderSize))
}

// readFrame reads one frame from r. The payload is read into buf (which may
// be nil) and grown only as data arrives. A frame longer than limit is
// refused before its payload is read, with an error wrapping
// ErrMessageTooLarge; an unknown kind is refused with ErrProtocol. A clean end
// of stream before the header is io.EOF; one inside a frame is
// io.ErrUnexpectedEOF.
func readFrame(r io.Reader, limit int, buf []byte) (kind, []byte, error) {
	// The header is read into buf, whose bytes the payload then overwrites,
	// so that reading a frame allocates nothing when buf is big enough.
	hdr := slices.Grow(buf[:0], frameHeaderSize)[:frameHeaderSize]
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, hdr[:0], err
	}
	return readPayload(r, limit, hdr)
}

// parseHeader checks a frame header and returns its kind and payload
// length: an unknown kind is an error wrapping ErrProtocol, a payload longer
// than limit one wrapping ErrMessageTooLarge.
func parseHeader(hdr []byte, limit int) (kind, int, error) {
	k := kind(hdr[0])
	if k < kindRequest || k > kindContinue {
		return 0, 0, fmt.Errorf("%w: unknown message kind %d", ErrProtocol, hdr[0])
	}
	n := binary.LittleEndian.Uint32(hdr[1:])
	if uint64(n) > uint64(limit) {
		return k, 0, fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, n, limit)
	}
	return k, int(n), nil
}

// readPayload checks a frame header already read into hdr and reads the
// payload that follows, into hdr's array; see readFrame.
func readPayload(r io.Reader, limit int, hdr []byte) (kind, []byte, error) {
	k, n, err := parseHeader(hdr, limit)
	if err != nil {
		return k, hdr[:0], err
	}
	buf := hdr[:0]
	for len(buf) < n {
		step := min(n-len(buf), max(readChunk, len(buf)))
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

// keepsStream reports whether a stream carries further calls after an
// answer with code, 0 for results (see PROTOCOL.md): the server read the
// whole request and answered it. After any other code the server closes
// its side, and so does the client.
func keepsStream(code Code) bool {
	switch code {
	case 0, CodeBackend, CodeDeadline, CodeInternal:
		return true
	}
	return false
}

// appendErrorFrame appends a complete error frame. Messages longer than the
// limit are cut, so an error reply always fits.
func appendErrorFrame(dst []byte, code Code, msg string, limit int) []byte {
	msg = truncate(msg, limit-1)
	start := len(dst)
	dst = appendFrameHeader(dst, kindError)
	dst = append(dst, byte(code))
	dst = append(dst, msg...)
	setFrameLength(dst, start)
	return dst
}

// truncate cuts s to at most n bytes without splitting a UTF-8 character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// parseError decodes an error frame's payload.
func parseError(payload []byte) (Code, string, error) {
	if len(payload) == 0 {
		return 0, "", fmt.Errorf("%w: empty error message", ErrProtocol)
	}
	return Code(payload[0]), string(payload[1:]), nil
}

// bufPool recycles frame buffers across calls. Buffers that grew very large
// are dropped rather than kept alive.
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledBuf is the largest buffer kept for reuse. Large buffers are
// worth reusing (allocating and zeroing 8 MiB for every large call doubled
// the time of BenchmarkClientProcess/batch=1000000); the server's budget
// (WithMaxPendingBytes) bounds how many are in use at once.
const maxPooledBuf = 16 << 20

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}
