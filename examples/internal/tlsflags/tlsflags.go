// Package tlsflags defines the -tls-cert, -tls-key and -tls-ca flags of the
// example programs and builds the mutual TLS configuration they describe.
//
// The three flags go together: a program given none of them speaks plain
// TCP; a program given all three presents its certificate to its peers,
// verifies theirs against the CA, and refuses a peer without a certificate
// signed by it. Servers and clients alike: a server requires a client
// certificate, and a client checks the server's certificate against the
// address it dials. A certificate must therefore allow both server and
// client authentication (extended key usages serverAuth and clientAuth) and
// name the host its program is dialled at (a subject alternative name such
// as IP:127.0.0.1 or DNS:localhost): the middle layer is a server to the
// client and a client of x, y and z with the same certificate.
package tlsflags

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Flags are the values of the TLS flags.
type Flags struct {
	Cert string // -tls-cert: PEM file of this program's certificate
	Key  string // -tls-key: PEM file of its private key
	CA   string // -tls-ca: PEM file of the CA that signs every peer's certificate
}

// Register defines -tls-cert, -tls-key and -tls-ca on fs, storing their
// values in f.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Cert, "tls-cert", "", "PEM `file` of this program's certificate; with -tls-key and -tls-ca, speak mutual TLS")
	fs.StringVar(&f.Key, "tls-key", "", "PEM `file` of the private key of -tls-cert")
	fs.StringVar(&f.CA, "tls-ca", "", "PEM `file` of the CA that signs the peers' certificates")
}

// Config returns the mutual TLS configuration the flags describe, or nil if
// none of them is set. One configuration serves both sides of a connection:
// a server requires and verifies its clients' certificates against the CA
// (ClientCAs), a client verifies the server's (RootCAs), and each presents
// its own certificate. Config fails, naming the flag, if only some of the
// flags are set or a file cannot be loaded.
func (f *Flags) Config() (*tls.Config, error) {
	flags := []struct{ name, value string }{{"-tls-cert", f.Cert}, {"-tls-key", f.Key}, {"-tls-ca", f.CA}}
	var missing []string
	for _, fl := range flags {
		if fl.value == "" {
			missing = append(missing, fl.name)
		}
	}
	switch {
	case len(missing) == len(flags):
		return nil, nil
	case len(missing) > 0:
		return nil, fmt.Errorf("missing %s: -tls-cert, -tls-key and -tls-ca go together", strings.Join(missing, " and "))
	}

	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("-tls-cert %s, -tls-key %s: %w", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-tls-ca %s: no PEM certificate in the file", f.CA)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		// As a client, present the certificate even if it is not signed by
		// the CA the server asks for (crypto/tls would send none), so that
		// the server can tell, and log, why it refuses it.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		RootCAs:              pool,
		ClientCAs:            pool,
		ClientAuth:           tls.RequireAndVerifyClientCert,
		MinVersion:           tls.VersionTLS13,
	}, nil
}
