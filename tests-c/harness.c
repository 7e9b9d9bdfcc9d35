/*
 * harness.c: see harness.h.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
#define TH_THREAD_LOCAL thread_local
#else
#define TH_THREAD_LOCAL _Thread_local
#endif

int th_quick = 0;
int th_slow = 1;

static const char *g_program = "test";
static int g_argc;
static char **g_argv;
static int g_verbose;
static unsigned g_watchdog_s = 60;

static pthread_mutex_t g_fail_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_current_failed; /* failures in the running test (atomic) */
static volatile const char *g_current_name = "(none)";
static int g_passed, g_failed;
static int g_seen[64];

/* ---- watchdog ------------------------------------------------------------------------ */

static void on_alarm(int sig) {
    (void)sig;
    /* Only async-signal-safe calls here. */
    const char *a = "\nWATCHDOG: test '";
    const char *name = (const char *)g_current_name;
    const char *b = "' did not finish in time; aborting\n";
    ssize_t r;
    r = write(2, a, strlen(a));
    r = write(2, name, strlen(name));
    r = write(2, b, strlen(b));
    r = write(1, "0 passed, 1 failed\n", 19);
    (void)r;
    _exit(3);
}

static long env_long(const char *name, long dflt) {
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') return dflt;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (end == v) return dflt;
    return n;
}

void th_init(int argc, char **argv, const char *program) {
    g_program = program;
    g_argc = argc;
    g_argv = argv;
    th_quick = env_long("FASTRPC_TEST_QUICK", 0) != 0;
    th_slow = (int)env_long("FASTRPC_TEST_SLOW", 1);
    if (th_slow < 1) th_slow = 1;
    g_verbose = env_long("FASTRPC_TEST_VERBOSE", 0) != 0;
    g_watchdog_s = (unsigned)(60 * th_slow);
    if (g_watchdog_s > 900) g_watchdog_s = 900;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("# %s: fastrpc %s (header %s)%s%s\n", program, fastrpc_version(), FASTRPC_VERSION,
           th_quick ? ", quick" : "", th_slow > 1 ? ", slow" : "");
}

static int selected(const char *name) {
    if (g_argc <= 1) return 1;
    for (int i = 1; i < g_argc; i++) {
        if (strncmp(name, g_argv[i], strlen(g_argv[i])) == 0) return 1;
    }
    return 0;
}

void th_run(const char *name, th_test_fn fn) {
    if (!selected(name)) return;
    g_current_name = name;
    TH_STORE(&g_current_failed, 0);
    int64_t t0 = th_now_ms();
    alarm(g_watchdog_s);
    fn();
    alarm(0);
    int64_t dt = th_now_ms() - t0;
    if (TH_LOAD(&g_current_failed) == 0) {
        g_passed++;
        if (g_verbose) printf("ok   %-44s %6lld ms\n", name, (long long)dt);
    } else {
        g_failed++;
        printf("FAIL %-44s %6lld ms\n", name, (long long)dt);
    }
    fflush(stdout);
}

int th_finish(void) {
    printf("# %s\n", g_program);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    fflush(stdout);
    return g_failed == 0 ? 0 : 1;
}

const char *th_last_error(void) {
    static TH_THREAD_LOCAL char buf[1024];
    buf[0] = '\0';
    fastrpc_last_error_message(buf, sizeof buf, NULL);
    return buf;
}

void th_fail(const char *file, int line, const char *what) {
    const char *err = th_last_error();
    pthread_mutex_lock(&g_fail_mu);
    TH_ADD(&g_current_failed, 1);
    fprintf(stdout, "  %s:%d: [%s] %s failed (last error: \"%s\")\n", file, line,
            (const char *)g_current_name, what, err);
    fflush(stdout);
    pthread_mutex_unlock(&g_fail_mu);
}

const char *th_status_name(fastrpc_status s) {
    switch ((unsigned)s) {
    case FASTRPC_STATUS_OK: return "OK";
    case FASTRPC_STATUS_TIMEOUT: return "TIMEOUT";
    case FASTRPC_STATUS_OVERFLOW: return "OVERFLOW";
    case FASTRPC_STATUS_CONNECT: return "CONNECT";
    case FASTRPC_STATUS_CONNECTION: return "CONNECTION";
    case FASTRPC_STATUS_CLOSED: return "CLOSED";
    case FASTRPC_STATUS_PROTOCOL: return "PROTOCOL";
    case FASTRPC_STATUS_TLS: return "TLS";
    case FASTRPC_STATUS_TOO_LARGE: return "TOO_LARGE";
    case FASTRPC_STATUS_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case FASTRPC_STATUS_IO: return "IO";
    case FASTRPC_STATUS_PANIC: return "PANIC";
    case FASTRPC_STATUS_ALREADY_ANSWERED: return "ALREADY_ANSWERED";
    case FASTRPC_STATUS_BUFFER_TOO_SMALL: return "BUFFER_TOO_SMALL";
    case FASTRPC_STATUS_CANCELLED: return "CANCELLED";
    default: return "?";
    }
}

void th_fail_status(const char *file, int line, const char *expr, fastrpc_status got,
                    fastrpc_status want) {
    char what[512];
    snprintf(what, sizeof what, "%s == %s (got %s = %u)", expr, th_status_name(want),
             th_status_name(got), (unsigned)got);
    th_fail(file, line, what);
}

void th_note_status(fastrpc_status s) {
    unsigned v = (unsigned)s;
    if (v < sizeof g_seen / sizeof g_seen[0]) TH_STORE(&g_seen[v], 1);
}

int th_status_seen(fastrpc_status s) {
    unsigned v = (unsigned)s;
    return v < sizeof g_seen / sizeof g_seen[0] ? TH_LOAD(&g_seen[v]) : 0;
}

/* ---- scale and time ------------------------------------------------------------------ */

long th_count(long full, long quick) { return th_quick ? quick : full; }

uint32_t th_ms(uint32_t base_ms) { return base_ms * (uint32_t)th_slow; }

int64_t th_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void th_pause(void) {
    struct timespec ts;
    ts.tv_sec = 0;
    ts.tv_nsec = 1000000; /* 1 ms */
    nanosleep(&ts, NULL);
}

/* ---- counter ------------------------------------------------------------------------- */

void th_counter_init(th_counter *c) {
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, &a);
    pthread_condattr_destroy(&a);
    c->n = 0;
}

void th_counter_destroy(th_counter *c) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

void th_counter_add(th_counter *c, long k) {
    pthread_mutex_lock(&c->mu);
    c->n += k;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

long th_counter_get(th_counter *c) {
    pthread_mutex_lock(&c->mu);
    long n = c->n;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static struct timespec deadline_in(uint32_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int th_counter_wait(th_counter *c, long target, uint32_t timeout_ms) {
    struct timespec dl = deadline_in(timeout_ms);
    pthread_mutex_lock(&c->mu);
    while (c->n < target) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) == ETIMEDOUT) break;
    }
    int ok = c->n >= target;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

/* ---- text ---------------------------------------------------------------------------- */

const char *th_response_error(const fastrpc_response *r, char *buf, size_t len) {
    if (len > 0) buf[0] = '\0';
    fastrpc_response_error_message(r, buf, len, NULL);
    return buf;
}

int th_response_is(const fastrpc_response *r, const char *want) {
    size_t n = strlen(want);
    if (fastrpc_response_len(r) != n) return 0;
    if (n == 0) return fastrpc_response_data(r) == NULL;
    const uint8_t *d = fastrpc_response_data(r);
    return d != NULL && memcmp(d, want, n) == 0;
}

/* ---- the test server ----------------------------------------------------------------- */

void th_handler_init(th_handler *h) {
    memset(h, 0, sizeof *h);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, &a);
    pthread_condattr_destroy(&a);
    h->double_second = FASTRPC_STATUS_PANIC;
    h->blocking_status = FASTRPC_STATUS_PANIC;
    h->server_new_status = FASTRPC_STATUS_PANIC;
    h->big_status = FASTRPC_STATUS_PANIC;
}

void th_handler_destroy(th_handler *h) {
    pthread_mutex_lock(&h->mu);
    size_t n = h->nheld;
    h->nheld = 0;
    fastrpc_request *held[TH_MAX_HELD];
    memcpy(held, h->held, n * sizeof held[0]);
    pthread_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n; i++) fastrpc_request_free(held[i]);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
}

int th_handler_wait_held(th_handler *h, size_t n, uint32_t timeout_ms) {
    struct timespec dl = deadline_in(timeout_ms);
    pthread_mutex_lock(&h->mu);
    while (h->nheld < n) {
        if (pthread_cond_timedwait(&h->cv, &h->mu, &dl) == ETIMEDOUT) break;
    }
    int ok = h->nheld >= n;
    pthread_mutex_unlock(&h->mu);
    return ok;
}

fastrpc_request *th_handler_take(th_handler *h, uint32_t timeout_ms) {
    if (!th_handler_wait_held(h, 1, timeout_ms)) return NULL;
    pthread_mutex_lock(&h->mu);
    fastrpc_request *r = h->held[0];
    memmove(&h->held[0], &h->held[1], (h->nheld - 1) * sizeof h->held[0]);
    h->nheld--;
    pthread_mutex_unlock(&h->mu);
    return r;
}

long th_handler_handled(th_handler *h) {
    pthread_mutex_lock(&h->mu);
    long n = h->handled;
    pthread_mutex_unlock(&h->mu);
    return n;
}

/* Builds `prefix name ":" value` for a request into buf; returns its length. */
static size_t echo_of(const fastrpc_request *req, const char *prefix, char *buf, size_t cap) {
    const uint8_t *name = NULL, *value = NULL;
    size_t nl = 0, vl = 0;
    if (fastrpc_request_name(req, &name, &nl) != FASTRPC_STATUS_OK) return 0;
    if (fastrpc_request_value(req, &value, &vl) != FASTRPC_STATUS_OK) return 0;
    size_t pl = strlen(prefix);
    if (pl + nl + 1 + vl > cap) return 0;
    memcpy(buf, prefix, pl);
    if (nl) memcpy(buf + pl, name, nl);
    buf[pl + nl] = ':';
    if (vl) memcpy(buf + pl + nl + 1, value, vl);
    return pl + nl + 1 + vl;
}

void th_handler_release_all(th_handler *h) {
    for (;;) {
        fastrpc_request *r = th_handler_take(h, 0);
        if (r == NULL) break;
        static char buf[1 << 16];
        size_t n = echo_of(r, "late:", buf, sizeof buf);
        fastrpc_request_reply(r, TH_B(buf), n);
        fastrpc_request_free(r);
    }
}

static int name_is(const uint8_t *name, size_t nl, const char *s) {
    size_t n = strlen(s);
    return nl == n && (n == 0 || memcmp(name, s, n) == 0);
}

static int name_starts(const uint8_t *name, size_t nl, const char *s) {
    size_t n = strlen(s);
    return nl >= n && memcmp(name, s, n) == 0;
}

static void dummy_handler(void *ud, fastrpc_request *r) {
    (void)ud;
    fastrpc_request_free(r);
}

void th_handle(void *userdata, fastrpc_request *req) {
    th_handler *h = (th_handler *)userdata;
    const uint8_t *name = NULL;
    size_t nl = 0;
    if (fastrpc_request_name(req, &name, &nl) != FASTRPC_STATUS_OK) {
        th_fail(__FILE__, __LINE__, "fastrpc_request_name in the handler");
        fastrpc_request_free(req);
        return;
    }
    uint32_t id = fastrpc_request_id(req);
    pthread_mutex_lock(&h->mu);
    h->handled++;
    if (id == 0) h->nowait++;
    int hold = (h->hold_all && !name_is(name, nl, "now")) || name_starts(name, nl, "hold");
    if (hold && id != 0) {
        if (h->nheld < TH_MAX_HELD) {
            h->held[h->nheld++] = req;
            pthread_cond_broadcast(&h->cv);
            pthread_mutex_unlock(&h->mu);
            return;
        }
        th_fail(__FILE__, __LINE__, "too many held requests");
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);

    char buf[4096];
    if (name_is(name, nl, "empty-reply")) {
        fastrpc_status s = fastrpc_request_reply(req, NULL, 0);
        if (s != FASTRPC_STATUS_OK) th_fail_status(__FILE__, __LINE__, "reply(NULL, 0)", s,
                                                   FASTRPC_STATUS_OK);
        fastrpc_request_free(req);
        return;
    }
    if (name_is(name, nl, "free")) {
        fastrpc_request_free(req); /* unanswered: the error reply goes out */
        return;
    }
    if (name_is(name, nl, "double")) {
        fastrpc_status first = fastrpc_request_reply(req, TH_B("first"), 5);
        fastrpc_status second = fastrpc_request_reply(req, TH_B("second"), 6);
        const uint8_t *d = NULL;
        size_t l = 0;
        fastrpc_status na = fastrpc_request_name(req, &d, &l);
        fastrpc_status va = fastrpc_request_value(req, &d, &l);
        uint32_t ida = fastrpc_request_id(req);
        fastrpc_request_free(req);
        if (first != FASTRPC_STATUS_OK) th_fail_status(__FILE__, __LINE__, "first reply",
                                                       first, FASTRPC_STATUS_OK);
        pthread_mutex_lock(&h->mu);
        h->double_second = second;
        h->double_name_after = na;
        h->double_value_after = va;
        h->double_id_after = ida;
        h->double_done++;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (name_is(name, nl, "argcheck")) {
        long bad = 0;
        const uint8_t *d = NULL;
        size_t l = 0;
        if (fastrpc_request_name(req, NULL, &l) != FASTRPC_STATUS_INVALID_ARGUMENT) bad++;
        if (fastrpc_request_name(req, &d, NULL) != FASTRPC_STATUS_INVALID_ARGUMENT) bad++;
        if (fastrpc_request_value(req, NULL, &l) != FASTRPC_STATUS_INVALID_ARGUMENT) bad++;
        if (fastrpc_request_value(req, &d, NULL) != FASTRPC_STATUS_INVALID_ARGUMENT) bad++;
        if (fastrpc_request_reply(req, NULL, 5) != FASTRPC_STATUS_INVALID_ARGUMENT) bad++;
        th_note_status(FASTRPC_STATUS_INVALID_ARGUMENT);
        /* The failed reply did not answer it: the echo below still goes out. */
        size_t n = echo_of(req, "", buf, sizeof buf);
        if (fastrpc_request_reply(req, TH_B(buf), n) != FASTRPC_STATUS_OK) bad++;
        fastrpc_request_free(req);
        pthread_mutex_lock(&h->mu);
        h->argcheck_bad += bad;
        h->argcheck_done++;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (name_is(name, nl, "blocking")) {
        fastrpc_response *r = NULL;
        fastrpc_status s = FASTRPC_STATUS_PANIC;
        if (fastrpc_response_new(&r) == FASTRPC_STATUS_OK) {
            s = fastrpc_client_call(h->client, TH_B("now"), 3, NULL, 0, 100, r);
            fastrpc_response_free(r);
        }
        /* A server may not be started from a library thread either. */
        fastrpc_server_config_builder *b = NULL;
        fastrpc_server *srv = NULL;
        fastrpc_status s2 = FASTRPC_STATUS_PANIC;
        if (fastrpc_server_config_builder_new(&b) == FASTRPC_STATUS_OK) {
            s2 = fastrpc_server_new(b, "127.0.0.1:0", dummy_handler, NULL, &srv);
            fastrpc_server_config_builder_free(b);
            if (s2 == FASTRPC_STATUS_OK) fastrpc_server_free(srv);
        }
        size_t n = echo_of(req, "", buf, sizeof buf);
        fastrpc_request_reply(req, TH_B(buf), n);
        fastrpc_request_free(req);
        pthread_mutex_lock(&h->mu);
        h->blocking_status = s;
        h->server_new_status = s2;
        h->blocking_done++;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (name_is(name, nl, "slow")) {
        pthread_mutex_lock(&h->mu);
        h->slow_entered++;
        int ms = h->slow_ms;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        /* A slow handler: it just takes time (deliberately against the "keep it short" rule). */
        int64_t end = th_now_ms() + ms;
        while (th_now_ms() < end) th_pause();
        size_t n = echo_of(req, "", buf, sizeof buf);
        fastrpc_request_reply(req, TH_B(buf), n);
        fastrpc_request_free(req);
        pthread_mutex_lock(&h->mu);
        h->slow_left++;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (name_is(name, nl, "free-server")) {
        size_t n = echo_of(req, "", buf, sizeof buf);
        fastrpc_request_reply(req, TH_B(buf), n);
        fastrpc_request_free(req);
        pthread_mutex_lock(&h->mu);
        fastrpc_server *s = h->server_to_free;
        h->server_to_free = NULL;
        pthread_mutex_unlock(&h->mu);
        fastrpc_server_free(s); /* from inside its own handler: must not wait for itself */
        pthread_mutex_lock(&h->mu);
        h->free_server_done++;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        return;
    }
    if (name_is(name, nl, "big")) {
        size_t len = h->big_len;
        uint8_t *big = (uint8_t *)calloc(len ? len : 1, 1);
        fastrpc_status s = fastrpc_request_reply(req, big, len);
        free(big);
        fastrpc_request_free(req);
        pthread_mutex_lock(&h->mu);
        h->big_status = s;
        h->big_done++;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        return;
    }
    size_t n = echo_of(req, "", buf, sizeof buf);
    fastrpc_status s = fastrpc_request_reply(req, TH_B(buf), n);
    if (s != FASTRPC_STATUS_OK && id != 0) {
        /* CLOSED is fine when the client went away; anything else is a failure. */
        if (s != FASTRPC_STATUS_CLOSED)
            th_fail_status(__FILE__, __LINE__, "echo reply", s, FASTRPC_STATUS_OK);
    }
    fastrpc_request_free(req);
}

fastrpc_server *th_server_start(const fastrpc_server_config_builder *builder, th_handler *h,
                                char *addr, size_t addr_len) {
    fastrpc_server_config_builder *own = NULL;
    if (builder == NULL) {
        if (fastrpc_server_config_builder_new(&own) != FASTRPC_STATUS_OK) {
            th_fail(__FILE__, __LINE__, "fastrpc_server_config_builder_new");
            return NULL;
        }
        builder = own;
    }
    fastrpc_server *s = NULL;
    fastrpc_status st = fastrpc_server_new(builder, "127.0.0.1:0", th_handle, h, &s);
    fastrpc_server_config_builder_free(own);
    if (st != FASTRPC_STATUS_OK) {
        th_fail_status(__FILE__, __LINE__, "fastrpc_server_new", st, FASTRPC_STATUS_OK);
        return NULL;
    }
    size_t n = 0;
    st = fastrpc_server_local_addr(s, addr, addr_len, &n);
    if (st != FASTRPC_STATUS_OK || n == 0 || strncmp(addr, "127.0.0.1:", 10) != 0) {
        th_fail_status(__FILE__, __LINE__, "fastrpc_server_local_addr", st, FASTRPC_STATUS_OK);
        fastrpc_server_free(s);
        return NULL;
    }
    return s;
}

fastrpc_client_config_builder *th_client_builder(const char *addr) {
    fastrpc_client_config_builder *b = NULL;
    if (fastrpc_client_config_builder_new(&b) != FASTRPC_STATUS_OK) {
        th_fail(__FILE__, __LINE__, "fastrpc_client_config_builder_new");
        return NULL;
    }
    if (fastrpc_client_config_builder_set_addr(b, addr) != FASTRPC_STATUS_OK) {
        th_fail(__FILE__, __LINE__, "fastrpc_client_config_builder_set_addr");
        fastrpc_client_config_builder_free(b);
        return NULL;
    }
    return b;
}

fastrpc_client *th_client_from(fastrpc_client_config_builder *b) {
    if (b == NULL) return NULL;
    fastrpc_client *c = NULL;
    fastrpc_status s = fastrpc_client_new(b, &c);
    fastrpc_client_config_builder_free(b);
    if (s != FASTRPC_STATUS_OK) {
        th_fail_status(__FILE__, __LINE__, "fastrpc_client_new", s, FASTRPC_STATUS_OK);
        return NULL;
    }
    return c;
}

fastrpc_client *th_client_new(const char *addr) { return th_client_from(th_client_builder(addr)); }

fastrpc_status th_call(const fastrpc_client *c, const char *name, const char *value,
                       uint32_t timeout_ms, fastrpc_response *r) {
    return fastrpc_client_call(c, TH_B(name), strlen(name), TH_B(value), strlen(value),
                               timeout_ms, r);
}

/* ---- asynchronous calls ------------------------------------------------------------- */

void th_async_cb(void *userdata, fastrpc_status status, fastrpc_response *response) {
    th_async *a = (th_async *)userdata;
    a->thread = pthread_self();
    a->status = status;
    th_note_status(status);
    if (fastrpc_response_status(response) != status)
        th_fail(__FILE__, __LINE__, "callback status == fastrpc_response_status(response)");
    if (status == FASTRPC_STATUS_OK && a->expect[0] != '\0')
        a->value_ok = th_response_is(response, a->expect);
    else
        a->value_ok = status == FASTRPC_STATUS_OK;
    fastrpc_response_free(response);
    TH_ADD(&a->calls, 1);
    th_counter_add(a->done, 1);
}
