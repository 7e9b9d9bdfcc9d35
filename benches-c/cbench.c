/*
 * cbench.c: calls/s through the C ABI (include/fastrpc.h), three ways of calling, against
 * an in-process server (fastrpc_server_new with a C handler) and against a separate
 * `fastrpc serve` process, next to the raw-TCP ceiling measured by `fastrpc bench --raw`
 * in the same run.
 *
 *   ./build/cbench [--fastrpc PATH] [--server inproc|child|both] [--addr ADDR]
 *                  [--duration SECONDS] [--threads 1,16,64] [--inflight 1024] [--batch 256]
 *                  [--modes blocking,callback,queue] [--no-raw]
 *
 * Modes, each on one client (one connection), name "foo", value "foobar", 255-byte replies,
 * no compression:
 *   blocking T   T threads each looping fastrpc_client_call with its own reused response
 *   callback     fastrpc_client_call_async keeping --inflight calls in flight: each
 *                callback frees its response and starts the next call
 *   queue        fastrpc_client_call_queued keeping --inflight calls in flight, one thread
 *                taking completions with fastrpc_completion_queue_poll, --batch at a time
 *
 * Each mode runs 0.3 s of warm-up, then --duration seconds are measured (calls completed in
 * the window / window). The child server is `fastrpc serve --listen 127.0.0.1:0
 * --compress none --reply fixed:255 --threads 2` (the bench's own defaults); the raw
 * ceiling is `fastrpc bench --raw --spawn-server child --concurrency C` for C = --inflight
 * and C = 1, run just before. Lines starting with "RESULT" are for scripts.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fastrpc.h>

extern char **environ;

enum { REPLY_LEN = 255, MAX_THREAD_COUNTS = 16 };

static const uint8_t NAME[] = "foo";
static const uint8_t VALUE[] = "foobar";
#define NAME_LEN 3u
#define VALUE_LEN 6u
static uint8_t REPLY[REPLY_LEN];

/* ------------------------------------------------------------------------------------ */
/* options */

static const char *opt_fastrpc = "../target/release/fastrpc";
static const char *opt_server = "both";
static const char *opt_addr = NULL;
static double opt_duration = 2.0;
static double opt_warmup = 0.3;
static int opt_threads[MAX_THREAD_COUNTS] = {1, 16, 64};
static int opt_nthreads = 3;
static int opt_inflight = 1024;
static int opt_batch = 256;
static bool opt_raw = true;
static bool mode_blocking = true, mode_callback = true, mode_queue = true;

static void usage(void) {
    fprintf(stderr,
            "usage: cbench [--fastrpc PATH] [--server inproc|child|both] [--addr ADDR]\n"
            "              [--duration SECONDS] [--threads 1,16,64] [--inflight 1024]\n"
            "              [--batch 256] [--modes blocking,callback,queue] [--no-raw]\n");
    exit(2);
}

/* ------------------------------------------------------------------------------------ */
/* helpers */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static double cpu_self_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0.0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* user + sys CPU seconds of process `pid` from /proc/PID/stat (-1 when unknown). */
static double cpu_pid_s(pid_t pid) {
    if (pid <= 0) return -1.0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1.0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1.0;
    /* fields after ")": 3 state ... 14 utime 15 stime */
    unsigned long long ut = 0, st = 0;
    int field = 2;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " ")) {
        field++;
        if (field == 14) ut = strtoull(tok, NULL, 10);
        if (field == 15) {
            st = strtoull(tok, NULL, 10);
            break;
        }
    }
    long tck = sysconf(_SC_CLK_TCK);
    if (tck <= 0) tck = 100;
    return (double)(ut + st) / (double)tck;
}

static void die_status(const char *what, fastrpc_status st) {
    char msg[128], details[512];
    fastrpc_status_message(st, msg, sizeof msg, NULL);
    fastrpc_last_error_message(details, sizeof details, NULL);
    fprintf(stderr, "cbench: %s: %s (%s)\n", what, msg, details);
    exit(1);
}

/* A counter owned by one thread, on its own cache line. */
typedef struct {
    _Alignas(64) atomic_ullong n;
} slot;

/* ------------------------------------------------------------------------------------ */
/* servers */

static void handler(void *userdata, fastrpc_request *req) {
    (void)userdata;
    fastrpc_request_reply(req, REPLY, REPLY_LEN);
    fastrpc_request_free(req);
}

static fastrpc_server *inproc_server(char *addr, size_t addr_len) {
    fastrpc_server_config_builder *b = NULL;
    fastrpc_status st = fastrpc_server_config_builder_new(&b);
    if (st == FASTRPC_STATUS_OK) st = fastrpc_server_config_builder_set_compression(b, FASTRPC_COMPRESSION_NONE);
    if (st != FASTRPC_STATUS_OK) die_status("server config", st);
    fastrpc_server *s = NULL;
    st = fastrpc_server_new(b, "127.0.0.1:0", handler, NULL, &s);
    fastrpc_server_config_builder_free(b);
    if (st != FASTRPC_STATUS_OK) die_status("fastrpc_server_new", st);
    st = fastrpc_server_local_addr(s, addr, addr_len, NULL);
    if (st != FASTRPC_STATUS_OK) die_status("fastrpc_server_local_addr", st);
    return s;
}

/* Starts `fastrpc serve ...` and reads its "listening ADDR" line. */
static pid_t child_server(char *addr, size_t addr_len) {
    int fds[2];
    if (pipe(fds) != 0) {
        perror("cbench: pipe");
        exit(1);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    char *argv[] = {(char *)opt_fastrpc, "serve", "--listen", "127.0.0.1:0", "--compress", "none",
                    "--reply", "fixed:255", "--threads", "2", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, opt_fastrpc, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        fprintf(stderr, "cbench: cannot start %s: %s\n", opt_fastrpc, strerror(rc));
        exit(1);
    }
    FILE *out = fdopen(fds[0], "r");
    char line[256] = "";
    if (!out || !fgets(line, sizeof line, out) || strncmp(line, "listening ", 10) != 0) {
        fprintf(stderr, "cbench: %s serve did not print its address (got %s)\n", opt_fastrpc, line);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        exit(1);
    }
    fclose(out);
    line[strcspn(line, "\r\n")] = 0;
    snprintf(addr, addr_len, "%s", line + 10);
    return pid;
}

static void stop_child(pid_t pid) {
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return;
        sleep_s(0.01);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* `fastrpc bench --raw` with `concurrency` in flight: its calls/s (0 on failure). */
static double raw_ceiling(int concurrency) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s' bench --raw --spawn-server child --concurrency %d --duration %.3fs --json --no-progress",
             opt_fastrpc, concurrency, opt_duration);
    FILE *p = popen(cmd, "r");
    if (!p) return 0.0;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = 0;
    pclose(p);
    char *k = strstr(buf, "\"calls_per_sec\":");
    return k ? strtod(k + strlen("\"calls_per_sec\":"), NULL) : 0.0;
}

/* ------------------------------------------------------------------------------------ */
/* the client and the measuring window */

static fastrpc_client *new_client(const char *addr) {
    fastrpc_client_config_builder *b = NULL;
    fastrpc_status st = fastrpc_client_config_builder_new(&b);
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_config_builder_set_addr(b, addr);
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_config_builder_set_compression(b, FASTRPC_COMPRESSION_NONE);
    size_t max_pending = (size_t)opt_inflight + 1024;
    for (int i = 0; i < opt_nthreads; i++)
        if ((size_t)opt_threads[i] + 1024 > max_pending) max_pending = (size_t)opt_threads[i] + 1024;
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_config_builder_set_max_pending_requests(b, max_pending);
    fastrpc_client *c = NULL;
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_new(b, &c);
    fastrpc_client_config_builder_free(b);
    if (st != FASTRPC_STATUS_OK) die_status("fastrpc_client_new", st);
    /* Connect before the clock starts. */
    fastrpc_response *r = NULL;
    fastrpc_response_new(&r);
    st = fastrpc_client_call(c, NAME, NAME_LEN, VALUE, VALUE_LEN, 5000, r);
    fastrpc_response_free(r);
    if (st != FASTRPC_STATUS_OK) die_status("first call", st);
    return c;
}

typedef struct {
    double calls_per_sec;
    double cpu_per_call_us;        /* this process */
    double server_cpu_per_call_us; /* the child server; < 0 when unknown */
    unsigned long long errors;
    double frames_per_flush;
} result;

typedef unsigned long long (*counter_fn)(void *);

static result window(counter_fn done, counter_fn errors, void *arg, fastrpc_client *client, pid_t server_pid) {
    result r = {0};
    sleep_s(opt_warmup);
    fastrpc_client_stats s0, s1;
    s0.struct_size = sizeof s0;
    s1.struct_size = sizeof s1;
    fastrpc_client_get_stats(client, &s0);
    double srv0 = cpu_pid_s(server_pid);
    double cpu0 = cpu_self_s();
    unsigned long long c0 = done(arg);
    double t0 = now_s();
    sleep_s(opt_duration);
    unsigned long long c1 = done(arg);
    double t1 = now_s();
    double cpu1 = cpu_self_s();
    double srv1 = cpu_pid_s(server_pid);
    fastrpc_client_get_stats(client, &s1);
    unsigned long long n = c1 - c0;
    r.calls_per_sec = (double)n / (t1 - t0);
    r.cpu_per_call_us = n ? (cpu1 - cpu0) * 1e6 / (double)n : 0.0;
    r.server_cpu_per_call_us = (n && srv0 >= 0 && srv1 >= 0) ? (srv1 - srv0) * 1e6 / (double)n : -1.0;
    r.errors = errors(arg);
    uint64_t fl = s1.io.flushes - s0.io.flushes;
    r.frames_per_flush = fl ? (double)(s1.io.frames_sent - s0.io.frames_sent) / (double)fl : 0.0;
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* mode 1: blocking calls from T threads */

typedef struct {
    fastrpc_client *client;
    atomic_bool stop;
    int nthreads;
    slot *done;
    slot *errors;
} blocking_ctx;

typedef struct {
    blocking_ctx *ctx;
    int i;
} blocking_arg;

static void *blocking_thread(void *p) {
    blocking_arg *a = p;
    blocking_ctx *ctx = a->ctx;
    fastrpc_response *resp = NULL;
    if (fastrpc_response_new(&resp) != FASTRPC_STATUS_OK) return NULL;
    unsigned long long n = 0, bad = 0;
    while (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
        fastrpc_status st = fastrpc_client_call(ctx->client, NAME, NAME_LEN, VALUE, VALUE_LEN, 0, resp);
        if (st == FASTRPC_STATUS_OK && fastrpc_response_len(resp) == REPLY_LEN) {
            atomic_store_explicit(&ctx->done[a->i].n, ++n, memory_order_relaxed);
        } else {
            atomic_store_explicit(&ctx->errors[a->i].n, ++bad, memory_order_relaxed);
            if (st == FASTRPC_STATUS_CLOSED) break;
        }
    }
    fastrpc_response_free(resp);
    return NULL;
}

static unsigned long long sum_slots(slot *s, int n) {
    unsigned long long t = 0;
    for (int i = 0; i < n; i++) t += atomic_load_explicit(&s[i].n, memory_order_relaxed);
    return t;
}
static unsigned long long blocking_done(void *p) {
    blocking_ctx *c = p;
    return sum_slots(c->done, c->nthreads);
}
static unsigned long long blocking_errors(void *p) {
    blocking_ctx *c = p;
    return sum_slots(c->errors, c->nthreads);
}

static result run_blocking(const char *addr, int nthreads, pid_t server_pid) {
    blocking_ctx ctx;
    ctx.client = new_client(addr);
    atomic_init(&ctx.stop, false);
    ctx.nthreads = nthreads;
    ctx.done = aligned_alloc(64, sizeof(slot) * (size_t)nthreads);
    ctx.errors = aligned_alloc(64, sizeof(slot) * (size_t)nthreads);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    blocking_arg *args = calloc((size_t)nthreads, sizeof *args);
    if (!ctx.done || !ctx.errors || !th || !args) {
        fprintf(stderr, "cbench: out of memory\n");
        exit(1);
    }
    for (int i = 0; i < nthreads; i++) {
        atomic_init(&ctx.done[i].n, 0);
        atomic_init(&ctx.errors[i].n, 0);
        args[i] = (blocking_arg){&ctx, i};
        pthread_create(&th[i], NULL, blocking_thread, &args[i]);
    }
    result r = window(blocking_done, blocking_errors, &ctx, ctx.client, server_pid);
    atomic_store(&ctx.stop, true);
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    fastrpc_client_free(ctx.client);
    free(ctx.done);
    free(ctx.errors);
    free(th);
    free(args);
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* mode 2: callbacks keeping N in flight */

typedef struct {
    fastrpc_client *client;
    atomic_bool stop;
    atomic_ullong done;
    atomic_ullong errors;
    atomic_long inflight;
} callback_ctx;

static void on_done(void *userdata, fastrpc_status status, fastrpc_response *resp) {
    callback_ctx *ctx = userdata;
    if (status == FASTRPC_STATUS_OK && fastrpc_response_len(resp) == REPLY_LEN)
        atomic_fetch_add_explicit(&ctx->done, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&ctx->errors, 1, memory_order_relaxed);
    fastrpc_response_free(resp);
    if (!atomic_load_explicit(&ctx->stop, memory_order_relaxed)) {
        fastrpc_status st =
            fastrpc_client_call_async(ctx->client, NAME, NAME_LEN, VALUE, VALUE_LEN, 0, on_done, ctx);
        if (st == FASTRPC_STATUS_OK) return;
        atomic_fetch_add_explicit(&ctx->errors, 1, memory_order_relaxed);
    }
    atomic_fetch_sub_explicit(&ctx->inflight, 1, memory_order_release);
}

static unsigned long long callback_done(void *p) {
    return atomic_load_explicit(&((callback_ctx *)p)->done, memory_order_relaxed);
}
static unsigned long long callback_errors(void *p) {
    return atomic_load_explicit(&((callback_ctx *)p)->errors, memory_order_relaxed);
}

static result run_callback(const char *addr, pid_t server_pid) {
    callback_ctx ctx;
    ctx.client = new_client(addr);
    atomic_init(&ctx.stop, false);
    atomic_init(&ctx.done, 0);
    atomic_init(&ctx.errors, 0);
    atomic_init(&ctx.inflight, 0);
    for (int i = 0; i < opt_inflight; i++) {
        atomic_fetch_add(&ctx.inflight, 1);
        fastrpc_status st = fastrpc_client_call_async(ctx.client, NAME, NAME_LEN, VALUE, VALUE_LEN, 0, on_done, &ctx);
        if (st != FASTRPC_STATUS_OK) {
            atomic_fetch_sub(&ctx.inflight, 1);
            die_status("fastrpc_client_call_async", st);
        }
    }
    result r = window(callback_done, callback_errors, &ctx, ctx.client, server_pid);
    atomic_store(&ctx.stop, true);
    double limit = now_s() + 10.0;
    while (atomic_load_explicit(&ctx.inflight, memory_order_acquire) > 0 && now_s() < limit) sleep_s(0.001);
    /* Closing completes whatever is left (callbacks run with CLOSED) before free returns. */
    fastrpc_client_close(ctx.client, 0);
    while (atomic_load_explicit(&ctx.inflight, memory_order_acquire) > 0) sleep_s(0.001);
    fastrpc_client_free(ctx.client);
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* mode 3: completion queue keeping N in flight, polled in batches */

typedef struct {
    fastrpc_client *client;
    fastrpc_completion_queue *queue;
    atomic_bool stop;
    slot done;
    slot errors;
} queue_ctx;

static void *queue_thread(void *p) {
    queue_ctx *ctx = p;
    fastrpc_completion *batch = calloc((size_t)opt_batch, sizeof *batch);
    if (!batch) return NULL;
    long inflight = 0;
    unsigned long long n = 0, bad = 0, tag = 0;
    for (int i = 0; i < opt_inflight; i++) {
        fastrpc_status st =
            fastrpc_client_call_queued(ctx->client, NAME, NAME_LEN, VALUE, VALUE_LEN, 0, ctx->queue, tag++);
        if (st != FASTRPC_STATUS_OK) die_status("fastrpc_client_call_queued", st);
        inflight++;
    }
    while (inflight > 0) {
        size_t got = 0;
        fastrpc_status st = fastrpc_completion_queue_poll(ctx->queue, batch, (size_t)opt_batch, 100, &got);
        if (st != FASTRPC_STATUS_OK) break;
        bool stop = atomic_load_explicit(&ctx->stop, memory_order_relaxed);
        for (size_t i = 0; i < got; i++) {
            if (batch[i].status == FASTRPC_STATUS_OK && fastrpc_response_len(batch[i].response) == REPLY_LEN)
                n++;
            else
                bad++;
            fastrpc_response_free(batch[i].response);
            inflight--;
            if (!stop) {
                st = fastrpc_client_call_queued(ctx->client, NAME, NAME_LEN, VALUE, VALUE_LEN, 0, ctx->queue, tag++);
                if (st == FASTRPC_STATUS_OK)
                    inflight++;
                else
                    bad++;
            }
        }
        atomic_store_explicit(&ctx->done.n, n, memory_order_relaxed);
        atomic_store_explicit(&ctx->errors.n, bad, memory_order_relaxed);
    }
    free(batch);
    return NULL;
}

static unsigned long long queue_done(void *p) {
    return atomic_load_explicit(&((queue_ctx *)p)->done.n, memory_order_relaxed);
}
static unsigned long long queue_errors(void *p) {
    return atomic_load_explicit(&((queue_ctx *)p)->errors.n, memory_order_relaxed);
}

static result run_queue(const char *addr, pid_t server_pid) {
    queue_ctx *ctx = aligned_alloc(64, sizeof *ctx + (64 - sizeof *ctx % 64) % 64);
    if (!ctx) exit(1);
    ctx->client = new_client(addr);
    ctx->queue = NULL;
    fastrpc_status st = fastrpc_completion_queue_new(&ctx->queue);
    if (st != FASTRPC_STATUS_OK) die_status("fastrpc_completion_queue_new", st);
    atomic_init(&ctx->stop, false);
    atomic_init(&ctx->done.n, 0);
    atomic_init(&ctx->errors.n, 0);
    pthread_t th;
    pthread_create(&th, NULL, queue_thread, ctx);
    result r = window(queue_done, queue_errors, ctx, ctx->client, server_pid);
    atomic_store(&ctx->stop, true);
    pthread_join(th, NULL);
    fastrpc_client_free(ctx->client);
    fastrpc_completion_queue_free(ctx->queue);
    free(ctx);
    return r;
}

/* ------------------------------------------------------------------------------------ */

static void print_result(const char *server, const char *mode, result r, double raw) {
    char ratio[32] = "-";
    if (raw > 0) snprintf(ratio, sizeof ratio, "%.3f", r.calls_per_sec / raw);
    char srv[32] = "-";
    if (r.server_cpu_per_call_us >= 0) snprintf(srv, sizeof srv, "%.2f", r.server_cpu_per_call_us);
    printf("%-7s %-26s %12.0f %9s %10.2f %10s %9.1f %7llu\n", server, mode, r.calls_per_sec, ratio,
           r.cpu_per_call_us, srv, r.frames_per_flush, r.errors);
    printf("RESULT server=%s mode=%s calls_per_sec=%.0f ratio_to_raw=%s raw_calls_per_sec=%.0f errors=%llu\n",
           server, mode, r.calls_per_sec, ratio, raw, r.errors);
    fflush(stdout);
}

static void run_all(const char *server, const char *addr, pid_t server_pid, double raw_many, double raw_one) {
    char mode[64];
    if (mode_blocking) {
        for (int i = 0; i < opt_nthreads; i++) {
            snprintf(mode, sizeof mode, "blocking_T%d", opt_threads[i]);
            /* One thread is ping-pong: compare with the raw ceiling at 1 in flight. */
            double raw = opt_threads[i] == 1 ? raw_one : raw_many;
            print_result(server, mode, run_blocking(addr, opt_threads[i], server_pid), raw);
        }
    }
    if (mode_callback) {
        snprintf(mode, sizeof mode, "callback_%d", opt_inflight);
        print_result(server, mode, run_callback(addr, server_pid), raw_many);
    }
    if (mode_queue) {
        snprintf(mode, sizeof mode, "queue_%d_poll%d", opt_inflight, opt_batch);
        print_result(server, mode, run_queue(addr, server_pid), raw_many);
    }
}

static void parse_list(const char *s) {
    opt_nthreads = 0;
    char *copy = strdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t && opt_nthreads < MAX_THREAD_COUNTS; t = strtok_r(NULL, ",", &save)) {
        int v = atoi(t);
        if (v <= 0) usage();
        opt_threads[opt_nthreads++] = v;
    }
    free(copy);
    if (opt_nthreads == 0) usage();
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-raw")) {
            opt_raw = false;
            continue;
        }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--fastrpc")) opt_fastrpc = v;
        else if (!strcmp(a, "--server")) opt_server = v;
        else if (!strcmp(a, "--addr")) opt_addr = v;
        else if (!strcmp(a, "--duration")) opt_duration = atof(v);
        else if (!strcmp(a, "--threads")) parse_list(v);
        else if (!strcmp(a, "--inflight")) opt_inflight = atoi(v);
        else if (!strcmp(a, "--batch")) opt_batch = atoi(v);
        else if (!strcmp(a, "--modes")) {
            mode_blocking = strstr(v, "blocking") != NULL;
            mode_callback = strstr(v, "callback") != NULL;
            mode_queue = strstr(v, "queue") != NULL;
        } else usage();
    }
    if (opt_duration <= 0 || opt_inflight <= 0 || opt_batch <= 0) usage();
    bool want_inproc = !strcmp(opt_server, "inproc") || !strcmp(opt_server, "both");
    bool want_child = !strcmp(opt_server, "child") || !strcmp(opt_server, "both");
    if (!want_inproc && !want_child) usage();
    if (want_child && !opt_addr && access(opt_fastrpc, X_OK) != 0) {
        fprintf(stderr, "cbench: %s not found: run `cargo build --release -p fastrpc-cli` or pass --fastrpc\n",
                opt_fastrpc);
        return 1;
    }
    for (int i = 0; i < REPLY_LEN; i++) REPLY[i] = 'x';

    printf("cbench: fastrpc %s, C ABI, one connection, name \"foo\", value \"foobar\", %d-byte replies, "
           "no compression; %.1f s per mode after %.1f s warm-up\n",
           fastrpc_version(), REPLY_LEN, opt_duration, opt_warmup);

    /* The raw ceiling first, with the library not yet started (it only forks + execs anyway). */
    double raw_many = 0, raw_one = 0;
    if (opt_raw && access(opt_fastrpc, X_OK) == 0) {
        raw_many = raw_ceiling(opt_inflight);
        raw_one = raw_ceiling(1);
        printf("raw ceiling (fastrpc bench --raw, child peer): %.0f calls/s at %d in flight, %.0f calls/s at 1\n",
               raw_many, opt_inflight, raw_one);
        printf("RESULT server=raw mode=raw_%d calls_per_sec=%.0f\n", opt_inflight, raw_many);
        printf("RESULT server=raw mode=raw_1 calls_per_sec=%.0f\n", raw_one);
    }
    printf("%-7s %-26s %12s %9s %10s %10s %9s %7s\n", "server", "mode", "calls/s", "vs raw", "cpu us/call",
           "srv us/call", "frm/flush", "errors");

    if (want_child) {
        char addr[256];
        pid_t pid = 0;
        if (opt_addr) {
            snprintf(addr, sizeof addr, "%s", opt_addr);
        } else {
            pid = child_server(addr, sizeof addr);
        }
        run_all(opt_addr ? "extern" : "child", addr, pid, raw_many, raw_one);
        if (pid > 0) stop_child(pid);
    }
    if (want_inproc) {
        char addr[256];
        fastrpc_server *s = inproc_server(addr, sizeof addr);
        /* In process the "server CPU" is this process's: the cpu column covers both. */
        run_all("inproc", addr, 0, raw_many, raw_one);
        fastrpc_server_stop(s, 1000);
        fastrpc_server_free(s);
    }
    return 0;
}
