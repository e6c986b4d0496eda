package wire

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

// Error codes of the seeds (the transport package names them).
const (
	codeBackend  = 1
	codeTooLarge = 3
)

// fuzzLimit is the frame size limit of the seeds; the fuzzer varies it.
const fuzzLimit = 1 << 10

// fuzzFrame builds a complete frame of kind k around payload with the
// encoder's own functions.
func fuzzFrame(tb testing.TB, k Kind, payload []byte) []byte {
	buf := AppendHeader(nil, k)
	buf = append(buf, payload...)
	require.NoError(tb, FinishFrame(buf, 0, fuzzLimit))
	return buf
}

func FuzzReadFrame(f *testing.F) {
	items := AppendInt64s(nil, []int64{1, -2, math.MaxInt64})
	request := fuzzFrame(f, KindRequest, append(binary.LittleEndian.AppendUint64(nil, 1e9), items...))
	response := fuzzFrame(f, KindResponse, items)
	errFrame := AppendError(nil, codeBackend, "backend failed", fuzzLimit)

	seeds := [][]byte{
		request,
		response,
		errFrame,
		AppendError(nil, codeTooLarge, strings.Repeat("x", 2*fuzzLimit), fuzzLimit), // message cut to fit
		fuzzFrame(f, KindResponse, nil),                                             // empty payload
		fuzzFrame(f, KindRequest, make([]byte, fuzzLimit)),                          // exactly at the limit
		{byte(KindRequest), 0xff, 0xff, 0xff, 0xff},                                 // announces 4 GiB - 1
		{byte(KindResponse), 0x01, 0x04, 0x00, 0x00},                                // announces limit + 1
		{},                           // empty stream
		request[:3],                  // truncated header
		request[:len(request)-1],     // truncated payload
		{0, 0, 0, 0, 0},              // kind 0
		{4, 1, 0, 0, 0, 'x'},         // a continue frame with a payload
		{9, 1, 0, 0, 0, 'x'},         // unknown kind
		{byte(KindWait), 0, 0, 0, 0}, // a wait frame
		append([]byte{request[0] | FlagAsk}, request[1:]...), // a request asking first
		{byte(KindResponse) | FlagAsk, 0, 0, 0, 0},           // the ask flag on a response
		{byte(KindError), 0, 0, 0, 0},                        // error frame without a code
		append(append([]byte{}, response...), errFrame...),   // two frames back to back
	}
	for _, s := range seeds {
		f.Add(s, uint32(fuzzLimit))
	}
	f.Add(response, uint32(len(response)-HeaderSize-1)) // one byte over a small limit
	f.Add(request, uint32(0))

	f.Fuzz(func(t *testing.T, data []byte, limit32 uint32) {
		limit := int(limit32)
		for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data))} {
			k, payload, err := ReadFrame(r, limit, nil)

			// A frame reader allocates only as data arrives: a peer cannot
			// make it reserve the length it announces.
			require.LessOrEqual(t, cap(payload), 2*(len(data)+ReadChunk))

			if err != nil {
				require.Empty(t, payload)
				switch {
				case errors.Is(err, ErrMessageTooLarge):
					require.Greater(t, uint64(binary.LittleEndian.Uint32(data[1:])), uint64(limit))
				case errors.Is(err, ErrProtocol):
					k := Kind(data[0] &^ FlagAsk)
					known := k >= KindRequest && k <= KindWait && (data[0]&FlagAsk == 0 || k == KindRequest || k == KindTraced)
					require.False(t, known, "kind %d refused", data[0])
				case err == io.EOF:
					require.Empty(t, data)
				default:
					require.ErrorIs(t, err, io.ErrUnexpectedEOF)
				}
				continue
			}

			require.LessOrEqual(t, len(payload), limit)
			require.GreaterOrEqual(t, k, KindRequest)
			require.LessOrEqual(t, k, KindWait)
			if data[0]&FlagAsk != 0 {
				require.Contains(t, []Kind{KindRequest, KindTraced}, k, "the ask flag on kind %d", data[0])
			}

			// Re-encoding gives back the bytes read, and reads back the same.
			again := AppendHeader(nil, k)
			again[0] = data[0] // the flag, if any
			again = append(again, payload...)
			require.NoError(t, FinishFrame(again, 0, limit))
			require.Equal(t, data[:len(again)], again)
			k2, payload2, err := ReadFrame(bytes.NewReader(again), limit, nil)
			require.NoError(t, err)
			require.Equal(t, k, k2)
			require.True(t, bytes.Equal(payload, payload2))

			if k == KindError {
				code, msg, err := ParseError(payload)
				if len(payload) == 0 {
					require.ErrorIs(t, err, ErrProtocol)
					continue
				}
				require.NoError(t, err)
				require.Equal(t, again, AppendError(nil, code, msg, limit))
			}
		}
	})
}

func fuzzHellos() []Hello {
	return []Hello{
		{Version: Version, ReqCodec: "int64le", RespCodec: "int64le", MaxMessage: 16 << 20},
		{Version: Version, ReqCodec: "json", RespCodec: "float64le", MaxMessage: 64},
		{Version: Version, ReqCodec: "", RespCodec: "", MaxMessage: math.MaxUint32},
		{Version: Version, ReqCodec: strings.Repeat("n", 255), RespCodec: "x", MaxMessage: 1},
	}
}

func FuzzReadHello(f *testing.F) {
	for _, h := range fuzzHellos() {
		b := AppendHello(nil, h)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(b[:len(Magic)])
		f.Add(append(b, 0xff)) // trailing bytes are not the hello's
	}
	good := AppendHello(nil, fuzzHellos()[0])
	f.Add(append([]byte("fanouX"), good[len(Magic):]...))          // bad magic
	f.Add(append(append([]byte{}, good[:len(Magic)]...), 2, 0xff)) // other version
	f.Add(append(append([]byte{}, good[:len(Magic)]...), 0))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHello(bytes.NewReader(data))
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				require.NotEqual(t, Magic[:], data[:len(Magic)])
				return
			}
			require.True(t, err == io.EOF || err == io.ErrUnexpectedEOF, "unexpected error %v", err)
			return
		}
		require.Equal(t, Magic[:], data[:len(Magic)])
		require.Equal(t, data[len(Magic)], h.Version)
		if !Served(h.Version) {
			require.Equal(t, Hello{Version: h.Version}, h, "a hello of a version not served is not parsed further")
			return
		}
		again := AppendHello(nil, h)
		require.Equal(t, data[:len(again)], again)
		h2, err := ReadHello(bytes.NewReader(again))
		require.NoError(t, err)
		require.Equal(t, h, h2)
	})
}

func FuzzReadReply(f *testing.F) {
	for _, h := range fuzzHellos() {
		for _, b := range [][]byte{
			AppendReply(nil, h, StatusOK, ""),
			AppendReply(nil, h, StatusRefused, CheckHello(h, Hello{Version: Version - 1})),
			AppendReply(nil, h, StatusRefused, strings.Repeat("m", 0x10000)), // cut to 64 KiB - 1
		} {
			f.Add(b)
			f.Add(b[:len(b)-1])
		}
	}
	good := AppendReply(nil, fuzzHellos()[0], StatusOK, "")
	f.Add(append([]byte("fanouX"), good[len(Magic):]...))                 // bad magic
	f.Add(append(AppendHello(nil, Hello{Version: Version + 1}), 0, 0, 0)) // other version
	f.Add(good[:len(Magic)+1])
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, status, msg, err := ReadReply(bytes.NewReader(data))
		if err != nil {
			switch {
			case errors.Is(err, ErrProtocol):
				require.NotEqual(t, Magic[:], data[:len(Magic)])
			case errors.Is(err, ErrHandshake):
				require.NotEqual(t, byte(Version), data[len(Magic)])
			default:
				require.True(t, err == io.EOF || err == io.ErrUnexpectedEOF, "unexpected error %v", err)
			}
			return
		}
		require.Equal(t, uint8(Version), h.Version)
		again := AppendReply(nil, h, status, msg)
		require.Equal(t, data[:len(again)], again)
		h2, status2, msg2, err := ReadReply(bytes.NewReader(again))
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
		out, err := DecodeInt64s([]int64{42}, data)
		if err != nil {
			require.NotZero(t, len(data)%8)
			return
		}
		require.Len(t, out, 1+len(data)/8)
		require.Equal(t, int64(42), out[0])
		again := AppendInt64s(nil, out[1:])
		require.True(t, bytes.Equal(data, again), "re-encoded %x as %x", data, again)
	})
}

func FuzzFloat64Decode(f *testing.F) {
	fuzzBinarySeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := DecodeFloat64s([]float64{42}, data)
		if err != nil {
			require.NotZero(t, len(data)%8)
			return
		}
		require.Len(t, out, 1+len(data)/8)
		require.Equal(t, 42.0, out[0])
		again := AppendFloat64s(nil, out[1:])
		require.True(t, bytes.Equal(data, again), "re-encoded %x as %x", data, again)
	})
}
