//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd || windows)

package cli

import "os"

// isTTY reports whether f is a character device, the best guess at a
// terminal where the programs know no terminal ioctl.
func isTTY(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
