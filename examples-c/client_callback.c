/*
 * client_callback.c: many concurrent calls from one thread, each finished by a callback.
 *
 *   ./build/client_callback ADDR [N]     N calls (default 20000) to the echo server at ADDR
 *
 * fastrpc_client_call_async returns at once; when the call finishes, the callback runs on a
 * library thread with the outcome. Here the main thread keeps up to WINDOW calls in flight,
 * the callbacks check each response and count it under a mutex, and a condition variable
 * wakes the main thread when room frees up or when the last call has finished. At the end
 * it prints the client's counters (fastrpc_client_get_stats): calls, bytes, writes.
 *
 * What it shows:
 *   - per-call userdata (a small struct allocated for each call and freed by its callback);
 *   - the callback owns its fastrpc_response and must free it;
 *   - the callback's rules: short, no blocking, no blocking fastrpc calls;
 *   - flow control: at most max_pending_requests calls may wait at once (1000 by default),
 *     one more fails at once with OVERFLOW; keeping our own window below it avoids that.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fastrpc.h>

enum { WINDOW = 768 }; /* calls in flight at most; below max_pending_requests (1000) */

/* Shared by the main thread and the callbacks (which run on several library threads). */
struct tracker {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when a call finishes */
    long in_flight;
    long ok, failed, wrong;
    char first_error[512]; /* the first failure's message, for the report */
};

/* Per-call userdata: which call this is, and where to count it. */
struct call_ctx {
    struct tracker *t;
    long index;
};

static void on_done(void *userdata, fastrpc_status status, fastrpc_response *response) {
    struct call_ctx *ctx = userdata;
    struct tracker *t = ctx->t;

    /* Check the outcome before taking the lock: the lock is only for the counters. */
    int good = 0, bad_value = 0;
    char error[512] = "";
    if (status == FASTRPC_STATUS_OK) {
        char expected[64];
        int n = snprintf(expected, sizeof expected, "echo:%ld", ctx->index);
        size_t len = fastrpc_response_len(response);
        good = len == (size_t)n && memcmp(fastrpc_response_data(response), expected, len) == 0;
        bad_value = !good;
    } else {
        fastrpc_response_error_message(response, error, sizeof error, NULL);
    }
    /* The response belongs to the callback: free it (here, or later from any thread). */
    fastrpc_response_free(response);

    pthread_mutex_lock(&t->mu);
    if (good) t->ok++;
    else if (bad_value) t->wrong++;
    else {
        if (t->failed++ == 0) snprintf(t->first_error, sizeof t->first_error, "%s", error);
    }
    t->in_flight--;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);

    free(ctx); /* the userdata was ours to free too */
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report_last_error(const char *what, fastrpc_status st) {
    char msg[128], details[512];
    fastrpc_status_message(st, msg, sizeof msg, NULL);
    fastrpc_last_error_message(details, sizeof details, NULL);
    fprintf(stderr, "client_callback: %s: %s (%s)\n", what, msg, details);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s ADDR [N]\n", argv[0]);
        return 2;
    }
    long n_calls = argc > 2 ? strtol(argv[2], NULL, 10) : 20000;
    if (n_calls <= 0) {
        fprintf(stderr, "client_callback: N must be a positive number\n");
        return 2;
    }

    fastrpc_client_config_builder *cfg = NULL;
    fastrpc_status st = fastrpc_client_config_builder_new(&cfg);
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_config_builder_set_addr(cfg, argv[1]);
    fastrpc_client *client = NULL;
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_new(cfg, &client);
    fastrpc_client_config_builder_free(cfg);
    if (st != FASTRPC_STATUS_OK) {
        report_last_error("cannot create the client", st);
        return 1;
    }

    struct tracker t;
    memset(&t, 0, sizeof t);
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);

    static const char name[] = "echo";
    long submitted = 0;
    double start = now_seconds();
    for (long i = 0; i < n_calls; i++) {
        /* Wait for room in the window. */
        pthread_mutex_lock(&t.mu);
        while (t.in_flight >= WINDOW) pthread_cond_wait(&t.cv, &t.mu);
        t.in_flight++;
        pthread_mutex_unlock(&t.mu);

        struct call_ctx *ctx = malloc(sizeof *ctx);
        if (ctx == NULL) {
            fprintf(stderr, "client_callback: out of memory\n");
            pthread_mutex_lock(&t.mu);
            t.in_flight--;
            pthread_mutex_unlock(&t.mu);
            break;
        }
        ctx->t = &t;
        ctx->index = i;
        char value[32];
        int value_len = snprintf(value, sizeof value, "%ld", i);

        /* Name and value are copied before this returns. OK: on_done will run exactly once
         * (possibly before this even returns). Anything else: it never runs for this call,
         * so its userdata is still ours. */
        st = fastrpc_client_call_async(client, (const uint8_t *)name, strlen(name), (const uint8_t *)value,
                                       (size_t)value_len, 0, on_done, ctx);
        if (st != FASTRPC_STATUS_OK) {
            free(ctx);
            pthread_mutex_lock(&t.mu);
            t.in_flight--;
            pthread_mutex_unlock(&t.mu);
            report_last_error("fastrpc_client_call_async", st);
            break;
        }
        submitted++;
    }

    /* Wait for every submitted call to finish: each one runs on_done exactly once. */
    pthread_mutex_lock(&t.mu);
    while (t.in_flight > 0) pthread_cond_wait(&t.cv, &t.mu);
    pthread_mutex_unlock(&t.mu);
    double elapsed = now_seconds() - start;

    fastrpc_client_stats s;
    s.struct_size = sizeof s;
    fastrpc_client_get_stats(client, &s);
    /* All callbacks are done, so freeing the client cannot race with one of them. */
    fastrpc_client_free(client);

    printf("client_callback: %ld calls (%ld in flight at most): %ld ok, %ld wrong value, %ld failed "
           "in %.3f s = %.0f calls/s\n",
           submitted, (long)WINDOW, t.ok, t.wrong, t.failed, elapsed,
           elapsed > 0 ? (double)submitted / elapsed : 0.0);
    printf("client_callback: stats: %" PRIu64 " calls, %" PRIu64 " responses, %" PRIu64
           " connection(s); sent %" PRIu64 " frames in %" PRIu64 " writes (%.1f frames/write), %" PRIu64
           " bytes -> %" PRIu64 " on the wire\n",
           s.calls, s.responses, s.connects, s.io.frames_sent, s.io.flushes,
           s.io.flushes ? (double)s.io.frames_sent / (double)s.io.flushes : 0.0, s.io.bytes_sent_plain,
           s.io.bytes_sent_wire);
    if (t.failed) fprintf(stderr, "client_callback: first failure: %s\n", t.first_error);

    pthread_cond_destroy(&t.cv);
    pthread_mutex_destroy(&t.mu);
    return (submitted == n_calls && t.ok == n_calls) ? 0 : 1;
}
