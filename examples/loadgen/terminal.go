package main

import (
	"os"

	"golang.org/x/term"
)

// isTerminal reports whether f is a terminal (a console on Windows). A
// character device that is not one, such as /dev/null, is not.
func isTerminal(f *os.File) bool {
	return term.IsTerminal(int(f.Fd()))
}

// terminalWidth returns the number of columns of the terminal f, or 0 if
// it is not known.
func terminalWidth(f *os.File) int {
	w, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return w
}
