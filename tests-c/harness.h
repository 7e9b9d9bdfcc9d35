/*
 * harness.h: a tiny test harness for the fastrpc C ABI, shared by the test programs in
 * tests-c/. No external framework: a list of test functions run one after another, each
 * under a watchdog alarm, and a few checking macros.
 *
 *   CHECK(cond)                  failed check: prints file:line, the condition and
 *                                fastrpc_last_error_message of this thread; the test goes on
 *   REQUIRE(cond)                the same, then returns from the test function
 *   CHECK_STATUS(expr, STATUS)   expr must return the fastrpc_status STATUS (both printed
 *                                by name on failure); REQUIRE_STATUS returns on failure
 *
 * Checks may fail on any thread (callbacks and handlers run on library threads): the
 * failure is charged to the test running at the time.
 *
 * The program ends with the line `N passed, M failed` (N and M count tests), the form CI
 * reads, and exits 0 only when M is 0.
 *
 * Environment:
 *   FASTRPC_TEST_QUICK=1   smaller iteration counts (for valgrind)
 *   FASTRPC_TEST_SLOW=K    multiply time bounds (call timeouts, waits, watchdog) by K
 *   FASTRPC_TEST_VERBOSE=1 print a line per passing test too
 * Arguments: test names (or name prefixes) to run only those.
 *
 * The sources compile as C11 and as C++17 (the harness proves the header is C++-clean too),
 * so: explicit casts from void *, no designated initializers, GCC __atomic builtins rather
 * than <stdatomic.h> / <atomic>.
 */
#ifndef FASTRPC_TESTS_HARNESS_H
#define FASTRPC_TESTS_HARNESS_H

#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <fastrpc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- running tests ------------------------------------------------------------------ */

typedef void (*th_test_fn)(void);

/* Reads the environment and arguments, installs the watchdog. */
void th_init(int argc, char **argv, const char *program);
/* Runs one test (unless filtered out by the arguments). */
void th_run(const char *name, th_test_fn fn);
/* Prints the summary line; returns the exit code (0 when nothing failed). */
int th_finish(void);

/* Records a failure of the current test (any thread). */
void th_fail(const char *file, int line, const char *what);
void th_fail_status(const char *file, int line, const char *expr, fastrpc_status got,
                    fastrpc_status want);
/* Remembers that a status was produced (for the every-status coverage check). */
void th_note_status(fastrpc_status s);
int th_status_seen(fastrpc_status s);
/* The name of a status code ("OK", "TIMEOUT", ...; "?" for unknown values). */
const char *th_status_name(fastrpc_status s);

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) th_fail(__FILE__, __LINE__, "CHECK(" #cond ")");                      \
    } while (0)

#define REQUIRE(cond)                                                                      \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            th_fail(__FILE__, __LINE__, "REQUIRE(" #cond ")");                             \
            return;                                                                        \
        }                                                                                  \
    } while (0)

#define CHECK_STATUS(expr, want)                                                           \
    do {                                                                                   \
        fastrpc_status th_s_ = (expr);                                                     \
        th_note_status(th_s_);                                                             \
        if (th_s_ != (want)) th_fail_status(__FILE__, __LINE__, #expr, th_s_, (want));     \
    } while (0)

#define REQUIRE_STATUS(expr, want)                                                         \
    do {                                                                                   \
        fastrpc_status th_s_ = (expr);                                                     \
        th_note_status(th_s_);                                                             \
        if (th_s_ != (want)) {                                                             \
            th_fail_status(__FILE__, __LINE__, #expr, th_s_, (want));                      \
            return;                                                                        \
        }                                                                                  \
    } while (0)

/* ---- scale and time ----------------------------------------------------------------- */

extern int th_quick; /* FASTRPC_TEST_QUICK */
extern int th_slow;  /* FASTRPC_TEST_SLOW (>= 1) */

/* `full` normally, `quick` under FASTRPC_TEST_QUICK. */
long th_count(long full, long quick);
/* A time bound in milliseconds, multiplied by FASTRPC_TEST_SLOW. */
uint32_t th_ms(uint32_t base_ms);
/* Monotonic clock in milliseconds. */
int64_t th_now_ms(void);
/* One short pause for bounded polling loops (not used to order events). */
void th_pause(void);

/* Polls `cond` until it holds or `timeout_ms` passed; evaluates to whether it held. */
#define TH_WAIT_UNTIL(cond, timeout_ms)                                                    \
    __extension__({                                                                        \
        int64_t th_end_ = th_now_ms() + (int64_t)(timeout_ms);                             \
        int th_ok_ = 0;                                                                    \
        for (;;) {                                                                         \
            if (cond) {                                                                    \
                th_ok_ = 1;                                                                \
                break;                                                                     \
            }                                                                              \
            if (th_now_ms() >= th_end_) break;                                             \
            th_pause();                                                                    \
        }                                                                                  \
        th_ok_;                                                                            \
    })

/* Atomics that mean the same in C and C++. */
#define TH_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define TH_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define TH_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)

/* ---- a counter with a condition variable -------------------------------------------- */

typedef struct th_counter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long n;
} th_counter;

void th_counter_init(th_counter *c);
void th_counter_destroy(th_counter *c);
void th_counter_add(th_counter *c, long k);
long th_counter_get(th_counter *c);
/* Waits until the count reaches `target`; returns whether it did within `timeout_ms`. */
int th_counter_wait(th_counter *c, long target, uint32_t timeout_ms);

/* ---- text ---------------------------------------------------------------------------- */

/* This thread's fastrpc_last_error_message (into a static per-thread buffer). */
const char *th_last_error(void);
/* A response's error message into buf. */
const char *th_response_error(const fastrpc_response *r, char *buf, size_t len);
/* Whether the response holds exactly the bytes of the NUL-terminated `want`. */
int th_response_is(const fastrpc_response *r, const char *want);
/* Shorthand casts for byte arguments. */
#define TH_B(s) ((const uint8_t *)(s))

/* ---- the test server ----------------------------------------------------------------- */

/*
 * One handler for every test, steered by the request name and the context's mode:
 *   "empty-reply"  answers with (NULL, 0)
 *   "free"         frees the request unanswered (the client gets the error reply)
 *   "double"       answers twice; records the second answer's status and what the name,
 *                  value and id accessors say afterwards
 *   "argcheck"     checks that NULL out-parameters and (NULL, 5) give INVALID_ARGUMENT,
 *                  then echoes
 *   "blocking"     makes a blocking fastrpc_client_call on h->client from inside the handler
 *                  and records its status, then echoes
 *   "big"          answers with h->big_len bytes; records the reply status
 *   "slow"         stays h->slow_ms in the handler (counted in slow_entered/slow_left), then
 *                  echoes: a handler still running when its server is freed
 *   "free-server"  echoes, then frees h->server_to_free from inside the handler
 *   "hold..."      keeps the request (h->held), to be answered by the test from its thread
 *   anything else  echoes: the reply is `name ":" value`
 * With h->hold_all set every request is held except those named "now".
 * Fire-and-forget requests (id 0) are counted in h->nowait and echoed (the reply is dropped).
 */
/* Room for every request a test may have held at once: test_balance's cancel loop makes
 * 5000 lone calls, each written at once by its caller (a lone call writes itself), so the
 * servers get (and hold) every one the cancel does not beat to the socket. */
enum { TH_MAX_HELD = 8192 };

typedef struct th_handler {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int hold_all;
    fastrpc_request *held[TH_MAX_HELD];
    size_t nheld;
    long handled;              /* handler invocations */
    long nowait;               /* requests with id 0 */
    uint32_t last_nowait_name_ok;
    /* "double" */
    fastrpc_status double_second;
    fastrpc_status double_name_after;
    fastrpc_status double_value_after;
    uint32_t double_id_after;
    long double_done;
    /* "argcheck": how many argument checks failed */
    long argcheck_done, argcheck_bad;
    /* "blocking" */
    const fastrpc_client *client;
    fastrpc_status blocking_status;
    fastrpc_status server_new_status;
    long blocking_done;
    /* "slow" */
    int slow_ms;
    long slow_entered, slow_left;
    /* "free-server" */
    fastrpc_server *server_to_free;
    long free_server_done;
    /* "big" */
    size_t big_len;
    fastrpc_status big_status;
    long big_done;
} th_handler;

void th_handler_init(th_handler *h);
/* Frees any request still held (unanswered: the error reply goes out) and the sync objects. */
void th_handler_destroy(th_handler *h);
/* Waits until at least n requests are held; returns whether they were within timeout_ms. */
int th_handler_wait_held(th_handler *h, size_t n, uint32_t timeout_ms);
/* Takes the oldest held request (NULL if none within timeout_ms). */
fastrpc_request *th_handler_take(th_handler *h, uint32_t timeout_ms);
/* Answers every held request with `name ":" value` ("late:" prefix) and frees it. */
void th_handler_release_all(th_handler *h);
long th_handler_handled(th_handler *h);

/* The fastrpc_handler function for a th_handler userdata. */
void th_handle(void *userdata, fastrpc_request *request);

/* Starts a server on 127.0.0.1:0 with `builder` (NULL: defaults) and th_handle; writes its
 * address into addr. NULL on failure (after recording a failed check). */
fastrpc_server *th_server_start(const fastrpc_server_config_builder *builder, th_handler *h,
                                char *addr, size_t addr_len);
/* A new client builder for addr (NULL on failure). */
fastrpc_client_config_builder *th_client_builder(const char *addr);
/* Creates the client from the builder and frees the builder (NULL on failure). */
fastrpc_client *th_client_from(fastrpc_client_config_builder *b);
/* th_client_from(th_client_builder(addr)). */
fastrpc_client *th_client_new(const char *addr);

/* One blocking call; returns its status and checks nothing. */
fastrpc_status th_call(const fastrpc_client *c, const char *name, const char *value,
                       uint32_t timeout_ms, fastrpc_response *r);

/* ---- asynchronous calls: per-call records -------------------------------------------- */

typedef struct th_async {
    th_counter *done;        /* counted once per callback */
    char expect[64];         /* the response value expected on OK ("" = do not check) */
    fastrpc_status status;   /* what the callback got */
    long calls;              /* callbacks run for this call (must end at 1) */
    int value_ok;            /* 1 when OK and the value matched */
    pthread_t thread;        /* the thread the callback ran on */
} th_async;

/* A fastrpc_call_callback for a th_async userdata: records, checks, frees the response. */
void th_async_cb(void *userdata, fastrpc_status status, fastrpc_response *response);

#ifdef __cplusplus
}
#endif

#endif /* FASTRPC_TESTS_HARNESS_H */
