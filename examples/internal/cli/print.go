package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
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

	// JSON form of the last backend name printed: a job names few backends,
	// so this saves encoding the same name again for every answer. The same
	// goes for error texts, which a failed route shares among its numbers.
	name, quotedName string
	err, quotedErr   string
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
			b = append(b, "\n  {\"input\": "...)
			b = strconv.AppendInt(b, n, 10)
			if !r.Failed() {
				b = append(b, ", \"output\": "...)
				b = strconv.AppendInt(b, r.Value, 10)
			}
			b = append(b, ", \"backend\": "...)
			p.name, p.quotedName = quote(r.Backend, p.name, p.quotedName)
			b = append(b, p.quotedName...)
			if r.Failed() {
				b = append(b, ", \"error\": "...)
				p.err, p.quotedErr = quote(r.Err, p.err, p.quotedErr)
				b = append(b, p.quotedErr...)
			}
			b = append(b, '}')
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

// quote returns s and its JSON form, reusing quoted if s is last, the
// string quoted is the JSON form of.
func quote(s, last, quoted string) (string, string) {
	if s == last && quoted != "" {
		return last, quoted
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(s) // a string always encodes
	return s, string(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
}
