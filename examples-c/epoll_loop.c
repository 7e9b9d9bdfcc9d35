/*
 * epoll_loop.c: a server and a client driven by ONE epoll loop on one thread.
 *
 *   ./build/epoll_loop [N]     N calls (default 100000) through an in-process queued server
 *
 * Both queues expose a file descriptor that is readable exactly while something waits in
 * them (level-triggered): fastrpc_server_queue_fd (requests to answer) and
 * fastrpc_completion_queue_fd (finished calls). Put them in your own epoll/poll/select set,
 * libuv (uv_poll_t), Python asyncio (loop.add_reader) or any other event loop: no thread
 * blocks in a fastrpc poll. When a descriptor is readable, drain its queue with timeout-0
 * polls until one returns 0 items. Never read or close the descriptors: the queues own them.
 *
 * The client side waits on the client's read descriptor (fastrpc_client_read_fd, readable
 * while responses have arrived on its connection), to which the completion queue's is
 * added: when it is readable, fastrpc_client_read_now reads and completes the responses on
 * this thread, then the queue is drained. The client is made with caller reads
 * (fastrpc_client_config_builder_set_caller_reads): this loop promises to read whenever the
 * descriptor is readable, so no library thread reads the connection or is woken by what
 * arrives on it.
 *
 * Exits 1 on any failed, missing or wrong call.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <fastrpc.h>

enum { BATCH = 64, WINDOW = 512, WAIT_MS = 10000 };

static void die(const char *what, fastrpc_status st) {
    char msg[256], name[64];
    fastrpc_last_error_message(msg, sizeof msg, NULL);
    fastrpc_status_message((uint32_t)st, name, sizeof name, NULL);
    fprintf(stderr, "%s: %s (%s)\n", what, name, msg);
    exit(1);
}

#define TRY(expr)                                                                          \
    do {                                                                                   \
        fastrpc_status st_ = (expr);                                                       \
        if (st_ != FASTRPC_STATUS_OK) die(#expr, st_);                                     \
    } while (0)

/* The server side: answer each request with `name ":" value`, then free it. */
static void serve(fastrpc_request *r) {
    const uint8_t *name, *value;
    size_t nl, vl;
    char buf[128];
    TRY(fastrpc_request_name(r, &name, &nl));
    TRY(fastrpc_request_value(r, &value, &vl));
    if (nl + 1 + vl > sizeof buf) nl = vl = 0;
    memcpy(buf, name, nl);
    buf[nl] = ':';
    memcpy(buf + nl + 1, value, vl);
    TRY(fastrpc_request_reply(r, (const uint8_t *)buf, nl + 1 + vl));
    fastrpc_request_free(r);
}

int main(int argc, char **argv) {
    long total = argc > 1 ? atol(argv[1]) : 100000;

    /* A server that queues its requests, on a port of its own. */
    fastrpc_server_queue *sq;
    TRY(fastrpc_server_queue_new(&sq));
    fastrpc_server_config_builder *sb;
    TRY(fastrpc_server_config_builder_new(&sb));
    fastrpc_server *server;
    TRY(fastrpc_server_new_queued(sb, "127.0.0.1:0", sq, &server));
    fastrpc_server_config_builder_free(sb);
    char addr[64];
    TRY(fastrpc_server_local_addr(server, addr, sizeof addr, NULL));

    /* A client whose calls complete into a completion queue. */
    fastrpc_client_config_builder *cb;
    TRY(fastrpc_client_config_builder_new(&cb));
    TRY(fastrpc_client_config_builder_set_addr(cb, addr));
    /* This loop reads the connection (below): the library leaves that to it. */
    TRY(fastrpc_client_config_builder_set_caller_reads(cb, true));
    fastrpc_client *client;
    TRY(fastrpc_client_new(cb, &client));
    fastrpc_client_config_builder_free(cb);
    fastrpc_completion_queue *cq;
    TRY(fastrpc_completion_queue_new(&cq));

    /* The completion queue's descriptor inside the client's read descriptor (one wait for
     * "responses on the socket" and "completions in the queue"), and that and the server
     * queue's in one epoll set; data.u32 says which side. */
    int sfd, cfd, rfd;
    TRY(fastrpc_server_queue_fd(sq, &sfd));
    TRY(fastrpc_completion_queue_fd(cq, &cfd));
    TRY(fastrpc_client_read_fd(client, &rfd));
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN; /* level-triggered, the default */
    if (epoll_ctl(rfd, EPOLL_CTL_ADD, cfd, &ev) != 0) return perror("epoll"), 1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    ev.data.u32 = 0;
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) != 0) return perror("epoll"), 1;
    ev.data.u32 = 1;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, rfd, &ev) != 0) return perror("epoll"), 1;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long sent = 0, done = 0, wrong = 0, wakeups = 0, read_here = 0;
    while (done < total) {
        /* Keep WINDOW calls in flight; the tag is the call's index. */
        for (; sent < total && sent - done < WINDOW; sent++) {
            char v[24];
            int k = snprintf(v, sizeof v, "%ld", sent);
            TRY(fastrpc_client_call_queued(client, (const uint8_t *)"echo", 4,
                                           (const uint8_t *)v, (size_t)k, WAIT_MS, cq,
                                           (uint64_t)sent));
        }
        struct epoll_event evs[2];
        int n = epoll_wait(ep, evs, 2, WAIT_MS);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "nothing happened for %d ms (%ld of %ld done)\n", WAIT_MS, done,
                    total);
            return 1;
        }
        wakeups++;
        for (int i = 0; i < n; i++) {
            size_t k;
            if (evs[i].data.u32 == 0) { /* requests: drain with timeout 0 */
                fastrpc_request *reqs[BATCH];
                do {
                    TRY(fastrpc_server_queue_poll(sq, reqs, BATCH, 0, &k));
                    for (size_t j = 0; j < k; j++) serve(reqs[j]);
                } while (k > 0);
            } else { /* responses: read them here, then drain the completions */
                read_here += (long)fastrpc_client_read_now(client);
                fastrpc_completion comp[BATCH];
                do {
                    TRY(fastrpc_completion_queue_poll(cq, comp, BATCH, 0, &k));
                    for (size_t j = 0; j < k; j++) {
                        char want[32];
                        int wl = snprintf(want, sizeof want, "echo:%llu",
                                          (unsigned long long)comp[j].tag);
                        const fastrpc_response *r = comp[j].response;
                        if (comp[j].status != FASTRPC_STATUS_OK ||
                            fastrpc_response_len(r) != (size_t)wl ||
                            memcmp(fastrpc_response_data(r), want, (size_t)wl) != 0)
                            wrong++;
                        fastrpc_response_free(comp[j].response);
                    }
                    done += (long)k;
                } while (k > 0);
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%ld calls through one epoll loop in %.2f s (%.0f calls/s), %ld wakeups, %ld read "
           "on this thread, %ld wrong\n",
           done, secs, (double)done / secs, wakeups, read_here, wrong);

    close(ep);
    fastrpc_client_free(client);
    fastrpc_completion_queue_free(cq);
    fastrpc_server_free(server);
    fastrpc_server_queue_free(sq);
    /* Everything is freed: stop the library's threads (what a leak checker wants; a program
     * that exits anyway may skip it). */
    TRY(fastrpc_shutdown());
    return wrong == 0 ? 0 : 1;
}
