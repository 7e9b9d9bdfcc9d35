/*
 * echo_server.c: a fastrpc server in C that answers every request with name ":" value.
 *
 *   ./build/echo_server [ADDR]          ADDR: host:port (port 0: any free port, the default
 *                                       127.0.0.1:0) or unix:/path
 *
 * It prints "listening ADDR" (the real address, with the port the kernel chose) as its first
 * line of output and flushes it, so a script can start it in the background and read where
 * to connect. SIGINT or SIGTERM stops it gracefully: running handlers finish, their
 * responses are flushed, then it prints its counters and exits 0.
 *
 * What it shows:
 *   - the server config builder, fastrpc_server_new with a C handler and its userdata;
 *   - the handler's ownership rules: it owns the request, answers it once with
 *     fastrpc_request_reply and frees it with fastrpc_request_free;
 *   - clean shutdown from signals without doing any work in a signal handler: the signals
 *     are blocked in every thread and the main thread waits for them with sigwait();
 *   - the log callback (the library prints nothing on its own).
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fastrpc.h>

/* Prints "what: <fixed message for the status>: <details of this thread's last failure>". */
static void report(const char *what, fastrpc_status st) {
    char msg[128], details[512];
    fastrpc_status_message(st, msg, sizeof msg, NULL);
    fastrpc_last_error_message(details, sizeof details, NULL); /* cut to fit if longer */
    fprintf(stderr, "echo_server: %s: %s (%s)\n", what, msg, details);
}

/* Library log messages (connection errors and the like) go to stderr. It runs on library
 * threads, possibly concurrently: no fastrpc calls in here, keep it short. */
static void on_log(void *userdata, fastrpc_log_level level, const char *message, size_t len) {
    (void)userdata;
    const char *name = level == FASTRPC_LOG_ERROR ? "error" : level == FASTRPC_LOG_WARN ? "warn" : "info";
    fprintf(stderr, "echo_server: [%s] %.*s\n", name, (int)len, message);
}

/* What the handler gets as userdata: here just a counter, to show the mechanism. The
 * handler runs on several library threads at once, hence the atomic. */
struct echo_state {
    atomic_uint_fast64_t bytes_echoed;
};

/*
 * The handler: called on a library thread for every request, concurrently for different
 * connections. It owns `request`. It must not block for long (it runs inline on the
 * connection's reader) and must not make blocking fastrpc calls. A slow handler would instead
 * hand `request` to a worker thread and call fastrpc_request_reply + fastrpc_request_free
 * from there.
 */
static void echo_handler(void *userdata, fastrpc_request *request) {
    struct echo_state *state = userdata;
    const uint8_t *name, *value;
    size_t name_len, value_len;

    /* Fire-and-forget requests (fastrpc_client_send) have id 0: no reply is sent anyway. */
    if (fastrpc_request_id(request) == 0) {
        fastrpc_request_free(request);
        return;
    }
    /* The name and value views stay valid until the request is answered or freed. */
    if (fastrpc_request_name(request, &name, &name_len) != FASTRPC_STATUS_OK ||
        fastrpc_request_value(request, &value, &value_len) != FASTRPC_STATUS_OK) {
        fastrpc_request_free(request); /* unanswered: the configured error reply is sent */
        return;
    }

    /* Build name ":" value. Small replies use the stack; big ones (up to 2 x max_frame_size)
     * the heap. The reply is copied by fastrpc_request_reply, so the buffer is ours again
     * as soon as it returns. */
    char small[1024];
    size_t len = name_len + 1 + value_len;
    char *out = len <= sizeof small ? small : malloc(len);
    if (out == NULL) {
        fastrpc_request_free(request);
        return;
    }
    if (name_len) memcpy(out, name, name_len);
    out[name_len] = ':';
    if (value_len) memcpy(out + name_len + 1, value, value_len);

    /* OK, or CLOSED when the client went away meanwhile, or TOO_LARGE when the reply
     * exceeds max_frame_size (then the error reply went instead). Either way the request
     * counts as answered, so there is nothing more to do than free it. */
    fastrpc_status st = fastrpc_request_reply(request, (const uint8_t *)out, len);
    if (st == FASTRPC_STATUS_OK) atomic_fetch_add(&state->bytes_echoed, len);
    if (out != small) free(out);
    fastrpc_request_free(request);
}

int main(int argc, char **argv) {
    const char *addr = argc > 1 ? argv[1] : "127.0.0.1:0";
    static struct echo_state state; /* outlives the server: userdata must */
    atomic_init(&state.bytes_echoed, 0);

    /* 1. Block SIGINT and SIGTERM before anything starts a thread. The library's threads
     *    are created on first use and inherit this mask, so the signals can only be taken
     *    by our sigwait() below; no async-signal-safety concerns anywhere. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &stop_signals, NULL) != 0) {
        fprintf(stderr, "echo_server: pthread_sigmask failed\n");
        return 1;
    }

    /* 2. Optional: library log messages up to WARN go to stderr. */
    fastrpc_set_log_callback(on_log, NULL, FASTRPC_LOG_WARN);

    /* 3. Options. The builder is copied by fastrpc_server_new, so it can be freed at once. */
    fastrpc_server_config_builder *cfg = NULL;
    fastrpc_status st = fastrpc_server_config_builder_new(&cfg);
    if (st != FASTRPC_STATUS_OK) {
        report("config", st);
        return 1;
    }
    /* What a client gets for a request freed unanswered (see echo_handler). */
    static const char error_reply[] = "echo_server: internal error";
    fastrpc_server_config_builder_set_error_reply(cfg, (const uint8_t *)error_reply, strlen(error_reply));

    /* 4. Listen and serve. */
    fastrpc_server *server = NULL;
    st = fastrpc_server_new(cfg, addr, echo_handler, &state, &server);
    fastrpc_server_config_builder_free(cfg);
    if (st != FASTRPC_STATUS_OK) {
        report("cannot start the server", st); /* e.g. "I/O error (... Address in use)" */
        return 1;
    }

    char bound[256];
    st = fastrpc_server_local_addr(server, bound, sizeof bound, NULL);
    if (st != FASTRPC_STATUS_OK) { /* BUFFER_TOO_SMALL only for a very long unix: path */
        report("local address", st);
        fastrpc_server_free(server);
        return 1;
    }
    printf("listening %s\n", bound);
    fflush(stdout); /* whoever started us is waiting for this line */

    /* 5. Wait for SIGINT or SIGTERM. */
    int sig = 0;
    if (sigwait(&stop_signals, &sig) != 0) {
        fprintf(stderr, "echo_server: sigwait failed\n");
    }

    /* 6. Counters. Taken before the stop: after fastrpc_server_stop they read as zero
     *    (and fastrpc_server_local_addr as ""), so requests still finishing during the stop
     *    are not counted here. */
    fastrpc_server_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats; /* which version of the struct this program has */
    fastrpc_server_get_stats(server, &stats);

    /* 7. Graceful stop: stop accepting and reading, give running handlers up to 5 s to
     *    answer and their responses to be flushed, close the connections. TIMEOUT means
     *    some connections were still busy and were closed at once. Then free. */
    st = fastrpc_server_stop(server, 5000);
    int rc = 0;
    if (st != FASTRPC_STATUS_OK) {
        report("stop", st);
        rc = 1;
    }
    fastrpc_server_free(server);

    printf("stopped by %s: %" PRIu64 " requests, %" PRIu64 " connections, %" PRIu64
           " bytes echoed\n",
           sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "an error", stats.requests, stats.connections_accepted,
           (uint64_t)atomic_load(&state.bytes_echoed));
    fastrpc_set_log_callback(NULL, NULL, FASTRPC_LOG_WARN);
    return rc;
}
