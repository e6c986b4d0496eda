package node

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
)

// CheckAddr checks that addr is an address as the programs' flags take
// it: host:port, where the host is a name, an IP address (an IPv6 one in
// brackets, "[::1]:7000") or empty (all interfaces to listen on, this
// machine to dial), and the port is a number, 1 to 65535, or 0 as well for
// an address to listen on (a free port).
func CheckAddr(addr string, listen bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		return fmt.Errorf("%q is not host:port (%v)", addr, err)
	}
	least := uint64(1)
	if listen {
		least = 0
	}
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case port == "":
		return fmt.Errorf("%q has no port", addr)
	case errors.Is(err, strconv.ErrRange) || err == nil && n < least:
		return fmt.Errorf("the port of %q is out of range (%d to 65535)", addr, least)
	case err != nil:
		return fmt.Errorf("the port of %q is not a number", addr)
	}
	return nil
}

// AddrVar defines a flag of fs called name that holds an address, stored
// in *p, with value as its default. A value that [CheckAddr] refuses (with
// listen for an address to listen on) is bad usage: the flag set reports
// the flag and the value, as it does for a number flag given "abc".
func AddrVar(fs *flag.FlagSet, p *string, name, value, usage string, listen bool) {
	*p = value
	fs.Var(&addrValue{p: p, listen: listen}, name, usage)
}

// addrValue is the flag.Value of [AddrVar].
type addrValue struct {
	p      *string
	listen bool
}

func (v *addrValue) String() string {
	if v.p == nil { // the zero value, which flag.PrintDefaults makes
		return ""
	}
	return *v.p
}

func (v *addrValue) Set(s string) error {
	if err := CheckAddr(s, v.listen); err != nil {
		return err
	}
	*v.p = s
	return nil
}
