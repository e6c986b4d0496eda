package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
	"github.com/seed-c94cd834/fanout/transport"
)

const (
	// chunkSize is the most numbers sent in one call: the transport
	// client's chunk (1 MiB of int64s), so that it does not cut a call
	// further; big enough to amortise a round trip, small enough to stream a
	// huge input and to stay far below the transport's message size limit.
	chunkSize = transport.DefaultChunkItems

	// inFlight is the most calls a job has in flight at once, so that
	// reading, processing and printing overlap.
	inFlight = 4
)

// source returns the next chunk of a job's numbers, and io.EOF after the
// last one. A chunk may come with an error: the numbers read before it.
type source func() ([]int64, error)

// chunks returns a source over numbers.
func chunks(numbers []int64) source {
	return func() ([]int64, error) {
		if len(numbers) == 0 {
			return nil, io.EOF
		}
		n := min(len(numbers), chunkSize)
		chunk := numbers[:n:n]
		numbers = numbers[n:]
		return chunk, nil
	}
}

// scan returns a source over the whitespace-separated numbers of r, read as
// they are needed. It stops at the first token that is not an int64, with
// an error that gives the token's line.
func scan(r io.Reader) source {
	sc := bufio.NewScanner(r)
	line, tokenLine := 1, 0 // the line the scanner is on, and that of the last token
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		advance, token, err := bufio.ScanWords(data, atEOF)
		// data[:advance] is spaces, then the token if there is one, then
		// the space that ends it, if any.
		newlines := bytes.Count(data[:advance], newline)
		if token != nil {
			tokenLine = line + newlines
			if data[advance-1] == '\n' {
				tokenLine-- // the newline that ends the token
			}
		}
		line += newlines
		return advance, token, err
	})
	return func() ([]int64, error) {
		var chunk []int64
		for len(chunk) < chunkSize && sc.Scan() {
			n, err := parseNumber(sc.Text())
			if err != nil {
				return chunk, fmt.Errorf("line %d: %w", tokenLine, err)
			}
			chunk = append(chunk, n)
		}
		if len(chunk) == chunkSize {
			return chunk, nil
		}
		switch err := sc.Err(); {
		case errors.Is(err, bufio.ErrTooLong):
			return chunk, &UsageError{fmt.Errorf("line %d: standard input holds a token too long to be an int64", line)}
		case err != nil:
			return chunk, fmt.Errorf("reading standard input: %w", err)
		}
		return chunk, io.EOF
	}
}

var newline = []byte{'\n'}

// call is one chunk of a job on its way through the backend.
type call struct {
	numbers []int64
	results []xyz.Result
	err     error
	done    chan struct{} // closed when results and err are set
}

// run sends the chunks of next to b, with up to inFlight calls at once, each
// within the command's timeout, and prints the answers of each chunk as
// soon as it and every chunk before it are answered. It returns the first
// error: a call's, or, without -partial, that of a chunk with a failed
// answer (nothing of that chunk or after it is printed); next's (after the
// answers to the numbers before it); or, with -partial, one that counts the
// failed answers, once they are all printed.
//
// After a call's error, or when ctx is done, run returns at once and
// cancels the calls still in flight; a read of next that is blocked at that
// moment is abandoned, which is harmless in a program about to exit.
func (c *Command) run(ctx context.Context, b fanout.Backend[int64, xyz.Result], next source, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	calls := make(chan *call, inFlight-1) // with the one being printed: inFlight
	var readErr error                     // set before calls is closed
	go func() {
		defer close(calls)
		for {
			numbers, err := next()
			if len(numbers) > 0 {
				cl := &call{numbers: numbers, done: make(chan struct{})}
				select {
				case calls <- cl:
				case <-ctx.Done():
					return
				}
				go c.call(ctx, b, cl)
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()

	p := newPrinter(stdout, c.json)
	for {
		var cl *call
		select {
		case cl = <-calls:
		case <-ctx.Done():
			return ctx.Err()
		}
		if cl == nil { // calls is closed: every chunk is printed
			break
		}
		select {
		case <-cl.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if cl.err != nil {
			return cl.err
		}
		if !c.partial {
			if err := failure(cl.numbers, cl.results); err != nil {
				return err
			}
		}
		if err := p.print(cl.numbers, cl.results); err != nil {
			return err
		}
	}
	if !errors.Is(readErr, io.EOF) {
		return readErr
	}
	if err := p.end(); err != nil {
		return err
	}
	if p.failed > 0 {
		return fmt.Errorf("%d of %d numbers failed", p.failed, p.printed)
	}
	return nil
}

// call processes the numbers of cl with b, within the command's timeout,
// and closes cl.done. An error that says that the middle layer could not be
// reached is put in words for the user ([MiddleLayerError]).
func (c *Command) call(ctx context.Context, b fanout.Backend[int64, xyz.Result], cl *call) {
	defer close(cl.done)
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	cl.results, cl.err = b.Process(ctx, cl.numbers)
	if pe, ok := cl.err.(*fanout.PartialError); ok {
		// Numbers that failed, each with its backend and error: they are
		// answers to print, not the call's failure.
		cl.results, cl.err = xyz.Annotate(cl.results, len(cl.numbers), pe), nil
	}
	switch {
	case cl.err == nil && len(cl.results) != len(cl.numbers):
		cl.err = fmt.Errorf("%w: %d results for %d numbers", fanout.ErrResultCount, len(cl.results), len(cl.numbers))
	case c.timeout > 0 && errors.Is(cl.err, context.DeadlineExceeded):
		// The deadline passed here, or at the middle layer first: it has the
		// same deadline, and its timer may fire before this one.
		cl.err = fmt.Errorf("no answer within %v (-timeout): %w", c.timeout, cl.err)
	default:
		cl.err = middleLayerError(b, cl.err)
	}
}

// failure returns an error naming the first failed answer among the results
// of a call, and how many failed, or nil if none did.
func failure(numbers []int64, results []xyz.Result) error {
	first, failed := -1, 0
	for i, r := range results {
		if r.Failed() {
			if first < 0 {
				first = i
			}
			failed++
		}
	}
	if failed == 0 {
		return nil
	}
	r := results[first]
	err := fmt.Errorf("%d failed on backend %s: %s", numbers[first], r.Backend, r.Err)
	if failed > 1 {
		err = fmt.Errorf("%w (%d of the %d numbers of its call failed)", err, failed, len(numbers))
	}
	return err
}

// interactive reads requests from in, one per line, until "quit" or "exit"
// (in any case) or the end of in, printing the answers to each or the error that stopped it. The
// prompt goes to stderr, so that stdout holds the answers only. It returns
// ctx's error if ctx ends first, and nil otherwise.
func (c *Command) interactive(ctx context.Context, b fanout.Backend[int64, xyz.Result], in io.Reader, stdout, stderr io.Writer) error {
	// Lines are read on a goroutine of their own, so that the prompt can
	// give up waiting for one when ctx ends; a read blocked at that moment
	// is abandoned, which is harmless in a program about to exit.
	lines := make(chan string)
	var readErr error // set before lines is closed
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		readErr = sc.Err()
	}()

	for {
		fmt.Fprint(stderr, "> ")
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-ctx.Done():
			fmt.Fprintln(stderr) // end the prompt's line
			return ctx.Err()
		}
		if !ok {
			fmt.Fprintln(stderr) // end the prompt's line
			if readErr != nil {
				fmt.Fprintf(stderr, "%s: reading standard input: %v\n", c.name, readErr)
			}
			return nil
		}
		line = strings.TrimSpace(line)
		if strings.EqualFold(line, "quit") || strings.EqualFold(line, "exit") {
			return nil
		}
		if line == "" {
			continue
		}
		var numbers []int64
		var err error
		for _, tok := range strings.Fields(line) {
			var n int64
			if n, err = parseNumber(tok); err != nil {
				break
			}
			numbers = append(numbers, n)
		}
		if err == nil {
			err = c.run(ctx, b, chunks(numbers), stdout)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.report(err, stderr)
	}
}
