/*
 * client_blocking.c: blocking calls from C, one fastrpc_response reused for every call.
 *
 *   ./build/client_blocking ADDR [N]     N calls (default 5) to the echo server at ADDR
 *
 * Each call sends name "echo" and value "hello <i>"; the echo server answers
 * "echo:hello <i>", which is checked. The first few results are printed. On a failure the
 * program prints the status and the failure's own message (which address, which cause)
 * and exits 1.
 *
 * What it shows:
 *   - header/library version check;
 *   - the client config builder and fastrpc_client_new (nothing connects until the first
 *     call; connection and reconnection are automatic);
 *   - fastrpc_client_call with a reused response: once warm, a call allocates nothing;
 *   - errors: fastrpc_status_message for the kind of failure, fastrpc_response_error_message
 *     for the details of this call's failure, fastrpc_last_error_message for functions
 *     that have no response object.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fastrpc.h>

/* Prints "what: <status message>: <this thread's last failure>", for functions that fail
 * without a response object to carry the details. */
static void report_last_error(const char *what, fastrpc_status st) {
    char msg[128], details[512];
    fastrpc_status_message(st, msg, sizeof msg, NULL);
    fastrpc_last_error_message(details, sizeof details, NULL);
    fprintf(stderr, "client_blocking: %s: %s (%s)\n", what, msg, details);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s ADDR [N]\n", argv[0]);
        return 2;
    }
    const char *addr = argv[1];
    long n_calls = argc > 2 ? strtol(argv[2], NULL, 10) : 5;
    if (n_calls <= 0) {
        fprintf(stderr, "client_blocking: N must be a positive number\n");
        return 2;
    }

    /* The header and the library it runs against should be the same version. */
    if (strcmp(fastrpc_version(), FASTRPC_VERSION) != 0) {
        fprintf(stderr, "client_blocking: header %s but library %s\n", FASTRPC_VERSION,
                fastrpc_version());
        return 1;
    }

    /* Options: only the address is required. A 2 s request timeout instead of the default
     * 10 s; snappy instead of the default flate compression (the server may use another:
     * compression is chosen per direction). The builder is copied by fastrpc_client_new. */
    fastrpc_client_config_builder *cfg = NULL;
    fastrpc_status st = fastrpc_client_config_builder_new(&cfg);
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_config_builder_set_addr(cfg, addr);
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_config_builder_set_request_timeout_ms(cfg, 2000);
    if (st == FASTRPC_STATUS_OK)
        st = fastrpc_client_config_builder_set_compression(cfg, FASTRPC_COMPRESSION_SNAPPY);
    fastrpc_client *client = NULL;
    if (st == FASTRPC_STATUS_OK) st = fastrpc_client_new(cfg, &client);
    fastrpc_client_config_builder_free(cfg); /* NULL is fine too */
    if (st != FASTRPC_STATUS_OK) {
        report_last_error("cannot create the client", st);
        return 1;
    }

    /* One response object for all calls: its buffer keeps its capacity. */
    fastrpc_response *resp = NULL;
    st = fastrpc_response_new(&resp);
    if (st != FASTRPC_STATUS_OK) {
        report_last_error("fastrpc_response_new", st);
        fastrpc_client_free(client);
        return 1;
    }

    static const char name[] = "echo";
    int rc = 0;
    double start = now_seconds();
    for (long i = 0; i < n_calls; i++) {
        char value[64], expected[80];
        int value_len = snprintf(value, sizeof value, "hello %ld", i);
        int expected_len = snprintf(expected, sizeof expected, "%s:%s", name, value);

        /* Blocks this thread until the response arrives or the deadline passes. timeout_ms
         * 0 means the configured request timeout (2 s here). Name and value are only read
         * during the call. */
        st = fastrpc_client_call(client, (const uint8_t *)name, strlen(name), (const uint8_t *)value,
                                 (size_t)value_len, 0, resp);
        if (st != FASTRPC_STATUS_OK) {
            /* The response holds this call's failure: e.g. "cannot connect to the server"
             * with "fastrpc connect: cannot connect to 127.0.0.1:1: Connection refused". */
            char msg[128], details[512];
            fastrpc_status_message(st, msg, sizeof msg, NULL);
            fastrpc_response_error_message(resp, details, sizeof details, NULL);
            fprintf(stderr, "client_blocking: call %ld failed: status %u, %s: %s\n", i, (unsigned)st,
                    msg, details);
            rc = 1;
            break;
        }

        /* The value is fastrpc_response_len bytes at fastrpc_response_data, valid until the
         * next call with this response object (or its free). It is not NUL-terminated. */
        const uint8_t *data = fastrpc_response_data(resp);
        size_t len = fastrpc_response_len(resp);
        if (len != (size_t)expected_len || memcmp(data, expected, len) != 0) {
            fprintf(stderr, "client_blocking: call %ld: expected \"%s\", got \"%.*s\"\n", i, expected,
                    (int)len, (const char *)data);
            rc = 1;
            break;
        }
        if (i < 5) printf("call %ld: \"%s\" -> \"%.*s\"\n", i, value, (int)len, (const char *)data);
        else if (i == 5) printf("...\n");
    }
    double elapsed = now_seconds() - start;

    if (rc == 0) {
        fastrpc_client_stats stats;
        stats.struct_size = sizeof stats;
        fastrpc_client_get_stats(client, &stats);
        printf("client_blocking: %ld calls ok in %.3f s (one at a time: each waits for its "
               "response); %" PRIu64 " connection(s)\n",
               n_calls, elapsed, stats.connects);
    }

    fastrpc_response_free(resp);
    fastrpc_client_free(client); /* closes the connection */
    return rc;
}
