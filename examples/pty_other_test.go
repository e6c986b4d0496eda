//go:build !linux

package examples_test

import (
	"errors"
	"os"
)

// openTerminal opens a new pseudo-terminal; the tests do so on Linux only.
func openTerminal() (ctl, tty *os.File, err error) {
	return nil, nil, errors.New("no pseudo-terminal for tests on this system")
}
