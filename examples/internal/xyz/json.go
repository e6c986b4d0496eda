package xyz

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// JSONEncoder appends answers in the JSON form that the client's -json
// output and the HTTP gateway share: {"input": -3, "output": 9, "backend":
// "x"}, or for a number that failed {"input": 7, "backend": "z", "error":
// "..."}. It remembers the JSON form of the last backend name and error
// text it wrote: a batch names few backends, and a failed route's numbers
// share one error, so each is encoded once rather than once per number.
// The zero JSONEncoder is ready to use; it is not safe for concurrent use.
type JSONEncoder struct {
	name, quotedName string
	err, quotedErr   string
}

// Append appends the answer r to the number n.
func (e *JSONEncoder) Append(b []byte, n int64, r *Result) []byte {
	b = append(b, `{"input": `...)
	b = strconv.AppendInt(b, n, 10)
	if !r.Failed() {
		b = append(b, `, "output": `...)
		b = strconv.AppendInt(b, r.Value, 10)
	}
	b = append(b, `, "backend": `...)
	e.name, e.quotedName = quote(r.Backend, e.name, e.quotedName)
	b = append(b, e.quotedName...)
	if r.Failed() {
		b = append(b, `, "error": `...)
		e.err, e.quotedErr = quote(r.Err, e.err, e.quotedErr)
		b = append(b, e.quotedErr...)
	}
	return append(b, '}')
}

// quote returns s and its JSON form, reusing quoted if s is last, the
// string quoted is the JSON form of. HTML characters are left as they are.
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
