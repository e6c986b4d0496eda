package transport_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-c94cd834/fanout"
	"github.com/seed-c94cd834/fanout/internal/backendtest"
	"github.com/seed-c94cd834/fanout/transport"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for 127.0.0.1, good for both server and client
// authentication, signed by ca.
func (ca *testCA) issue(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serverTLS is a mutual TLS server configuration trusting clients of ca.
func (ca *testCA) serverTLS(t *testing.T) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "server")},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		MinVersion:   tls.VersionTLS13,
	}
}

// clientTLS is a client configuration with a certificate of ca, trusting
// servers of ca.
func (ca *testCA) clientTLS(t *testing.T) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "client")},
		RootCAs:      ca.pool,
		MinVersion:   tls.VersionTLS13,
	}
}

// The same conformance suite passes over mutual TLS as over plain TCP.
func TestConformanceOverMutualTLS(t *testing.T) {
	ca := newCA(t, "fanout test CA")
	backendtest.Run(t, func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
		addr := serve(t, leaf, transport.WithTLSConfig(ca.serverTLS(t)))
		return client(t, addr, transport.WithTLSConfig(ca.clientTLS(t)))
	})
}

// The transport also runs over a TLS listener and dialer of the caller's
// making.
func TestConformanceOverCallersTLS(t *testing.T) {
	ca := newCA(t, "fanout test CA")
	cert := ca.issue(t, "server")
	backendtest.Run(t, func(t *testing.T, leaf fanout.Backend[int64, int64]) fanout.Backend[int64, int64] {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := serveOn(t, tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}}), leaf)
		dialer := &tls.Dialer{Config: &tls.Config{RootCAs: ca.pool}}
		return client(t, addr, transport.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}))
	})
}

// Every peer that does not belong is refused: the caller gets an error
// saying why, and the server logs a line, and goes on serving the peers that
// do belong.
func TestTLSRefusals(t *testing.T) {
	ca := newCA(t, "fanout test CA")
	other := newCA(t, "another CA")
	echo := fanout.BackendFunc[int64, int64](func(_ context.Context, in []int64) ([]int64, error) { return in, nil })

	noCert := ca.clientTLS(t)
	noCert.Certificates = nil
	wrongCert := ca.clientTLS(t)
	intruder := other.issue(t, "intruder")
	wrongCert.Certificates = nil
	// Present the certificate even though the server asks for ones of ca.
	wrongCert.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &intruder, nil }
	wrongRoots := ca.clientTLS(t)
	wrongRoots.RootCAs = other.pool

	cases := []struct {
		name      string
		serverTLS bool
		client    *tls.Config // nil: plaintext
		callerErr string
		serverLog string
	}{
		{"plaintext client", true, nil, "TLS", "TLS handshake failed"},
		{"no client certificate", true, noCert, "certificate", "TLS handshake failed"},
		{"client certificate from another CA", true, wrongCert, "certificate", "TLS handshake failed"},
		{"server certificate from another CA", true, wrongRoots, "certificate signed by unknown authority", "TLS handshake failed"},
		{"TLS client, plaintext server", false, ca.clientTLS(t), "TLS", "speaks TLS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			opts := []transport.ServerOption{logs.option()}
			if tc.serverTLS {
				opts = append(opts, transport.WithTLSConfig(ca.serverTLS(t)))
			}
			addr := serve(t, echo, opts...)

			var copts []transport.ClientOption
			if tc.client != nil {
				copts = append(copts, transport.WithTLSConfig(tc.client))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := client(t, addr, copts...).Process(ctx, []int64{1})
			require.Error(t, err)
			t.Logf("caller sees: %v", err)
			require.ErrorContains(t, err, tc.callerErr)
			require.ErrorIs(t, err, fanout.ErrUnavailable, "a refused connection delivered nothing")
			logs.waitFor(t, tc.serverLog)

			// The server goes on serving a peer that belongs.
			if tc.serverTLS {
				out, err := client(t, addr, transport.WithTLSConfig(ca.clientTLS(t))).Process(ctx, []int64{4, 5})
				require.NoError(t, err)
				require.Equal(t, []int64{4, 5}, out)
			}
		})
	}
}
