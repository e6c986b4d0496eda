package transport

import (
	"sync"

	"github.com/seed-c94cd834/fanout/transport/internal/wire"
)

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

// appendErrorFrame appends a complete error frame of code and msg, cut to
// fit limit (see [wire.AppendError]).
func appendErrorFrame(dst []byte, code Code, msg string, limit int) []byte {
	return wire.AppendError(dst, uint8(code), msg, limit)
}

// parseError decodes an error frame's payload.
func parseError(payload []byte) (Code, string, error) {
	code, msg, err := wire.ParseError(payload)
	return Code(code), msg, err
}
