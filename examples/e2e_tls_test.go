// End-to-end tests of mutual TLS: real processes, as in e2e_test.go, with a
// test CA and certificates made in t.TempDir().
package examples_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout/examples/internal/testca"
)

// tlsArgs returns the TLS flags of a program with a new certificate called
// name, signed by ca, that trusts ca.
func tlsArgs(t *testing.T, ca *testca.CA, name string) []string {
	cert, key := ca.Issue(t, name)
	return []string{"-tls-cert", cert, "-tls-key", key, "-tls-ca", ca.File}
}

func TestTLS(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	ca := testca.New(t, dir, "ca")
	node := tlsArgs(t, ca, "node")
	client := tlsArgs(t, ca, "client")

	// Every program speaks TLS, the middle layer both as a server and as a
	// client of x, y and z, with the same certificate.
	x, y, z := startReplicas(t, "x", 1, node...), startReplicas(t, "y", 1, node...), startReplicas(t, "z", 1, node...)
	middle := startMiddle(t, x, y, z, node...)
	addr := middle.addr

	t.Run("answers", func(t *testing.T) {
		out := runProgram(t, "", "client", append([]string{"-addr", addr, "-3", "4", "7"}, client...)...)
		require.Equal(t, 0, out.code, out.stderr)
		require.Equal(t, textOutput(t, -3, 4, 7), out.stdout)

		requireCleanLoad(t, runProgram(t, "", "loadgen", append([]string{"-addr", addr, "-duration", "1s", "-concurrency", "4", "-json"}, client...)...))
	})

	t.Run("plaintext client", func(t *testing.T) {
		out := runProgram(t, "", "client", "-addr", addr, "-3")
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "client: the middle layer at "+addr+" is unavailable: ")
		require.Contains(t, out.stderr, "(busy, or requires TLS)")
		require.Empty(t, out.stdout)
		middle.waitLog(t, `msg="transport: TLS handshake failed"`, 1)
		require.Contains(t, middle.log(), `err="tls: first record does not look like a TLS handshake"`)
	})

	t.Run("client of another CA", func(t *testing.T) {
		// The client trusts the middle layer, but the middle layer does not
		// trust the CA that signed the client's certificate.
		other := testca.New(t, dir, "other-ca")
		cert, key := other.Issue(t, "intruder")
		out := runProgram(t, "", "client", "-addr", addr, "-3", "-tls-cert", cert, "-tls-key", key, "-tls-ca", ca.File)
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "client: the middle layer at "+addr+" is unavailable: ")
		require.Contains(t, out.stderr, "tls: unknown certificate authority")
		require.Empty(t, out.stdout)
		middle.waitLog(t, `msg="transport: TLS handshake failed"`, 2)
		require.Contains(t, middle.log(), "certificate signed by unknown authority")
	})

	t.Run("middle of another CA", func(t *testing.T) {
		// The client does not trust the CA that signed the middle layer's
		// certificate.
		out := runProgram(t, "", "client", append([]string{"-addr", addr, "-3"}, tlsArgs(t, testca.New(t, dir, "third-ca"), "stranger")...)...)
		require.Equal(t, 1, out.code)
		require.Contains(t, out.stderr, "TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority")
		require.Empty(t, out.stdout)
	})
}

// TestTLSFlagsGoTogether checks that every program refuses a TLS flag
// without the other two, naming what is missing.
func TestTLSFlagsGoTogether(t *testing.T) {
	skipShort(t)
	for _, name := range []string{"x", "y", "z", "middle", "client", "loadgen"} {
		out := runProgram(t, "", name, "-tls-cert", "node.pem", "-tls-ca", "ca.pem")
		require.Equal(t, 2, out.code, "%s: %s", name, out.stderr)
		require.Contains(t, out.stderr, name+": missing -tls-key: -tls-cert, -tls-key and -tls-ca go together", name)

		out = runProgram(t, "", name, "-tls-key", "node-key.pem")
		require.Equal(t, 2, out.code, "%s: %s", name, out.stderr)
		require.Contains(t, out.stderr, name+": missing -tls-cert and -tls-ca: ", name)
	}
}
