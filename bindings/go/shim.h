/*
 * Small C helpers for the Go binding: each one folds several fastrpc calls into one cgo
 * call (a cgo call costs far more than a C call), and captures fastrpc_last_error_message
 * on the same OS thread as the failure (a goroutine may change threads between two cgo
 * calls, and the message is per thread). Nothing here keeps a pointer after returning.
 */
#ifndef FASTRPC_GO_SHIM_H
#define FASTRPC_GO_SHIM_H

#include <stdlib.h>
#include <string.h>

/* Outside this repository the header comes from an installed library (cgo_pkgconfig.go). */
#if defined(__has_include)
#if !__has_include("fastrpc.h")
#error "fastrpc.h not found. Outside the fastrpc repository, install the library (PREFIX=... scripts/install.sh) and build with -tags fastrpc_pkgconfig and PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig: see bindings/go/README.md, Install."
#define GOFRPC_NO_HEADER 1
#endif
#endif

#ifndef GOFRPC_NO_HEADER
#include "fastrpc.h"
#include <poll.h>

/* Waits up to ms for fd to be readable (a lone leader's wait on the read descriptor): 2
 * when it already was, 1 when it became readable, 0 when the time passed. */
static inline int gofrpc_wait_readable(int fd, int ms) {
	struct pollfd p = {fd, POLLIN, 0};
	if (poll(&p, 1, 0) == 1) return 2;
	return poll(&p, 1, ms) == 1;
}
#if !defined(FASTRPC_VERSION_NUMBER) || FASTRPC_VERSION_NUMBER < 200
#error "this binding needs fastrpc.h 0.2 or later (completion queues, fastrpc_*_get_stats): install the library from the same checkout as the binding"
#endif
#endif

/* The stats getters under the names client.go and server.go use. */
static inline fastrpc_status gofrpc_client_stats(const fastrpc_client *c, struct fastrpc_client_stats *out) {
	return fastrpc_client_get_stats(c, out);
}

static inline fastrpc_status gofrpc_server_stats(const fastrpc_server *s, struct fastrpc_server_stats *out) {
	return fastrpc_server_get_stats(s, out);
}

/* A status and, on failure, a malloc'd copy of the message (the caller frees it). */
typedef struct {
	uint32_t status;
	char *msg;
} gofrpc_ret;

/* A malloc'd copy of text written by fastrpc_last_error_message or
 * fastrpc_response_error_message. */
static inline char *gofrpc_dup_last_error(void) {
	char small[256];
	size_t n = 0;
	fastrpc_last_error_message(small, sizeof small, &n);
	char *m = (char *)malloc(n + 1);
	if (m == NULL) return NULL;
	if (n < sizeof small) {
		memcpy(m, small, n + 1);
	} else {
		fastrpc_last_error_message(m, n + 1, &n);
	}
	return m;
}

static inline char *gofrpc_dup_response_error(const fastrpc_response *r) {
	char small[256];
	size_t n = 0;
	fastrpc_response_error_message(r, small, sizeof small, &n);
	char *m = (char *)malloc(n + 1);
	if (m == NULL) return NULL;
	if (n < sizeof small) {
		memcpy(m, small, n + 1);
	} else {
		fastrpc_response_error_message(r, m, n + 1, &n);
	}
	return m;
}

static inline gofrpc_ret gofrpc_wrap(fastrpc_status st) {
	gofrpc_ret r;
	r.status = (uint32_t)st;
	r.msg = st == FASTRPC_STATUS_OK ? NULL : gofrpc_dup_last_error();
	return r;
}

/* ---- client ---- */

/* A call started with an id (for fastrpc_*_cancel): status, message, id (0 unless OK). */
typedef struct {
	uint32_t status;
	char *msg;
	uint64_t id;
} gofrpc_call_ret;

static inline gofrpc_call_ret gofrpc_call_wrap(fastrpc_status st, uint64_t id) {
	gofrpc_call_ret r;
	r.status = (uint32_t)st;
	r.msg = st == FASTRPC_STATUS_OK ? NULL : gofrpc_dup_last_error();
	r.id = st == FASTRPC_STATUS_OK ? id : 0;
	return r;
}

/* The client's calls take c (a one-server client) or, when c is NULL, bal (a balanced one). */
static inline gofrpc_call_ret gofrpc_call_queued_id(const fastrpc_client *c,
		const fastrpc_balanced_client *bal, const uint8_t *name, size_t name_len,
		const uint8_t *value, size_t value_len, uint32_t timeout_ms,
		const fastrpc_completion_queue *q, uint64_t tag, int deferred) {
	uint64_t id = 0;
	fastrpc_status st = c != NULL
		? (deferred
			? fastrpc_client_call_queued_deferred(c, name, name_len, value, value_len,
				timeout_ms, q, tag, &id)
			: fastrpc_client_call_queued_id(c, name, name_len, value, value_len, timeout_ms,
				q, tag, &id))
		: fastrpc_balanced_client_call_queued_id(bal, name, name_len, value, value_len,
			timeout_ms, q, tag, &id);
	return gofrpc_call_wrap(st, id);
}

static inline gofrpc_ret gofrpc_send(const fastrpc_client *c, const fastrpc_balanced_client *bal,
		const uint8_t *name, size_t name_len, const uint8_t *value, size_t value_len) {
	return gofrpc_wrap(c != NULL
		? fastrpc_client_send(c, name, name_len, value, value_len)
		: fastrpc_balanced_client_send(bal, name, name_len, value, value_len));
}

static inline gofrpc_ret gofrpc_client_new(const fastrpc_client_config_builder *b,
		fastrpc_client **out) {
	return gofrpc_wrap(fastrpc_client_new(b, out));
}

/* ---- balanced client (fastrpc_balanced_client) ---- */

static inline gofrpc_ret gofrpc_bal_new(const fastrpc_client_config_builder *b,
		fastrpc_balanced_client **out) {
	return gofrpc_wrap(fastrpc_balanced_client_new(b, out));
}

/* One finished call, flattened so Go reads it without further cgo calls. */
typedef struct {
	uint64_t tag;
	const uint8_t *data;
	size_t len;
	fastrpc_response *resp;
	char *msg; /* malloc'd error message when status != OK */
	uint32_t status;
} gofrpc_done;

/* Flattens k completions of tmp[] into done[]. */
static inline void gofrpc_flatten(const fastrpc_completion *tmp, gofrpc_done *done, size_t k) {
	for (size_t i = 0; i < k; i++) {
		fastrpc_response *r = tmp[i].response;
		done[i].tag = tmp[i].tag;
		done[i].status = (uint32_t)tmp[i].status;
		done[i].resp = r;
		done[i].len = fastrpc_response_len(r);
		/* NULL when empty: the library's pointer to an empty value need not point anywhere
		 * (Rust's dangling 0x1), and Go, which sees this field as a pointer, may not hold it. */
		done[i].data = done[i].len > 0 ? fastrpc_response_data(r) : NULL;
		done[i].msg = tmp[i].status == FASTRPC_STATUS_OK ? NULL : gofrpc_dup_response_error(r);
	}
}

/* Polls up to max completions into done[] (tmp[] is scratch of the same size). */
static inline fastrpc_status gofrpc_cq_poll(const fastrpc_completion_queue *q,
		fastrpc_completion *tmp, gofrpc_done *done, size_t max, uint32_t timeout_ms,
		size_t *n) {
	size_t k = 0;
	fastrpc_status st = fastrpc_completion_queue_poll(q, tmp, max, timeout_ms, &k);
	if (st != FASTRPC_STATUS_OK) {
		*n = 0;
		return st;
	}
	gofrpc_flatten(tmp, done, k);
	*n = k;
	return st;
}

/* gofrpc_cq_poll after fastrpc_client_read_now(reader) when reader is not NULL, in one
 * library call (fastrpc_completion_queue_read_poll): the responses that have arrived on
 * reader's socket are read and completed into their queue on this thread, and taken from
 * it, without the queue's descriptor being made readable for them; *read is how many it
 * completed. */
static inline fastrpc_status gofrpc_cq_read_poll(const fastrpc_client *reader,
		const fastrpc_completion_queue *q, fastrpc_completion *tmp, gofrpc_done *done,
		size_t max, size_t *n, size_t *read) {
	size_t k = 0;
	fastrpc_status st = fastrpc_completion_queue_read_poll(q, reader, tmp, max, &k, read);
	if (st != FASTRPC_STATUS_OK) {
		*n = 0;
		return st;
	}
	gofrpc_flatten(tmp, done, k);
	*n = k;
	return st;
}

static inline void gofrpc_cq_release(gofrpc_done *done, size_t n) {
	for (size_t i = 0; i < n; i++) {
		fastrpc_response_free(done[i].resp);
		free(done[i].msg);
		done[i].resp = NULL;
		done[i].msg = NULL;
	}
}

/* ---- server ---- */

static inline gofrpc_ret gofrpc_server_new_queued(const fastrpc_server_config_builder *b,
		const char *addr, const fastrpc_server_queue *q, fastrpc_server **out) {
	return gofrpc_wrap(fastrpc_server_new_queued(b, addr, q, out));
}

/* One request, flattened: the views stay valid until the request is answered or freed. */
typedef struct {
	fastrpc_request *req;
	const uint8_t *name;
	size_t name_len;
	const uint8_t *value;
	size_t value_len;
	uint32_t id;
} gofrpc_req;

static inline fastrpc_status gofrpc_sq_poll(const fastrpc_server_queue *q,
		fastrpc_request **tmp, gofrpc_req *out, size_t max, uint32_t timeout_ms, size_t *n) {
	size_t k = 0;
	fastrpc_status st = fastrpc_server_queue_poll(q, tmp, max, timeout_ms, &k);
	if (st != FASTRPC_STATUS_OK) {
		*n = 0;
		return st;
	}
	for (size_t i = 0; i < k; i++) {
		fastrpc_request *r = tmp[i];
		out[i].req = r;
		out[i].id = fastrpc_request_id(r);
		out[i].name = NULL;
		out[i].name_len = 0;
		out[i].value = NULL;
		out[i].value_len = 0;
		fastrpc_request_name(r, &out[i].name, &out[i].name_len);
		fastrpc_request_value(r, &out[i].value, &out[i].value_len);
		/* NULL when empty (see gofrpc_cq_poll): Go copies these fields as pointers. */
		if (out[i].name_len == 0) out[i].name = NULL;
		if (out[i].value_len == 0) out[i].value = NULL;
	}
	*n = k;
	return st;
}

/* Answers (when answer is non-zero) and frees the request; freed unanswered, the server
 * sends its error reply. Returns the status of the answer. */
static inline gofrpc_ret gofrpc_request_finish(fastrpc_request *r, int answer,
		const uint8_t *value, size_t value_len) {
	gofrpc_ret ret = {FASTRPC_STATUS_OK, NULL};
	if (answer) {
		ret = gofrpc_wrap(fastrpc_request_reply(r, value, value_len));
	}
	fastrpc_request_free(r);
	return ret;
}

/* Frees requests taken from the queue without handling them (each gets the error reply). */
static inline void gofrpc_requests_free(gofrpc_req *reqs, size_t n) {
	for (size_t i = 0; i < n; i++) {
		fastrpc_request_free(reqs[i].req);
		reqs[i].req = NULL;
	}
}

/* ---- configuration: builder setters, with the message of a refusal ---- */

static inline char *gofrpc_status_text(uint32_t st) {
	size_t n = 0;
	fastrpc_status_message(st, NULL, 0, &n);
	char *m = (char *)malloc(n + 1);
	if (m != NULL) fastrpc_status_message(st, m, n + 1, &n);
	return m;
}

/* Go's log hook, defined in log.go (//export). */
extern void gofrpcLog(uint32_t level, char *msg, size_t len);

static inline void gofrpc_log_trampoline(void *userdata, fastrpc_log_level level,
		const char *message, size_t len) {
	(void)userdata;
	gofrpcLog((uint32_t)level, (char *)message, len);
}

static inline fastrpc_status gofrpc_set_log(uint32_t max_level, int on) {
	return fastrpc_set_log_callback(on ? gofrpc_log_trampoline : NULL, NULL, max_level);
}

#endif
