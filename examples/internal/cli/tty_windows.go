package cli

import (
	"os"
	"syscall"
)

// isTTY reports whether f is a console: whether it has a console mode,
// which NUL, a character device, has not.
func isTTY(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var mode uint32
	var merr error
	if err := rc.Control(func(fd uintptr) {
		merr = syscall.GetConsoleMode(syscall.Handle(fd), &mode)
	}); err != nil {
		return false
	}
	return merr == nil
}
