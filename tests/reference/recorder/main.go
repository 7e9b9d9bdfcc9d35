// Command recorder records what the reference (github.com/valyala/fastrpc with tlv messages)
// puts on the wire: for each scenario it runs the reference client against the reference
// server through a TCP relay on 127.0.0.1, makes a fixed list of calls, and saves the bytes
// each direction carried, cut into one segment per step. The Rust replay tests
// (tests/reference_replay.rs) play these bytes to our server and our client on every CI run.
//
// It builds only when the reference is at hand: run scripts/record-reference.sh with
// FASTRPC_REFERENCE_DIR set (see tests/data/reference/README.md).
//
//	go run . -out ../../data/reference
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	ref "github.com/valyala/fastrpc"
	"github.com/valyala/fastrpc/tlv"
)

// The reply rule, the same in the replay tests: the first 16 bytes of the name (or all of it
// if shorter), then the value, cut at 1 MiB.
const (
	replyNamePrefix = 16
	maxFrameValue   = 1 << 20
)

func reply(name, value []byte) []byte {
	n := len(name)
	if n > replyNamePrefix {
		n = replyNamePrefix
	}
	out := make([]byte, 0, n+len(value))
	out = append(out, name[:n]...)
	out = append(out, value...)
	if len(out) > maxFrameValue {
		out = out[:maxFrameValue]
	}
	return out
}

// data is a deterministic byte string: "p<len>:<seed>" a pattern of period 251 (compresses
// well), "r<len>:<seed>" xorshift32 output (does not compress).
type data struct {
	kind byte
	n    int
	seed uint32
}

func (d data) String() string { return fmt.Sprintf("%c%d:%d", d.kind, d.n, d.seed) }

func (d data) bytes() []byte {
	b := make([]byte, d.n)
	switch d.kind {
	case 'p':
		for i := range b {
			b[i] = byte((uint32(i)*7 + d.seed*13) % 251)
		}
	case 'r':
		x := d.seed*2654435761 + 1
		for i := range b {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
		}
	default:
		panic("unknown data kind")
	}
	return b
}

func p(n int, seed uint32) data { return data{'p', n, seed} }
func r(n int, seed uint32) data { return data{'r', n, seed} }

// step is one unit of the conversation; each gets one client and one server segment.
type step struct {
	kind        string // handshake, call, send, burst
	name, value data   // call, send
	count       int    // burst: call k has name r<burstName>:k, value r<burstValue>:(100000+k)
	burstName   int
	burstValue  int
}

func (s step) String() string {
	switch s.kind {
	case "handshake":
		return "handshake"
	case "burst":
		return fmt.Sprintf("burst %d %d %d", s.count, s.burstName, s.burstValue)
	default:
		return fmt.Sprintf("%s %s %s", s.kind, s.name, s.value)
	}
}

func (s step) burstCall(k int) (data, data) {
	return r(s.burstName, uint32(k)), r(s.burstValue, uint32(100000+k))
}

type scenario struct {
	name                     string
	clientComp, serverComp   ref.CompressType
	sniff                    string
	version                  byte
	clientDelay, serverDelay time.Duration
	pipelined                bool
	steps                    []step
	about                    string
}

func compName(c ref.CompressType) string {
	switch c {
	case ref.CompressNone:
		return "none"
	case ref.CompressFlate:
		return "flate"
	case ref.CompressSnappy:
		return "snappy"
	}
	panic("unknown compression")
}

func call(name, value data) step { return step{kind: "call", name: name, value: value} }
func send(name, value data) step { return step{kind: "send", name: name, value: value} }

// sizeSteps: names and values from 0 B to 1 MiB, around the 64 KiB write buffer and chunk.
func sizeSteps() []step {
	return []step{
		{kind: "handshake"},
		call(p(3, 1), p(0, 0)),
		call(p(0, 0), p(0, 0)),
		call(p(5, 2), p(1, 3)),
		call(p(5, 4), r(255, 5)),
		call(p(5, 6), r(4096, 7)),
		call(p(5, 8), p(65535, 9)),
		call(p(5, 10), r(65536, 11)),
		call(p(5, 12), p(65537, 13)),
		call(p(5, 14), r(70000, 15)),
		call(p(5, 16), p(300000, 17)),
		call(p(5, 18), p(maxFrameValue-1, 19)),
		call(p(5, 20), p(maxFrameValue, 21)),
		call(p(maxFrameValue, 22), p(0, 0)),
		call(p(maxFrameValue, 23), p(maxFrameValue, 24)),
		call(p(7, 25), p(10, 26)),
	}
}

// smallSteps: a handful of small calls, for the option scenarios.
func smallSteps() []step {
	return []step{
		{kind: "handshake"},
		call(p(3, 1), p(3, 2)),
		call(p(6, 3), r(100, 4)),
		call(p(6, 5), p(5000, 6)),
		call(p(6, 7), r(300, 8)),
	}
}

func burstSteps() []step {
	return []step{
		{kind: "handshake"},
		call(p(3, 1), p(3, 2)),
		{kind: "burst", count: 300, burstName: 8, burstValue: 100},
		call(p(3, 3), p(3, 4)),
	}
}

func sendSteps() []step {
	return []step{
		{kind: "handshake"},
		send(p(4, 1), p(10, 2)),
		call(p(3, 3), p(3, 4)),
		send(p(4, 5), r(200, 6)),
		send(p(4, 7), p(70000, 8)),
		call(p(3, 9), p(3, 10)),
	}
}

func scenarios() []scenario {
	var out []scenario
	comps := []ref.CompressType{ref.CompressNone, ref.CompressFlate, ref.CompressSnappy}
	for _, c := range comps {
		out = append(out, scenario{
			name: "sizes-" + compName(c), clientComp: c, serverComp: c, steps: sizeSteps(),
			about: "names and values from 0 B to 1 MiB, one call at a time",
		})
	}
	for _, pair := range [][2]ref.CompressType{
		{ref.CompressNone, ref.CompressFlate},
		{ref.CompressFlate, ref.CompressSnappy},
		{ref.CompressSnappy, ref.CompressNone},
	} {
		out = append(out, scenario{
			name:       "mixed-" + compName(pair[0]) + "-" + compName(pair[1]),
			clientComp: pair[0], serverComp: pair[1], steps: smallSteps(),
			about: "client and server compressions differ",
		})
	}
	for _, c := range comps {
		out = append(out, scenario{
			name: "sniff-version-" + compName(c), clientComp: c, serverComp: c,
			sniff: "fastrpc-sniff\x00\xff", version: 7, steps: smallSteps(),
			about: "a sniff header (with a NUL and a 0xff byte) and protocol version 7",
		})
	}
	for _, c := range comps {
		out = append(out, scenario{
			name: "batch-delay-" + compName(c), clientComp: c, serverComp: c,
			clientDelay: 5 * time.Millisecond, serverDelay: 7 * time.Millisecond,
			steps: append(smallSteps(), step{kind: "burst", count: 100, burstName: 8, burstValue: 50}),
			about: "client batch delay 5 ms and server batch delay 7 ms; calls one at a time, then a burst",
		})
	}
	for _, c := range comps {
		out = append(out, scenario{
			name: "pipelined-" + compName(c), clientComp: c, serverComp: c, pipelined: true,
			steps: append(smallSteps(), step{kind: "burst", count: 100, burstName: 8, burstValue: 50}),
			about: "pipelined server (requests of a connection answered in order)",
		})
	}
	for _, c := range comps {
		out = append(out, scenario{
			name: "send-" + compName(c), clientComp: c, serverComp: c, steps: sendSteps(),
			about: "fire-and-forget (SendNowait, request id 0) between calls",
		})
	}
	for _, c := range comps {
		out = append(out, scenario{
			name: "burst-" + compName(c), clientComp: c, serverComp: c, steps: burstSteps(),
			about: "300 concurrent calls",
		})
	}
	return out
}

// relay forwards one connection to the server and keeps every byte of each direction.
type relay struct {
	mu             sync.Mutex
	client, server []byte // client->server, server->client
	conns          []net.Conn
	accepted       int
}

func startRelay(serverAddr string) (string, *relay, net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	rl := &relay{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", serverAddr)
			if err != nil {
				log.Printf("relay: dial server: %v", err)
				c.Close()
				continue
			}
			rl.mu.Lock()
			rl.accepted++
			rl.conns = append(rl.conns, c, s)
			rl.mu.Unlock()
			go rl.pump(c, s, &rl.client)
			go rl.pump(s, c, &rl.server)
		}
	}()
	return ln.Addr().String(), rl, ln, nil
}

// pump copies src to dst, recording each byte before it is forwarded: whatever a peer has
// received has been recorded.
func (rl *relay) pump(src, dst net.Conn, into *[]byte) {
	buf := make([]byte, 256*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			rl.mu.Lock()
			*into = append(*into, buf[:n]...)
			rl.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
	}
}

func (rl *relay) lens() (int, int) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return len(rl.client), len(rl.server)
}

func (rl *relay) close() {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for _, c := range rl.conns {
		c.Close()
	}
}

// flushed says whether b, one direction's bytes from the start of the stream, ends where
// the writer flushed: the reference's flate writer ends each flush with a sync flush
// (00 00 ff ff); a direction that carried nothing in the step, a snappy or plain stream is whole once its peer could decode it, which it
// has (the step is over), so those count as flushed.
func flushed(c ref.CompressType, b []byte, from int) bool {
	if c != ref.CompressFlate || len(b) == from {
		return true
	}
	return bytes.HasSuffix(b, []byte{0, 0, 0xff, 0xff})
}

type segment struct{ client, server []byte }

func record(sc scenario) ([]segment, error) {
	sent := make(chan struct{}, 16) // one token per fire-and-forget request the server got
	srv := &ref.Server{
		SniffHeader:      sc.sniff,
		ProtocolVersion:  sc.version,
		CompressType:     sc.serverComp,
		MaxBatchDelay:    sc.serverDelay,
		PipelineRequests: sc.pipelined,
		NewHandlerCtx:    func() ref.HandlerCtx { return &tlv.RequestCtx{} },
		Handler: func(ctxv ref.HandlerCtx) ref.HandlerCtx {
			ctx := ctxv.(*tlv.RequestCtx)
			ctx.Write(reply(ctx.Request.Name(), ctx.Request.Value()))
			if isNowait(ctx) {
				sent <- struct{}{}
			}
			return ctx
		},
		Logger: logger{sc.name},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	go srv.Serve(ln)

	addr, rl, rln, err := startRelay(ln.Addr().String())
	if err != nil {
		return nil, err
	}
	defer rln.Close()
	defer rl.close()

	cl := &ref.Client{
		Addr:            addr,
		SniffHeader:     sc.sniff,
		ProtocolVersion: sc.version,
		CompressType:    sc.clientComp,
		MaxBatchDelay:   sc.clientDelay,
		NewResponse:     func() ref.ResponseReader { return &tlv.Response{} },
		Dial:            func(a string) (net.Conn, error) { return net.Dial("tcp", a) },
	}

	hs := len(sc.sniff) + 3
	var segs []segment
	prevC, prevS := 0, 0
	cut := func(wantC, wantS int, checkFlush bool) error {
		// Wait until both directions end on a flush (see flushed), at most 10 s.
		deadline := time.Now().Add(10 * time.Second)
		for {
			rl.mu.Lock()
			c, s := append([]byte(nil), rl.client...), append([]byte(nil), rl.server...)
			rl.mu.Unlock()
			if wantC >= 0 {
				c = c[:min(wantC, len(c))]
			}
			if wantS >= 0 {
				s = s[:min(wantS, len(s))]
			}
			okLen := (wantC < 0 || len(c) == wantC) && (wantS < 0 || len(s) == wantS)
			if okLen && (!checkFlush || (flushed(sc.clientComp, c, prevC) && flushed(sc.serverComp, s, prevS))) {
				segs = append(segs, segment{c[prevC:], s[prevS:]})
				prevC, prevS = len(c), len(s)
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("step %d: the streams did not end on a flush (client %d bytes, server %d)", len(segs), len(c), len(s))
			}
			time.Sleep(time.Millisecond)
		}
	}

	for i, st := range sc.steps {
		switch st.kind {
		case "handshake":
			if i != 0 {
				return nil, fmt.Errorf("handshake must be the first step")
			}
			// The reference client connects on its first request: the handshake segment is
			// cut from the front of the next step's bytes, below.
			segs = append(segs, segment{})
		case "call":
			if err := doCall(cl, st.name.bytes(), st.value.bytes()); err != nil {
				return nil, fmt.Errorf("step %d (%s): %v", i, st, err)
			}
		case "send":
			req := tlv.AcquireRequest()
			req.SetNameBytes(st.name.bytes())
			req.Append(st.value.bytes())
			if !cl.SendNowait(req, func(r ref.RequestWriter) { tlv.ReleaseRequest(r.(*tlv.Request)) }) {
				return nil, fmt.Errorf("step %d (%s): SendNowait refused", i, st)
			}
			select {
			case <-sent:
			case <-time.After(10 * time.Second):
				return nil, fmt.Errorf("step %d (%s): the server never got the request", i, st)
			}
		case "burst":
			errs := make(chan error, st.count)
			start := make(chan struct{})
			for k := 0; k < st.count; k++ {
				go func(k int) {
					<-start
					n, v := st.burstCall(k)
					errs <- doCall(cl, n.bytes(), v.bytes())
				}(k)
			}
			close(start)
			for k := 0; k < st.count; k++ {
				if err := <-errs; err != nil {
					return nil, fmt.Errorf("step %d (%s): %v", i, st, err)
				}
			}
		default:
			return nil, fmt.Errorf("unknown step %q", st.kind)
		}
		if st.kind == "handshake" {
			continue
		}
		if i == 1 && sc.steps[0].kind == "handshake" {
			// Cut the plaintext handshake first: its length is known on both sides.
			segs = segs[:0]
			if err := cut(hs, hs, false); err != nil {
				return nil, err
			}
		}
		if err := cut(-1, -1, true); err != nil {
			return nil, err
		}
	}
	// Nothing may have arrived after the last step.
	time.Sleep(100 * time.Millisecond)
	if c, s := rl.lens(); c != prevC || s != prevS {
		return nil, fmt.Errorf("bytes after the last step: client %d/%d, server %d/%d", c, prevC, s, prevS)
	}
	if rl.accepted != 1 {
		return nil, fmt.Errorf("the client made %d connections, want 1", rl.accepted)
	}
	return segs, nil
}

// isNowait: the tlv handler cannot see the request id, so fire-and-forget requests are
// recognised by their 4-byte names (the calls of sendSteps have 3-byte names).
func isNowait(ctx *tlv.RequestCtx) bool { return len(ctx.Request.Name()) == 4 }

func doCall(cl *ref.Client, name, value []byte) error {
	req := tlv.AcquireRequest()
	defer tlv.ReleaseRequest(req)
	resp := tlv.AcquireResponse()
	defer tlv.ReleaseResponse(resp)
	req.SetNameBytes(name)
	req.Append(value)
	if err := cl.DoDeadline(req, resp, time.Now().Add(30*time.Second)); err != nil {
		return err
	}
	if want := reply(name, value); !bytes.Equal(resp.Value(), want) {
		return fmt.Errorf("wrong reply: %d bytes, want %d", len(resp.Value()), len(want))
	}
	return nil
}

type logger struct{ scenario string }

func (l logger) Printf(format string, args ...any) {
	log.Printf("reference server (%s): %s", l.scenario, fmt.Sprintf(format, args...))
}

func writeRecording(path string, segs []segment) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	zw.Header.ModTime = time.Time{} // reproducible files
	w := func(b []byte) {
		var l [4]byte
		binary.LittleEndian.PutUint32(l[:], uint32(len(b)))
		zw.Write(l[:])
		zw.Write(b)
	}
	zw.Write([]byte("FRPCREC1"))
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(segs)))
	zw.Write(n[:])
	for _, s := range segs {
		w(s.client)
		w(s.server)
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

func main() {
	out := flag.String("out", "", "directory for the recordings and manifest.txt")
	only := flag.String("only", "", "record only the scenarios whose name contains this")
	flag.Parse()
	if *out == "" {
		log.Fatal("-out is required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	var m strings.Builder
	m.WriteString(manifestHeader)
	var names []string
	for _, sc := range scenarios() {
		if *only != "" && !strings.Contains(sc.name, *only) {
			continue
		}
		segs, err := record(sc)
		if err != nil {
			log.Fatalf("%s: %v", sc.name, err)
		}
		file := sc.name + ".rec.gz"
		if err := writeRecording(filepath.Join(*out, file), segs); err != nil {
			log.Fatal(err)
		}
		tc, ts := 0, 0
		for _, s := range segs {
			tc += len(s.client)
			ts += len(s.server)
		}
		sniff := "-"
		if sc.sniff != "" {
			sniff = hex.EncodeToString([]byte(sc.sniff))
		}
		fmt.Fprintf(&m, "\n# %s\n", sc.about)
		fmt.Fprintf(&m, "scenario %s file=%s client_compress=%s server_compress=%s sniff=%s version=%d client_batch_delay_ms=%d server_batch_delay_ms=%d pipelined=%t client_bytes=%d server_bytes=%d\n",
			sc.name, file, compName(sc.clientComp), compName(sc.serverComp), sniff, sc.version,
			sc.clientDelay.Milliseconds(), sc.serverDelay.Milliseconds(), sc.pipelined, tc, ts)
		for _, st := range sc.steps {
			fmt.Fprintf(&m, "step %s\n", st)
		}
		m.WriteString("end\n")
		names = append(names, sc.name)
		log.Printf("%s: %d steps, client %d bytes, server %d bytes", sc.name, len(segs), tc, ts)
	}
	sort.Strings(names)
	if err := os.WriteFile(filepath.Join(*out, "manifest.txt"), []byte(m.String()), 0o644); err != nil {
		log.Fatal(err)
	}
}

const manifestHeader = `# Recorded conversations of the reference, github.com/valyala/fastrpc (tlv messages):
# its client against its server through a relay on 127.0.0.1. Written by
# tests/reference/recorder (scripts/record-reference.sh); read by tests/reference_replay.rs.
# README.md in this directory explains every field. Do not edit by hand.
#
# scenario NAME file=F client_compress=C server_compress=C sniff=HEX|- version=N
#          client_batch_delay_ms=N server_batch_delay_ms=N pipelined=BOOL client_bytes=N server_bytes=N
# step handshake                  the plaintext handshake (both headers)
# step call NAME VALUE            one call (DoDeadline), waited for before the next step
# step send NAME VALUE            one SendNowait (request id 0), waited for at the server
# step burst COUNT NLEN VLEN      COUNT concurrent calls; call k: name rNLEN:k, value rVLEN:(100000+k)
# end
# NAME / VALUE: pLEN:SEED = byte i is (7i + 13 SEED) mod 251; rLEN:SEED = xorshift32 bytes,
# state SEED*2654435761+1 (mod 2^32), per byte x ^= x<<13; x ^= x>>17; x ^= x<<5; byte = x & 0xff.
# reply = the first 16 bytes of NAME (all of it if shorter), then VALUE, cut at 1 MiB.
format 1
`
