// Command gopeer is an independent TLS peer for fastrpc's interop tests (tests/tls_interop.rs):
// Go's crypto/tls, speaking the fastrpc plaintext handshake (docs/PROTOCOL.md, the handshake) and
// then tlv frames with compression none inside TLS, as a client or as a server.
//
// It reports what happened as one line per event on stdout, words separated by spaces, with
// `msg=` (free text) always last:
//
//	listening ADDR
//	conn n=N version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256 resumed=false peer=CN
//	resp n=N id=I len=L ok=true             (client: the response matched name:value)
//	paused n=N                              (client: waits for a line on stdin)
//	closed n=N requests=K msg=why           (server: the connection ended)
//	error n=N stage=dial|header|handshake|call msg=why
//	done
//
// Standard library only. Built by the Rust test with `go build`.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

var (
	mode       = flag.String("mode", "", "client or server")
	addr       = flag.String("addr", "127.0.0.1:0", "client: the address to dial; server: the address to listen on")
	caFile     = flag.String("ca", "", "client: PEM CA that signs the server certificate")
	certFile   = flag.String("cert", "", "PEM certificate chain to present (server; client for mutual TLS)")
	keyFile    = flag.String("key", "", "PEM private key of -cert")
	clientCA   = flag.String("client-ca", "", "server: require a client certificate signed by this PEM CA")
	serverName = flag.String("server-name", "localhost", "client: the name to verify the server certificate against")
	version    = flag.String("tls", "", "1.2 or 1.3: the only TLS version to speak (empty: both)")
	ciphers    = flag.String("ciphers", "", "comma-separated TLS 1.2 cipher suite names (Go's names)")
	conns      = flag.Int("conns", 1, "client: connections made one after another; server: connections served, then exit")
	calls      = flag.Int("calls", 3, "client: calls per connection (call 2 carries 40000 bytes)")
	resume     = flag.Bool("resume", false, "client: keep a session cache across the connections")
	pauseAfter = flag.Int("pause-after", 0, "client: after this many calls on each connection, print paused and wait for a stdin line")
	sniff      = flag.String("sniff", "", "the sniff header")
	protoVer   = flag.Int("pv", 0, "the protocol version byte")
)

const timeout = 20 * time.Second

var outMu sync.Mutex

func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gopeer: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	flag.Parse()
	cfg := &tls.Config{}
	switch *version {
	case "":
	case "1.2":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "1.3":
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	default:
		fail("-tls must be 1.2 or 1.3")
	}
	if *ciphers != "" {
		for _, name := range strings.Split(*ciphers, ",") {
			id, ok := suiteByName(name)
			if !ok {
				fail("unknown cipher suite %q", name)
			}
			cfg.CipherSuites = append(cfg.CipherSuites, id)
		}
	}
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fail("loading -cert/-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	switch *mode {
	case "client":
		cfg.RootCAs = loadPool(*caFile)
		cfg.ServerName = *serverName
		if *resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
		}
		runClient(cfg)
	case "server":
		if *clientCA != "" {
			cfg.ClientCAs = loadPool(*clientCA)
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		runServer(cfg)
	default:
		fail("-mode must be client or server")
	}
}

func suiteByName(name string) (uint16, bool) {
	for _, s := range tls.CipherSuites() {
		if s.Name == name {
			return s.ID, true
		}
	}
	return 0, false
}

func loadPool(file string) *x509.CertPool {
	if file == "" {
		fail("a CA file is required")
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		fail("reading %s: %v", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		fail("no certificate in %s", file)
	}
	return pool
}

// header is what each side writes first: sniff header, version, compression (1: none), TLS flag.
func header(tlsFlag byte) []byte {
	return append([]byte(*sniff), byte(*protoVer), 1, tlsFlag)
}

// readHeader reads and checks the peer's handshake header and returns its TLS flag.
func readHeader(r io.Reader) (byte, error) {
	got := make([]byte, len(*sniff)+3)
	if _, err := io.ReadFull(r, got); err != nil {
		return 0, fmt.Errorf("reading the handshake header: %w", err)
	}
	if !bytes.Equal(got[:len(*sniff)], []byte(*sniff)) {
		return 0, fmt.Errorf("sniff header %q, want %q", got[:len(*sniff)], *sniff)
	}
	rest := got[len(*sniff):]
	if rest[0] != byte(*protoVer) {
		return 0, fmt.Errorf("protocol version %d, want %d", rest[0], *protoVer)
	}
	if rest[1] != 1 {
		return 0, fmt.Errorf("compression code %d, this peer speaks only 1 (none)", rest[1])
	}
	return rest[2], nil
}

func describe(n int, cs tls.ConnectionState) {
	peer := "-"
	if len(cs.PeerCertificates) > 0 {
		peer = strings.ReplaceAll(cs.PeerCertificates[0].Subject.CommonName, " ", "_")
	}
	say("conn n=%d version=%s cipher=%s resumed=%t peer=%s", n, tlsVersionName(cs.Version),
		tls.CipherSuiteName(cs.CipherSuite), cs.DidResume, peer)
}

func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func value(n, call int) []byte {
	size := 16
	if call == 2 {
		size = 40000
	}
	v := make([]byte, size)
	for i := range v {
		v[i] = byte('a' + (i*7+n*3+call)%26)
	}
	return v
}

func u32(b []byte, v int) []byte { return binary.LittleEndian.AppendUint32(b, uint32(v)) }

func runClient(cfg *tls.Config) {
	stdin := bufio.NewReader(os.Stdin)
	for n := 0; n < *conns; n++ {
		clientConn(n, cfg, stdin)
	}
	say("done")
}

func clientConn(n int, cfg *tls.Config, stdin *bufio.Reader) {
	raw, err := net.DialTimeout("tcp", *addr, timeout)
	if err != nil {
		say("error n=%d stage=dial msg=%s", n, oneLine(err))
		return
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(timeout))
	if _, err := raw.Write(header(1)); err != nil {
		say("error n=%d stage=header msg=%s", n, oneLine(err))
		return
	}
	flagTLS, err := readHeader(raw)
	if err == nil && flagTLS != 1 {
		err = errors.New("the server answered tls=0")
	}
	if err != nil {
		say("error n=%d stage=header msg=%s", n, oneLine(err))
		return
	}
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		say("error n=%d stage=handshake msg=%s", n, oneLine(err))
		return
	}
	describe(n, c.ConnectionState())
	r := bufio.NewReader(c)
	for id := 1; id <= *calls; id++ {
		if *pauseAfter > 0 && id == *pauseAfter+1 {
			say("paused n=%d", n)
			if _, err := stdin.ReadString('\n'); err != nil {
				fail("stdin: %v", err)
			}
			raw.SetDeadline(time.Now().Add(timeout))
		}
		name, v := []byte("go"), value(n, id)
		frame := u32(nil, id)
		frame = append(u32(frame, len(name)), name...)
		frame = append(u32(frame, len(v)), v...)
		if _, err := c.Write(frame); err != nil {
			say("error n=%d stage=call id=%d msg=%s", n, id, oneLine(err))
			return
		}
		var hdr [8]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			say("error n=%d stage=call id=%d msg=%s", n, id, oneLine(err))
			return
		}
		gotID := int(binary.LittleEndian.Uint32(hdr[:4]))
		body, err := readBytes(r, [4]byte(hdr[4:]))
		if err != nil {
			say("error n=%d stage=call id=%d msg=%s", n, id, oneLine(err))
			return
		}
		want := append(append(append([]byte{}, name...), ':'), v...)
		say("resp n=%d id=%d len=%d ok=%t", n, gotID, len(body), gotID == id && bytes.Equal(body, want))
	}
	c.Close()
}

func runServer(cfg *tls.Config) {
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fail("listen: %v", err)
	}
	say("listening %s", ln.Addr())
	// The test ends this process by closing stdin (or killing it).
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	var wg sync.WaitGroup
	for n := 0; n < *conns; n++ {
		c, err := ln.Accept()
		if err != nil {
			fail("accept: %v", err)
		}
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			serveConn(n, c, cfg)
		}(n)
	}
	wg.Wait()
	say("done")
}

func serveConn(n int, raw net.Conn, cfg *tls.Config) {
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(timeout))
	wantTLS, err := readHeader(raw)
	if err != nil {
		say("error n=%d stage=header msg=%s", n, oneLine(err))
		return
	}
	raw.Write(header(wantTLS))
	if wantTLS != 1 {
		say("error n=%d stage=header msg=the client did not ask for TLS", n)
		return
	}
	c := tls.Server(raw, cfg)
	if err := c.Handshake(); err != nil {
		say("error n=%d stage=handshake msg=%s", n, oneLine(err))
		return
	}
	describe(n, c.ConnectionState())
	r := bufio.NewReader(c)
	requests := 0
	for {
		var id, nameLen, valueLen [4]byte
		err := readFull(r, id[:])
		var name, v []byte
		if err == nil {
			err = readFull(r, nameLen[:])
		}
		if err == nil {
			name, err = readBytes(r, nameLen)
		}
		if err == nil {
			err = readFull(r, valueLen[:])
		}
		if err == nil {
			v, err = readBytes(r, valueLen)
		}
		if err != nil {
			say("closed n=%d requests=%d msg=%s", n, requests, oneLine(err))
			c.Close()
			return
		}
		requests++
		if binary.LittleEndian.Uint32(id[:]) == 0 {
			continue
		}
		resp := append(append(append([]byte{}, name...), ':'), v...)
		frame := append([]byte{}, id[:]...)
		frame = append(u32(frame, len(resp)), resp...)
		if _, err := c.Write(frame); err != nil {
			say("closed n=%d requests=%d msg=%s", n, requests, oneLine(err))
			return
		}
	}
}

func readFull(r io.Reader, b []byte) error {
	_, err := io.ReadFull(r, b)
	return err
}

// maxFrame is the protocol's limit on a name or a value (1 MiB): the bound on what one read allocates.
const maxFrame = 1 << 20

// readBytes reads a field of the little-endian length in lenLE, at most maxFrame bytes.
func readBytes(r io.Reader, lenLE [4]byte) ([]byte, error) {
	n := binary.LittleEndian.Uint32(lenLE[:])
	if n > maxFrame {
		return nil, fmt.Errorf("a field of %d bytes, over the 1 MiB limit", n)
	}
	b := make([]byte, n)
	return b, readFull(r, b)
}
