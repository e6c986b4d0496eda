package wire

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// KindPartial's payload starts with the failures of a partial answer.
//
//	count     uvarint, the number of failures, at least 1
//	failure   count times:
//	  what    1 byte: FailedItem or FailedRoute
//	  route   uvarint length + bytes, the route's path ("" for the backend itself)
//	  code    1 byte, the error code
//	  message uvarint length + UTF-8 bytes
//	  n       uvarint, the number of indices: 1 for FailedItem, at least 1 for FailedRoute
//	  indices n uvarints: the first index, then each one's difference to the one before (at least 1)
//	answered  1 byte: 1 if the results follow, 0 if no item was answered
//	results   the rest: the results, encoded with the response codec
const (
	FailedItem  = 1 // an item failed alone
	FailedRoute = 2 // a route failed as a whole: every item it lists
)

// MaxFailureText is the longest route path or message a failure carries;
// longer ones are cut.
const MaxFailureText = 0xFFFF

// Failure is one failure of a partial answer.
type Failure struct {
	What    uint8 // FailedItem or FailedRoute
	Route   string
	Code    uint8
	Message string
	Indices []int // increasing
}

// AppendFailures appends the failures part of a partial answer to n items,
// and the answered byte. It checks what a receiver checks: at least one
// failure, indices inside the batch and increasing, one index per failed
// item.
func AppendFailures(dst []byte, failures []Failure, n int, answered bool) ([]byte, error) {
	if len(failures) == 0 {
		return dst, fmt.Errorf("%w: a partial answer without failures", ErrProtocol)
	}
	dst = binary.AppendUvarint(dst, uint64(len(failures)))
	for i, f := range failures {
		if err := checkFailure(f, n); err != nil {
			return dst, fmt.Errorf("failure %d: %w", i, err)
		}
		dst = append(dst, f.What)
		dst = appendText(dst, f.Route)
		dst = append(dst, f.Code)
		dst = appendText(dst, f.Message)
		dst = binary.AppendUvarint(dst, uint64(len(f.Indices)))
		prev := 0
		for x, j := range f.Indices {
			if x == 0 {
				dst = binary.AppendUvarint(dst, uint64(j))
			} else {
				dst = binary.AppendUvarint(dst, uint64(j-prev))
			}
			prev = j
		}
	}
	if answered {
		return append(dst, 1), nil
	}
	return append(dst, 0), nil
}

func checkFailure(f Failure, n int) error {
	switch {
	case f.What != FailedItem && f.What != FailedRoute:
		return fmt.Errorf("%w: unknown failure kind %d", ErrProtocol, f.What)
	case len(f.Indices) == 0:
		return fmt.Errorf("%w: a failure that lists no item", ErrProtocol)
	case f.What == FailedItem && len(f.Indices) != 1:
		return fmt.Errorf("%w: a failed item with %d indices", ErrProtocol, len(f.Indices))
	}
	for x, j := range f.Indices {
		if j < 0 || j >= n {
			return fmt.Errorf("%w: index %d, in a batch of %d items", ErrProtocol, j, n)
		}
		if x > 0 && j <= f.Indices[x-1] {
			return fmt.Errorf("%w: index %d after %d: indices must increase", ErrProtocol, j, f.Indices[x-1])
		}
	}
	return nil
}

func appendText(dst []byte, s string) []byte {
	s = Truncate(s, MaxFailureText)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// ParseFailures decodes the failures part of a partial answer to n items
// and returns them, whether results follow, and the rest of the payload.
// It checks every length against the bytes left before it allocates, and
// every index against n.
func ParseFailures(payload []byte, n int) (failures []Failure, answered bool, rest []byte, err error) {
	p := parser{b: payload}
	count := p.uvarint()
	// Every failure takes at least 6 bytes: no more can be in the payload.
	if p.err == nil && (count == 0 || count > uint64(len(p.b))/6) {
		return nil, false, nil, fmt.Errorf("%w: partial answer: %d failures in %d bytes", ErrProtocol, count, len(payload))
	}
	failures = make([]Failure, 0, count)
	for i := uint64(0); i < count && p.err == nil; i++ {
		var f Failure
		f.What = p.byte()
		f.Route = p.text()
		f.Code = p.byte()
		f.Message = p.text()
		k := p.uvarint()
		if p.err == nil && k > uint64(len(p.b)) { // an index takes at least a byte
			p.fail(fmt.Sprintf("%d indices in %d bytes", k, len(p.b)))
		}
		if p.err != nil {
			break
		}
		f.Indices = make([]int, k)
		at := uint64(0)
		for x := range f.Indices {
			d := p.uvarint()
			switch {
			case p.err != nil:
			case x > 0 && d == 0:
				p.fail("indices must increase")
			case d >= uint64(n) || at+d >= uint64(n): // at < n: no overflow
				p.fail(fmt.Sprintf("index %d past %d, in a batch of %d items", d, at, n))
			}
			at += d
			f.Indices[x] = int(at)
		}
		if p.err == nil {
			if err := checkFailure(f, n); err != nil {
				return nil, false, nil, fmt.Errorf("partial answer: failure %d: %w", i, err)
			}
		}
		failures = append(failures, f)
	}
	switch a := p.byte(); {
	case p.err != nil:
		return nil, false, nil, p.err
	case a > 1:
		return nil, false, nil, fmt.Errorf("%w: partial answer: answered byte %d", ErrProtocol, a)
	default:
		answered = a == 1
	}
	if !answered && len(p.b) > 0 {
		return nil, false, nil, fmt.Errorf("%w: partial answer: %d bytes of results after no results", ErrProtocol, len(p.b))
	}
	return failures, answered, p.b, nil
}

// parser reads a payload, remembering the first error.
type parser struct {
	b   []byte
	err error
}

func (p *parser) fail(what string) {
	if p.err == nil {
		p.err = fmt.Errorf("%w: partial answer: %s", ErrProtocol, what)
	}
	p.b = nil
}

func (p *parser) byte() uint8 {
	if p.err != nil || len(p.b) == 0 {
		p.fail("truncated")
		return 0
	}
	c := p.b[0]
	p.b = p.b[1:]
	return c
}

func (p *parser) uvarint() uint64 {
	if p.err != nil {
		return 0
	}
	v, k := binary.Uvarint(p.b)
	if k <= 0 {
		p.fail("truncated or overlong number")
		return 0
	}
	p.b = p.b[k:]
	return v
}

func (p *parser) text() string {
	k := p.uvarint()
	switch {
	case p.err != nil:
		return ""
	case k > MaxFailureText || k > uint64(len(p.b)):
		p.fail(fmt.Sprintf("a text of %d bytes, %d left", k, len(p.b)))
		return ""
	}
	s := string(p.b[:k])
	p.b = p.b[k:]
	return s
}

// SortedIndices returns indices in increasing order, without repeats: idx
// itself if it is already so.
func SortedIndices(idx []int) []int {
	for x := 1; x < len(idx); x++ {
		if idx[x] <= idx[x-1] {
			s := slices.Clone(idx)
			slices.Sort(s)
			return slices.Compact(s)
		}
	}
	return idx
}
