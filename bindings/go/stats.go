package fastrpc

// Counters of clients and servers, copied from the library's snapshots.

/*
#include "shim.h"
*/
import "C"

// ErrorCounts counts failures by kind.
type ErrorCounts struct {
	Timeout, Overflow, Connect, Connection, Closed, Protocol, TLS, TooLarge, InvalidArgument, IO uint64
}

// IOStats counts bytes before and after compression in each direction, flushes and frames.
type IOStats struct {
	BytesSentPlain     uint64 // frame bytes sent, before compression
	BytesSentWire      uint64 // bytes written to the socket, after compression
	BytesReceivedPlain uint64 // frame bytes received, after decompression
	BytesReceivedWire  uint64 // bytes read from the socket, before decompression
	Flushes            uint64 // batches written, one flush each
	FramesSent         uint64 // frames sent (FramesSent / Flushes = frames per flush)
	FramesReceived     uint64
}

// ClientStats is a snapshot of a client's counters.
type ClientStats struct {
	Calls               uint64 // calls accepted (not counting Send)
	Responses           uint64 // calls that got their response
	Sends               uint64 // fire-and-forget sends accepted
	UnexpectedResponses uint64 // responses for no waiting call (late, unknown id), dropped
	Connects            uint64 // connections established
	Reconnects          uint64 // connections established after the first
	ConnectFailures     uint64 // connect attempts that failed
	PendingRequests     uint64 // calls waiting now
	LoneWrites          uint64 // calls alone in flight that wrote their request in Call itself
	// The poller's short waits (Go only; WithPollerSpin): waits for responses, or for the
	// next call, that ended in time, and windows that ran out.
	PollerSpinHits, PollerSpinMisses uint64
	Errors                           ErrorCounts
	IO                               IOStats
}

// ServerStats is a snapshot of a server's counters.
type ServerStats struct {
	Requests                uint64 // requests that want a response
	NowaitRequests          uint64 // fire-and-forget requests
	Responses               uint64 // responses queued for sending
	ConcurrencyLimitReplies uint64 // requests answered with the concurrency-limit reply
	HandlerErrors           uint64 // Go handlers that returned an error (error reply sent)
	HandlerPanics           uint64 // Go handlers that panicked (error reply sent)
	Unanswered              uint64 // requests freed unanswered (each got the error reply)
	Running                 uint64 // handlers running now (requests taken and not yet answered)
	ConnectionsAccepted     uint64
	ConnectionsOpen         uint64
	HandshakeFailures       uint64
	LoneWrites              uint64 // replies alone on their connection written by the handler's goroutine
	Errors                  ErrorCounts
	IO                      IOStats
}

func errorCountsFrom(e *C.fastrpc_error_counts) ErrorCounts {
	return ErrorCounts{
		Timeout: uint64(e.timeout), Overflow: uint64(e.overflow), Connect: uint64(e.connect),
		Connection: uint64(e.connection), Closed: uint64(e.closed), Protocol: uint64(e.protocol),
		TLS: uint64(e.tls), TooLarge: uint64(e.too_large),
		InvalidArgument: uint64(e.invalid_argument), IO: uint64(e.io),
	}
}

func ioStatsFrom(s *C.fastrpc_io_stats) IOStats {
	return IOStats{
		BytesSentPlain: uint64(s.bytes_sent_plain), BytesSentWire: uint64(s.bytes_sent_wire),
		BytesReceivedPlain: uint64(s.bytes_received_plain), BytesReceivedWire: uint64(s.bytes_received_wire),
		Flushes: uint64(s.flushes), FramesSent: uint64(s.frames_sent), FramesReceived: uint64(s.frames_received),
	}
}

func clientStatsFrom(s *C.struct_fastrpc_client_stats) ClientStats {
	return ClientStats{
		Calls: uint64(s.calls), Responses: uint64(s.responses), Sends: uint64(s.sends),
		UnexpectedResponses: uint64(s.unexpected_responses), Connects: uint64(s.connects),
		Reconnects: uint64(s.reconnects), ConnectFailures: uint64(s.connect_failures),
		PendingRequests: uint64(s.pending_requests), LoneWrites: uint64(s.lone_writes),
		Errors: errorCountsFrom(&s.errors), IO: ioStatsFrom(&s.io),
	}
}

func serverStatsFrom(s *C.struct_fastrpc_server_stats) ServerStats {
	return ServerStats{
		Requests: uint64(s.requests), NowaitRequests: uint64(s.nowait_requests),
		Responses: uint64(s.responses), ConcurrencyLimitReplies: uint64(s.concurrency_limit_replies),
		HandlerPanics: uint64(s.handler_panics), Unanswered: uint64(s.unanswered),
		Running: uint64(s.running), ConnectionsAccepted: uint64(s.connections_accepted),
		ConnectionsOpen: uint64(s.connections_open), HandshakeFailures: uint64(s.handshake_failures),
		LoneWrites: uint64(s.lone_writes),
		Errors:     errorCountsFrom(&s.errors), IO: ioStatsFrom(&s.io),
	}
}
