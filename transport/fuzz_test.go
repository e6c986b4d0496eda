package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// fuzzLimit is the frame size limit of the seeds; the fuzzer varies it.
const fuzzLimit = 1 << 10

// fuzzFrame builds a complete frame of kind k around payload with the
// encoder's own functions.
func fuzzFrame(tb testing.TB, k kind, payload []byte) []byte {
	buf := appendFrameHeader(nil, k)
	buf = append(buf, payload...)
	require.NoError(tb, finishFrame(buf, 0, fuzzLimit))
	return buf
}

func FuzzReadFrame(f *testing.F) {
	items, err := Int64().Append(nil, []int64{1, -2, math.MaxInt64})
	require.NoError(f, err)
	request := fuzzFrame(f, kindRequest, append(binary.LittleEndian.AppendUint64(nil, 1e9), items...))
	response := fuzzFrame(f, kindResponse, items)
	errFrame := appendErrorFrame(nil, CodeBackend, "backend failed", fuzzLimit)

	seeds := [][]byte{
		request,
		response,
		errFrame,
		appendErrorFrame(nil, CodeTooLarge, strings.Repeat("x", 2*fuzzLimit), fuzzLimit), // message cut to fit
		fuzzFrame(f, kindResponse, nil),                    // empty payload
		fuzzFrame(f, kindRequest, make([]byte, fuzzLimit)), // exactly at the limit
		{byte(kindRequest), 0xff, 0xff, 0xff, 0xff},        // announces 4 GiB - 1
		{byte(kindResponse), 0x01, 0x04, 0x00, 0x00},       // announces limit + 1
		{},                            // empty stream
		request[:3],                   // truncated header
		request[:len(request)-1],      // truncated payload
		{0, 0, 0, 0, 0},               // kind 0
		{4, 1, 0, 0, 0, 'x'},          // unknown kind
		{byte(kindError), 0, 0, 0, 0}, // error frame without a code
		append(append([]byte{}, response...), errFrame...), // two frames back to back
	}
	for _, s := range seeds {
		f.Add(s, uint32(fuzzLimit))
	}
	f.Add(response, uint32(len(response)-frameHeaderSize-1)) // one byte over a small limit
	f.Add(request, uint32(0))

	f.Fuzz(func(t *testing.T, data []byte, limit32 uint32) {
		limit := int(limit32)
		for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data))} {
			k, payload, err := readFrame(r, limit, nil)

			// A frame reader allocates only as data arrives: a peer cannot
			// make it reserve the length it announces.
			require.LessOrEqual(t, cap(payload), 2*(len(data)+readChunk))

			if err != nil {
				require.Empty(t, payload)
				switch {
				case errors.Is(err, ErrMessageTooLarge):
					require.Greater(t, uint64(binary.LittleEndian.Uint32(data[1:])), uint64(limit))
				case errors.Is(err, ErrProtocol):
					require.True(t, data[0] < byte(kindRequest) || data[0] > byte(kindError), "kind %d refused", data[0])
				case err == io.EOF:
					require.Empty(t, data)
				default:
					require.ErrorIs(t, err, io.ErrUnexpectedEOF)
				}
				continue
			}

			require.LessOrEqual(t, len(payload), limit)
			require.GreaterOrEqual(t, k, kindRequest)
			require.LessOrEqual(t, k, kindError)

			// Re-encoding gives back the bytes read, and reads back the same.
			again := appendFrameHeader(nil, k)
			again = append(again, payload...)
			require.NoError(t, finishFrame(again, 0, limit))
			require.Equal(t, data[:len(again)], again)
			k2, payload2, err := readFrame(bytes.NewReader(again), limit, nil)
			require.NoError(t, err)
			require.Equal(t, k, k2)
			require.True(t, bytes.Equal(payload, payload2))

			if k == kindError {
				code, msg, err := parseError(payload)
				if len(payload) == 0 {
					require.ErrorIs(t, err, ErrProtocol)
					continue
				}
				require.NoError(t, err)
				require.Equal(t, again, appendErrorFrame(nil, code, msg, limit))
			}
		}
	})
}

func fuzzHellos() []hello {
	return []hello{
		{version: protocolVersion, reqCodec: "int64le", respCodec: "int64le", maxMessage: DefaultMaxMessageSize},
		{version: protocolVersion, reqCodec: "json", respCodec: "float64le", maxMessage: 64},
		{version: protocolVersion, reqCodec: "", respCodec: "", maxMessage: math.MaxUint32},
		{version: protocolVersion, reqCodec: strings.Repeat("n", 255), respCodec: "x", maxMessage: 1},
	}
}

func FuzzReadHello(f *testing.F) {
	for _, h := range fuzzHellos() {
		b := appendHello(nil, h)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(b[:len(magic)])
		f.Add(append(b, 0xff)) // trailing bytes are not the hello's
	}
	good := appendHello(nil, fuzzHellos()[0])
	f.Add(append([]byte("fanouX"), good[len(magic):]...))          // bad magic
	f.Add(append(append([]byte{}, good[:len(magic)]...), 2, 0xff)) // other version
	f.Add(append(append([]byte{}, good[:len(magic)]...), 0))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readHello(bytes.NewReader(data))
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				require.NotEqual(t, magic[:], data[:len(magic)])
				return
			}
			require.True(t, err == io.EOF || err == io.ErrUnexpectedEOF, "unexpected error %v", err)
			return
		}
		require.Equal(t, magic[:], data[:len(magic)])
		require.Equal(t, data[len(magic)], h.version)
		if h.version != protocolVersion {
			require.Equal(t, hello{version: h.version}, h, "a hello of another version is not parsed further")
			return
		}
		again := appendHello(nil, h)
		require.Equal(t, data[:len(again)], again)
		h2, err := readHello(bytes.NewReader(again))
		require.NoError(t, err)
		require.Equal(t, h, h2)
	})
}

func FuzzReadReply(f *testing.F) {
	for _, h := range fuzzHellos() {
		for _, b := range [][]byte{
			appendReply(nil, h, statusOK, ""),
			appendReply(nil, h, statusRefused, checkHello(h, hello{version: 2})),
			appendReply(nil, h, statusRefused, strings.Repeat("m", 0x10000)), // cut to 64 KiB - 1
		} {
			f.Add(b)
			f.Add(b[:len(b)-1])
		}
	}
	good := appendReply(nil, fuzzHellos()[0], statusOK, "")
	f.Add(append([]byte("fanouX"), good[len(magic):]...))       // bad magic
	f.Add(append(appendHello(nil, hello{version: 2}), 0, 0, 0)) // other version
	f.Add(good[:len(magic)+1])
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, status, msg, err := readReply(bytes.NewReader(data))
		if err != nil {
			switch {
			case errors.Is(err, ErrProtocol):
				require.NotEqual(t, magic[:], data[:len(magic)])
			case errors.Is(err, ErrHandshake):
				require.NotEqual(t, byte(protocolVersion), data[len(magic)])
			default:
				require.True(t, err == io.EOF || err == io.ErrUnexpectedEOF, "unexpected error %v", err)
			}
			return
		}
		require.Equal(t, uint8(protocolVersion), h.version)
		again := appendReply(nil, h, status, msg)
		require.Equal(t, data[:len(again)], again)
		h2, status2, msg2, err := readReply(bytes.NewReader(again))
		require.NoError(t, err)
		require.Equal(t, h, h2)
		require.Equal(t, status, status2)
		require.Equal(t, msg, msg2)
	})
}

func fuzzBinarySeeds(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add(make([]byte, 7))
	f.Add([]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 1, 0, 0, 0, 0, 0, 0xf0, 0x7f}) // quiet and signalling NaN
	f.Add(make([]byte, 9))
}

func FuzzInt64Decode(f *testing.F) {
	fuzzBinarySeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Int64()
		out, err := c.Decode([]int64{42}, data)
		if err != nil {
			require.NotZero(t, len(data)%8)
			return
		}
		require.Len(t, out, 1+len(data)/8)
		require.Equal(t, int64(42), out[0])
		again, err := c.Append(nil, out[1:])
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, again), "re-encoded %x as %x", data, again)
	})
}

func FuzzFloat64Decode(f *testing.F) {
	fuzzBinarySeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Float64()
		out, err := c.Decode([]float64{42}, data)
		if err != nil {
			require.NotZero(t, len(data)%8)
			return
		}
		require.Len(t, out, 1+len(data)/8)
		require.Equal(t, 42.0, out[0])
		again, err := c.Append(nil, out[1:])
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, again), "re-encoded %x as %x", data, again)
	})
}

// fuzzRecord is a JSON item with the shapes a user type typically has. It
// has no omitempty fields: those turn an empty slice into a missing one, so a
// decoded batch would not survive a round trip for reasons outside the codec.
type fuzzRecord struct {
	ID    int64          `json:"id"`
	Score float64        `json:"score"`
	Name  string         `json:"name"`
	Tags  []string       `json:"tags"`
	Attrs map[string]int `json:"attrs"`
	Next  *fuzzRecord    `json:"next"`
}

func FuzzJSONDecode(f *testing.F) {
	for _, s := range []string{
		``, `[]`, `null`, `[1,-2,9223372036854775807]`, `[1.5]`, `["a","\u00e9\ud83d\ude00"]`,
		`[{"id":1,"score":2.5,"name":"x","tags":["a"],"attrs":{"k":1},"next":{"id":2}}]`,
		`[{"id":"1"}]`, `[{"0000":"","tAgs":[]}]`, `{"id":1}`, `[1,`, "[\"\xff\"]", `[1e400]`, `[[[[[[[[[[]]]]]]]]]]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzJSONRoundTrip[int64](t, data)
		fuzzJSONRoundTrip[float64](t, data)
		fuzzJSONRoundTrip[string](t, data)
		fuzzJSONRoundTrip[fuzzRecord](t, data)
	})
}

// fuzzJSONRoundTrip decodes data as a batch of T; if that succeeds, the
// items encode and decode back to themselves.
func fuzzJSONRoundTrip[T any](t *testing.T, data []byte) {
	c := JSON[T]()
	out, err := c.Decode(nil, data)
	if err != nil {
		return
	}
	b, err := c.Append(nil, out)
	require.NoError(t, err)
	again, err := c.Decode(nil, b)
	require.NoError(t, err)
	require.Equal(t, len(out), len(again))
	if len(out) > 0 {
		require.Equal(t, out, again)
	}
}
