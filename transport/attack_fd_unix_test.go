//go:build unix

package transport

import "syscall"

// openFileLimit returns the process's limit of open files, or 0 if it
// cannot tell.
func openFileLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return int(min(l.Cur, 1<<20))
}
