package cli

import (
	"bufio"
	"io"
	"strconv"

	"github.com/seed-c94cd834/fanout/examples/internal/xyz"
)

// printer writes answers as text lines, or as one JSON array that it opens
// with the first answers and closes in end.
type printer struct {
	w       *bufio.Writer
	json    bool
	printed int    // answers printed so far
	failed  int    // answers printed so far that are failures
	buf     []byte // one line being formatted
	enc     xyz.JSONEncoder
}

func newPrinter(w io.Writer, asJSON bool) *printer {
	return &printer{w: bufio.NewWriter(w), json: asJSON}
}

// print writes the answers to numbers and flushes them. A failed answer is
// printed as "N -> failed (backend B): ERROR", or in JSON as an object with
// "input", "backend" and "error".
func (p *printer) print(numbers []int64, results []xyz.Result) error {
	for i, n := range numbers {
		b := p.buf[:0]
		r := results[i]
		if p.json {
			if p.printed == 0 {
				b = append(b, '[')
			} else {
				b = append(b, ',')
			}
			b = append(b, "\n  "...)
			b = p.enc.Append(b, n, &r)
		} else {
			b = strconv.AppendInt(b, n, 10)
			b = append(b, " -> "...)
			if r.Failed() {
				b = append(b, "failed"...)
			} else {
				b = strconv.AppendInt(b, r.Value, 10)
			}
			b = append(b, " (backend "...)
			b = append(b, r.Backend...)
			b = append(b, ')')
			if r.Failed() {
				b = append(b, ": "...)
				b = append(b, r.Err...)
			}
			b = append(b, '\n')
		}
		p.buf = b
		p.printed++
		if r.Failed() {
			p.failed++
		}
		if _, err := p.w.Write(b); err != nil {
			return err
		}
	}
	return p.w.Flush()
}

// end closes the JSON array, if the output is JSON, and flushes.
func (p *printer) end() error {
	if p.json {
		switch p.printed {
		case 0:
			p.w.WriteString("[]\n")
		default:
			p.w.WriteString("\n]\n")
		}
	}
	return p.w.Flush()
}
