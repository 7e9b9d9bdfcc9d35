/*
 * soak.c: a bounded soak of the fastrpc C ABI under AddressSanitizer + UBSan.
 *
 * For SOAK_SECONDS (default 60) a mixed workload runs through the C ABI on real loopback
 * sockets:
 *   - blocking calls (fastrpc_client_call, one reused response per thread),
 *   - callback calls (fastrpc_client_call_async) with a bounded number in flight,
 *   - completion-queue calls (fastrpc_client_call_queued + a polling thread),
 *   - fire-and-forget sends,
 *   - two servers: one with a handler callback that answers inline, defers answers to a
 *     responder thread, drops requests unanswered and answers 100 KiB values; one polled
 *     through a server queue,
 *   - clients created and freed all the time (some freed with calls in flight, some closed
 *     with a drain first), in all three compressions,
 *   - errors provoked on purpose: TIMEOUT, TOO_LARGE, CONNECT, INVALID_ARGUMENT, OVERFLOW,
 *     CLOSED, PROTOCOL (a fake server with the wrong sniff header).
 *
 * Checks: every call's outcome is the expected one (values compared byte for byte, each
 * callback and completion exactly once); at the end every server connection is closed;
 * VmRSS measured after the warm-up and at the end (both under the same load) grows by less
 * than RSS_TOLERANCE_KB + 5 % (see below); the sanitizers report nothing (the Makefile's
 * soak target runs with halt_on_error and detect_leaks).
 *
 * RSS tolerance: once warm, the workload's working set is steady: the library pools its
 * buffers, and the number of calls in flight is bounded here. What still moves is allocator
 * state: ASan's quarantine (capped at 16 MiB by __asan_default_options below), its per-thread
 * caches, and the high-water mark of the in-flight buffers (up to 64 async calls and 64
 * queued calls of a few KiB, blocking calls of 100 KiB). Measured, RSS moves by +-6 MiB
 * around a flat line once warm; 16 MiB + 5 % covers that with room; a leak
 * of 8 bytes per call is over it within a 20 s run (the workload makes ~100,000 calls/s
 * under ASan).
 *
 * The program ends with "N passed, M failed" (one check per line of the summary).
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <fastrpc.h>

#define RSS_TOLERANCE_KB (16L * 1024)
#define BIG_LEN (100 * 1024)
#define MAX_ASYNC_IN_FLIGHT 64
#define MAX_QUEUED_IN_FLIGHT 64

/* ASan's defaults for this program: a small quarantine so RSS measures the program, not
 * ASan's delay of reuse. ASAN_OPTIONS from the environment still apply on top. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "quarantine_size_mb=16:detect_leaks=1";
}

/* ---- small helpers ------------------------------------------------------------------ */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)

static long g_failures;
static int g_stop;

#define FAIL(...)                                                                          \
    do {                                                                                   \
        if (ADD(&g_failures, 1) <= 20) {                                                   \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

static int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec t;
    t.tv_sec = ms / 1000;
    t.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static const char *status_name(fastrpc_status s) {
    static char buf[64];
    size_t n = 0;
    if (fastrpc_status_message((uint32_t)s, buf, sizeof buf, &n) == FASTRPC_STATUS_OK) return buf;
    return "?";
}

/* xorshift, per thread */
static uint32_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 11);
}

static const uint8_t *B(const char *s) { return (const uint8_t *)s; }

static int response_is(const fastrpc_response *r, const uint8_t *want, size_t len) {
    return fastrpc_response_len(r) == len &&
           (len == 0 || memcmp(fastrpc_response_data(r), want, len) == 0);
}

static uint8_t g_big[BIG_LEN];

/* ---- server A: handler callback -------------------------------------------------------- */

enum { DEFER_CAP = 4096 };

typedef struct deferred {
    fastrpc_request *req;
    int64_t due_ms;
} deferred;

/* Two FIFOs, each in due order: "defer" answers 1 ms later, "hold" 300 ms later. */
typedef struct fifo {
    deferred items[DEFER_CAP];
    size_t head, len;
} fifo;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fifo q[2];
    int done;
} g_defer = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {{{{NULL, 0}}, 0, 0}}, 0};

static long g_nowait_seen;
static long g_handled;

static int name_is(const uint8_t *n, size_t nl, const char *s) {
    return nl == strlen(s) && memcmp(n, s, nl) == 0;
}

static void reply_value(fastrpc_request *r) {
    const uint8_t *v = NULL;
    size_t vl = 0;
    if (fastrpc_request_value(r, &v, &vl) != FASTRPC_STATUS_OK) FAIL("request_value");
    fastrpc_status s = fastrpc_request_reply(r, v, vl);
    if (s != FASTRPC_STATUS_OK && s != FASTRPC_STATUS_CLOSED) FAIL("reply: %s", status_name(s));
}

static void handler(void *ud, fastrpc_request *r) {
    (void)ud;
    const uint8_t *n = NULL;
    size_t nl = 0;
    ADD(&g_handled, 1);
    if (fastrpc_request_name(r, &n, &nl) != FASTRPC_STATUS_OK) {
        FAIL("request_name");
        fastrpc_request_free(r);
        return;
    }
    if (fastrpc_request_id(r) == 0) ADD(&g_nowait_seen, 1);
    if (name_is(n, nl, "defer") || name_is(n, nl, "hold")) {
        int hold = name_is(n, nl, "hold");
        fifo *q = &g_defer.q[hold];
        int64_t due = now_ms() + (hold ? 300 : 1);
        pthread_mutex_lock(&g_defer.mu);
        if (q->len < DEFER_CAP) {
            q->items[(q->head + q->len) % DEFER_CAP].req = r;
            q->items[(q->head + q->len) % DEFER_CAP].due_ms = due;
            q->len++;
            pthread_cond_signal(&g_defer.cv);
            r = NULL;
        }
        pthread_mutex_unlock(&g_defer.mu);
        if (r) { /* full: answer now */
            reply_value(r);
            fastrpc_request_free(r);
        }
        return;
    }
    if (name_is(n, nl, "free")) {
        fastrpc_request_free(r); /* unanswered: the error reply goes out */
        return;
    }
    if (name_is(n, nl, "big")) {
        fastrpc_status s = fastrpc_request_reply(r, g_big, BIG_LEN);
        if (s != FASTRPC_STATUS_OK && s != FASTRPC_STATUS_CLOSED) FAIL("big reply: %s", status_name(s));
        fastrpc_request_free(r);
        return;
    }
    reply_value(r);
    fastrpc_request_free(r);
}

/* Answers deferred requests when due (after the stop: at once). */
static void *responder(void *arg) {
    (void)arg;
    pthread_mutex_lock(&g_defer.mu);
    for (;;) {
        fifo *a = &g_defer.q[0], *b = &g_defer.q[1];
        while (a->len == 0 && b->len == 0 && !g_defer.done) pthread_cond_wait(&g_defer.cv, &g_defer.mu);
        if (a->len == 0 && b->len == 0) break;
        /* The earlier due of the two heads. */
        fifo *q = (b->len == 0 || (a->len > 0 && a->items[a->head].due_ms <= b->items[b->head].due_ms))
                      ? a
                      : b;
        deferred d = q->items[q->head];
        int64_t wait = d.due_ms - now_ms();
        if (wait > 0 && !g_defer.done) {
            pthread_mutex_unlock(&g_defer.mu);
            sleep_ms(wait > 1 ? 1 : wait);
            pthread_mutex_lock(&g_defer.mu);
            continue;
        }
        q->head = (q->head + 1) % DEFER_CAP;
        q->len--;
        pthread_mutex_unlock(&g_defer.mu);
        reply_value(d.req);
        fastrpc_request_free(d.req);
        pthread_mutex_lock(&g_defer.mu);
    }
    pthread_mutex_unlock(&g_defer.mu);
    return NULL;
}

/* ---- server B: polled queue ------------------------------------------------------------ */

static fastrpc_server_queue *g_squeue;

static void *server_poller(void *arg) {
    (void)arg;
    fastrpc_request *batch[64];
    for (;;) {
        size_t n = 0;
        fastrpc_status s = fastrpc_server_queue_poll(g_squeue, batch, 64, 50, &n);
        if (s == FASTRPC_STATUS_CLOSED) break;
        if (s != FASTRPC_STATUS_OK) {
            FAIL("server_queue_poll: %s", status_name(s));
            break;
        }
        for (size_t i = 0; i < n; i++) {
            const uint8_t *nm = NULL;
            size_t nl = 0;
            fastrpc_request_name(batch[i], &nm, &nl);
            if (!name_is(nm, nl, "free")) reply_value(batch[i]);
            fastrpc_request_free(batch[i]);
        }
    }
    return NULL;
}

/* ---- clients ---------------------------------------------------------------------------- */

static char g_addr_a[128], g_addr_b[128];

static fastrpc_client *client_new(const char *addr, uint32_t compression, size_t max_pending) {
    fastrpc_client_config_builder *b = NULL;
    fastrpc_client *c = NULL;
    if (fastrpc_client_config_builder_new(&b) != FASTRPC_STATUS_OK) return NULL;
    fastrpc_client_config_builder_set_addr(b, addr);
    fastrpc_client_config_builder_set_compression(b, compression);
    fastrpc_client_config_builder_set_request_timeout_ms(b, 10000);
    fastrpc_client_config_builder_set_reconnect_backoff_ms(b, 5, 50);
    if (max_pending) fastrpc_client_config_builder_set_max_pending_requests(b, max_pending);
    if (fastrpc_client_new(b, &c) != FASTRPC_STATUS_OK) {
        FAIL("client_new %s", addr);
        c = NULL;
    }
    fastrpc_client_config_builder_free(b);
    return c;
}

static fastrpc_client *g_ca, *g_cb; /* long-lived: snappy to A, flate to B */

/* Per-call record for callbacks: the expected value and an exactly-once counter. */
typedef struct async_call {
    char expect[32];
    size_t len;
    int fail_ok; /* an error is an acceptable outcome (client freed / closed) */
    long *in_flight;
} async_call;

static long g_async_issued, g_async_done, g_async_in_flight;
static long g_churn_issued, g_churn_done, g_churn_in_flight;

static void async_cb(void *ud, fastrpc_status s, fastrpc_response *r) {
    async_call *a = (async_call *)ud;
    if (s == FASTRPC_STATUS_OK) {
        if (!response_is(r, B(a->expect), a->len)) FAIL("async: wrong value for %s", a->expect);
    } else if (!a->fail_ok) {
        FAIL("async call %s: %s", a->expect, status_name(s));
    }
    ADD(a->in_flight, -1);
    if (a->in_flight == &g_churn_in_flight) {
        ADD(&g_churn_done, 1);
    } else {
        ADD(&g_async_done, 1);
    }
    free(a);
    fastrpc_response_free(r);
}

static long g_blocking_calls, g_blocking_ok;

static void *w_blocking(void *arg) {
    uint64_t seed = 0x1234567u + (uintptr_t)arg;
    fastrpc_response *r = NULL;
    fastrpc_response_new(&r);
    char v[32];
    while (!LOAD(&g_stop)) {
        uint32_t k = rnd(&seed);
        int len = snprintf(v, sizeof v, "b%u", k);
        const char *names[] = {"echo", "echo", "defer", "big", "free", "echo"};
        const char *name = names[k % 6];
        fastrpc_client *c = (k % 5 == 0) ? g_cb : g_ca;
        if (c == g_cb && (strcmp(name, "big") == 0 || strcmp(name, "defer") == 0)) name = "echo";
        ADD(&g_blocking_calls, 1);
        fastrpc_status s =
            fastrpc_client_call(c, B(name), strlen(name), B(v), (size_t)len, 5000, r);
        if (s != FASTRPC_STATUS_OK) {
            FAIL("blocking %s: %s", name, status_name(s));
            continue;
        }
        int ok;
        if (strcmp(name, "big") == 0) {
            ok = response_is(r, g_big, BIG_LEN);
        } else if (strcmp(name, "free") == 0) {
            ok = response_is(r, B("ERR"), 3);
        } else {
            ok = response_is(r, B(v), (size_t)len);
        }
        if (!ok) FAIL("blocking %s: wrong value", name);
        else ADD(&g_blocking_ok, 1);
    }
    fastrpc_response_free(r);
    return NULL;
}

static void *w_async(void *arg) {
    (void)arg;
    uint64_t seed = 0xabcdefu;
    while (!LOAD(&g_stop)) {
        if (LOAD(&g_async_in_flight) >= MAX_ASYNC_IN_FLIGHT) {
            sleep_ms(1);
            continue;
        }
        async_call *a = (async_call *)calloc(1, sizeof *a);
        uint32_t k = rnd(&seed);
        a->len = (size_t)snprintf(a->expect, sizeof a->expect, "a%u", k);
        a->in_flight = &g_async_in_flight;
        const char *name = (k % 3 == 0) ? "defer" : "echo";
        ADD(&g_async_in_flight, 1);
        ADD(&g_async_issued, 1);
        fastrpc_status s = fastrpc_client_call_async(g_ca, B(name), strlen(name), B(a->expect),
                                                     a->len, 5000, async_cb, a);
        if (s != FASTRPC_STATUS_OK) {
            FAIL("call_async: %s", status_name(s));
            ADD(&g_async_in_flight, -1);
            ADD(&g_async_issued, -1);
            free(a);
        }
    }
    return NULL;
}

static fastrpc_completion_queue *g_cq;
static long g_queued_issued, g_queued_done, g_queued_in_flight;

static void *cq_poller(void *arg) {
    (void)arg;
    fastrpc_completion out[32];
    for (;;) {
        size_t n = 0;
        fastrpc_status s = fastrpc_completion_queue_poll(g_cq, out, 32, 50, &n);
        if (s == FASTRPC_STATUS_CLOSED) break;
        if (s != FASTRPC_STATUS_OK) {
            FAIL("completion_queue_poll: %s", status_name(s));
            break;
        }
        for (size_t i = 0; i < n; i++) {
            char want[32];
            int len = snprintf(want, sizeof want, "q%llu", (unsigned long long)out[i].tag);
            if (out[i].status != FASTRPC_STATUS_OK) {
                FAIL("queued call %llu: %s", (unsigned long long)out[i].tag,
                     status_name(out[i].status));
            } else if (!response_is(out[i].response, B(want), (size_t)len)) {
                FAIL("queued call %llu: wrong value", (unsigned long long)out[i].tag);
            }
            fastrpc_response_free(out[i].response);
            ADD(&g_queued_done, 1);
            ADD(&g_queued_in_flight, -1);
        }
    }
    return NULL;
}

static void *w_queued(void *arg) {
    (void)arg;
    uint64_t tag = 0;
    char v[32];
    while (!LOAD(&g_stop)) {
        if (LOAD(&g_queued_in_flight) >= MAX_QUEUED_IN_FLIGHT) {
            sleep_ms(1);
            continue;
        }
        tag++;
        int len = snprintf(v, sizeof v, "q%llu", (unsigned long long)tag);
        ADD(&g_queued_in_flight, 1);
        ADD(&g_queued_issued, 1);
        fastrpc_status s = fastrpc_client_call_queued(g_cb, B("echo"), 4, B(v), (size_t)len,
                                                      5000, g_cq, tag);
        if (s != FASTRPC_STATUS_OK) {
            FAIL("call_queued: %s", status_name(s));
            ADD(&g_queued_in_flight, -1);
            ADD(&g_queued_issued, -1);
        }
    }
    return NULL;
}

static long g_sends;

static void *w_send(void *arg) {
    (void)arg;
    while (!LOAD(&g_stop)) {
        fastrpc_status s = fastrpc_client_send(g_ca, B("log"), 3, B("fire and forget"), 15);
        if (s == FASTRPC_STATUS_OK) ADD(&g_sends, 1);
        else if (s != FASTRPC_STATUS_OVERFLOW) FAIL("send: %s", status_name(s));
        sleep_ms(1);
    }
    return NULL;
}

static long g_churn_clients;

/* Clients created and freed all the time: some closed with a drain, some freed with async
 * calls in flight (their callbacks still run, with CLOSED). */
static void *w_churn(void *arg) {
    (void)arg;
    uint64_t seed = 0x5eed;
    fastrpc_response *r = NULL;
    fastrpc_response_new(&r);
    while (!LOAD(&g_stop)) {
        uint32_t k = rnd(&seed);
        const char *addr = (k & 1) ? g_addr_a : g_addr_b;
        fastrpc_client *c = client_new(addr, k % 3, 0);
        if (!c) break;
        ADD(&g_churn_clients, 1);
        int calls = 1 + (int)(k % 8);
        for (int i = 0; i < calls; i++) {
            if (i % 2 == 0) {
                char v[16];
                int len = snprintf(v, sizeof v, "c%d", i);
                fastrpc_status s = fastrpc_client_call(c, B("echo"), 4, B(v), (size_t)len, 5000, r);
                if (s != FASTRPC_STATUS_OK) FAIL("churn call: %s", status_name(s));
                else if (!response_is(r, B(v), (size_t)len)) FAIL("churn call: wrong value");
            } else {
                async_call *a = (async_call *)calloc(1, sizeof *a);
                a->len = (size_t)snprintf(a->expect, sizeof a->expect, "x%d", i);
                a->fail_ok = 1;
                a->in_flight = &g_churn_in_flight;
                ADD(&g_churn_in_flight, 1);
                ADD(&g_churn_issued, 1);
                fastrpc_status s = fastrpc_client_call_async(c, B("defer"), 5, B(a->expect),
                                                             a->len, 5000, async_cb, a);
                if (s != FASTRPC_STATUS_OK) {
                    FAIL("churn call_async: %s", status_name(s));
                    ADD(&g_churn_in_flight, -1);
                    ADD(&g_churn_issued, -1);
                    free(a);
                }
            }
        }
        if (k % 4 == 0) fastrpc_client_close(c, 100);
        fastrpc_client_free(c); /* possibly with calls in flight */
    }
    fastrpc_response_free(r);
    return NULL;
}

/* ---- errors on purpose ----------------------------------------------------------------- */

static long g_errors_provoked;
static int g_fake_port, g_dead_port;

/* A fake server that answers every handshake with the wrong sniff header. */
static void *fake_server(void *arg) {
    int lfd = *(int *)arg;
    while (!LOAD(&g_stop)) {
        struct pollfd p;
        p.fd = lfd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, 50) <= 0) continue;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) continue;
        const char bad[] = "XX\0\1\0"; /* sniff "XX" where "S" is expected */
        ssize_t w = send(fd, bad, 5, MSG_NOSIGNAL);
        (void)w;
        close(fd);
    }
    return NULL;
}

static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0) return -1;
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return fd;
}

static void expect(fastrpc_status got, fastrpc_status want, const char *what) {
    if (got != want) FAIL("%s: got %s, want %s", what, status_name(got), status_name(want));
    else ADD(&g_errors_provoked, 1);
}

static void *w_errors(void *arg) {
    (void)arg;
    fastrpc_response *r = NULL;
    fastrpc_response_new(&r);
    uint8_t *huge = (uint8_t *)calloc(1, (1u << 20) + 1);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", g_dead_port);
    fastrpc_client *dead = client_new(addr, FASTRPC_COMPRESSION_NONE, 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", g_fake_port);
    fastrpc_client_config_builder *b = NULL;
    fastrpc_client_config_builder_new(&b);
    fastrpc_client_config_builder_set_addr(b, addr);
    fastrpc_client_config_builder_set_sniff_header(b, B("S"), 1);
    fastrpc_client_config_builder_set_reconnect_backoff_ms(b, 1, 10);
    fastrpc_client *bad_sniff = NULL;
    if (fastrpc_client_new(b, &bad_sniff) != FASTRPC_STATUS_OK) FAIL("client_new");
    fastrpc_client_config_builder_free(b);
    int round = 0;
    while (!LOAD(&g_stop)) {
        round++;
        /* TIMEOUT: the handler answers "hold" 300 ms later. */
        expect(fastrpc_client_call(g_ca, B("hold"), 4, B("t"), 1, 20, r), FASTRPC_STATUS_TIMEOUT,
               "timeout");
        /* TOO_LARGE: a value over max_frame_size. */
        expect(fastrpc_client_call(g_ca, B("echo"), 4, huge, (1u << 20) + 1, 1000, r),
               FASTRPC_STATUS_TOO_LARGE, "too large");
        /* INVALID_ARGUMENT: (NULL, 3). */
        expect(fastrpc_client_call(g_ca, NULL, 3, NULL, 0, 1000, r),
               FASTRPC_STATUS_INVALID_ARGUMENT, "null name");
        /* CONNECT: nothing listens there (or the client backs off after that). */
        expect(fastrpc_client_call(dead, B("echo"), 4, B("d"), 1, 1000, r),
               FASTRPC_STATUS_CONNECT, "connect");
        /* PROTOCOL: the fake server's sniff header is wrong (CONNECT while backing off). */
        fastrpc_status s = fastrpc_client_call(bad_sniff, B("echo"), 4, B("p"), 1, 1000, r);
        if (s != FASTRPC_STATUS_PROTOCOL && s != FASTRPC_STATUS_CONNECT) {
            FAIL("bad sniff: %s", status_name(s));
        } else {
            ADD(&g_errors_provoked, 1);
        }
        /* OVERFLOW and CLOSED: a client allowing 2 pending calls, then closed. */
        if (round % 4 == 0) {
            fastrpc_client *c = client_new(g_addr_a, FASTRPC_COMPRESSION_SNAPPY, 2);
            if (c) {
                for (int i = 0; i < 2; i++) {
                    async_call *a = (async_call *)calloc(1, sizeof *a);
                    a->len = (size_t)snprintf(a->expect, sizeof a->expect, "o%d", i);
                    a->fail_ok = 1;
                    a->in_flight = &g_churn_in_flight;
                    ADD(&g_churn_in_flight, 1);
                    ADD(&g_churn_issued, 1);
                    if (fastrpc_client_call_async(c, B("hold"), 4, B(a->expect), a->len, 2000,
                                                  async_cb, a) != FASTRPC_STATUS_OK) {
                        FAIL("overflow setup");
                        ADD(&g_churn_in_flight, -1);
                        ADD(&g_churn_issued, -1);
                        free(a);
                    }
                }
                expect(fastrpc_client_call(c, B("echo"), 4, B("o"), 1, 1000, r),
                       FASTRPC_STATUS_OVERFLOW, "overflow");
                fastrpc_client_close(c, 0);
                expect(fastrpc_client_call(c, B("echo"), 4, B("c"), 1, 1000, r),
                       FASTRPC_STATUS_CLOSED, "closed");
                fastrpc_client_free(c);
            }
        }
        sleep_ms(10);
    }
    fastrpc_client_free(dead);
    fastrpc_client_free(bad_sniff);
    fastrpc_response_free(r);
    free(huge);
    return NULL;
}

/* ---- main --------------------------------------------------------------------------------- */

static void on_alarm(int sig) {
    (void)sig;
    const char m[] = "\nWATCHDOG: the soak did not finish in time\n0 passed, 1 failed\n";
    ssize_t w = write(2, m, sizeof m - 1);
    (void)w;
    _exit(2);
}

static int g_pass, g_fail;

static void check(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (ok) g_pass++;
    else g_fail++;
}

int main(void) {
    long seconds = 60;
    const char *e = getenv("SOAK_SECONDS");
    if (e && atol(e) > 0) seconds = atol(e);
    long warm = seconds / 6 < 2 ? 2 : seconds / 6;
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(seconds + 120));
    for (size_t i = 0; i < BIG_LEN; i++) g_big[i] = (uint8_t)(i * 31 + 7);

    /* Servers. */
    fastrpc_server_config_builder *sb = NULL;
    fastrpc_server_config_builder_new(&sb);
    fastrpc_server_config_builder_set_compression(sb, FASTRPC_COMPRESSION_SNAPPY);
    fastrpc_server_config_builder_set_error_reply(sb, B("ERR"), 3);
    fastrpc_server *sa = NULL, *sbq = NULL;
    if (fastrpc_server_new(sb, "127.0.0.1:0", handler, NULL, &sa) != FASTRPC_STATUS_OK) {
        fprintf(stderr, "cannot start server A\n0 passed, 1 failed\n");
        return 1;
    }
    fastrpc_server_config_builder_set_compression(sb, FASTRPC_COMPRESSION_FLATE);
    fastrpc_server_queue_new(&g_squeue);
    if (fastrpc_server_new_queued(sb, "127.0.0.1:0", g_squeue, &sbq) != FASTRPC_STATUS_OK) {
        fprintf(stderr, "cannot start server B\n0 passed, 1 failed\n");
        return 1;
    }
    fastrpc_server_config_builder_free(sb);
    size_t n = 0;
    fastrpc_server_local_addr(sa, g_addr_a, sizeof g_addr_a, &n);
    fastrpc_server_local_addr(sbq, g_addr_b, sizeof g_addr_b, &n);
    int fake_fd = listen_any(&g_fake_port);
    int dead_fd = listen_any(&g_dead_port);
    close(dead_fd); /* nothing listens on g_dead_port now */

    g_ca = client_new(g_addr_a, FASTRPC_COMPRESSION_SNAPPY, 0);
    g_cb = client_new(g_addr_b, FASTRPC_COMPRESSION_FLATE, 0);
    fastrpc_completion_queue_new(&g_cq);
    if (!g_ca || !g_cb || !g_cq || fake_fd < 0) {
        fprintf(stderr, "setup failed\n0 passed, 1 failed\n");
        return 1;
    }

    pthread_t responder_t, spoll_t, cq_t, fake_t, workers[8];
    int nworkers = 0;
    pthread_create(&responder_t, NULL, responder, NULL);
    pthread_create(&spoll_t, NULL, server_poller, NULL);
    pthread_create(&cq_t, NULL, cq_poller, NULL);
    pthread_create(&fake_t, NULL, fake_server, &fake_fd);
    pthread_create(&workers[nworkers++], NULL, w_blocking, (void *)1);
    pthread_create(&workers[nworkers++], NULL, w_blocking, (void *)2);
    pthread_create(&workers[nworkers++], NULL, w_async, NULL);
    pthread_create(&workers[nworkers++], NULL, w_queued, NULL);
    pthread_create(&workers[nworkers++], NULL, w_send, NULL);
    pthread_create(&workers[nworkers++], NULL, w_churn, NULL);
    pthread_create(&workers[nworkers++], NULL, w_errors, NULL);

    int64_t t0 = now_ms();
    sleep_ms(warm * 1000);
    long calls_warm = LOAD(&g_blocking_calls) + LOAD(&g_async_done) + LOAD(&g_queued_done);
    long rss_start = rss_kb();
    long rss_mid = 0;
    int trace = getenv("SOAK_TRACE") != NULL;
    int64_t last_trace = now_ms();
    while (now_ms() - t0 < seconds * 1000) {
        sleep_ms(200);
        if (!rss_mid && now_ms() - t0 >= (seconds * 1000 + warm * 1000) / 2) rss_mid = rss_kb();
        if (trace && now_ms() - last_trace >= 2000) {
            last_trace = now_ms();
            fprintf(stderr, "soak trace: %5.1f s  rss %ld KiB  blocking %ld async %ld queued %ld "
                    "churned %ld\n", (double)(now_ms() - t0) / 1000, rss_kb(),
                    LOAD(&g_blocking_calls), LOAD(&g_async_done), LOAD(&g_queued_done),
                    LOAD(&g_churn_clients));
        }
    }
    long rss_end = rss_kb();
    long calls_end = LOAD(&g_blocking_calls) + LOAD(&g_async_done) + LOAD(&g_queued_done);
    STORE(&g_stop, 1);
    for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
    pthread_join(fake_t, NULL);
    close(fake_fd);

    /* Every async and queued call completes exactly once (callbacks also for freed clients). */
    int64_t w0 = now_ms();
    while ((LOAD(&g_async_in_flight) || LOAD(&g_queued_in_flight) || LOAD(&g_churn_in_flight)) &&
           now_ms() - w0 < 15000)
        sleep_ms(10);
    fastrpc_client_free(g_ca);
    fastrpc_client_free(g_cb);

    /* Every server connection closes once its clients are gone. */
    fastrpc_server_stats st_a, st_b;
    st_a.struct_size = sizeof st_a;
    st_b.struct_size = sizeof st_b;
    w0 = now_ms();
    for (;;) {
        fastrpc_server_get_stats(sa, &st_a);
        fastrpc_server_get_stats(sbq, &st_b);
        if ((st_a.connections_open == 0 && st_b.connections_open == 0) || now_ms() - w0 > 10000) break;
        sleep_ms(10);
    }
    fastrpc_completion_queue_shutdown(g_cq);
    pthread_join(cq_t, NULL);
    fastrpc_server_stop(sa, 2000);
    fastrpc_server_stop(sbq, 2000);
    pthread_mutex_lock(&g_defer.mu);
    g_defer.done = 1;
    pthread_cond_broadcast(&g_defer.cv);
    pthread_mutex_unlock(&g_defer.mu);
    pthread_join(responder_t, NULL);
    fastrpc_server_queue_shutdown(g_squeue);
    pthread_join(spoll_t, NULL);
    fastrpc_server_free(sa);
    fastrpc_server_free(sbq);
    fastrpc_server_queue_free(g_squeue);
    fastrpc_completion_queue_free(g_cq);

    long growth = rss_end - rss_start;
    long tolerance = RSS_TOLERANCE_KB + rss_start / 20;
    double secs = (double)(seconds - warm);
    printf("soak: %ld s (%ld s warm-up); %ld blocking calls (%ld ok), %ld async, %ld queued, "
           "%ld sends (%ld seen), %ld churned clients (%ld calls), %ld errors provoked; "
           "%.0f calls/s measured\n",
           seconds, warm, LOAD(&g_blocking_calls), LOAD(&g_blocking_ok), LOAD(&g_async_done),
           LOAD(&g_queued_done), LOAD(&g_sends), LOAD(&g_nowait_seen), LOAD(&g_churn_clients),
           LOAD(&g_churn_done), LOAD(&g_errors_provoked),
           (double)(calls_end - calls_warm) / (secs > 0 ? secs : 1));
    printf("soak: VmRSS %ld KiB after warm-up, %ld KiB at mid-run, %ld KiB at the end: %+ld KiB "
           "(tolerance %ld KiB)\n",
           rss_start, rss_mid, rss_end, growth, tolerance);
    check(LOAD(&g_failures) == 0, "every call had its expected outcome");
    check(LOAD(&g_async_done) == LOAD(&g_async_issued), "every async callback ran once");
    check(LOAD(&g_queued_done) == LOAD(&g_queued_issued), "every queued completion arrived once");
    check(LOAD(&g_churn_done) == LOAD(&g_churn_issued),
          "every callback of a churned client ran once");
    check(st_a.connections_open == 0 && st_b.connections_open == 0,
          "every server connection closed");
    check(LOAD(&g_blocking_ok) > 0 && LOAD(&g_async_done) > 0 && LOAD(&g_queued_done) > 0 &&
              LOAD(&g_churn_clients) > 0 && LOAD(&g_errors_provoked) > 0 && LOAD(&g_sends) > 0,
          "every kind of work ran");
    check(growth <= tolerance, "VmRSS growth within the tolerance");
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail == 0 ? 0 : 1;
}
