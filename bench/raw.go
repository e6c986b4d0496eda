package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// The raw TCP system is the floor: the same scatter-gather with nothing
// but length-prefixed messages on plain TCP connections, one call at a time
// per connection.
//
// Every message is a frame: a 4-byte little-endian length, then that many
// bytes. A request is a batch of int64 (appendInt64s). An answer starts with
// a status byte: statusOK followed by the results (int64 from a backend,
// answerCodec from the middle layer), or statusError followed by the
// error's text.

const (
	statusOK    = 0
	statusError = 1

	// maxRawMessage bounds the frames a raw peer accepts.
	maxRawMessage = 64 << 20
)

// rawConn is one end of a raw TCP connection. Its buffers are reused from
// one message to the next, so it serves one call at a time.
type rawConn struct {
	conn net.Conn
	r    *bufio.Reader
	in   []byte // the last frame read
	out  []byte // the frame being written
}

func newRawConn(c net.Conn) *rawConn {
	return &rawConn{conn: c, r: bufio.NewReaderSize(c, 64<<10)}
}

// readFrame reads one frame from r into buf, which it grows if it is too
// small, and returns the payload.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > maxRawMessage {
		return nil, fmt.Errorf("message of %d bytes exceeds %d", n, maxRawMessage)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return buf, err
}

// newFrame returns dst emptied and holding room for a frame's length: a
// frame to append a payload to and give to sealFrame.
func newFrame(dst []byte) []byte { return append(dst[:0], 0, 0, 0, 0) }

// sealFrame fills in the length of a frame made with newFrame and returns
// it.
func sealFrame(frame []byte) []byte {
	binary.LittleEndian.PutUint32(frame, uint32(len(frame)-4))
	return frame
}

// appendAnswer appends the outcome of a call to frame: the encoded results,
// or err.
func appendAnswer(frame, results []byte, err error) []byte {
	if err != nil {
		return append(append(frame, statusError), err.Error()...)
	}
	return append(append(frame, statusOK), results...)
}

// parseAnswer returns the results of an answer's payload msg, or the
// error it carries, as a remoteError.
func parseAnswer(msg []byte) ([]byte, error) {
	switch {
	case len(msg) == 0:
		return nil, errors.New("empty answer")
	case msg[0] == statusError:
		return nil, remoteError(msg[1:])
	}
	return msg[1:], nil
}

// read reads one frame and returns its payload, valid until the next read.
func (c *rawConn) read() ([]byte, error) {
	msg, err := readFrame(c.r, c.in)
	if err == nil {
		c.in = msg
	}
	return msg, err
}

// frame returns an empty frame to append a payload to and give to write.
func (c *rawConn) frame() []byte { return newFrame(c.out) }

// write fills in the frame's length and sends it.
func (c *rawConn) write(frame []byte) error {
	c.out = sealFrame(frame)
	_, err := c.conn.Write(frame)
	return err
}

// answer sends the outcome of a call: the encoded results, or err.
func (c *rawConn) answer(results []byte, err error) error {
	return c.write(appendAnswer(c.frame(), results, err))
}

// call sends items and returns the payload of a successful answer, valid
// until the next read.
func (c *rawConn) call(items []int64) ([]byte, error) {
	if err := c.write(appendInt64s(c.frame(), items)); err != nil {
		return nil, err
	}
	msg, err := c.read()
	if err != nil {
		return nil, err
	}
	return parseAnswer(msg)
}

// remoteError is an error the peer answered; the connection stays usable.
type remoteError string

func (e remoteError) Error() string { return string(e) }

// serveRaw answers the calls on every connection l accepts with handle,
// which returns the encoded results of a batch.
func serveRaw(l net.Listener, handle func(items []int64) ([]byte, error)) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer conn.Close()
			c := newRawConn(conn)
			var items []int64
			for {
				msg, err := c.read()
				if err != nil {
					return // the peer left, or broke the protocol
				}
				items, err = decodeInt64s(items[:0], msg)
				var results []byte
				if err == nil {
					results, err = handle(items)
				}
				if c.answer(results, err) != nil {
					return
				}
			}
		}()
	}
}

// rawBackend returns the handler of the backend of route r.
func rawBackend(r int) func([]int64) ([]byte, error) {
	return func(items []int64) ([]byte, error) {
		values, err := computeAll(r, items)
		if err != nil {
			return nil, err
		}
		return appendInt64s(nil, values), nil
	}
}

// rawPool holds the idle connections to one backend. A call takes an idle
// connection or dials a new one, and puts it back when the call succeeded.
type rawPool struct {
	addr string
	mu   sync.Mutex
	idle []*rawConn
}

// call sends items to the backend and returns its values.
func (p *rawPool) call(items []int64) ([]int64, error) {
	c, err := p.get()
	if err != nil {
		return nil, err
	}
	msg, err := c.call(items)
	var re remoteError
	if err != nil && !errors.As(err, &re) {
		c.conn.Close()
		return nil, fmt.Errorf("call %s: %w", p.addr, err)
	}
	var values []int64
	if err == nil {
		values, err = decodeInt64s(make([]int64, 0, len(items)), msg)
	}
	p.put(c)
	return values, err
}

func (p *rawPool) get() (*rawConn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	conn, err := net.Dial("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return newRawConn(conn), nil
}

func (p *rawPool) put(c *rawConn) {
	p.mu.Lock()
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// rawMiddle returns the handler of the middle layer, which calls the
// backends at addrs (x, y, z).
func rawMiddle(addrs [3]string) func([]int64) ([]byte, error) {
	var pools [3]rawPool
	for r := range pools {
		pools[r].addr = addrs[r]
	}
	return func(items []int64) ([]byte, error) {
		results, err := scatterGather(items, func(r int, batch []int64) ([]int64, error) {
			return pools[r].call(batch)
		})
		if err != nil {
			return nil, err
		}
		return answerCodec.Append(nil, results)
	}
}

// scatterGather is the middle layer of the raw TCP, gRPC and plain yamux
// systems: it sends each route's items to call, all routes at once, checks
// the count of each answer and gathers the results in the order of items.
func scatterGather(items []int64, call func(r int, batch []int64) ([]int64, error)) ([]Result, error) {
	var indices [3][]int
	for i, n := range items {
		r := classify(n)
		indices[r] = append(indices[r], i)
	}
	results := make([]Result, len(items))
	var errs [3]error
	var wg sync.WaitGroup
	for r, idx := range indices {
		if len(idx) == 0 {
			continue
		}
		wg.Go(func() {
			batch := make([]int64, len(idx))
			for j, i := range idx {
				batch[j] = items[i]
			}
			values, err := call(r, batch)
			if err == nil && len(values) != len(batch) {
				err = fmt.Errorf("%s answered %d results for %d numbers", routes[r], len(values), len(batch))
			}
			if err != nil {
				errs[r] = err
				return
			}
			for j, i := range idx {
				results[i] = Result{Value: values[j], Backend: routes[r]}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return results, nil
}

// rawTarget gives every load goroutine a connection of its own to the
// middle layer.
type rawTarget struct {
	addr  string
	mu    sync.Mutex
	conns []*rawClient
}

func connectRaw(ctx context.Context, addr string) (target, error) {
	return &rawTarget{addr: addr}, nil
}

func (t *rawTarget) caller() (caller, error) {
	conn, err := net.Dial("tcp", t.addr)
	if err != nil {
		return nil, err
	}
	c := &rawClient{newRawConn(conn)}
	t.mu.Lock()
	t.conns = append(t.conns, c)
	t.mu.Unlock()
	return c, nil
}

func (t *rawTarget) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		c.conn.Close()
	}
	return nil
}

// rawClient calls the middle layer on a connection of its own.
type rawClient struct{ *rawConn }

func (c *rawClient) Process(ctx context.Context, items []int64) ([]Result, error) {
	deadline, _ := ctx.Deadline() // none is the zero time: no deadline
	c.conn.SetDeadline(deadline)
	msg, err := c.call(items)
	if err != nil {
		return nil, err
	}
	return answerCodec.Decode(make([]Result, 0, len(items)), msg)
}
