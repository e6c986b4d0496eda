package examples_test

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"
)

// openTerminal opens a new pseudo-terminal and returns its two sides: a
// program given tty as its standard input reads what the test writes to
// ctl, as if a user typed it (Ctrl-D included), and its echo can be read
// from ctl.
func openTerminal() (ctl, tty *os.File, err error) {
	ctl, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	rc, err := ctl.SyscallConn()
	if err != nil {
		ctl.Close()
		return nil, nil, err
	}
	var n uint32
	var unlock int32
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock)))
		if errno == 0 {
			_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n)))
		}
	}); err != nil || errno != 0 {
		ctl.Close()
		return nil, nil, fmt.Errorf("setting up the pseudo-terminal: %v %v", err, errno)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ctl.Close()
		return nil, nil, err
	}
	return ctl, tty, nil
}
