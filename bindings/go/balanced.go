package fastrpc

// The balancing client: one Client over several servers (fastrpc_balanced_client), with the
// same Call, Send, Stats, Close and Shutdown as a one-server Client, and per-server stats.

/*
#include "shim.h"
*/
import "C"

import (
	"runtime"
	"time"
	"unsafe"
)

// NewBalancedClient creates a client of several servers: each address is "ip:port",
// "unix:/path", or "host:port" for every address the host name resolves to (resolved again
// every WithResolveInterval). Each call goes to the server with fewer calls in flight of two
// chosen (power of two choices); a server whose connect fails is skipped until its backoff
// passes (the call is tried on another: it never reached the first); calls in flight on a
// server whose connection fails fail with ErrConnection and are not re-sent; with every
// server down calls fail at once with ErrConnect naming them. Every other option applies to
// each connection (WithConnectionsPerServer of them per server). Nothing connects until the
// first call.
func NewBalancedClient(addrs []string, opts ...ClientOption) (*Client, error) {
	if len(addrs) == 0 {
		return nil, invalid("NewBalancedClient: no address")
	}
	return newClientOf(addrs, true, opts)
}

// WithConnectionsPerServer sets the connections of a balanced client to each server, 1-1024
// (default 1). NewClient ignores it.
func WithConnectionsPerServer(n int) ClientOption {
	return func(cfg *clientConfig) {
		cfg.add("WithConnectionsPerServer", func(b *C.fastrpc_client_config_builder) C.fastrpc_status {
			if n < 0 || n > 1<<31 {
				return goInvalidValue
			}
			return C.fastrpc_client_config_builder_set_connections_per_server(b, C.uint32_t(n))
		})
	}
}

// WithResolveInterval sets how often a balanced client resolves its host names again
// (default 30s; 0: never after NewBalancedClient). NewClient ignores it.
func WithResolveInterval(d time.Duration) ClientOption {
	return func(cfg *clientConfig) {
		cfg.ms("WithResolveInterval", d, func(b *C.fastrpc_client_config_builder, v C.uint32_t) C.fastrpc_status {
			return C.fastrpc_client_config_builder_set_resolve_interval_ms(b, v)
		})
	}
}

// BalancedServerStats is one server's share of a balanced client.
type BalancedServerStats struct {
	Addr        string
	Up          bool // false: every connection failed to connect and is skipped for now
	Connections int
	Stats       ClientStats // its connections' counters, summed
}

// ServerStats is the per-server share of a client made by NewBalancedClient (nil for a
// one-server Client, or after Close); Stats gives the totals.
func (cl *Client) ServerStats() []BalancedServerStats {
	c := cl.c
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed || c.bal == nil {
		return nil
	}
	n := int(C.fastrpc_balanced_client_server_count(c.bal))
	out := make([]BalancedServerStats, 0, n)
	var buf [256]C.char
	for i := 0; i < n; i++ {
		var s C.struct_fastrpc_balanced_server_stats
		s.struct_size = C.size_t(unsafe.Sizeof(s))
		var alen C.size_t
		st := C.fastrpc_balanced_client_get_server_stats(c.bal, C.size_t(i), &s, &buf[0], C.size_t(len(buf)), &alen)
		if st != C.FASTRPC_STATUS_OK && st != C.FASTRPC_STATUS_BUFFER_TOO_SMALL {
			break // the set shrank under us (re-resolution)
		}
		out = append(out, BalancedServerStats{
			Addr:        C.GoString(&buf[0]),
			Up:          s.up != 0,
			Connections: int(s.connections),
			Stats:       clientStatsFrom(&s.stats),
		})
	}
	runtime.KeepAlive(cl)
	return out
}
