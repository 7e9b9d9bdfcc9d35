// Package testcerts makes throwaway TLS certificates for tests: a CA, a server certificate
// for localhost and 127.0.0.1, and a client certificate, all signed by the CA, PEM-encoded.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"time"
)

// Set is one CA with a server and a client certificate it signed.
type Set struct {
	CAPEM         []byte
	ServerCertPEM []byte
	ServerKeyPEM  []byte
	ClientCertPEM []byte
	ClientKeyPEM  []byte
}

// New makes a fresh Set; it panics on failure (tests only).
func New() *Set {
	caKey := key()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fastrpc test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER := must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))
	ca := must(x509.ParseCertificate(caDER))

	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, dns []string, ips []net.IP) ([]byte, []byte) {
		k := key()
		t := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     dns,
			IPAddresses:  ips,
		}
		der := must(x509.CreateCertificate(rand.Reader, t, ca, &k.PublicKey, caKey))
		kder := must(x509.MarshalPKCS8PrivateKey(k))
		return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", kder)
	}
	s := &Set{CAPEM: pemBlock("CERTIFICATE", caDER)}
	s.ServerCertPEM, s.ServerKeyPEM = leaf(2, "localhost", x509.ExtKeyUsageServerAuth,
		[]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	s.ClientCertPEM, s.ClientKeyPEM = leaf(3, "fastrpc test client", x509.ExtKeyUsageClientAuth, nil, nil)
	return s
}

// ServerTLSConfig is a crypto/tls server config with the server certificate; with
// requireClientCert, clients must present a certificate signed by the CA.
func (s *Set) ServerTLSConfig(requireClientCert bool) *tls.Config {
	cert := must(tls.X509KeyPair(s.ServerCertPEM, s.ServerKeyPEM))
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = s.pool()
	}
	return cfg
}

// ClientTLSConfig is a crypto/tls client config trusting the CA for serverName; with
// clientCert it presents the client certificate.
func (s *Set) ClientTLSConfig(serverName string, clientCert bool) *tls.Config {
	cfg := &tls.Config{RootCAs: s.pool(), ServerName: serverName}
	if clientCert {
		cfg.Certificates = []tls.Certificate{must(tls.X509KeyPair(s.ClientCertPEM, s.ClientKeyPEM))}
	}
	return cfg
}

func (s *Set) pool() *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(s.CAPEM) {
		panic("testcerts: bad CA PEM")
	}
	return p
}

func key() *ecdsa.PrivateKey { return must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)) }

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
