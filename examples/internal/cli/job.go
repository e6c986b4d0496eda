package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

const (
	// chunkSize is the most numbers sent in one call: big enough to amortise
	// a round trip, small enough (512 KiB of int64s) to stream a huge input
	// and to stay far below the transport's message size limit.
	chunkSize = 1 << 16

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
// they are needed. It stops at the first token that is not an int64.
func scan(r io.Reader) source {
	sc := bufio.NewScanner(r)
	sc.Split(bufio.ScanWords)
	return func() ([]int64, error) {
		var chunk []int64
		for len(chunk) < chunkSize && sc.Scan() {
			n, err := parseNumber(sc.Text())
			if err != nil {
				return chunk, err
			}
			chunk = append(chunk, n)
		}
		if len(chunk) == chunkSize {
			return chunk, nil
		}
		switch err := sc.Err(); {
		case errors.Is(err, bufio.ErrTooLong):
			return chunk, &usageError{"standard input holds a token too long to be an int64"}
		case err != nil:
			return chunk, fmt.Errorf("reading standard input: %w", err)
		}
		return chunk, io.EOF
	}
}

// call is one chunk of a job on its way through the backend.
type call struct {
	numbers []int64
	results []xyz.Result
	err     error
	done    chan struct{} // closed when results and err are set
}

// run sends the chunks of next to b, with up to inFlight calls at once, and
// prints the answers of each chunk as soon as it and every chunk before it
// are answered. It returns the first error: a call's (nothing after that
// chunk is printed), or next's (after the answers to the numbers before it).
//
// After a call's error, run returns at once and cancels the calls still in
// flight; a read of next that is blocked at that moment is abandoned, which
// is harmless in a program about to exit.
func (c *Command) run(b fanout.Backend[int64, xyz.Result], next source, stdout io.Writer) error {
	ctx, cancel := context.WithCancel(context.Background())
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
				go func() {
					cl.results, cl.err = b.Process(ctx, cl.numbers)
					if cl.err == nil && len(cl.results) != len(cl.numbers) {
						cl.err = fmt.Errorf("%w: %d results for %d numbers", fanout.ErrResultCount, len(cl.results), len(cl.numbers))
					}
					close(cl.done)
				}()
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()

	p := newPrinter(stdout, c.json)
	for cl := range calls {
		<-cl.done
		if cl.err != nil {
			return cl.err
		}
		if err := p.print(cl.numbers, cl.results); err != nil {
			return err
		}
	}
	if !errors.Is(readErr, io.EOF) {
		return readErr
	}
	return p.end()
}

// interactive reads requests from in, one per line, until "quit" or the end
// of in, printing the answers to each or the error that stopped it.
func (c *Command) interactive(b fanout.Backend[int64, xyz.Result], in io.Reader, stdout, stderr io.Writer) {
	sc := bufio.NewScanner(in)
	for {
		fmt.Fprint(stdout, "> ")
		if !sc.Scan() {
			fmt.Fprintln(stdout) // end the prompt's line
			break
		}
		line := strings.TrimSpace(sc.Text())
		if line == "quit" {
			return
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
			err = c.run(b, chunks(numbers), stdout)
		}
		c.report(err, stderr)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "%s: reading standard input: %v\n", c.name, err)
	}
}
