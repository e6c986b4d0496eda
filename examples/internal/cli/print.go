package cli

import (
	"bufio"
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
	buf     []byte // one line being formatted

	// JSON form of the last backend name printed: a job names few backends,
	// so this saves encoding the same name again for every answer.
	name, quoted string
}

func newPrinter(w io.Writer, asJSON bool) *printer {
	return &printer{w: bufio.NewWriter(w), json: asJSON}
}

// print writes the answers to numbers and flushes them.
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
			b = append(b, ", \"output\": "...)
			b = strconv.AppendInt(b, r.Value, 10)
			b = append(b, ", \"backend\": "...)
			b = append(b, p.quote(r.Backend)...)
			b = append(b, '}')
		} else {
			b = strconv.AppendInt(b, n, 10)
			b = append(b, " -> "...)
			b = strconv.AppendInt(b, r.Value, 10)
			b = append(b, " (backend "...)
			b = append(b, r.Backend...)
			b = append(b, ")\n"...)
		}
		p.buf = b
		p.printed++
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

func (p *printer) quote(name string) string {
	if name != p.name || p.quoted == "" {
		q, _ := json.Marshal(name) // a string always marshals
		p.name, p.quoted = name, string(q)
	}
	return p.quoted
}
