/*
 * fastrpc: fast RPC over one connection, batched, compressed, optionally TLS.
 * Wire-compatible with valyala/fastrpc (tlv). This header is the whole manual of the C API:
 * the conventions below hold for every function, and each function's comment says what it
 * returns.
 *
 * VERSION. FASTRPC_VERSION_NUMBER (MAJOR * 10000 + MINOR * 100 + PATCH) is the version of
 * this header, fastrpc_version_number() that of the library loaded. Before 1.0 every minor
 * version may change the ABI (the SONAME is libfastrpc.so.0.MINOR), so check at start-up:
 *     if (fastrpc_version_number() / 100 != FASTRPC_VERSION_NUMBER / 100) abort();
 *
 * STATUS CODES. Fallible functions return fastrpc_status: FASTRPC_STATUS_OK (0) or why they
 * failed; every value keeps its meaning forever. fastrpc_status_message renders a status,
 * fastrpc_last_error_message the details of the last failure on the calling thread, and a
 * failed call's fastrpc_response carries its own message (fastrpc_response_error_message).
 * TLS failures are told apart without parsing text: fastrpc_response_tls_detail and
 * fastrpc_last_error_tls_detail give a fastrpc_tls_detail (unknown CA, name mismatch,
 * expired, not yet valid, no client certificate, certificate rejected by the peer, alert).
 *
 * OWNERSHIP. A `T **out` parameter hands a new object to the caller, who frees it with
 * that object's _free function; every _free accepts NULL. Memory the library allocates is
 * freed only by the library. A `const T *` argument is not changed.
 *
 * OUT-PARAMETERS ARE WRITTEN ONLY ON SUCCESS. On any status other than OK, out-parameters
 * keep their old values. The one exception is text: `*out_len` receives the text's full
 * length also when it was cut (BUFFER_TOO_SMALL), and (buf NULL, len 0) just measures: OK
 * with the length in `*out_len`.
 *
 * BUFFERS. Bytes are a pointer and a length: (NULL, 0) is empty, (NULL, n > 0) is
 * INVALID_ARGUMENT. Names and values passed in are copied before the function returns.
 * Text parameters are NUL-terminated UTF-8.
 *
 * VIEWS. Pointers the library lends (fastrpc_response_data, fastrpc_request_name and
 * _value, fastrpc_version) stay valid until their object is freed or reused: a response
 * until it is freed or passed to another call, a request's views until it is answered or
 * freed; fastrpc_version's string forever. An empty view is (NULL, 0).
 *
 * DURATIONS. Every duration is a uint32_t: milliseconds (`_ms`, up to about 49 days), or
 * microseconds for the batch delays (`_us`). Timeout 0 means "the configured default" for
 * calls, "do not wait" for polls, and "no limit" for the read and write timeouts.
 *
 * STATS STRUCTS begin with `size_t struct_size`: set it to sizeof the struct before the
 * call. The library writes only the fields both it and the caller's header know, and sets
 * struct_size to the bytes written; later versions only append fields.
 *
 * SAFETY. Every function catches internal panics (FASTRPC_STATUS_PANIC; the process goes
 * on). NULL or invalid arguments give INVALID_ARGUMENT, never a crash; detectable misuse
 * (double answer, use after close) gives a status.
 *
 * THREADS. The library runs its own threads (the runtime, started on first use; size it
 * with fastrpc_set_worker_threads before that; default: CPUs, at most 4). Every function
 * may be called from any thread unless its comment says otherwise. Callbacks (call
 * completions, handlers, the log hook) run on the library's threads, possibly several at
 * once: keep them short, never block in them, and never make a blocking fastrpc call or a
 * waiting poll from them (those return INVALID_ARGUMENT instead of deadlocking). Closing or
 * freeing a client from inside its own callback is allowed. Queues (completion and server)
 * need no callback at all: poll them from your threads, or wait for their file descriptor
 * (fastrpc_completion_queue_fd, fastrpc_server_queue_fd) in your own event loop.
 *
 * LOGGING. The library never writes to stdout or stderr; fastrpc_set_log_callback receives
 * its messages.
 *
 * FORK. The library's threads do not survive fork(). In a child forked after the library
 * started them, every function that needs them returns INVALID_ARGUMENT at once (it never
 * hangs), and objects created before the fork must not be used (free them or leave them).
 * Fork before the first fastrpc call, or exec in the child.
 *
 * SIGPIPE. A dead peer never raises SIGPIPE (sockets are written with MSG_NOSIGNAL); the
 * host need not ignore it.
 *
 * PROCESS EXIT. Returning from main or calling exit() with objects still open is allowed:
 * calls in flight are abandoned (their callbacks may or may not run before the process
 * ends), unsent data is lost and the OS closes the sockets. Callbacks may still be running on library threads while exit()
 * runs atexit handlers and static destructors, so free clients and servers first (freeing
 * waits for their callbacks) when callbacks touch global state. fastrpc_shutdown stops the
 * library's threads (for dlclose and leak checkers) once every client and server is freed.
 */

#ifndef FASTRPC_H
#define FASTRPC_H

/* Generated by cbindgen from src/ffi -- DO NOT EDIT. Regenerate: FASTRPC_BLESS=1 cargo test --test header */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** The version of this header; compare with fastrpc_version(). */
#define FASTRPC_VERSION "0.2.0"
#define FASTRPC_VERSION_MAJOR 0
#define FASTRPC_VERSION_MINOR 2
#define FASTRPC_VERSION_PATCH 0
/** MAJOR * 10000 + MINOR * 100 + PATCH; compare with fastrpc_version_number(). */
#define FASTRPC_VERSION_NUMBER ((FASTRPC_VERSION_MAJOR) * 10000 + (FASTRPC_VERSION_MINOR) * 100 + (FASTRPC_VERSION_PATCH))


/**
 * The outcome of a C API function. `FASTRPC_STATUS_OK` is 0; every other value is a
 * failure whose kind never changes meaning.
 */
enum fastrpc_status
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Success.
   */
  FASTRPC_STATUS_OK = 0,
  /**
   * A deadline passed: the call's (queued or sent), or a read, write or handshake timeout.
   */
  FASTRPC_STATUS_TIMEOUT = 1,
  /**
   * `max_pending_requests` calls already wait (or this queued call made room for a newer
   * one under `prioritize_new_requests`).
   */
  FASTRPC_STATUS_OVERFLOW = 2,
  /**
   * Connecting to the server failed: the dial failed, or the server hung up during the
   * handshake (as a server does on a wrong sniff header or version); or the client is
   * backing off after such a failure. A handshake that times out is TIMEOUT, one answered
   * wrongly is PROTOCOL, a failed TLS handshake is TLS.
   */
  FASTRPC_STATUS_CONNECT = 3,
  /**
   * The connection failed while the call was in flight.
   */
  FASTRPC_STATUS_CONNECTION = 4,
  /**
   * The client, server or queue was closed.
   */
  FASTRPC_STATUS_CLOSED = 5,
  /**
   * The peer broke the protocol.
   */
  FASTRPC_STATUS_PROTOCOL = 6,
  /**
   * TLS failed (certificates, verification, handshake, TLS refused or required). The
   * message names the problem in words: "the server's certificate has expired: ...", "is
   * not valid for the name ...", "is not signed by a trusted CA ...", "the server requires a
   * client certificate (mutual TLS) and none was sent", "the server requires TLS", ...
   */
  FASTRPC_STATUS_TLS = 7,
  /**
   * A name or value exceeds `max_frame_size`.
   */
  FASTRPC_STATUS_TOO_LARGE = 8,
  /**
   * An argument is NULL or invalid, or the call is not allowed here (for example a
   * blocking call from inside a library callback).
   */
  FASTRPC_STATUS_INVALID_ARGUMENT = 9,
  /**
   * Another I/O failure (for example: cannot listen on the address).
   */
  FASTRPC_STATUS_IO = 10,
  /**
   * The library caught an internal panic; the process keeps running. Please report it.
   */
  FASTRPC_STATUS_PANIC = 11,
  /**
   * The request was already answered: a second answer is refused.
   */
  FASTRPC_STATUS_ALREADY_ANSWERED = 12,
  /**
   * The text did not fit in the caller's buffer: it was cut (still NUL-terminated) and the
   * full length was written to `out_len`.
   */
  FASTRPC_STATUS_BUFFER_TOO_SMALL = 13,
  /**
   * The call was cancelled with `fastrpc_client_cancel` (the status its callback or
   * completion carries).
   */
  FASTRPC_STATUS_CANCELLED = 14,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum fastrpc_status fastrpc_status;
#else
typedef uint32_t fastrpc_status;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * How much a log message matters.
 */
enum fastrpc_log_level
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Something failed and was handled.
   */
  FASTRPC_LOG_ERROR = 1,
  /**
   * Something unusual.
   */
  FASTRPC_LOG_WARN = 2,
  /**
   * Connection events (for example a write to a peer that failed).
   */
  FASTRPC_LOG_INFO = 3,
  /**
   * Details.
   */
  FASTRPC_LOG_DEBUG = 4,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum fastrpc_log_level fastrpc_log_level;
#else
typedef uint32_t fastrpc_log_level;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Which TLS problem a failure with status TLS (or CONNECT/CONNECTION caused by TLS) was, so
 * a program can tell them apart without reading the message. The values are explicit and
 * never change meaning; new ones are only ever added.
 */
enum fastrpc_tls_detail
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Not a TLS failure, or no detail known.
   */
  FASTRPC_TLS_DETAIL_NONE = 0,
  /**
   * The peer's certificate is not signed by a trusted CA (also: self-signed).
   */
  FASTRPC_TLS_DETAIL_UNKNOWN_CA = 1,
  /**
   * The server's certificate is not valid for the name connected to.
   */
  FASTRPC_TLS_DETAIL_NAME_MISMATCH = 2,
  /**
   * The peer's certificate has expired.
   */
  FASTRPC_TLS_DETAIL_EXPIRED = 3,
  /**
   * The peer's certificate is not valid yet.
   */
  FASTRPC_TLS_DETAIL_NOT_YET_VALID = 4,
  /**
   * The peer's certificate is invalid in another way (purpose, signature, encoding).
   */
  FASTRPC_TLS_DETAIL_BAD_CERTIFICATE = 5,
  /**
   * A client certificate was required and none was presented.
   */
  FASTRPC_TLS_DETAIL_NO_CLIENT_CERTIFICATE = 6,
  /**
   * The peer refused our certificate (it sent a certificate alert).
   */
  FASTRPC_TLS_DETAIL_PEER_REJECTED_CERTIFICATE = 7,
  /**
   * The peer ended the handshake with another alert.
   */
  FASTRPC_TLS_DETAIL_HANDSHAKE_ALERT = 8,
  /**
   * Another TLS failure (a corrupt or forged record, a protocol violation).
   */
  FASTRPC_TLS_DETAIL_OTHER = 9,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum fastrpc_tls_detail fastrpc_tls_detail;
#else
typedef uint32_t fastrpc_tls_detail;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * Compression codes, as on the wire (note the odd numbering: 0 is the default).
 */
enum fastrpc_compression
#if defined(__cplusplus) || __STDC_VERSION__ >= 202311L
  : uint32_t
#endif // defined(__cplusplus) || __STDC_VERSION__ >= 202311L
 {
  /**
   * Raw DEFLATE, sync-flushed per batch (the default).
   */
  FASTRPC_COMPRESSION_FLATE = 0,
  /**
   * No compression.
   */
  FASTRPC_COMPRESSION_NONE = 1,
  /**
   * Snappy framing format.
   */
  FASTRPC_COMPRESSION_SNAPPY = 2,
};
#ifndef __cplusplus
#if __STDC_VERSION__ >= 202311L
typedef enum fastrpc_compression fastrpc_compression;
#else
typedef uint32_t fastrpc_compression;
#endif // __STDC_VERSION__ >= 202311L
#endif // __cplusplus

/**
 * A client over several servers: each call goes to the server with fewer calls in flight of
 * two picked at random; a server whose connect fails is skipped until its backoff passes (the
 * call is tried on another: it never reached the first); calls in flight on a server whose
 * connection fails end with CONNECTION and are not re-sent; when every server is down calls
 * fail at once with CONNECT naming them. Host names are resolved again every
 * `fastrpc_client_config_builder_set_resolve_interval_ms`. Every function may be called from
 * many threads at once. Created by `fastrpc_balanced_client_new`, freed by
 * `fastrpc_balanced_client_free`. Functions: `fastrpc_balanced_client_call`,
 * `fastrpc_balanced_client_call_async`, `fastrpc_balanced_client_call_queued`,
 * `fastrpc_balanced_client_call_async_id`, `fastrpc_balanced_client_call_queued_id`,
 * `fastrpc_balanced_client_cancel`, `fastrpc_balanced_client_send`, `fastrpc_balanced_client_pending_requests`,
 * `fastrpc_balanced_client_get_stats`, `fastrpc_balanced_client_server_count`,
 * `fastrpc_balanced_client_get_server_stats`, `fastrpc_balanced_client_close`.
 */
typedef struct fastrpc_balanced_client fastrpc_balanced_client;

/**
 * A client: many concurrent calls over one connection to one server, connected lazily on
 * the first call and reconnected after failures. Every function may be called from many
 * threads at once on one client. Created by `fastrpc_client_new`, freed by
 * `fastrpc_client_free`. Functions: `fastrpc_client_call`, `fastrpc_client_call_async`,
 * `fastrpc_client_call_queued`, `fastrpc_client_send`, `fastrpc_client_pending_requests`,
 * `fastrpc_client_get_stats`, `fastrpc_client_close`.
 */
typedef struct fastrpc_client fastrpc_client;

/**
 * Client options, filled by the `fastrpc_client_config_builder_set_*` functions (each
 * returns OK or INVALID_ARGUMENT, and the `_file` setters TLS when the file cannot be read;
 * each may be called from any thread, one at a time per
 * builder). Defaults are the reference's: flate compression, 1000 pending requests, no batch
 * delay, 64 KiB buffers, 1 MiB max frame size, 10 s request timeout, 3 s handshake timeout.
 * Created by `fastrpc_client_config_builder_new`, freed by
 * `fastrpc_client_config_builder_free`; `fastrpc_client_new` copies it, so it may be freed or
 * reused right after.
 */
typedef struct fastrpc_client_config_builder fastrpc_client_config_builder;

/**
 * A queue of finished calls. Created by `fastrpc_completion_queue_new`; calls are added with
 * `fastrpc_client_call_queued`; finished calls are taken in batches with
 * `fastrpc_completion_queue_poll`; `fastrpc_completion_queue_shutdown` wakes pollers;
 * `fastrpc_completion_queue_free` frees it. Any thread may use it, several at once.
 */
typedef struct fastrpc_completion_queue fastrpc_completion_queue;

/**
 * A request being served. Owned by whoever received it (the handler callback or the caller
 * of `fastrpc_server_queue_poll`), who answers it with `fastrpc_request_reply` (now or later,
 * from any thread) and frees it with `fastrpc_request_free`. Functions:
 * `fastrpc_request_name`, `fastrpc_request_value`, `fastrpc_request_id`,
 * `fastrpc_request_reply`, `fastrpc_request_free`.
 */
typedef struct fastrpc_request fastrpc_request;

/**
 * A call's outcome: the response value on success, else the status and message of the
 * failure. Created by `fastrpc_response_new` (for blocking calls, reusable) or handed to
 * you by a callback or completion queue (yours to free). Freed by `fastrpc_response_free`.
 * Functions: `fastrpc_response_data`, `fastrpc_response_len`, `fastrpc_response_status`,
 * `fastrpc_response_error_message`.
 */
typedef struct fastrpc_response fastrpc_response;

/**
 * A listening server. Created by `fastrpc_server_new` or `fastrpc_server_new_queued`;
 * `fastrpc_server_local_addr`, `fastrpc_server_get_stats`, `fastrpc_server_stop`;
 * freed by `fastrpc_server_free`.
 */
typedef struct fastrpc_server fastrpc_server;

/**
 * Server options, filled by the `fastrpc_server_config_builder_set_*` functions (each
 * returns OK or INVALID_ARGUMENT, and `tls_cert_files` TLS when a file cannot be read;
 * any thread, one at a time per builder). Defaults are the
 * reference's: flate compression, concurrency 10000, no batch delay, 64 KiB buffers, 1 MiB
 * max frame size, 3 s handshake timeout. Created by `fastrpc_server_config_builder_new`,
 * freed by `fastrpc_server_config_builder_free`; servers copy it.
 */
typedef struct fastrpc_server_config_builder fastrpc_server_config_builder;

/**
 * A queue of requests waiting to be served. Created by `fastrpc_server_queue_new`, fed by
 * servers made with `fastrpc_server_new_queued`, drained by `fastrpc_server_queue_poll`;
 * `fastrpc_server_queue_shutdown` wakes pollers; freed by `fastrpc_server_queue_free`. Any
 * thread, several at once.
 */
typedef struct fastrpc_server_queue fastrpc_server_queue;

/**
 * Called once when a call made with `fastrpc_client_call_async` finishes.
 *
 * - `userdata`: what was given with the call.
 * - `status`: OK or why the call failed.
 * - `response`: the outcome (value, or error message); owned by the callback, which must
 *   free it with `fastrpc_response_free` now or later, from any thread.
 *
 * Rules: it runs on a library thread, possibly concurrently with other callbacks; keep it
 * short (it delays other responses of the connection); it must not block, and must not make
 * a blocking call (`fastrpc_client_call`, `fastrpc_completion_queue_poll`,
 * `fastrpc_server_queue_poll`): such a call returns INVALID_ARGUMENT there. It may start new
 * async or queued calls, and may close or free the client. It must not throw or longjmp.
 */
typedef void (*fastrpc_call_callback)(void *userdata,
                                      fastrpc_status status,
                                      struct fastrpc_response *response);

/**
 * Failures counted by kind.
 */
typedef struct fastrpc_error_counts {
  uint64_t timeout;
  uint64_t overflow;
  uint64_t connect;
  uint64_t connection;
  uint64_t closed;
  uint64_t protocol;
  uint64_t tls;
  uint64_t too_large;
  uint64_t invalid_argument;
  uint64_t io;
} fastrpc_error_counts;

/**
 * Bytes before and after compression in each direction, flushes and frames.
 */
typedef struct fastrpc_io_stats {
  /**
   * Frame bytes sent, before compression.
   */
  uint64_t bytes_sent_plain;
  /**
   * Bytes written to the socket after compression.
   */
  uint64_t bytes_sent_wire;
  /**
   * Frame bytes received, after decompression.
   */
  uint64_t bytes_received_plain;
  /**
   * Bytes read from the socket before decompression.
   */
  uint64_t bytes_received_wire;
  /**
   * Batches written, one flush each.
   */
  uint64_t flushes;
  /**
   * Frames sent (frames_sent / flushes = frames per flush).
   */
  uint64_t frames_sent;
  /**
   * Frames received.
   */
  uint64_t frames_received;
} fastrpc_io_stats;

/**
 * A client's counters, from `fastrpc_client_get_stats`. Set `struct_size` to
 * `sizeof(fastrpc_client_stats)` before the call: later versions append fields, and the
 * library fills only what both it and the caller's header know.
 */
typedef struct fastrpc_client_stats {
  /**
   * Set by the caller to `sizeof(fastrpc_client_stats)`; on return, the bytes written.
   */
  size_t struct_size;
  /**
   * Calls accepted (not counting fire-and-forget sends).
   */
  uint64_t calls;
  /**
   * Calls that got their response.
   */
  uint64_t responses;
  /**
   * Fire-and-forget sends accepted.
   */
  uint64_t sends;
  /**
   * Responses for no waiting call (late, duplicate, unknown id), dropped.
   */
  uint64_t unexpected_responses;
  /**
   * Connections established.
   */
  uint64_t connects;
  /**
   * Connections established after the first.
   */
  uint64_t reconnects;
  /**
   * Connect attempts that failed.
   */
  uint64_t connect_failures;
  /**
   * Calls waiting now.
   */
  uint64_t pending_requests;
  /**
   * Failed calls by kind.
   */
  struct fastrpc_error_counts errors;
  /**
   * Traffic.
   */
  struct fastrpc_io_stats io;
  /**
   * Calls cancelled with `fastrpc_client_cancel` (since 0.2; not in `errors`, whose
   * layout is fixed).
   */
  uint64_t cancelled;
  /**
   * Batches a lone call wrote on the calling thread (a call started with no
   * other call of its client waiting writes its own request instead of waking the
   * library's writer).
   */
  uint64_t lone_writes;
} fastrpc_client_stats;

/**
 * One server's share of a balanced client, from `fastrpc_balanced_client_get_server_stats`.
 */
typedef struct fastrpc_balanced_server_stats {
  /**
   * Set by the caller to `sizeof(fastrpc_balanced_server_stats)`; on return, the bytes
   * written (see `fastrpc_client_stats`).
   */
  size_t struct_size;
  /**
   * 1 when new calls go to it; 0 when every connection to it failed to connect and is
   * skipped until its backoff passes.
   */
  uint8_t up;
  /**
   * Its connections.
   */
  uint32_t connections;
  /**
   * Its connections' counters, summed.
   */
  struct fastrpc_client_stats stats;
} fastrpc_balanced_server_stats;

/**
 * One finished call, as `fastrpc_completion_queue_poll` hands it out.
 */
typedef struct fastrpc_completion {
  /**
   * The tag given to `fastrpc_client_call_queued`.
   */
  uint64_t tag;
  /**
   * OK, or why the call failed (the same as `fastrpc_response_status(response)`).
   */
  fastrpc_status status;
  /**
   * The outcome; owned by the caller of poll, who frees it with `fastrpc_response_free`.
   */
  struct fastrpc_response *response;
} fastrpc_completion;

/**
 * Receives a log message: `message` is `len` bytes of UTF-8 (not NUL-terminated), valid
 * during the call. It may run on any library thread, concurrently; keep it short, do not
 * call back into fastrpc from it, do not throw.
 */
typedef void (*fastrpc_log_callback)(void *userdata,
                                     fastrpc_log_level level,
                                     const char *message,
                                     size_t len);

/**
 * Handles one request. `request` is owned by the handler: answer it with
 * `fastrpc_request_reply` (now, or later from any thread) and free it with
 * `fastrpc_request_free` (freeing it unanswered sends the error reply).
 *
 * Rules: it runs on a library thread, inline on the connection's reader, possibly
 * concurrently for other connections: keep it short, or hand the request to another thread
 * and answer from there. It must not block on this server (no `fastrpc_server_stop`), must
 * not make blocking fastrpc calls (they return INVALID_ARGUMENT there), must not throw or
 * longjmp.
 */
typedef void (*fastrpc_handler)(void *userdata,
                                struct fastrpc_request *request);

/**
 * A server's counters, from `fastrpc_server_get_stats`. Set `struct_size` to
 * `sizeof(fastrpc_server_stats)` before the call: later versions append fields, and the
 * library fills only what both it and the caller's header know.
 */
typedef struct fastrpc_server_stats {
  /**
   * Set by the caller to `sizeof(fastrpc_server_stats)`; on return, the bytes written.
   */
  size_t struct_size;
  /**
   * Requests that want a response.
   */
  uint64_t requests;
  /**
   * Fire-and-forget requests.
   */
  uint64_t nowait_requests;
  /**
   * Responses queued for sending.
   */
  uint64_t responses;
  /**
   * Requests answered with the concurrency-limit reply.
   */
  uint64_t concurrency_limit_replies;
  /**
   * Handlers that panicked (Rust handlers only).
   */
  uint64_t handler_panics;
  /**
   * Requests freed unanswered (each got the error reply).
   */
  uint64_t unanswered;
  /**
   * Handlers running now.
   */
  uint64_t running;
  /**
   * Connections accepted.
   */
  uint64_t connections_accepted;
  /**
   * Connections open now.
   */
  uint64_t connections_open;
  /**
   * Connections that failed their handshake.
   */
  uint64_t handshake_failures;
  /**
   * Connection failures by kind.
   */
  struct fastrpc_error_counts errors;
  /**
   * Traffic.
   */
  struct fastrpc_io_stats io;
  /**
   * Batches a lone reply wrote on the replying thread (a reply made on a
   * host thread with nothing else outstanding on its connection writes itself instead of
   * waking the library's writer).
   */
  uint64_t lone_writes;
} fastrpc_server_stats;



#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Creates a balanced client from `builder` (copied; it may be freed after): the servers are
 * those added with `fastrpc_client_config_builder_add_addr` plus the one of
 * `fastrpc_client_config_builder_set_addr` if set; every other option applies to each
 * connection. Host names are resolved here (this may block on DNS). Nothing connects until
 * the first call. `*out` receives a new client the caller owns (free with
 * `fastrpc_balanced_client_free`). Any thread.
 *
 * Returns OK, INVALID_ARGUMENT (NULL arguments, no server, bad options), CONNECT (a host
 * name does not resolve) or TLS; details in `fastrpc_last_error_message`.
 */
fastrpc_status fastrpc_balanced_client_new(const struct fastrpc_client_config_builder *builder,
                                           struct fastrpc_balanced_client **out);

/**
 * As `fastrpc_client_call`, on the chosen server.
 *
 * Returns OK, TIMEOUT, OVERFLOW, CONNECT, CONNECTION, CLOSED, PROTOCOL, TLS, TOO_LARGE or
 * INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_balanced_client_call(const struct fastrpc_balanced_client *client,
                                            const uint8_t *name,
                                            size_t name_len,
                                            const uint8_t *value,
                                            size_t value_len,
                                            uint32_t timeout_ms,
                                            struct fastrpc_response *response);

/**
 * As `fastrpc_client_call_async`, on the chosen server (see `fastrpc_call_callback` for the
 * callback's rules).
 *
 * Returns OK (the callback will run exactly once), or OVERFLOW, CONNECT, CLOSED, TOO_LARGE,
 * INVALID_ARGUMENT — then the callback never runs.
 */
fastrpc_status fastrpc_balanced_client_call_async(const struct fastrpc_balanced_client *client,
                                                  const uint8_t *name,
                                                  size_t name_len,
                                                  const uint8_t *value,
                                                  size_t value_len,
                                                  uint32_t timeout_ms,
                                                  fastrpc_call_callback callback,
                                                  void *userdata);

/**
 * `fastrpc_balanced_client_call_async` that also writes the call's id to `*call_id` (on OK
 * only; `call_id` may be NULL), for `fastrpc_balanced_client_cancel`. The id is never 0 and
 * follows the call when a failed connect moves it to another server. Any thread, including
 * inside callbacks (the callback may even run before this returns: the id is still
 * written).
 *
 * Returns as `fastrpc_balanced_client_call_async`.
 */
fastrpc_status fastrpc_balanced_client_call_async_id(const struct fastrpc_balanced_client *client,
                                                     const uint8_t *name,
                                                     size_t name_len,
                                                     const uint8_t *value,
                                                     size_t value_len,
                                                     uint32_t timeout_ms,
                                                     fastrpc_call_callback callback,
                                                     void *userdata,
                                                     uint64_t *call_id);

/**
 * As `fastrpc_client_call_queued`, on the chosen server.
 *
 * Returns OK (exactly one completion will arrive), or OVERFLOW, CONNECT, CLOSED, TOO_LARGE,
 * INVALID_ARGUMENT — then none will.
 */
fastrpc_status fastrpc_balanced_client_call_queued(const struct fastrpc_balanced_client *client,
                                                   const uint8_t *name,
                                                   size_t name_len,
                                                   const uint8_t *value,
                                                   size_t value_len,
                                                   uint32_t timeout_ms,
                                                   const struct fastrpc_completion_queue *queue,
                                                   uint64_t tag);

/**
 * `fastrpc_balanced_client_call_queued` that also writes the call's id to `*call_id` (on OK
 * only; `call_id` may be NULL), for `fastrpc_balanced_client_cancel`. The id is never 0 and
 * follows the call when a failed connect moves it to another server. Any thread.
 *
 * Returns as `fastrpc_balanced_client_call_queued`.
 */
fastrpc_status fastrpc_balanced_client_call_queued_id(const struct fastrpc_balanced_client *client,
                                                      const uint8_t *name,
                                                      size_t name_len,
                                                      const uint8_t *value,
                                                      size_t value_len,
                                                      uint32_t timeout_ms,
                                                      const struct fastrpc_completion_queue *queue,
                                                      uint64_t tag,
                                                      uint64_t *call_id);

/**
 * Cancels the call `call_id` (from `fastrpc_balanced_client_call_async_id` or
 * `fastrpc_balanced_client_call_queued_id`) if it still waits, queued, sent, or between two
 * servers after a failed connect: it completes at once with status CANCELLED, exactly once,
 * through its callback (on a library thread, soon after this returns, possibly before) or
 * its completion queue; its pending slot on its server is free at once; a request not yet
 * written is never sent; a response that still arrives is dropped. Racing the response, the
 * deadline or a close, exactly one outcome reaches the callback or queue: OK from here means
 * it is CANCELLED. Any thread, including inside callbacks.
 *
 * Returns OK (the call was cancelled), CLOSED (no such call is waiting: it already
 * completed or was cancelled, or the id is none of this client's calls; nothing happened)
 * or INVALID_ARGUMENT (NULL `client`).
 */
fastrpc_status fastrpc_balanced_client_cancel(const struct fastrpc_balanced_client *client,
                                              uint64_t call_id);

/**
 * As `fastrpc_client_send`, on the chosen server.
 *
 * Returns OK, OVERFLOW, CONNECT, CLOSED, TOO_LARGE or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_balanced_client_send(const struct fastrpc_balanced_client *client,
                                            const uint8_t *name,
                                            size_t name_len,
                                            const uint8_t *value,
                                            size_t value_len);

/**
 * Calls waiting for their response now, on every server (0 when `client` is NULL).
 */
size_t fastrpc_balanced_client_pending_requests(const struct fastrpc_balanced_client *client);

/**
 * Writes the counters of every connection, summed, into `*out` (set `out->struct_size`
 * first, as for `fastrpc_client_get_stats`). Any thread. Returns OK or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_balanced_client_get_stats(const struct fastrpc_balanced_client *client,
                                                 struct fastrpc_client_stats *out);

/**
 * How many servers the current (last resolved) set has (0 when `client` is NULL).
 */
size_t fastrpc_balanced_client_server_count(const struct fastrpc_balanced_client *client);

/**
 * Writes the counters of server `index` (0 <= index < `fastrpc_balanced_client_server_count`)
 * into `*out` and its address, NUL-terminated, into `(addr_buf, addr_buf_len)`
 * (`*addr_len`, when not NULL, receives the address's length). `(NULL, 0)` skips the address.
 * The set may change between calls (re-resolution). Any thread.
 *
 * Returns OK; BUFFER_TOO_SMALL when the address was cut (`*out` is written); or
 * INVALID_ARGUMENT (NULL arguments, index out of range).
 */
fastrpc_status fastrpc_balanced_client_get_server_stats(const struct fastrpc_balanced_client *client,
                                                        size_t index,
                                                        struct fastrpc_balanced_server_stats *out,
                                                        char *addr_buf,
                                                        size_t addr_buf_len,
                                                        size_t *addr_len);

/**
 * As `fastrpc_client_close`: new calls fail with CLOSED; with `drain_timeout_ms` > 0 waiting
 * calls get up to that long to finish, then fail with CLOSED; with 0 (or inside a library
 * callback) they fail at once. Closing twice is fine. Any thread. Returns OK or
 * INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_balanced_client_close(const struct fastrpc_balanced_client *client,
                                             uint32_t drain_timeout_ms);

/**
 * As `fastrpc_client_free`: closes (failing waiting calls with CLOSED at once) and frees;
 * NULL is allowed; it returns after every callback of this client has returned.
 */
void fastrpc_balanced_client_free(struct fastrpc_balanced_client *client);

/**
 * Creates a client from the options in `builder` (copied; the builder may be freed after).
 * Nothing connects until the first call. `*out` receives a new client the caller owns (free
 * with `fastrpc_client_free`). Any thread.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL arguments, no or a bad address, bad options), or
 * TLS (unusable certificates); details in `fastrpc_last_error_message`.
 */
fastrpc_status fastrpc_client_new(const struct fastrpc_client_config_builder *builder,
                                  struct fastrpc_client **out);

/**
 * Calls `name` with `value` and waits for the outcome, at most `timeout_ms` (0: the
 * configured request timeout). The outcome goes into `response` (from
 * `fastrpc_response_new`, owned by the caller, reused across calls: a warm caller allocates
 * nothing per call): on OK its data is the response value; otherwise it holds the status and
 * the error message. Name and value are only read during the call. Any thread except the
 * library's own (inside a callback it returns INVALID_ARGUMENT).
 *
 * Returns OK, TIMEOUT, OVERFLOW, CONNECT, CONNECTION, CLOSED, PROTOCOL, TLS, TOO_LARGE or
 * INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_client_call(const struct fastrpc_client *client,
                                   const uint8_t *name,
                                   size_t name_len,
                                   const uint8_t *value,
                                   size_t value_len,
                                   uint32_t timeout_ms,
                                   struct fastrpc_response *response);

/**
 * Starts a call and returns at once; when it finishes, `callback(userdata, status,
 * response)` runs once on a library thread (see `fastrpc_call_callback` for its rules).
 * `timeout_ms` 0 means the configured request timeout. Name and value are copied before this
 * returns. Any thread, including inside callbacks.
 *
 * Returns OK (the callback will run exactly once), or OVERFLOW, CONNECT, CLOSED, TOO_LARGE,
 * INVALID_ARGUMENT (NULL callback) — then the callback never runs.
 */
fastrpc_status fastrpc_client_call_async(const struct fastrpc_client *client,
                                         const uint8_t *name,
                                         size_t name_len,
                                         const uint8_t *value,
                                         size_t value_len,
                                         uint32_t timeout_ms,
                                         fastrpc_call_callback callback,
                                         void *userdata);

/**
 * `fastrpc_client_call_async` that also writes the call's id to `*call_id` (on OK only;
 * `call_id` may be NULL), for `fastrpc_client_cancel`. The id is never 0. Any thread,
 * including inside callbacks (the callback may even run before this returns: the id is
 * still written).
 *
 * Returns as `fastrpc_client_call_async`.
 */
fastrpc_status fastrpc_client_call_async_id(const struct fastrpc_client *client,
                                            const uint8_t *name,
                                            size_t name_len,
                                            const uint8_t *value,
                                            size_t value_len,
                                            uint32_t timeout_ms,
                                            fastrpc_call_callback callback,
                                            void *userdata,
                                            uint64_t *call_id);

/**
 * Starts a call and returns at once without blocking; when it finishes, a completion with
 * `tag` goes into `queue`, to be taken by `fastrpc_completion_queue_poll`. `timeout_ms` 0
 * means the configured request timeout. Name and value are copied before this returns. Any
 * thread, including inside callbacks.
 *
 * Returns OK (exactly one completion will arrive), or OVERFLOW, CONNECT, CLOSED (the client
 * was closed, or the queue was shut down), TOO_LARGE, INVALID_ARGUMENT — then none will.
 */
fastrpc_status fastrpc_client_call_queued(const struct fastrpc_client *client,
                                          const uint8_t *name,
                                          size_t name_len,
                                          const uint8_t *value,
                                          size_t value_len,
                                          uint32_t timeout_ms,
                                          const struct fastrpc_completion_queue *queue,
                                          uint64_t tag);

/**
 * `fastrpc_client_call_queued` that also writes the call's id to `*call_id` (on OK only;
 * `call_id` may be NULL), for `fastrpc_client_cancel`. The id is never 0. Any thread.
 *
 * Returns as `fastrpc_client_call_queued`.
 */
fastrpc_status fastrpc_client_call_queued_id(const struct fastrpc_client *client,
                                             const uint8_t *name,
                                             size_t name_len,
                                             const uint8_t *value,
                                             size_t value_len,
                                             uint32_t timeout_ms,
                                             const struct fastrpc_completion_queue *queue,
                                             uint64_t tag,
                                             uint64_t *call_id);

/**
 * `fastrpc_client_call_queued_id` that leaves the request queued without waking the
 * connection's writer: it is written by a later `fastrpc_client_flush` on this client (or
 * with the next request of a call made without deferring). For a caller that knows more
 * calls follow at once, from several threads: each defers, the last flushes, and they share
 * one write made on that thread, with no wakeup of a library thread. A request that is never
 * flushed still completes at its deadline (TIMEOUT). Any thread.
 *
 * Returns as `fastrpc_client_call_queued`.
 */
fastrpc_status fastrpc_client_call_queued_deferred(const struct fastrpc_client *client,
                                                   const uint8_t *name,
                                                   size_t name_len,
                                                   const uint8_t *value,
                                                   size_t value_len,
                                                   uint32_t timeout_ms,
                                                   const struct fastrpc_completion_queue *queue,
                                                   uint64_t tag,
                                                   uint64_t *call_id);

/**
 * Writes the requests queued on `client` now (see `fastrpc_client_call_queued_deferred`):
 * on the calling thread when the connection's writer is idle (one non-blocking write; what
 * the socket does not take at once a library thread finishes), else by waking the writer.
 * Does nothing when nothing is queued, or before the connection is up (its first write
 * takes them). Any thread, including inside callbacks.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `client`).
 */
fastrpc_status fastrpc_client_flush(const struct fastrpc_client *client);

/**
 * Cancels the call `call_id` (from `fastrpc_client_call_async_id` or
 * `fastrpc_client_call_queued_id`) if it still waits, queued or sent: it completes at once
 * with status CANCELLED, exactly once, through its callback (on a library thread, soon after
 * this returns, possibly before) or its completion queue; its pending slot is free at once;
 * a request not yet written is never sent; a response that still arrives is dropped and
 * counted in `unexpected_responses`. Racing the response, the deadline or a close, exactly
 * one outcome reaches the callback or queue: OK from here means it is CANCELLED. Ids are
 * unique among a client's calls until they wrap after 2^32 - 1 calls. Any thread, including
 * inside callbacks.
 *
 * Returns OK (the call was cancelled), CLOSED (no such call is waiting: it already
 * completed, or the id is none of this client's calls; nothing happened) or
 * INVALID_ARGUMENT (NULL `client`).
 */
fastrpc_status fastrpc_client_cancel(const struct fastrpc_client *client,
                                     uint64_t call_id);

/**
 * Sends a request that wants no response (request id 0) and returns at once. OK means it
 * was queued; it goes out with the next batch unless the connection fails first. Any thread.
 *
 * Returns OK, OVERFLOW, CONNECT, CLOSED, TOO_LARGE or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_client_send(const struct fastrpc_client *client,
                                   const uint8_t *name,
                                   size_t name_len,
                                   const uint8_t *value,
                                   size_t value_len);

/**
 * Writes into `*fd` a descriptor that is readable while `client`'s connection has bytes
 * to read, for a caller that waits for its responses on its own thread (poll, epoll, libuv,
 * Go's netpoller) and then calls `fastrpc_client_read_now`, which reads and completes them
 * on that thread: one thread wakeup between a response and its caller instead of two (a
 * library thread's, then the completion queue's descriptor's). It is an epoll instance
 * (non-blocking, close-on-exec) watching the socket of each connection in turn, level-triggered; it is
 * owned by the client (never close it) and stays valid until `fastrpc_client_free`; every
 * call returns the same one. Add the completion queue's descriptor
 * (`fastrpc_completion_queue_fd`) to it with `epoll_ctl` so that one wait covers both: the
 * library's own reader still reads whatever no caller does, and completes it into the
 * queue. Not connected yet: nothing to watch until the first call connects.
 *
 * Returns OK, INVALID_ARGUMENT (NULL `client` or `fd`), or IO when the descriptor cannot be
 * created. Any thread.
 */
fastrpc_status fastrpc_client_read_fd(const struct fastrpc_client *client,
                                      int *fd);

/**
 * Reads and completes, on the calling thread, the responses that have arrived on
 * `client`'s connection (one non-blocking pass, a few socket reads at most), unless a
 * library thread is reading them now or no connection is up. Each call it completes
 * completes as usual: into its completion queue, or its callback runs on this thread
 * before this returns. Returns how many it completed (0 when `client` is NULL). Never
 * blocks; calling it when nothing has arrived costs one failed `recv`. Any thread,
 * including inside callbacks.
 */
size_t fastrpc_client_read_now(const struct fastrpc_client *client);

/**
 * Calls waiting for their response now (0 when `client` is NULL). Any thread.
 */
size_t fastrpc_client_pending_requests(const struct fastrpc_client *client);

/**
 * Writes a snapshot of the client's counters into `*out`, whose `struct_size` the caller
 * set (see `fastrpc_client_stats`). Any thread. Returns OK or INVALID_ARGUMENT (NULL
 * `client` or `out`, `out->struct_size` not set).
 */
fastrpc_status fastrpc_client_get_stats(const struct fastrpc_client *client,
                                        struct fastrpc_client_stats *out);

/**
 * Closes the client: new calls fail with CLOSED. With `drain_timeout_ms` > 0 it waits up
 * to that long for waiting calls to finish, then fails the rest with CLOSED; with 0 it fails
 * them at once. Every outstanding call completes (callbacks run, completions are queued)
 * before or soon after this returns; it never hangs. Inside a library callback it does not
 * wait (as with 0). Closing twice is fine. Any thread.
 *
 * Returns OK or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_client_close(const struct fastrpc_client *client,
                                    uint32_t drain_timeout_ms);

/**
 * Closes the client (failing waiting calls with CLOSED at once) and frees it. NULL is
 * allowed. The pointer is invalid afterwards. Any thread, including inside this client's
 * own callbacks; no other thread may be using the handle at the same time.
 *
 * It returns only after every callback of this client has run and returned (the CLOSED
 * callbacks of the calls it cancels included), so the callbacks' userdata may be freed
 * right after it. Called from inside one of this client's own callbacks, it waits for all
 * the others, and the calling callback is the last of the client to run. Completions of
 * queued calls go to their queue as usual (CLOSED), possibly after this returns.
 */
void fastrpc_client_free(struct fastrpc_client *client);

/**
 * Creates a builder with the default options. `*out` receives a new builder the caller owns
 * (free with `fastrpc_client_config_builder_free`). Returns OK or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_client_config_builder_new(struct fastrpc_client_config_builder **out);

/**
 * Frees a builder (NULL is allowed and does nothing).
 */
void fastrpc_client_config_builder_free(struct fastrpc_client_config_builder *builder);

/**
 * The server address: `host:port` or `unix:/path` (NUL-terminated UTF-8). Required.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, NULL or non-UTF-8 `addr`).
 */
fastrpc_status fastrpc_client_config_builder_set_addr(struct fastrpc_client_config_builder *builder,
                                                      const char *addr);

/**
 * Adds a server for `fastrpc_balanced_client_new`: `ip:port`, `unix:/path`, or `host:port`
 * for every address the host name resolves to (NUL-terminated UTF-8). May be called many
 * times; an address given with `fastrpc_client_config_builder_set_addr` is one of them too.
 * `fastrpc_client_new` ignores this list. Returns OK or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_client_config_builder_add_addr(struct fastrpc_client_config_builder *builder,
                                                      const char *addr);

/**
 * Connections per server of a balanced client, 1..=1024 (1 by default). Returns OK or
 * INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_client_config_builder_set_connections_per_server(struct fastrpc_client_config_builder *builder,
                                                                        uint32_t n);

/**
 * How often a balanced client resolves its host names again, in milliseconds (30000 by
 * default; 0: never after the first time). Returns OK or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_client_config_builder_set_resolve_interval_ms(struct fastrpc_client_config_builder *builder,
                                                                     uint32_t interval_ms);

/**
 * The sniff header written first on each connection (`(NULL, 0)`: none).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).
 */
fastrpc_status fastrpc_client_config_builder_set_sniff_header(struct fastrpc_client_config_builder *builder,
                                                              const uint8_t *data,
                                                              size_t len);

/**
 * The protocol version byte (0 by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_client_config_builder_set_protocol_version(struct fastrpc_client_config_builder *builder,
                                                                  uint8_t version);

/**
 * Compression of requests: a `fastrpc_compression` value; anything else is INVALID_ARGUMENT.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, not a `fastrpc_compression` value).
 */
fastrpc_status fastrpc_client_config_builder_set_compression(struct fastrpc_client_config_builder *builder,
                                                             fastrpc_compression compression);

/**
 * DEFLATE level 0-9 (6 by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `level` above 9).
 */
fastrpc_status fastrpc_client_config_builder_set_flate_level(struct fastrpc_client_config_builder *builder,
                                                             uint32_t level);

/**
 * Calls that may wait at once (1000 by default); must be at least 1.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0; above 16777216 is refused by `fastrpc_client_new`).
 */
fastrpc_status fastrpc_client_config_builder_set_max_pending_requests(struct fastrpc_client_config_builder *builder,
                                                                      size_t n);

/**
 * Bytes of requests that may wait for the writer (32 MiB by default); a call or send that
 * would pass it fails at once with OVERFLOW (a request alone in the queue is always taken).
 * With a server that stops reading, the client holds at most this plus the batch being
 * written.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
 */
fastrpc_status fastrpc_client_config_builder_set_max_queued_bytes(struct fastrpc_client_config_builder *builder,
                                                                  size_t n);

/**
 * At the pending limit, fail the oldest queued call instead of the new one.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_client_config_builder_set_prioritize_new_requests(struct fastrpc_client_config_builder *builder,
                                                                         bool on);

/**
 * Longest wait, in microseconds, for more requests to share a write (0 by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_client_config_builder_set_max_batch_delay_us(struct fastrpc_client_config_builder *builder,
                                                                    uint32_t us);

/**
 * Low-latency option (50 by default; 0 turns it off): while a lone call waits (one call in
 * flight), the connection's reader keeps its task runnable for up to `us` microseconds
 * waiting for its response instead of letting its worker thread park (waking a parked,
 * halted CPU of a VM takes tens of µs). It spends CPU only while a lone call waits, none
 * when idle or with more calls in flight. At most 10000 (10 ms).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `us` above 10000).
 */
fastrpc_status fastrpc_client_config_builder_set_read_spin_us(struct fastrpc_client_config_builder *builder,
                                                              uint32_t us);

/**
 * Whether the program reads the connection itself (false, the default: the library does).
 * With true, while calls are in flight no library thread waits for the socket's bytes: the program
 * waits on `fastrpc_client_read_fd` and calls `fastrpc_client_read_now` whenever it is
 * readable, for as long as any of its calls is in flight (a call no one reads for completes
 * at its deadline). Before a call goes out on a connection with none in flight, the library
 * reads what arrived meanwhile itself, so a connection the server closed while idle is
 * replaced before the call is written; it also watches for the server's close alone (not
 * for each arrival) and closes its side then, so an idle client does not keep a server's
 * graceful stop waiting. Saves a library thread's wakeup per arrival for
 * programs whose own thread waits on the socket (the Go binding). A balanced client
 * refuses it (INVALID_ARGUMENT from `fastrpc_balanced_client_new`).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_client_config_builder_set_caller_reads(struct fastrpc_client_config_builder *builder,
                                                              bool on);

/**
 * Deadline of calls made with timeout 0 (10000 by default); must be more than 0.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `ms` 0).
 */
fastrpc_status fastrpc_client_config_builder_set_request_timeout_ms(struct fastrpc_client_config_builder *builder,
                                                                    uint32_t ms);

/**
 * Longest time to read one whole response frame; also the idle lifetime (0: none).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_client_config_builder_set_read_timeout_ms(struct fastrpc_client_config_builder *builder,
                                                                 uint32_t ms);

/**
 * Longest time to write one batch (0: none).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_client_config_builder_set_write_timeout_ms(struct fastrpc_client_config_builder *builder,
                                                                  uint32_t ms);

/**
 * Socket read buffer size in bytes (64 KiB by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
 */
fastrpc_status fastrpc_client_config_builder_set_read_buffer_size(struct fastrpc_client_config_builder *builder,
                                                                  size_t n);

/**
 * Write buffer size in bytes (64 KiB by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
 */
fastrpc_status fastrpc_client_config_builder_set_write_buffer_size(struct fastrpc_client_config_builder *builder,
                                                                   size_t n);

/**
 * Largest name or value in bytes, both directions (1 MiB by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0 or above 4294967295).
 */
fastrpc_status fastrpc_client_config_builder_set_max_frame_size(struct fastrpc_client_config_builder *builder,
                                                                size_t n);

/**
 * Bound on the connection handshake, TLS included (3000 by default); more than 0.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `ms` 0).
 */
fastrpc_status fastrpc_client_config_builder_set_handshake_timeout_ms(struct fastrpc_client_config_builder *builder,
                                                                      uint32_t ms);

/**
 * Wait between connect attempts: starts at `min_ms`, doubles with jitter up to `max_ms` (20 and 1000 by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `min_ms` above `max_ms`).
 */
fastrpc_status fastrpc_client_config_builder_set_reconnect_backoff_ms(struct fastrpc_client_config_builder *builder,
                                                                      uint32_t min_ms,
                                                                      uint32_t max_ms);

/**
 * Turns TLS on, trusting the CA certificates in `pem` (PEM bytes) to verify the server.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).; PEM that does not parse is TLS from `fastrpc_client_new`
 */
fastrpc_status fastrpc_client_config_builder_set_tls_ca_pem(struct fastrpc_client_config_builder *builder,
                                                            const uint8_t *pem,
                                                            size_t len);

/**
 * Turns TLS on, trusting the CA certificates in the PEM file at `path`.
 *
 * Returns OK, INVALID_ARGUMENT (NULL `builder`, NULL or non-UTF-8 `path`), or TLS (the file cannot be read).
 */
fastrpc_status fastrpc_client_config_builder_set_tls_ca_file(struct fastrpc_client_config_builder *builder,
                                                             const char *path);

/**
 * The name the server's certificate must carry (default: the host of the address).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, NULL or non-UTF-8 `name`).
 */
fastrpc_status fastrpc_client_config_builder_set_tls_server_name(struct fastrpc_client_config_builder *builder,
                                                                 const char *name);

/**
 * Mutual TLS: the client's certificate chain and private key (PEM bytes).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).; PEM that does not parse is TLS from `fastrpc_client_new`
 */
fastrpc_status fastrpc_client_config_builder_set_tls_client_cert_pem(struct fastrpc_client_config_builder *builder,
                                                                     const uint8_t *cert,
                                                                     size_t cert_len,
                                                                     const uint8_t *key,
                                                                     size_t key_len);

/**
 * DANGEROUS, for tests and development only: turns TLS on and accepts any server certificate, so the connection is encrypted but the server is not authenticated.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_client_config_builder_set_tls_insecure_skip_verify_for_testing_only(struct fastrpc_client_config_builder *builder,
                                                                                           bool on);

/**
 * Mutual TLS: the client's certificate chain and private key from PEM files (NUL-terminated
 * paths). Returns OK, INVALID_ARGUMENT, or TLS when a file cannot be read.
 */
fastrpc_status fastrpc_client_config_builder_set_tls_client_cert_files(struct fastrpc_client_config_builder *builder,
                                                                       const char *cert_path,
                                                                       const char *key_path);

/**
 * Creates a completion queue. `*out` receives a new queue the caller owns (free with
 * `fastrpc_completion_queue_free`). Any thread. Returns OK or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_completion_queue_new(struct fastrpc_completion_queue **out);

/**
 * Waits up to `timeout_ms` (0: do not wait) for finished calls and writes up to `max` of
 * them into `out[0..max]`; `*n` receives how many (0 when the wait timed out). Each
 * completion's `response` is then owned by the caller. Any thread, several at once (each
 * completion goes to exactly one poller). Never call it from inside a library callback.
 *
 * Returns OK (also with `*n` 0 on timeout), CLOSED when the queue was shut down and is
 * empty, or INVALID_ARGUMENT (NULL `queue`, `out` or `n`, or `max` 0).
 */
fastrpc_status fastrpc_completion_queue_poll(const struct fastrpc_completion_queue *queue,
                                             struct fastrpc_completion *out,
                                             size_t max,
                                             uint32_t timeout_ms,
                                             size_t *n);

/**
 * `fastrpc_client_read_now(reader)` then `fastrpc_completion_queue_poll(queue, out, max, 0,
 * n)` in one call, for a program that waits on the client's read descriptor with the
 * queue's descriptor added to it (`fastrpc_client_read_fd`) and takes its completions on
 * the same thread: the completions this call reads go into the queue without making the
 * queue's descriptor readable, since this call takes them itself. The descriptor keeps its
 * meaning outside the call: when it returns, the descriptor is readable if completions are
 * left in the queue (more than `max`, or completed meanwhile by another thread; those also
 * wake a blocking poller at once, as always) or the queue was shut down.
 *
 * `*read` receives how many calls the read completed (into any queue, or their callbacks);
 * `*n` how many completions were taken, each then owned by the caller. `reader` NULL only
 * polls. Never blocks. Not from inside a library callback.
 *
 * Returns OK, CLOSED when the queue was shut down and is empty, or INVALID_ARGUMENT (NULL
 * `queue`, `out`, `n` or `read`, or `max` 0).
 */
fastrpc_status fastrpc_completion_queue_read_poll(const struct fastrpc_completion_queue *queue,
                                                  const struct fastrpc_client *reader,
                                                  struct fastrpc_completion *out,
                                                  size_t max,
                                                  size_t *n,
                                                  size_t *read);

/**
 * Writes into `*fd` a file descriptor that is readable exactly while the queue holds
 * completions or is shut down, for the caller's own epoll, poll, select, libuv, asyncio
 * (`loop.add_reader`) or Go netpoller: no thread needs to block in
 * `fastrpc_completion_queue_poll`. It is an eventfd (non-blocking, close-on-exec) owned by
 * the queue: never read, write or close it; it stays valid until
 * `fastrpc_completion_queue_free`. Every call returns the same descriptor (made on the
 * first call, so queues that are never watched hold no descriptor).
 *
 * Semantics are level-triggered: the descriptor becomes readable when the queue goes from
 * empty to non-empty (or is shut down) and stops being readable when a poll takes the last
 * completion. Drain pattern, when the descriptor is reported readable:
 * `fastrpc_completion_queue_poll(q, out, max, 0, &n)` with timeout 0 until it returns
 * `n == 0` (or CLOSED after shutdown). With level-triggered epoll taking one batch per
 * wakeup is also correct: the descriptor stays readable while completions remain. With
 * `EPOLLET` the drain loop is required. Cost: one eventfd write when the queue becomes
 * non-empty and one read when a poll empties it; nothing per completion in between.
 *
 * Returns OK, INVALID_ARGUMENT (NULL `queue` or `fd`), or IO when the eventfd cannot be
 * created (the process is out of descriptors). Any thread.
 */
fastrpc_status fastrpc_completion_queue_fd(const struct fastrpc_completion_queue *queue,
                                           int *fd);

/**
 * Shuts the queue down: pollers wake, and once it is empty poll returns CLOSED. Calls still
 * in flight still complete into it; new calls for it are refused
 * (`fastrpc_client_call_queued` returns CLOSED). Any thread, including inside callbacks.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `queue`).
 */
fastrpc_status fastrpc_completion_queue_shutdown(const struct fastrpc_completion_queue *queue);

/**
 * Frees the queue (NULL is allowed). Completions not yet polled are freed with it; calls
 * still in flight complete into nothing. No thread may be polling it.
 */
void fastrpc_completion_queue_free(struct fastrpc_completion_queue *queue);

/**
 * The library version, `MAJOR.MINOR.PATCH`, a static NUL-terminated string (never free it).
 * Compare with the header's `FASTRPC_VERSION` to detect a header/library mismatch.
 */
const char *fastrpc_version(void);

/**
 * The library version as one integer, `MAJOR * 10000 + MINOR * 100 + PATCH` (0.2.0 is 200),
 * the same form as the header's `FASTRPC_VERSION_NUMBER`. A program checks at run time that
 * the library it loaded is the one its header describes:
 * `fastrpc_version_number() / 100 == FASTRPC_VERSION_NUMBER / 100` (same major and minor;
 * before 1.0 every minor version may change the ABI). Any thread, never fails.
 */
uint32_t fastrpc_version_number(void);

/**
 * Sets the number of threads of the library's runtime (the threads that run connections,
 * handlers and callbacks). Call it before creating any client or server; 0 restores the
 * default (the number of CPUs, at most 4). Returns OK, or INVALID_ARGUMENT when the runtime
 * already runs (nothing changes).
 */
fastrpc_status fastrpc_set_worker_threads(size_t n);

/**
 * Sends the library's log messages up to `max_level` (a `fastrpc_log_level`: 1 error ...
 * 4 debug) to `callback(userdata, ...)`; a NULL callback stops logging. Without a callback
 * the library prints nothing. Any thread. Returns OK or INVALID_ARGUMENT (unknown level).
 */
fastrpc_status fastrpc_set_log_callback(fastrpc_log_callback callback,
                                        void *userdata,
                                        fastrpc_log_level max_level);

/**
 * Stops the library's threads (its runtime), for `dlclose` and for leak checkers; the next
 * fastrpc call that needs them starts them again. Safe to call at any time from your own
 * thread, also when the library never started (then it does nothing) and twice.
 *
 * While a client (plain or balanced) or server is still open (created and not yet freed,
 * or being created on another thread) it stops nothing and returns INVALID_ARGUMENT, saying
 * how many are open: free them first (freeing waits for
 * their callbacks). Queues, responses, requests and builders need no threads and may stay.
 * It waits up to 5 s for the library's threads to finish what they run, then returns.
 *
 * Returns OK, or INVALID_ARGUMENT (clients or servers still open; called from a library
 * thread, inside a callback or handler; another thread inside a blocking call; or in a
 * child process after fork, where the threads do not exist).
 */
fastrpc_status fastrpc_shutdown(void);

/**
 * Points `*data`/`*len` at the request's name (`(NULL, 0)` when empty). Valid until the
 * request is answered or freed, whichever comes first. Returns OK, ALREADY_ANSWERED (name no
 * longer available) or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_request_name(const struct fastrpc_request *request,
                                    const uint8_t **data,
                                    size_t *len);

/**
 * Points `*data`/`*len` at the request's value (`(NULL, 0)` when empty). Valid until the
 * request is answered or freed, whichever comes first. Returns OK, ALREADY_ANSWERED or
 * INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_request_value(const struct fastrpc_request *request,
                                     const uint8_t **data,
                                     size_t *len);

/**
 * The request id (0 for a fire-and-forget request, whose reply is not sent; also 0 when
 * `request` is NULL or already answered, so 0 is ambiguous: prefer
 * `fastrpc_request_get_id`, which tells those apart).
 */
uint32_t fastrpc_request_id(const struct fastrpc_request *request);

/**
 * Answers the request with `value` (copied before this returns). Once only: a second
 * answer returns ALREADY_ANSWERED and sends nothing. Any thread, at any time before
 * `fastrpc_request_free`. The name and value views of the request end here.
 *
 * Returns OK; ALREADY_ANSWERED; TOO_LARGE (value over max_frame_size: the error reply was
 * sent instead, the request counts as answered); CLOSED (the connection is gone: the reply
 * was dropped, the request counts as answered); INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_request_reply(struct fastrpc_request *request,
                                     const uint8_t *value,
                                     size_t value_len);

/**
 * Frees the request (NULL is allowed). If it was not answered, the server's error reply is
 * sent (see `fastrpc_server_config_builder_set_error_reply`), so the client never waits
 * forever. Any thread. The pointer is invalid afterwards.
 */
void fastrpc_request_free(struct fastrpc_request *request);

/**
 * Writes the request id into `*id`: 0 means exactly a fire-and-forget request (its reply is
 * not sent), anything else a call that waits for its reply. Returns OK, ALREADY_ANSWERED
 * (the request was answered: `*id` is not written) or INVALID_ARGUMENT (NULL `request` or
 * `id`). Any thread.
 */
fastrpc_status fastrpc_request_get_id(const struct fastrpc_request *request,
                                      uint32_t *id);

/**
 * Writes the client's address (`127.0.0.1:50123`, or `unix:...` for a Unix socket) into
 * `buf`, NUL-terminated, as `fastrpc_status_message` does. Returns OK, BUFFER_TOO_SMALL
 * (cut; `*out_len` has the full length), ALREADY_ANSWERED or INVALID_ARGUMENT (NULL
 * `request`, NULL `buf` with `len` > 0). `(NULL, 0)` measures. Any thread.
 */
fastrpc_status fastrpc_request_peer_addr(const struct fastrpc_request *request,
                                         char *buf,
                                         size_t len,
                                         size_t *out_len);

/**
 * Writes into `*tls` whether the request came over TLS. Returns OK, ALREADY_ANSWERED or
 * INVALID_ARGUMENT (NULL `request` or `tls`). Any thread.
 */
fastrpc_status fastrpc_request_is_tls(const struct fastrpc_request *request,
                                      bool *tls);

/**
 * Points `*data`/`*len` at the client's certificate (DER), which the server verified
 * against its client CAs (mutual TLS); `(NULL, 0)` when the client presented none (plaintext,
 * or TLS without client certificates). Valid until the request is answered or freed.
 * Returns OK, ALREADY_ANSWERED or INVALID_ARGUMENT (NULL arguments). Any thread.
 */
fastrpc_status fastrpc_request_peer_certificate(const struct fastrpc_request *request,
                                                const uint8_t **data,
                                                size_t *len);

/**
 * Writes the client certificate's subject as text (`CN=client,O=Example`; CN, C, L, ST, O,
 * OU and serialNumber, in certificate order) into `buf`, as `fastrpc_status_message` does;
 * empty without a client certificate. Returns OK, BUFFER_TOO_SMALL, ALREADY_ANSWERED or
 * INVALID_ARGUMENT. `(NULL, 0)` measures. Any thread.
 */
fastrpc_status fastrpc_request_peer_subject(const struct fastrpc_request *request,
                                            char *buf,
                                            size_t len,
                                            size_t *out_len);

/**
 * Writes the client certificate's subject alternative names as text
 * (`DNS:host,IP:10.0.0.1,email:a@b,URI:spiffe://...`) into `buf`, as
 * `fastrpc_status_message` does; empty without a client certificate or without SANs.
 * Returns OK, BUFFER_TOO_SMALL, ALREADY_ANSWERED or INVALID_ARGUMENT. `(NULL, 0)`
 * measures. Any thread.
 */
fastrpc_status fastrpc_request_peer_subject_alt_names(const struct fastrpc_request *request,
                                                      char *buf,
                                                      size_t len,
                                                      size_t *out_len);

/**
 * Creates an empty response object, for `fastrpc_client_call`. Reuse it across calls: its
 * buffer keeps its capacity, so a warm caller allocates nothing per call. On success
 * `*out` receives a new object that the caller owns and frees with
 * `fastrpc_response_free`. Any thread. Returns OK or INVALID_ARGUMENT (`out` NULL).
 */
fastrpc_status fastrpc_response_new(struct fastrpc_response **out);

/**
 * Frees a response object (NULL is allowed and does nothing). After this the pointer and
 * any data pointer obtained from it are invalid. Any thread, including inside callbacks.
 */
void fastrpc_response_free(struct fastrpc_response *resp);

/**
 * The response value's bytes, valid until the object is freed or reused by another call.
 * NULL when the value is empty or `resp` is NULL (see `fastrpc_response_len`).
 */
const uint8_t *fastrpc_response_data(const struct fastrpc_response *resp);

/**
 * The response value's length in bytes (0 when `resp` is NULL or the call failed).
 */
size_t fastrpc_response_len(const struct fastrpc_response *resp);

/**
 * Returns the status of the call this object holds the outcome of: OK, or why it failed
 * (any status a call can end with: TIMEOUT, OVERFLOW, CONNECT, CONNECTION, CLOSED, PROTOCOL,
 * TLS, TOO_LARGE, INVALID_ARGUMENT, IO, PANIC); INVALID_ARGUMENT when `resp` is NULL.
 */
fastrpc_status fastrpc_response_status(const struct fastrpc_response *resp);

/**
 * The TLS detail of the failure this object holds (`FASTRPC_TLS_DETAIL_NONE` when the call
 * succeeded, failed for another reason, or `resp` is NULL). Any thread; never fails.
 */
fastrpc_tls_detail fastrpc_response_tls_detail(const struct fastrpc_response *resp);

/**
 * Writes the message of the failure this object holds (which peer, which cause) into
 * `buf`, as `fastrpc_status_message` does; empty when the call succeeded.
 *
 * Returns OK, BUFFER_TOO_SMALL (the text was cut; `*out_len` has its full length) or
 * INVALID_ARGUMENT (NULL `resp`, or NULL `buf` with `len` > 0). `(NULL, 0)` measures: OK
 * with the length in `*out_len`.
 */
fastrpc_status fastrpc_response_error_message(const struct fastrpc_response *resp,
                                              char *buf,
                                              size_t len,
                                              size_t *out_len);

/**
 * Listens on `addr` (`host:port`, port 0 for any free port, or `unix:/path`) with the
 * options in `builder` (copied) and serves every request with `handler(userdata,
 * request)`. `*out` receives the new server, owned by the caller (free with
 * `fastrpc_server_free`). Any thread but the library's own.
 *
 * Returns OK, INVALID_ARGUMENT (NULL arguments, bad address or options, called from a
 * library thread), IO (cannot listen there) or TLS (unusable certificate or key).
 */
fastrpc_status fastrpc_server_new(const struct fastrpc_server_config_builder *builder,
                                  const char *addr,
                                  fastrpc_handler handler,
                                  void *userdata,
                                  struct fastrpc_server **out);

/**
 * Like `fastrpc_server_new`, but each request goes into `queue`, to be taken with
 * `fastrpc_server_queue_poll`. The queue must outlive the server.
 *
 * Returns OK, INVALID_ARGUMENT (NULL arguments, bad address or options, called from a
 * library thread), IO (cannot listen there) or TLS (unusable certificate or key).
 */
fastrpc_status fastrpc_server_new_queued(const struct fastrpc_server_config_builder *builder,
                                         const char *addr,
                                         const struct fastrpc_server_queue *queue,
                                         struct fastrpc_server **out);

/**
 * Writes the bound address (`127.0.0.1:40123` with the real port, or `unix:/path`) into
 * `buf`, NUL-terminated; `*out_len` (when not NULL) receives its length. Returns OK,
 * BUFFER_TOO_SMALL (cut to fit) or INVALID_ARGUMENT (NULL `server`, NULL `buf` with `len`
 * > 0). `(NULL, 0)` measures: OK with the length in `*out_len`. Any thread.
 */
fastrpc_status fastrpc_server_local_addr(const struct fastrpc_server *server,
                                         char *buf,
                                         size_t len,
                                         size_t *out_len);

/**
 * Writes a snapshot of the server's counters into `*out`, whose `struct_size` the caller
 * set (see `fastrpc_server_stats`). Any thread. Returns OK or INVALID_ARGUMENT (NULL
 * `server` or `out`, `out->struct_size` not set).
 */
fastrpc_status fastrpc_server_get_stats(const struct fastrpc_server *server,
                                        struct fastrpc_server_stats *out);

/**
 * Stops gracefully: stops accepting and reading requests, waits up to `timeout_ms` for
 * running handlers to answer and their responses to be flushed, then closes every
 * connection. Stopping twice is fine. Any thread but the library's own (not from a handler),
 * and not at the same time as `fastrpc_server_free`.
 *
 * Returns OK, TIMEOUT (connections still busy after the timeout were closed at once), or
 * INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_server_stop(struct fastrpc_server *server,
                                   uint32_t timeout_ms);

/**
 * Stops at once (no draining) and frees the server. NULL is allowed. It returns after every
 * handler callback of this server that was running has returned (later requests are not
 * handed to the handler), so the handler's userdata may be freed right after. Requests the
 * handlers kept stay valid; their replies are dropped (reply returns CLOSED). Any thread;
 * from inside one of this server's own handlers it does not wait for that handler.
 * Address and counters stay readable after `fastrpc_server_stop`, until this.
 */
void fastrpc_server_free(struct fastrpc_server *server);

/**
 * Creates a builder with the default options. `*out` receives a new builder the caller owns
 * (free with `fastrpc_server_config_builder_free`). Returns OK or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_server_config_builder_new(struct fastrpc_server_config_builder **out);

/**
 * Frees a builder (NULL is allowed and does nothing).
 */
void fastrpc_server_config_builder_free(struct fastrpc_server_config_builder *builder);

/**
 * The sniff header expected first on each connection and written back (`(NULL, 0)`: none).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).
 */
fastrpc_status fastrpc_server_config_builder_set_sniff_header(struct fastrpc_server_config_builder *builder,
                                                              const uint8_t *data,
                                                              size_t len);

/**
 * The protocol version byte (0 by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_server_config_builder_set_protocol_version(struct fastrpc_server_config_builder *builder,
                                                                  uint8_t version);

/**
 * Compression of responses: a `fastrpc_compression` value; anything else is INVALID_ARGUMENT.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, not a `fastrpc_compression` value).
 */
fastrpc_status fastrpc_server_config_builder_set_compression(struct fastrpc_server_config_builder *builder,
                                                             fastrpc_compression compression);

/**
 * DEFLATE level 0-9 (6 by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `level` above 9).
 */
fastrpc_status fastrpc_server_config_builder_set_flate_level(struct fastrpc_server_config_builder *builder,
                                                             uint32_t level);

/**
 * Handlers that may run at once over all connections (10000 by default); at least 1.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
 */
fastrpc_status fastrpc_server_config_builder_set_concurrency(struct fastrpc_server_config_builder *builder,
                                                             size_t n);

/**
 * The response value sent at once, instead of running the handler, when `concurrency` handlers already run (empty by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).
 */
fastrpc_status fastrpc_server_config_builder_set_concurrency_limit_reply(struct fastrpc_server_config_builder *builder,
                                                                         const uint8_t *data,
                                                                         size_t len);

/**
 * The response value sent for a request freed unanswered (empty by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).
 */
fastrpc_status fastrpc_server_config_builder_set_error_reply(struct fastrpc_server_config_builder *builder,
                                                             const uint8_t *data,
                                                             size_t len);

/**
 * Run each connection's requests one after another, in order.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_server_config_builder_set_pipeline_requests(struct fastrpc_server_config_builder *builder,
                                                                   bool on);

/**
 * Longest wait, in microseconds, for more responses to share a write (0 by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_server_config_builder_set_max_batch_delay_us(struct fastrpc_server_config_builder *builder,
                                                                    uint32_t us);

/**
 * Low-latency option (50 by default; 0 turns it off): after a read that brought a single
 * request, a connection's reader keeps its task runnable for up to `us` microseconds waiting
 * for the next one instead of letting its worker thread park. It spends CPU only while
 * requests come one at a time, none when idle. At most 10000 (10 ms).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `us` above 10000).
 */
fastrpc_status fastrpc_server_config_builder_set_read_spin_us(struct fastrpc_server_config_builder *builder,
                                                              uint32_t us);

/**
 * Longest time to read one whole request frame; also the idle lifetime (0: none).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_server_config_builder_set_read_timeout_ms(struct fastrpc_server_config_builder *builder,
                                                                 uint32_t ms);

/**
 * Longest time to write one batch (0: none).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_server_config_builder_set_write_timeout_ms(struct fastrpc_server_config_builder *builder,
                                                                  uint32_t ms);

/**
 * Close a connection with no request for this long and no request running (0, the
 * default: keep idle connections).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_server_config_builder_set_idle_timeout_ms(struct fastrpc_server_config_builder *builder,
                                                                 uint32_t ms);

/**
 * Socket read buffer size in bytes (64 KiB by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
 */
fastrpc_status fastrpc_server_config_builder_set_read_buffer_size(struct fastrpc_server_config_builder *builder,
                                                                  size_t n);

/**
 * Write buffer size in bytes (64 KiB by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0).
 */
fastrpc_status fastrpc_server_config_builder_set_write_buffer_size(struct fastrpc_server_config_builder *builder,
                                                                   size_t n);

/**
 * Largest name or value in bytes, both directions (1 MiB by default).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `n` 0 or above 4294967295).
 */
fastrpc_status fastrpc_server_config_builder_set_max_frame_size(struct fastrpc_server_config_builder *builder,
                                                                size_t n);

/**
 * Bound on the connection handshake, TLS included (3000 by default); more than 0.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `ms` 0).
 */
fastrpc_status fastrpc_server_config_builder_set_handshake_timeout_ms(struct fastrpc_server_config_builder *builder,
                                                                      uint32_t ms);

/**
 * Turns TLS on with this certificate chain and private key (PEM bytes).
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).; PEM that does not parse is TLS from `fastrpc_server_new`
 */
fastrpc_status fastrpc_server_config_builder_set_tls_cert_pem(struct fastrpc_server_config_builder *builder,
                                                              const uint8_t *cert,
                                                              size_t cert_len,
                                                              const uint8_t *key,
                                                              size_t key_len);

/**
 * Turns TLS on with the certificate chain and private key in these PEM files.
 *
 * Returns OK, INVALID_ARGUMENT (NULL `builder`, NULL or non-UTF-8 paths), or TLS (a file cannot be read).
 */
fastrpc_status fastrpc_server_config_builder_set_tls_cert_files(struct fastrpc_server_config_builder *builder,
                                                                const char *cert_path,
                                                                const char *key_path);

/**
 * Mutual TLS: clients must present a certificate signed by one of these CAs (PEM bytes).
 * This also makes TLS required: a client that does not ask for TLS is refused (its
 * handshake is answered with TLS required, then the connection closes), whatever
 * `fastrpc_server_config_builder_set_require_tls` says. No setting serves plaintext while
 * asking for client certificates.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`, `(NULL, len > 0)` bytes).; PEM that does not parse is TLS from `fastrpc_server_new`
 */
fastrpc_status fastrpc_server_config_builder_set_tls_client_ca_pem(struct fastrpc_server_config_builder *builder,
                                                                   const uint8_t *pem,
                                                                   size_t len);

/**
 * Refuse plaintext clients (TLS must be configured too): they get a handshake answer saying
 * TLS is required, then the connection closes. With a client CA
 * (`fastrpc_server_config_builder_set_tls_client_ca_pem` or `_file`) plaintext clients are
 * refused even when this is off.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `builder`).
 */
fastrpc_status fastrpc_server_config_builder_set_require_tls(struct fastrpc_server_config_builder *builder,
                                                             bool on);

/**
 * Mutual TLS: clients must present a certificate signed by one of the CAs in this PEM file.
 * Like `fastrpc_server_config_builder_set_tls_client_ca_pem`, this makes TLS required.
 * Returns OK, INVALID_ARGUMENT, or TLS when the file cannot be read.
 */
fastrpc_status fastrpc_server_config_builder_set_tls_client_ca_file(struct fastrpc_server_config_builder *builder,
                                                                    const char *path);

/**
 * Creates a server queue. `*out` receives a new queue the caller owns (free with
 * `fastrpc_server_queue_free`, after the servers feeding it). Returns OK or
 * INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_server_queue_new(struct fastrpc_server_queue **out);

/**
 * Waits up to `timeout_ms` (0: do not wait) for requests and writes up to `max` of them
 * into `out[0..max]`; `*n` receives how many (0 on timeout). Each request is then owned by
 * the caller: answer it with `fastrpc_request_reply` and free it with
 * `fastrpc_request_free`. Any thread, several at once. Not from inside a library callback.
 *
 * Returns OK (also with `*n` 0 on timeout), CLOSED when the queue was shut down and is
 * empty, or INVALID_ARGUMENT.
 */
fastrpc_status fastrpc_server_queue_poll(const struct fastrpc_server_queue *queue,
                                         struct fastrpc_request **out,
                                         size_t max,
                                         uint32_t timeout_ms,
                                         size_t *n);

/**
 * Writes into `*fd` a file descriptor that is readable exactly while requests wait in the
 * queue or it is shut down, for the caller's own epoll, poll, select, libuv, asyncio or Go
 * netpoller: no thread needs to block in `fastrpc_server_queue_poll`. It is an eventfd
 * (non-blocking, close-on-exec) owned by the queue: never read, write or close it; it stays
 * valid until `fastrpc_server_queue_free`. Every call returns the same descriptor.
 *
 * Level-triggered, as `fastrpc_completion_queue_fd`: readable from the moment the queue
 * goes from empty to non-empty (or is shut down) until a poll takes the last request.
 * Drain pattern: when it is readable, `fastrpc_server_queue_poll(q, out, max, 0, &n)` with
 * timeout 0 until `n == 0` (or CLOSED after shutdown); with level-triggered epoll one
 * batch per wakeup is also correct. No syscall per request while the queue stays
 * non-empty.
 *
 * Returns OK, INVALID_ARGUMENT (NULL `queue` or `fd`), or IO when the eventfd cannot be
 * created. Any thread.
 */
fastrpc_status fastrpc_server_queue_fd(const struct fastrpc_server_queue *queue,
                                       int *fd);

/**
 * Shuts the queue down: pollers wake; requests already queued can still be polled, new ones
 * are answered with the error reply; once empty, poll returns CLOSED. Any thread.
 *
 * Returns OK, or INVALID_ARGUMENT (NULL `queue`).
 */
fastrpc_status fastrpc_server_queue_shutdown(const struct fastrpc_server_queue *queue);

/**
 * Frees the queue (NULL is allowed); requests still in it get the error reply. No thread
 * may be polling it.
 */
void fastrpc_server_queue_free(struct fastrpc_server_queue *queue);

/**
 * Writes a human message for `status` (any value, known or not) into `buf` of `len` bytes,
 * NUL-terminated. `*out_len` (when not NULL) receives the message's full length without the
 * NUL. The message is fixed per status; for the details of a particular failure (which
 * address, which TLS alert) see `fastrpc_last_error_message` and
 * `fastrpc_response_error_message`.
 *
 * Returns OK, or BUFFER_TOO_SMALL when the message was cut to fit, or INVALID_ARGUMENT
 * when `buf` is NULL with a non-zero `len`. `(NULL, 0)` measures: OK with the length in
 * `*out_len`.
 * Any thread.
 */
fastrpc_status fastrpc_status_message(uint32_t status,
                                      char *buf,
                                      size_t len,
                                      size_t *out_len);

/**
 * Writes the details of the last failure returned to this thread by a fastrpc function
 * (for example "fastrpc connect: cannot connect to 127.0.0.1:1: Connection refused") into
 * `buf`, as `fastrpc_status_message` does. Empty when nothing failed on this thread yet.
 *
 * Returns OK, BUFFER_TOO_SMALL (the text was cut; `*out_len` has its full length) or
 * INVALID_ARGUMENT (NULL `buf` with `len` > 0). `(NULL, 0)` measures: OK with the length
 * in `*out_len`.
 */
fastrpc_status fastrpc_last_error_message(char *buf,
                                          size_t len,
                                          size_t *out_len);

/**
 * The TLS detail of the last failure returned to this thread by a fastrpc function
 * (`FASTRPC_TLS_DETAIL_NONE` when it was not a TLS failure, or nothing failed yet). Any
 * thread; never fails.
 */
fastrpc_tls_detail fastrpc_last_error_tls_detail(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* FASTRPC_H */
