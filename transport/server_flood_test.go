package transport

import (
	"encoding/binary"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/stretchr/testify/require"
)

// appendYamuxFrame appends a yamux frame with the given header fields and body.
func appendYamuxFrame(b []byte, typ uint8, flags uint16, id uint32, length uint32, body []byte) []byte {
	b = append(b, 0, typ)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, body...)
}

// floodStream is a yamux frame stream of every kind the limiter tells
// apart, whose data bodies look like ping requests, followed by pings
// pings. It returns the stream and the offsets of the pings' headers.
func floodStream(pings int) ([]byte, []int) {
	var fake []byte
	for range 50 {
		fake = appendYamuxFrame(fake, yamuxTypePing, yamuxFlagSYN, 0, 7, nil)
	}
	var b []byte
	b = appendYamuxFrame(b, yamuxTypeWindowUpdate, yamuxFlagSYN, 1, 0, nil)
	b = appendYamuxFrame(b, yamuxTypeData, 0, 1, uint32(len(fake)), fake)
	b = appendYamuxFrame(b, yamuxTypePing, 2, 0, 1, nil) // a ping reply (ACK): not a request
	b = appendYamuxFrame(b, yamuxTypeData, 0, 1, 0, nil) // empty data frame
	b = appendYamuxFrame(b, yamuxTypeData, 0, 3, 3, []byte{0, 2, 0})
	b = appendYamuxFrame(b, yamuxTypeWindowUpdate, 0, 1, 1<<17, nil)
	var at []int
	for i := range pings {
		at = append(at, len(b))
		b = appendYamuxFrame(b, yamuxTypePing, yamuxFlagSYN, 0, uint32(i), nil)
		b = appendYamuxFrame(b, yamuxTypeData, 0, 5, 12, fake[:12])
	}
	return b, at
}

// feedSplit feeds stream to f in chunks cut by cut, and returns the bytes
// fed before the error, and the error.
func feedSplit(f *frameLimiter, stream []byte, cut func(rest int) int) (int, error) {
	fed := 0
	for fed < len(stream) {
		chunk := stream[fed : fed+cut(len(stream)-fed)]
		n, err := f.feed(chunk)
		fed += n
		if err != nil {
			return fed, err
		}
		if n != len(chunk) {
			return fed, nil
		}
	}
	return fed, nil
}

func TestFrameLimiterAcrossSplitReads(t *testing.T) {
	const burst = 10
	stream, at := floodStream(burst + 5)
	r := rand.New(rand.NewPCG(1, 2))
	cuts := map[string]func(rest int) int{
		"whole":     func(rest int) int { return rest },
		"bytes":     func(int) int { return 1 },
		"odd":       func(rest int) int { return min(rest, 7) },
		"header+1":  func(rest int) int { return min(rest, yamuxHeaderSize+1) },
		"random":    func(rest int) int { return min(rest, 1+r.IntN(40)) },
		"large rnd": func(rest int) int { return min(rest, 1+r.IntN(4096)) },
	}
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	for name, cut := range cuts {
		t.Run(name, func(t *testing.T) {
			f := newFrameLimiter(1, burst, 100, clock)
			fed, err := feedSplit(f, stream, cut)
			var fe *floodError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, "pings", fe.what)
			require.Contains(t, err.Error(), "10 at once")
			require.Contains(t, err.Error(), "WithMaxPingRate")
			require.Contains(t, err.Error(), "closed")
			// The frames before the ping over the limit are handed on,
			// the ping itself not, but for the part of its header in
			// earlier reads.
			over := at[burst]
			require.GreaterOrEqual(t, fed, over, "frames before the ping over the limit")
			require.Less(t, fed, over+yamuxHeaderSize, "the ping over the limit")
		})
	}
}

func TestFrameLimiterRefills(t *testing.T) {
	now := time.Unix(0, 0)
	f := newFrameLimiter(10, 2, 100, func() time.Time { return now })
	ping := appendYamuxFrame(nil, yamuxTypePing, yamuxFlagSYN, 0, 1, nil)
	for range 2 {
		_, err := f.feed(ping)
		require.NoError(t, err)
	}
	now = now.Add(100 * time.Millisecond) // one ping more at 10 a second
	_, err := f.feed(ping)
	require.NoError(t, err)
	n, err := f.feed(ping)
	require.Error(t, err)
	require.Zero(t, n)

	// The other frames without a body have a bucket of their own.
	f = newFrameLimiter(10, 2, 3, func() time.Time { return now })
	var b []byte
	for range 3 {
		b = appendYamuxFrame(b, yamuxTypeWindowUpdate, 0, 1, 1<<17, nil)
	}
	b = appendYamuxFrame(b, yamuxTypePing, yamuxFlagSYN, 0, 1, nil)
	b = appendYamuxFrame(b, yamuxTypeData, 0, 1, 4, []byte{1, 2, 3, 4})
	_, err = f.feed(b)
	require.NoError(t, err)
	n, err = f.feed(appendYamuxFrame(nil, yamuxTypeData, 4, 1, 0, nil))
	require.ErrorContains(t, err, "frames without a body")
	require.Zero(t, n)
}

func TestFrameLimiterOff(t *testing.T) {
	stream, _ := floodStream(1000)
	f := newFrameLimiter(0, 1, 1, time.Now)
	f.control.rate = 0
	n, err := f.feed(stream)
	require.NoError(t, err)
	require.Equal(t, len(stream), n)
}

func TestFrameLimiterDoesNotAllocate(t *testing.T) {
	stream, _ := floodStream(100)
	f := newFrameLimiter(1e12, 1<<30, 1<<30, time.Now)
	allocs := testing.AllocsPerRun(100, func() {
		for i := 0; i < len(stream); i += 5 {
			if _, err := f.feed(stream[i:min(i+5, len(stream))]); err != nil {
				t.Fatal(err)
			}
		}
	})
	require.Zero(t, allocs)
}

// WithMaxPingRate is a server option only, and turns the limit off for a
// rate that is not positive and finite.
func TestWithMaxPingRate(t *testing.T) {
	var opt any = WithMaxPingRate(1, 1)
	_, client := opt.(ClientOption)
	require.False(t, client, "WithMaxPingRate is a ClientOption")

	c := newServerConfig(nil)
	require.Equal(t, float64(DefaultMaxPingRate), c.pingRate)
	require.Equal(t, DefaultPingBurst, c.pingBurst)
	c = newServerConfig([]ServerOption{WithMaxPingRate(0.5, 0)})
	require.Equal(t, 0.5, c.pingRate)
	require.Equal(t, 1, c.pingBurst, "a burst below 1 means 1")
	for _, rate := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		c = newServerConfig([]ServerOption{WithMaxPingRate(rate, 5)})
		require.Zero(t, c.pingRate, "rate %v turns the limit off", rate)
	}
}

// yamux's messages that a peer can cause once a frame, or that report a
// frame left unsent when the session closed, are logged at Debug.
func TestYamuxLoggerLevels(t *testing.T) {
	logs := &lineLog{}
	y := yamuxLogger{slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	y.Printf("[WARN] yamux: frame for missing stream: %v", "Vsn:0 Type:1 Flags:0 StreamID:1001 Length:0")
	y.Printf("[WARN] yamux: Discarding data for stream: %d", 1001)
	y.Printf("[WARN] yamux: failed to send ping reply: %v", yamux.ErrSessionShutdown)
	y.Printf("[ERR] yamux: Failed to write header: %v", net.ErrClosed)
	y.Printf("[WARN] yamux: failed to send ping reply: %v", yamux.ErrConnectionWriteTimeout)
	y.Printf("[ERR] yamux: Failed to read header: %v", "EOF")
	levels := []string{"DEBUG", "DEBUG", "DEBUG", "DEBUG", "WARN", "ERROR"}
	lines := logs.Lines()
	require.Len(t, lines, len(levels))
	for i, line := range lines {
		require.Contains(t, line, "level="+levels[i], line)
	}
}

// BenchmarkFrameLimiter measures what following the frames costs a server,
// per frame, for the frames of small calls read 4 KiB at a time.
func BenchmarkFrameLimiter(b *testing.B) {
	var stream []byte
	body := make([]byte, 85) // a request of 10 int64 items
	for i := range 1000 {
		stream = appendYamuxFrame(stream, yamuxTypeData, 0, uint32(2*i+1), uint32(len(body)), body)
		if i%50 == 0 {
			stream = appendYamuxFrame(stream, yamuxTypeWindowUpdate, 0, uint32(2*i+1), 1<<17, nil)
		}
	}
	// Limits that the loop, much faster than a client, does not reach.
	f := newFrameLimiter(1e12, 1<<30, 1<<30, time.Now)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < len(stream); i += 4096 {
			if _, err := f.feed(stream[i:min(i+4096, len(stream))]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1020), "ns/frame")
}
