package wire

import (
	"encoding/binary"
	"fmt"
)

// Trace is the W3C trace context (https://www.w3.org/TR/trace-context/)
// that a traced request (KindTraced) carries: the fields of the
// traceparent header in binary, and the tracestate header as it is.
type Trace struct {
	TraceID [16]byte
	SpanID  [8]byte // the caller's span: the parent of the server's
	Flags   byte    // trace-flags: bit 0 is "sampled"
	State   string  // tracestate, "" for none; at most MaxTraceState bytes
}

// TraceVersion is the only trace context version, the traceparent's.
const TraceVersion = 0

// MaxTraceState is the longest tracestate a traced request carries, the
// W3C limit of 512 bytes; a sender drops a longer one.
const MaxTraceState = 512

// MaxTraceSize is the most bytes a trace context takes in a request.
const MaxTraceSize = 1 + 16 + 8 + 1 + 2 + MaxTraceState

// Valid reports whether t names a trace and a span: W3C's all-zero IDs
// are invalid, and a receiver ignores such a trace context.
func (t *Trace) Valid() bool { return t.TraceID != [16]byte{} && t.SpanID != [8]byte{} }

// AppendTrace appends t as a traced request carries it after its timeout:
// version (1 byte, 0), trace ID (16), parent span ID (8), flags (1),
// tracestate length (uvarint) and tracestate. A tracestate longer than
// MaxTraceState is dropped, as W3C allows.
func AppendTrace(dst []byte, t *Trace) []byte {
	dst = append(dst, TraceVersion)
	dst = append(dst, t.TraceID[:]...)
	dst = append(dst, t.SpanID[:]...)
	dst = append(dst, t.Flags)
	state := t.State
	if len(state) > MaxTraceState {
		state = ""
	}
	dst = binary.AppendUvarint(dst, uint64(len(state)))
	return append(dst, state...)
}

// ParseTrace decodes the trace context at the start of p, a traced
// request's payload after its timeout, and returns it with the rest of p
// (the encoded items). A version other than 0, a payload too short, a
// tracestate length over MaxTraceState or past the end of p, and a
// tracestate byte outside printable ASCII are errors wrapping
// [ErrProtocol]. IDs of all zeros are not an error here (see Valid).
func ParseTrace(p []byte) (Trace, []byte, error) {
	var t Trace
	const fixed = 1 + 16 + 8 + 1
	if len(p) < fixed+1 {
		return t, nil, fmt.Errorf("%w: trace context: %d bytes, want at least %d", ErrProtocol, len(p), fixed+1)
	}
	if p[0] != TraceVersion {
		return t, nil, fmt.Errorf("%w: trace context: version %d, want %d", ErrProtocol, p[0], TraceVersion)
	}
	copy(t.TraceID[:], p[1:17])
	copy(t.SpanID[:], p[17:25])
	t.Flags = p[25]
	n, w := binary.Uvarint(p[fixed:])
	if w <= 0 || n > MaxTraceState {
		return t, nil, fmt.Errorf("%w: trace context: bad tracestate length (at most %d bytes)", ErrProtocol, MaxTraceState)
	}
	p = p[fixed+w:]
	if uint64(len(p)) < n {
		return t, nil, fmt.Errorf("%w: trace context: tracestate of %d bytes, %d left in the request", ErrProtocol, n, len(p))
	}
	for _, c := range p[:n] {
		if c < 0x20 || c > 0x7e {
			return t, nil, fmt.Errorf("%w: trace context: tracestate byte %#x is not printable ASCII", ErrProtocol, c)
		}
	}
	if n > 0 {
		t.State = string(p[:n])
	}
	return t, p[n:], nil
}
