package transport

import (
	"encoding/binary"
	"fmt"
	"time"
)

// A server bounds the yamux frames that cost it work without carrying a
// call: yamux v0.1.2 answers every ping on a goroutine of its own, and logs
// a line for every frame that names a stream it does not know, so a peer
// that floods them would otherwise cost the server memory, CPU and log
// without limit. The frameLimiter follows the yamux frame stream as the
// session reads it (the coalescer's Read, below yamux) and counts those
// frames against per-connection token buckets; a connection over a limit
// is closed.

// yamux frame header fields (yamux's spec.md): after the header, only a
// data frame carries a body, of the header's length.
const (
	yamuxTypeWindowUpdate = 1
	yamuxTypePing         = 2
	yamuxFlagSYN          = 1
)

// minControlFrames is the least bound on the frames without a body other
// than pings (window updates, empty data frames, which open, close or reset
// streams, and go aways), a second and at once, per connection; the bound
// is four times the streams a connection may have open if that is more
// (controlFrameLimit). A client sends one such frame to open a stream,
// one or two to close it and one for every half stream window (128 KiB)
// of answers it reads, so this bounds only a flood: each costs yamux a log
// line when it names a stream that does not exist.
const minControlFrames = 1 << 16

// controlFrameLimit is the bound on the frames without a body other than
// pings, a second and at once, of a server that allows maxCalls streams per
// connection.
func controlFrameLimit(maxCalls int) int {
	return max(minControlFrames, 4*min(maxCalls, 1<<28))
}

// A tokenBucket allows burst events at once and rate a second on average.
// A zero rate allows everything.
type tokenBucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func newTokenBucket(rate float64, burst int, now time.Time) tokenBucket {
	return tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// take takes a token at now, and reports false if there is none.
func (b *tokenBucket) take(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// A floodError is what a connection's reads fail with once its client has
// gone past a frame limit. Its text says the connection is closed, which
// also keeps yamux from logging the read error a second time (it logs read
// errors but those that say "closed").
type floodError struct {
	what   string // the frames counted, plural
	rate   float64
	burst  int
	option string // the option that sets the limit, if any
}

func (e *floodError) Error() string {
	limit := fmt.Sprintf("%g a second, %d at once", e.rate, e.burst)
	if e.option != "" {
		limit += ", " + e.option
	}
	return fmt.Sprintf("the client sent %s past the limit (%s); connection closed", e.what, limit)
}

// frameLimiter parses the yamux frames a server reads on one connection,
// across reads, without allocating, and counts ping requests and the other
// frames without a body against their buckets.
type frameLimiter struct {
	hdr  [yamuxHeaderSize]byte // the header read so far, when split across reads
	have int                   // bytes in hdr
	body uint32                // bytes left of the current data frame's body

	pings, control tokenBucket
	pingErr        floodError
	controlErr     floodError
	now            func() time.Time
}

// newFrameLimiter returns a frameLimiter that allows pingBurst ping
// requests at once and pingRate a second, and control frames without a
// body (other than pings) at once and a second; it reads the time from now.
func newFrameLimiter(pingRate float64, pingBurst, control int, now func() time.Time) *frameLimiter {
	t := now()
	return &frameLimiter{
		pings:      newTokenBucket(pingRate, pingBurst, t),
		control:    newTokenBucket(float64(control), control, t),
		pingErr:    floodError{what: "pings", rate: pingRate, burst: pingBurst, option: "WithMaxPingRate"},
		controlErr: floodError{what: "frames without a body (window updates, empty data frames, go aways)", rate: float64(control), burst: control},
		now:        now,
	}
}

// feed follows the frames in p, the next bytes read. If a frame goes past
// a limit, it returns the error and the length of p before that frame's
// header (0 if the header started in an earlier read); p is then not
// followed further, and the limiter must not be fed again.
func (f *frameLimiter) feed(p []byte) (int, error) {
	var now time.Time // read at the first frame counted
	off := 0
	for off < len(p) {
		if f.body > 0 {
			n := min(uint64(len(p)-off), uint64(f.body))
			f.body -= uint32(n)
			off += int(n)
			continue
		}
		start := off
		var h []byte
		if f.have == 0 && len(p)-off >= yamuxHeaderSize {
			h = p[off : off+yamuxHeaderSize]
			off += yamuxHeaderSize
		} else {
			n := copy(f.hdr[f.have:], p[off:])
			f.have += n
			off += n
			if f.have < yamuxHeaderSize {
				return len(p), nil
			}
			start = 0 // the header started in an earlier read
			f.have = 0
			h = f.hdr[:]
		}
		typ, flags, length := h[1], binary.BigEndian.Uint16(h[2:]), binary.BigEndian.Uint32(h[8:])
		var b *tokenBucket
		var err *floodError
		switch {
		case typ == yamuxTypeData && length > 0:
			f.body = length
			continue
		case typ == yamuxTypePing && flags&yamuxFlagSYN != 0:
			b, err = &f.pings, &f.pingErr
		default:
			b, err = &f.control, &f.controlErr
		}
		if now.IsZero() {
			now = f.now()
		}
		if !b.take(now) {
			return start, err
		}
	}
	return len(p), nil
}
