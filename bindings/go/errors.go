package fastrpc

// Errors: one sentinel per kind of failure (the library's status codes), and *Error, which
// carries the library's message and matches its sentinel with errors.Is.

import (
	"context"
	"errors"
)

// Sentinel errors, one per kind of failure. Every error returned by this package that comes
// from the library is an *Error that matches exactly one of these with errors.Is.
var (
	// ErrTimeout: a deadline passed (the call's, or a read, write or handshake timeout).
	// A call that ran out of its context's deadline also matches context.DeadlineExceeded.
	ErrTimeout = errors.New("fastrpc: timeout")
	// ErrOverflow: MaxPendingRequests calls already wait (or, with PrioritizeNewRequests,
	// this queued call was failed to make room for a newer one).
	ErrOverflow = errors.New("fastrpc: too many pending requests")
	// ErrClosed: the client or server was closed.
	ErrClosed = errors.New("fastrpc: closed")
	// ErrConnect: connecting to the server failed (dial or handshake), or the client is
	// backing off after such a failure.
	ErrConnect = errors.New("fastrpc: cannot connect")
	// ErrConnection: the connection failed while the call was in flight.
	ErrConnection = errors.New("fastrpc: connection failed")
	// ErrProtocol: the peer broke the protocol.
	ErrProtocol = errors.New("fastrpc: protocol error")
	// ErrTLS: TLS failed (certificates, verification, handshake, TLS refused or required).
	ErrTLS = errors.New("fastrpc: TLS error")
	// ErrTooLarge: a name or value exceeds MaxFrameSize.
	ErrTooLarge = errors.New("fastrpc: too large")
	// ErrInvalidArgument: an argument or option is invalid.
	ErrInvalidArgument = errors.New("fastrpc: invalid argument")
	// ErrIO: another I/O failure (for example: cannot listen on the address).
	ErrIO = errors.New("fastrpc: I/O error")
	// ErrCancelled: the call was cancelled (the C API's FASTRPC_STATUS_CANCELLED, from
	// fastrpc_client_cancel).
	ErrCancelled = errors.New("fastrpc: the call was cancelled")
	// ErrInternal: the library caught an internal panic (please report it), or returned a
	// status this binding does not know.
	ErrInternal = errors.New("fastrpc: internal error")
)

// Status codes of the C API (fastrpc_status), kept stable forever by the library.
const (
	statusOK              = 0
	statusTimeout         = 1
	statusOverflow        = 2
	statusConnect         = 3
	statusConnection      = 4
	statusClosed          = 5
	statusProtocol        = 6
	statusTLS             = 7
	statusTooLarge        = 8
	statusInvalidArgument = 9
	statusIO              = 10
	statusPanic           = 11
	statusAlreadyAnswered = 12
	statusBufferTooSmall  = 13
	statusCancelled       = 14
)

func sentinel(status uint32) error {
	switch status {
	case statusTimeout:
		return ErrTimeout
	case statusOverflow:
		return ErrOverflow
	case statusConnect:
		return ErrConnect
	case statusConnection:
		return ErrConnection
	case statusClosed:
		return ErrClosed
	case statusProtocol:
		return ErrProtocol
	case statusTLS:
		return ErrTLS
	case statusTooLarge:
		return ErrTooLarge
	case statusInvalidArgument, statusAlreadyAnswered, statusBufferTooSmall:
		return ErrInvalidArgument
	case statusIO:
		return ErrIO
	case statusCancelled:
		return ErrCancelled
	default:
		return ErrInternal
	}
}

// Error is a failure reported by the library: Kind is one of the sentinel errors above and
// Message the library's own description (which peer, which cause). errors.Is(err, Kind)
// holds, and so does errors.Is(err, context.DeadlineExceeded) for a call that ran out of its
// context's deadline.
type Error struct {
	// Kind is the sentinel error for this kind of failure (ErrTimeout, ErrClosed, ...).
	Kind error
	// Status is the C API's status code (fastrpc_status).
	Status uint32
	// Message is the library's message; it may be empty.
	Message string

	cause error // context.DeadlineExceeded for a context deadline, else nil
}

func newError(status uint32, msg string) *Error {
	return &Error{Kind: sentinel(status), Status: status, Message: msg}
}

// deadlineError is what a call whose context deadline passed returns: it matches both
// ErrTimeout and context.DeadlineExceeded.
func deadlineError(msg string) *Error {
	if msg == "" {
		msg = "fastrpc: call timed out: the context's deadline passed"
	}
	return &Error{Kind: ErrTimeout, Status: statusTimeout, Message: msg, cause: context.DeadlineExceeded}
}

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return e.Kind.Error()
}

// Unwrap returns the sentinel and, for a context deadline, context.DeadlineExceeded.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Kind, e.cause}
	}
	return []error{e.Kind}
}

// errClosed is returned by calls made after Close.
func errClosed(what string) *Error {
	return &Error{Kind: ErrClosed, Status: statusClosed, Message: "fastrpc: the " + what + " was closed"}
}

func invalid(msg string) *Error {
	return &Error{Kind: ErrInvalidArgument, Status: statusInvalidArgument, Message: "fastrpc: " + msg}
}
