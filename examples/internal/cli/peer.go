package cli

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

// MiddleLayerError returns err, the error of a call to the middle layer at
// addr or of a dial of it, in words for the user of a program that exits
// on it: a middle layer that could not be reached or that refused the
// connection is named as such, "the middle layer at 127.0.0.1:7000 is not
// reachable: dial tcp 127.0.0.1:7000: connect: connection refused",
// without the transport's own words for it ("backend unavailable", and
// when its client will dial again, which matters to a program that goes
// on calling, not to one about to exit). Any other error, such as one the
// middle layer reported, is returned as it is. The error returned wraps
// err.
func MiddleLayerError(addr string, err error) error {
	var re *transport.RemoteError
	if err == nil || errors.As(err, &re) {
		return err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return &peerError{fmt.Sprintf("the middle layer at %s is not reachable: %v", addr, oe), err}
	}
	msg := err.Error()
	dial := strings.HasPrefix(msg, "transport: dial "+addr+": ")
	if !dial && !errors.Is(err, fanout.ErrUnavailable) {
		return err
	}
	for _, prefix := range []string{"transport: dial " + addr + ": ", "transport: call " + addr + ": ", fanout.ErrUnavailable.Error() + ": "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	msg = nextAttempt.ReplaceAllString(msg, "")
	return &peerError{fmt.Sprintf("the middle layer at %s is unavailable: %s", addr, msg), err}
}

// nextAttempt is what a transport client adds to the error of a call made
// while it waits to dial again.
var nextAttempt = regexp.MustCompile(` \(next attempt in [^()]*\)$`)

// peerError is an error reworded by [MiddleLayerError].
type peerError struct {
	msg string
	err error
}

func (e *peerError) Error() string { return e.msg }

func (e *peerError) Unwrap() error { return e.err }

// middleLayerError is [MiddleLayerError] for the error of a call to b, if b
// knows its address, as a transport client does.
func middleLayerError(b fanout.Backend[int64, xyz.Result], err error) error {
	if a, ok := b.(interface{ Addr() string }); ok {
		return MiddleLayerError(a.Addr(), err)
	}
	return err
}
