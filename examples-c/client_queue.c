/*
 * client_queue.c: calls that complete into a queue, drained in batches, from one thread.
 *
 *   ./build/client_queue ADDR [N]     N calls (default 200000) to the echo server at ADDR
 *
 * fastrpc_client_call_queued starts a call with a 64-bit tag and returns at once; when the
 * call finishes, a completion {tag, status, response} goes into a completion queue. One
 * fastrpc_completion_queue_poll then takes up to 64 completions at once: one foreign call
 * per batch, no thread per call and no callback. This is the mode for event loops and for
 * runtimes where calling into C is costly (Go, Python, ...).
 *
 * Here the tag is the call's index; the value sent is the index in decimal, so the echo
 * server answers "echo:<index>". Every tag must come back exactly once with that value.
 * The program prints calls/s and the client's batching counters, and exits 1 on any
 * failure, missing, duplicate or wrong completion.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fastrpc.h>

enum {
    BATCH = 64,          /* completions taken per poll */
    MAX_PENDING = 4096,  /* the client's max_pending_requests (default 1000) */
    WINDOW = 4000,       /* calls we keep in flight; below MAX_PENDING, so no OVERFLOW */
    POLL_MS = 1000,      /* one poll waits at most this long */
    STALL_POLLS = 15,    /* give up after this many empty polls in a row */
};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report_last_error(const char *what, fastrpc_status st) {
    char msg[128], details[512];
    fastrpc_status_message(st, msg, sizeof msg, NULL);
    fastrpc_last_error_message(details, sizeof details, NULL);
    fprintf(stderr, "client_queue: %s: %s (%s)\n", what, msg, details);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s ADDR [N]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 200000;
    if (n <= 0) {
        fprintf(stderr, "client_queue: N must be a positive number\n");
        return 2;
    }
    const uint64_t n_calls = (uint64_t)n;

    fastrpc_client_config_builder *cfg = NULL;
    fastrpc_status st = fastrpc_client_config_builder_new(&cfg);
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_config_builder_set_addr(cfg, argv[1]);
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_config_builder_set_max_pending_requests(cfg, MAX_PENDING);
    fastrpc_client *client = NULL;
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_new(cfg, &client);
    fastrpc_client_config_builder_free(cfg);
    if (st != FASTRPC_STATUS_OK) {
        report_last_error("cannot create the client", st);
        return 1;
    }
    fastrpc_completion_queue *queue = NULL;
    st = fastrpc_completion_queue_new(&queue);
    if (st != FASTRPC_STATUS_OK) {
        report_last_error("fastrpc_completion_queue_new", st);
        fastrpc_client_free(client);
        return 1;
    }

    unsigned char *seen = calloc((size_t)n_calls, 1); /* seen[tag]: completions of that tag */
    if (seen == NULL) {
        fprintf(stderr, "client_queue: out of memory\n");
        fastrpc_completion_queue_free(queue);
        fastrpc_client_free(client);
        return 1;
    }

    static const char name[] = "echo";
    uint64_t next = 0;      /* next tag to submit */
    uint64_t done = 0;      /* completions taken so far */
    uint64_t failed = 0, wrong = 0, duplicate = 0, unknown = 0;
    int stalled = 0, rc = 0;
    char first_error[512] = "";
    fastrpc_completion batch[BATCH];

    double start = now_seconds();
    int submit_failed = 0;
    while (done < next || (!submit_failed && next < n_calls)) {
        /* 1. Top up the window. call_queued never blocks. */
        while (!submit_failed && next < n_calls && next - done < WINDOW) {
            char value[24];
            int value_len = snprintf(value, sizeof value, "%" PRIu64, next);
            st = fastrpc_client_call_queued(client, (const uint8_t *)name, strlen(name), (const uint8_t *)value,
                                            (size_t)value_len, 0, queue, next /* tag */);
            if (st == FASTRPC_STATUS_OVERFLOW) break; /* full after all: drain, then retry */
            if (st != FASTRPC_STATUS_OK) {
                /* No completion will come for this tag. */
                report_last_error("fastrpc_client_call_queued", st);
                submit_failed = 1; /* still take the completions of the calls in flight */
                break;
            }
            next++;
        }
        if (done == next) break; /* submitting failed and nothing is left */

        /* 2. Take up to BATCH completions, waiting up to POLL_MS for the first. */
        size_t got = 0;
        st = fastrpc_completion_queue_poll(queue, batch, BATCH, POLL_MS, &got);
        if (st != FASTRPC_STATUS_OK) {
            report_last_error("fastrpc_completion_queue_poll", st);
            rc = 1;
            break;
        }
        if (got == 0) {
            /* Every call ends by its deadline (10 s by default), so this cannot last. */
            if (++stalled >= STALL_POLLS) {
                fprintf(stderr, "client_queue: no completion for %d s\n", STALL_POLLS * POLL_MS / 1000);
                rc = 1;
                break;
            }
            continue;
        }
        stalled = 0;

        /* 3. Check each completion; its response is ours to free. */
        for (size_t i = 0; i < got; i++) {
            const fastrpc_completion *c = &batch[i];
            if (c->tag >= next) {
                unknown++;
            } else if (seen[c->tag]++) {
                duplicate++;
            } else if (c->status != FASTRPC_STATUS_OK) {
                if (failed++ == 0)
                    fastrpc_response_error_message(c->response, first_error, sizeof first_error, NULL);
            } else {
                char expected[32];
                int len = snprintf(expected, sizeof expected, "echo:%" PRIu64, c->tag);
                if (fastrpc_response_len(c->response) != (size_t)len ||
                    memcmp(fastrpc_response_data(c->response), expected, (size_t)len) != 0)
                    wrong++;
            }
            fastrpc_response_free(c->response);
        }
        done += got;
    }
    double elapsed = now_seconds() - start;

    uint64_t missing = 0;
    for (uint64_t tag = 0; tag < next; tag++) missing += seen[tag] == 0;

    fastrpc_client_stats s;
    s.struct_size = sizeof s;
    fastrpc_client_get_stats(client, &s);
    /* Free the client first (it fails any call still in flight into the queue), then the
     * queue (completions not polled are freed with it). */
    fastrpc_client_free(client);
    fastrpc_completion_queue_free(queue);
    free(seen);

    int all_good = rc == 0 && !submit_failed && next == n_calls && missing == 0 && failed == 0 && wrong == 0 && duplicate == 0 &&
                   unknown == 0;
    printf("client_queue: %" PRIu64 " calls (%d in flight, polled %d at a time) in %.3f s = %.0f calls/s\n",
           next, (int)WINDOW, (int)BATCH, elapsed, elapsed > 0 ? (double)next / elapsed : 0.0);
    printf("client_queue: every tag exactly once with the right value: %s (%" PRIu64 " failed, %" PRIu64
           " wrong, %" PRIu64 " duplicate, %" PRIu64 " missing)\n",
           all_good ? "yes" : "NO", failed, wrong, duplicate, missing);
    printf("client_queue: %.1f requests per write, %.1f wire bytes per call (flate)\n",
           s.io.flushes ? (double)s.io.frames_sent / (double)s.io.flushes : 0.0,
           s.calls ? (double)(s.io.bytes_sent_wire + s.io.bytes_received_wire) / (double)s.calls : 0.0);
    if (failed) fprintf(stderr, "client_queue: first failure: %s\n", first_error);
    return all_good ? 0 : 1;
}
