//go:build !unix

package transport

// openFileLimit returns the process's limit of open files, or 0 if it
// cannot tell, as here.
func openFileLimit() int { return 0 }
