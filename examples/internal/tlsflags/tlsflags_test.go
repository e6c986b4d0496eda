package tlsflags_test

import (
	"crypto/tls"
	"flag"
	"io"
	"net"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/testca"
	"github.com/seed-c94cd834/fanout/examples/internal/tlsflags"
)

// parse returns the flags set by args.
func parse(t *testing.T, args ...string) *tlsflags.Flags {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var f tlsflags.Flags
	f.Register(fs)
	require.NoError(t, fs.Parse(args))
	return &f
}

func TestConfigNeedsAllThreeOrNone(t *testing.T) {
	cfg, err := parse(t).Config()
	require.NoError(t, err)
	require.Nil(t, cfg, "no flag: no TLS")

	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"-tls-cert", "c"}, "missing -tls-key and -tls-ca: -tls-cert, -tls-key and -tls-ca go together"},
		{[]string{"-tls-cert", "c", "-tls-key", "k"}, "missing -tls-ca: -tls-cert, -tls-key and -tls-ca go together"},
		{[]string{"-tls-ca", "a", "-tls-key", "k"}, "missing -tls-cert: -tls-cert, -tls-key and -tls-ca go together"},
		{[]string{"-tls-ca", "a"}, "missing -tls-cert and -tls-key: -tls-cert, -tls-key and -tls-ca go together"},
	}
	for _, tt := range tests {
		_, err := parse(t, tt.args...).Config()
		require.EqualError(t, err, tt.wantErr, "args %q", tt.args)
	}
}

func TestConfigNamesTheFileItCannotLoad(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, dir, "ca")
	cert, key := ca.Issue(t, "node")
	missing := filepath.Join(dir, "missing.pem")

	_, err := parse(t, "-tls-cert", missing, "-tls-key", key, "-tls-ca", ca.File).Config()
	require.ErrorContains(t, err, "-tls-cert "+missing)

	_, err = parse(t, "-tls-cert", cert, "-tls-key", key, "-tls-ca", missing).Config()
	require.ErrorContains(t, err, "-tls-ca: open "+missing)

	_, err = parse(t, "-tls-cert", cert, "-tls-key", key, "-tls-ca", key).Config()
	require.EqualError(t, err, "-tls-ca "+key+": no PEM certificate in the file")

	_, err = parse(t, "-tls-cert", cert, "-tls-key", cert, "-tls-ca", ca.File).Config()
	require.ErrorContains(t, err, "-tls-key "+cert)
}

// handshake runs a TLS handshake between a server and a client with the
// configurations given, and returns the errors of both sides.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		err := s.Handshake()
		if err == nil {
			// In TLS 1.3 the server checks the client's certificate after
			// the client is done: answer, so the client sees the outcome.
			_, err = s.Write([]byte{1})
		}
		a.Close()
		done <- err
	}()
	c := tls.Client(b, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(c, make([]byte, 1))
	}
	b.Close()
	return <-done, clientErr
}

func TestConfigIsMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, dir, "ca")
	cert, key := ca.Issue(t, "node")
	cfg, err := parse(t, "-tls-cert", cert, "-tls-key", key, "-tls-ca", ca.File).Config()
	require.NoError(t, err)
	require.Equal(t, tls.RequireAndVerifyClientCert, cfg.ClientAuth)

	client := cfg.Clone()
	client.ServerName = "127.0.0.1"
	serverErr, clientErr := handshake(t, cfg, client)
	require.NoError(t, serverErr)
	require.NoError(t, clientErr)

	// A client whose certificate another CA signed is refused...
	other := testca.New(t, dir, "other-ca")
	otherCert, otherKey := other.Issue(t, "intruder")
	intruder, err := parse(t, "-tls-cert", otherCert, "-tls-key", otherKey, "-tls-ca", ca.File).Config()
	require.NoError(t, err)
	intruder.ServerName = "127.0.0.1"
	serverErr, clientErr = handshake(t, cfg, intruder)
	require.ErrorContains(t, serverErr, "certificate signed by unknown authority")
	require.Error(t, clientErr)

	// ...and so is a server whose certificate another CA signed.
	impostor, err := parse(t, "-tls-cert", otherCert, "-tls-key", otherKey, "-tls-ca", other.File).Config()
	require.NoError(t, err)
	_, clientErr = handshake(t, impostor, client)
	require.ErrorContains(t, clientErr, "certificate signed by unknown authority")

	// The certificate names localhost too.
	client.ServerName = "localhost"
	serverErr, clientErr = handshake(t, cfg, client)
	require.NoError(t, serverErr)
	require.NoError(t, clientErr)
}
