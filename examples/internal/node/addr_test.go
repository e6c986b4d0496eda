package node_test

import (
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/node"
)

func TestCheckAddr(t *testing.T) {
	for _, tt := range []struct {
		addr    string
		listen  bool
		wantErr string // empty: accepted
	}{
		{addr: "127.0.0.1:7000"},
		{addr: "localhost:7000"},
		{addr: ":7000"},
		{addr: "[::1]:7000"},
		{addr: "127.0.0.1:65535"},
		{addr: "127.0.0.1:0", listen: true},
		{addr: "[::]:0", listen: true},
		{addr: "127.0.0.1:0", wantErr: `the port of "127.0.0.1:0" is out of range (1 to 65535)`},
		{addr: "127.0.0.1:65536", listen: true, wantErr: `the port of "127.0.0.1:65536" is out of range (0 to 65535)`},
		{addr: "notanaddress", wantErr: `"notanaddress" is not host:port (missing port in address)`},
		{addr: "", listen: true, wantErr: `"" is not host:port (missing port in address)`},
		{addr: "::1:7000", wantErr: `"::1:7000" is not host:port (too many colons in address)`},
		{addr: "127.0.0.1:", wantErr: `"127.0.0.1:" has no port`},
		{addr: "127.0.0.1:http", wantErr: `the port of "127.0.0.1:http" is not a number`},
		{addr: "127.0.0.1:-1", wantErr: `the port of "127.0.0.1:-1" is not a number`},
	} {
		err := node.CheckAddr(tt.addr, tt.listen)
		if tt.wantErr == "" {
			require.NoError(t, err, "%q", tt.addr)
		} else {
			require.EqualError(t, err, tt.wantErr, "%q listen=%v", tt.addr, tt.listen)
		}
	}
}

func TestAddrVar(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var addr string
	node.AddrVar(fs, &addr, "addr", "127.0.0.1:7000", "`address`", false)
	require.Equal(t, "127.0.0.1:7000", addr)
	require.NoError(t, fs.Parse([]string{"-addr", "localhost:1"}))
	require.Equal(t, "localhost:1", addr)
	require.EqualError(t, fs.Parse([]string{"-addr", "nope"}), `invalid value "nope" for flag -addr: "nope" is not host:port (missing port in address)`)
	require.Equal(t, "localhost:1", addr, "a bad value is not stored")
}
