package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// inputError is a request body that is not a batch of integers: it names
// the first bad element and its index.
type inputError struct {
	index int // of the bad element, or of the element that was expected; -1 if none
	msg   string
}

func (e *inputError) Error() string { return e.msg }

// parseInt parses tok, the text of one element, as an int64. It accepts a
// JSON integer only: an optional minus sign and digits without leading
// zeros; no fraction, exponent, plus sign, quotes or spaces.
func parseInt(tok string) (int64, error) {
	digits := tok
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	integer := len(digits) > 0 && (digits == "0" || digits[0] != '0')
	for i := 0; integer && i < len(digits); i++ {
		integer = digits[i] >= '0' && digits[i] <= '9'
	}
	if !integer {
		return 0, errors.New("is not an integer")
	}
	n, err := strconv.ParseInt(tok, 10, 64)
	if err != nil {
		return 0, errors.New("is out of the int64 range")
	}
	return n, nil
}

// element describes a JSON token for an error message: its JSON text.
func element(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "an array"
		}
		return "an object"
	case nil:
		return "null"
	case json.Number:
		return string(v)
	}
	b, _ := json.Marshal(tok)
	return string(b)
}

// decodeArray reads a JSON array of integers from r. Every element must be
// an int64 written as a JSON integer; the first that is not, or a body
// that is not a whole JSON array, is an [*inputError]. A read error, such
// as [*http.MaxBytesError], is returned as it is.
func decodeArray(r io.Reader) ([]int64, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	// readErr turns an error of dec.Token into an *inputError, if it says
	// that the body is not JSON or ends too soon; where says where.
	readErr := func(err error, index int, where string) error {
		var se *json.SyntaxError
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return &inputError{index, "the body ends " + where}
		case errors.As(err, &se):
			return &inputError{index, fmt.Sprintf("the body is not valid JSON %s: %v", where, err)}
		}
		return err
	}
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &inputError{-1, "the body is empty: want a JSON array of integers"}
		}
		return nil, readErr(err, -1, "before the array starts")
	}
	if tok != json.Delim('[') {
		return nil, &inputError{-1, fmt.Sprintf("the body is %s, not a JSON array of integers", element(tok))}
	}
	numbers := []int64{}
	for i := 0; ; i++ {
		tok, err := dec.Token()
		if err != nil {
			return nil, readErr(err, i, fmt.Sprintf("at element %d, before the array is closed", i))
		}
		if tok == json.Delim(']') {
			break
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, &inputError{i, fmt.Sprintf("element %d (%s) is not an integer", i, element(tok))}
		}
		n, err := parseInt(string(num))
		if err != nil {
			return nil, &inputError{i, fmt.Sprintf("element %d (%s) %v", i, num, err)}
		}
		numbers = append(numbers, n)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			if e := readErr(err, -1, "after the array"); !errors.As(e, new(*inputError)) {
				return nil, e
			}
		}
		return nil, &inputError{-1, "the body goes on after the array"}
	}
	return numbers, nil
}

// maxLine bounds a line of an NDJSON body: an int64 takes at most 20
// bytes, and the rest may be spaces.
const maxLine = 256

// lineReader reads the numbers of an NDJSON body, one per line. Blank
// lines are skipped; a line may have spaces around its number, and end in
// "\n" or "\r\n".
type lineReader struct {
	r     *bufio.Reader
	line  int // lines read
	index int // numbers read
}

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next number, io.EOF after the last one, an
// [*inputError] for a line that is not an integer, or the read error.
func (lr *lineReader) next() (int64, error) {
	for {
		b, err := lr.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxLine {
			return 0, &inputError{lr.index, fmt.Sprintf("line %d (number %d) is longer than %d bytes: not an integer", lr.line+1, lr.index, maxLine)}
		}
		if len(b) == 0 && err != nil {
			return 0, err
		}
		lr.line++
		tok := bytes.TrimSpace(b)
		if len(tok) == 0 {
			if err != nil {
				return 0, err
			}
			continue
		}
		n, perr := parseInt(string(tok))
		if perr != nil {
			return 0, &inputError{lr.index, fmt.Sprintf("line %d (number %d, %s) %v", lr.line, lr.index, strconv.Quote(string(tok)), perr)}
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		lr.index++
		return n, nil
	}
}
