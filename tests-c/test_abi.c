/*
 * test_abi.c: the C ABI 0.2 additions (issue 13): pollable queues driven from one epoll
 * loop, the version check, sized stats, the tidied edges and library teardown.
 *
 *   queue_fds_level_triggered   each queue's descriptor: the same one every call, readable
 *                               exactly while something waits, readable after shutdown
 *   epoll_one_thread            a client (completion queue) and a queued server (server
 *                               queue) served by ONE epoll loop on this thread: thousands of
 *                               calls, every fastrpc poll with timeout 0
 *   version_number              fastrpc_version_number() matches the header's macros
 *   stats_struct_size           stats structs filled up to the caller's struct_size; an
 *                               unset size is refused; a larger (newer) struct is not
 *                               written past the library's fields
 *   tidy_edges                  (NULL, 0) measures text; buffer sizes 0 refused; C-worded
 *                               errors; enum-typed parameters; fastrpc_request_get_id
 *   lone_writes                 ping-pong on one thread: once a call and a reply have written
 *                               themselves, every further one does (the stats count them)
 *   deferred_flush              fastrpc_client_call_queued_deferred leaves requests queued
 *                               (the writer parked, nothing sent) until fastrpc_client_flush
 *                               writes them all in one write on this thread; a call made
 *                               without deferring also takes them; NULL is refused
 *   blocked_pollers_all_wake    threads blocked in a queue's poll (server queue, then
 *                               completion queue) and as many items arriving together:
 *                               each thread gets one (a poller leaving items wakes the next)
 *   shutdown                    fastrpc_shutdown: refused while a client or server is open
 *                               (which keeps working) and from a callback; once all are
 *                               freed, no fastrpc-worker thread is left; the next use starts
 *                               the threads again; twice and with nothing running is OK
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Whether fd is readable now (poll with timeout 0, or up to timeout_ms). */
static int readable(int fd, int timeout_ms) {
    struct pollfd p;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r == 1 && (p.revents & POLLIN);
}

/* A queued server on 127.0.0.1:0, its queue and a client of it with a completion queue. */
typedef struct pair {
    fastrpc_server_queue *sq;
    fastrpc_server *s;
    fastrpc_completion_queue *q;
    fastrpc_client *c;
    char addr[64];
} pair;

static int pair_start(pair *p) {
    memset(p, 0, sizeof *p);
    if (fastrpc_server_queue_new(&p->sq) != FASTRPC_STATUS_OK) return 0;
    fastrpc_server_config_builder *sb = NULL;
    if (fastrpc_server_config_builder_new(&sb) != FASTRPC_STATUS_OK) return 0;
    fastrpc_status st = fastrpc_server_new_queued(sb, "127.0.0.1:0", p->sq, &p->s);
    fastrpc_server_config_builder_free(sb);
    if (st != FASTRPC_STATUS_OK) return 0;
    if (fastrpc_server_local_addr(p->s, p->addr, sizeof p->addr, NULL) != FASTRPC_STATUS_OK)
        return 0;
    if (fastrpc_completion_queue_new(&p->q) != FASTRPC_STATUS_OK) return 0;
    p->c = th_client_new(p->addr);
    return p->c != NULL;
}

static void pair_stop(pair *p) {
    fastrpc_client_free(p->c);
    fastrpc_completion_queue_free(p->q);
    fastrpc_server_free(p->s);
    fastrpc_server_queue_free(p->sq);
}

/* Answers a request with `name ":" value` and frees it. */
static void echo(fastrpc_request *r) {
    const uint8_t *name, *value;
    size_t nl, vl;
    char buf[256];
    size_t k = 0;
    if (fastrpc_request_name(r, &name, &nl) == FASTRPC_STATUS_OK &&
        fastrpc_request_value(r, &value, &vl) == FASTRPC_STATUS_OK && nl + vl + 1 <= sizeof buf) {
        memcpy(buf, name, nl);
        buf[nl] = ':';
        memcpy(buf + nl + 1, value, vl);
        k = nl + 1 + vl;
    }
    CHECK_STATUS(fastrpc_request_reply(r, TH_B(buf), k), FASTRPC_STATUS_OK);
    fastrpc_request_free(r);
}

static void test_queue_fds_level_triggered(void) {
    pair p;
    REQUIRE(pair_start(&p));
    int cfd = -1, cfd2 = -2, sfd = -1, sfd2 = -2;
    REQUIRE_STATUS(fastrpc_completion_queue_fd(p.q, &cfd), FASTRPC_STATUS_OK);
    REQUIRE_STATUS(fastrpc_completion_queue_fd(p.q, &cfd2), FASTRPC_STATUS_OK);
    CHECK(cfd >= 0 && cfd == cfd2);
    REQUIRE_STATUS(fastrpc_server_queue_fd(p.sq, &sfd), FASTRPC_STATUS_OK);
    REQUIRE_STATUS(fastrpc_server_queue_fd(p.sq, &sfd2), FASTRPC_STATUS_OK);
    CHECK(sfd >= 0 && sfd == sfd2 && sfd != cfd);
    /* Invalid arguments; the out-parameter is left alone. */
    int untouched = 1234;
    CHECK_STATUS(fastrpc_completion_queue_fd(NULL, &untouched), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_completion_queue_fd(p.q, NULL), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_server_queue_fd(NULL, &untouched), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_server_queue_fd(p.sq, NULL), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(untouched == 1234);

    /* Empty queues: not readable. */
    CHECK(!readable(cfd, 0));
    CHECK(!readable(sfd, 0));

    /* Three calls in flight: the server queue's fd becomes readable; it stays readable
     * (level-triggered) until the last request is taken. */
    for (uint64_t t = 1; t <= 3; t++) {
        char v[8];
        snprintf(v, sizeof v, "%u", (unsigned)t);
        CHECK_STATUS(fastrpc_client_call_queued(p.c, TH_B("fd"), 2, TH_B(v), strlen(v),
                                                th_ms(10000), p.q, t),
                     FASTRPC_STATUS_OK);
    }
    fastrpc_request *reqs[3];
    size_t got = 0;
    while (got < 3) {
        REQUIRE(readable(sfd, (int)th_ms(10000)));
        CHECK(readable(sfd, 0)); /* reading readiness does not consume it */
        size_t n = 0;
        REQUIRE_STATUS(fastrpc_server_queue_poll(p.sq, reqs + got, 1, 0, &n), FASTRPC_STATUS_OK);
        REQUIRE(n == 1);
        got += n;
    }
    /* All three taken and nothing else in flight: no longer readable. */
    CHECK(!readable(sfd, 0));
    size_t n = 7;
    CHECK_STATUS(fastrpc_server_queue_poll(p.sq, reqs, 1, 0, &n), FASTRPC_STATUS_OK);
    CHECK(n == 0);
    CHECK(!readable(cfd, 0)); /* no completion yet: nothing was answered */
    for (int i = 0; i < 3; i++) echo(reqs[i]);

    /* The three completions arrive; the fd is readable until the last one is taken. */
    fastrpc_completion comp[3];
    got = 0;
    while (got < 3) {
        REQUIRE(readable(cfd, (int)th_ms(10000)));
        REQUIRE_STATUS(fastrpc_completion_queue_poll(p.q, comp + got, 1, 0, &n),
                       FASTRPC_STATUS_OK);
        REQUIRE(n == 1);
        got += n;
    }
    CHECK(!readable(cfd, 0));
    for (int i = 0; i < 3; i++) {
        char want[16];
        snprintf(want, sizeof want, "fd:%u", (unsigned)comp[i].tag);
        CHECK(comp[i].status == FASTRPC_STATUS_OK);
        CHECK(th_response_is(comp[i].response, want));
        fastrpc_response_free(comp[i].response);
    }

    /* Shutdown makes an empty queue's fd readable, so a loop learns of it: poll says CLOSED. */
    CHECK_STATUS(fastrpc_completion_queue_shutdown(p.q), FASTRPC_STATUS_OK);
    CHECK(readable(cfd, 0));
    CHECK_STATUS(fastrpc_completion_queue_poll(p.q, comp, 3, 0, &n), FASTRPC_STATUS_CLOSED);
    CHECK(readable(cfd, 0));
    CHECK_STATUS(fastrpc_server_queue_shutdown(p.sq), FASTRPC_STATUS_OK);
    CHECK(readable(sfd, 0));
    CHECK_STATUS(fastrpc_server_queue_poll(p.sq, reqs, 3, 0, &n), FASTRPC_STATUS_CLOSED);
    pair_stop(&p);
    /* Freed with its queue: the descriptor is closed. */
    CHECK(fcntl(cfd, F_GETFD) == -1 && errno == EBADF);
    CHECK(fcntl(sfd, F_GETFD) == -1 && errno == EBADF);
}

/*
 * One thread, one epoll set, two descriptors: the server queue's (requests to answer) and
 * the completion queue's (answers to our calls). Calls are kept WINDOW in flight until
 * TOTAL completed; every completion is checked against its tag. Nothing blocks but
 * epoll_wait, which is bounded: a wait that times out means a lost wakeup and fails.
 */
static void test_epoll_one_thread(void) {
    pair p;
    REQUIRE(pair_start(&p));
    int cfd = -1, sfd = -1;
    REQUIRE_STATUS(fastrpc_completion_queue_fd(p.q, &cfd), FASTRPC_STATUS_OK);
    REQUIRE_STATUS(fastrpc_server_queue_fd(p.sq, &sfd), FASTRPC_STATUS_OK);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(ep >= 0);
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = cfd;
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev) == 0);
    ev.data.fd = sfd;
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) == 0);

    const long total = th_count(20000, 2000);
    const long window = 256;
    long sent = 0, done = 0, served = 0, wakeups = 0, bad = 0;
    while (done < total) {
        while (sent < total && sent - done < window) {
            char v[24];
            snprintf(v, sizeof v, "%ld", sent);
            fastrpc_status st = fastrpc_client_call_queued(
                p.c, TH_B("e"), 1, TH_B(v), strlen(v), th_ms(10000), p.q, (uint64_t)sent);
            if (st != FASTRPC_STATUS_OK) {
                CHECK_STATUS(st, FASTRPC_STATUS_OK);
                goto out;
            }
            sent++;
        }
        struct epoll_event evs[2];
        int k = epoll_wait(ep, evs, 2, (int)th_ms(10000));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            printf("  # epoll_wait returned %d with %ld sent, %ld done, %ld served\n", k, sent,
                   done, served);
            CHECK(k > 0);
            goto out;
        }
        wakeups++;
        for (int i = 0; i < k; i++) {
            size_t n;
            if (evs[i].data.fd == sfd) {
                fastrpc_request *reqs[64];
                do { /* the drain pattern: timeout 0 until nothing is left */
                    n = 0;
                    fastrpc_status st = fastrpc_server_queue_poll(p.sq, reqs, 64, 0, &n);
                    if (st != FASTRPC_STATUS_OK) {
                        CHECK_STATUS(st, FASTRPC_STATUS_OK);
                        goto out;
                    }
                    for (size_t j = 0; j < n; j++) echo(reqs[j]);
                    served += (long)n;
                } while (n > 0);
            } else {
                fastrpc_completion comp[64];
                do {
                    n = 0;
                    fastrpc_status st = fastrpc_completion_queue_poll(p.q, comp, 64, 0, &n);
                    if (st != FASTRPC_STATUS_OK) {
                        CHECK_STATUS(st, FASTRPC_STATUS_OK);
                        goto out;
                    }
                    for (size_t j = 0; j < n; j++) {
                        char want[32];
                        snprintf(want, sizeof want, "e:%llu", (unsigned long long)comp[j].tag);
                        if (comp[j].status != FASTRPC_STATUS_OK ||
                            !th_response_is(comp[j].response, want))
                            bad++;
                        fastrpc_response_free(comp[j].response);
                    }
                    done += (long)n;
                } while (n > 0);
            }
        }
    }
out:
    printf("  # epoll: %ld calls, %ld served, %ld wakeups, %ld wrong\n", done, served, wakeups,
           bad);
    CHECK(done == total);
    CHECK(served == total);
    CHECK(bad == 0);
    /* Everything drained and nothing in flight: neither descriptor is ready. */
    if (done == total) {
        struct epoll_event e2[2];
        CHECK(epoll_wait(ep, e2, 2, 0) == 0);
    }
    close(ep);
    pair_stop(&p);
}

/* Replaces p's client with a caller-reads one (the program reads the connection); false
 * when it cannot (the caller REQUIREs it). */
static int use_caller_reads_client(pair *p) {
    fastrpc_client_free(p->c);
    p->c = NULL;
    fastrpc_client_config_builder *b = th_client_builder(p->addr);
    if (b == NULL) return 0;
    if (fastrpc_client_config_builder_set_caller_reads(b, true) != FASTRPC_STATUS_OK) {
        fastrpc_client_config_builder_free(b);
        return 0;
    }
    p->c = th_client_from(b);
    return p->c != NULL;
}

/* The server (p's queue) answers k requests, echoing each; false when one does not come. */
static int answer(pair *p, int k) {
    for (int i = 0; i < k; i++) {
        fastrpc_request *req;
        size_t got = 0;
        if (fastrpc_server_queue_poll(p->sq, &req, 1, th_ms(10000), &got) != FASTRPC_STATUS_OK ||
            got != 1)
            return 0;
        echo(req);
    }
    return 1;
}

/* Adds fd to the epoll instance ep for reading; false when it cannot. */
static int watch_fd(int ep, int fd) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
}

/*
 * The client's read descriptor: one thread waits on one epoll set holding the server
 * queue's descriptor and the client's read descriptor, to which it added the completion
 * queue's; when the socket has bytes it reads them itself (fastrpc_client_read_now), and
 * takes completions from the queue. Lone calls, each checked against its tag; read_now
 * completes at most what was sent; NULL and misuse; the descriptor goes with the client.
 * Then the same with a caller-reads client, whose calls read_now completes (all but maybe
 * the first).
 */
static void read_fd_case(int caller_reads) {
    pair p;
    REQUIRE(pair_start(&p));
    if (caller_reads) {
        /* The program reads the connection: the library's reader reads nothing while calls
         * are in flight, so read_now completes every call but maybe the first (the reader's
         * first look at the socket, as the connection starts). */
        CHECK_STATUS(fastrpc_client_config_builder_set_caller_reads(NULL, true),
                     FASTRPC_STATUS_INVALID_ARGUMENT);
        REQUIRE(use_caller_reads_client(&p));
    }
    int rfd = -1, rfd2 = -2, cfd = -1, sfd = -1;
    int untouched = 1234;
    CHECK_STATUS(fastrpc_client_read_fd(NULL, &untouched), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_client_read_fd(p.c, NULL), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(untouched == 1234);
    CHECK(fastrpc_client_read_now(NULL) == 0);
    CHECK(fastrpc_client_read_now(p.c) == 0); /* not connected: nothing to read */
    REQUIRE_STATUS(fastrpc_client_read_fd(p.c, &rfd), FASTRPC_STATUS_OK);
    REQUIRE_STATUS(fastrpc_client_read_fd(p.c, &rfd2), FASTRPC_STATUS_OK);
    CHECK(rfd >= 0 && rfd == rfd2);
    CHECK(!readable(rfd, 0));
    REQUIRE_STATUS(fastrpc_completion_queue_fd(p.q, &cfd), FASTRPC_STATUS_OK);
    REQUIRE_STATUS(fastrpc_server_queue_fd(p.sq, &sfd), FASTRPC_STATUS_OK);
    REQUIRE(watch_fd(rfd, cfd)); /* one wait covers both */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    REQUIRE(ep >= 0);
    REQUIRE(watch_fd(ep, rfd));
    REQUIRE(watch_fd(ep, sfd));

    const long total = th_count(2000, 200);
    long done = 0, by_read_now = 0;
    for (long i = 0; i < total && done == i; i++) {
        char v[24];
        snprintf(v, sizeof v, "%ld", i);
        REQUIRE_STATUS(fastrpc_client_call_queued(p.c, TH_B("r"), 1, TH_B(v), strlen(v),
                                                  th_ms(10000), p.q, (uint64_t)i),
                       FASTRPC_STATUS_OK);
        while (done == i) {
            struct epoll_event evs[2];
            int k = epoll_wait(ep, evs, 2, (int)th_ms(10000));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                printf("  # epoll_wait returned %d at call %ld\n", k, i);
                CHECK(k > 0);
                goto out;
            }
            for (int j = 0; j < k; j++) {
                size_t n = 0;
                if (evs[j].data.fd == sfd) {
                    fastrpc_request *r;
                    while (fastrpc_server_queue_poll(p.sq, &r, 1, 0, &n) == FASTRPC_STATUS_OK &&
                           n == 1)
                        echo(r);
                    continue;
                }
                size_t now = fastrpc_client_read_now(p.c);
                CHECK(now <= 1);
                by_read_now += (long)now;
                fastrpc_completion c;
                while (fastrpc_completion_queue_poll(p.q, &c, 1, 0, &n) == FASTRPC_STATUS_OK &&
                       n == 1) {
                    char want[32];
                    snprintf(want, sizeof want, "r:%ld", i);
                    CHECK(c.tag == (uint64_t)i);
                    CHECK(c.status == FASTRPC_STATUS_OK);
                    CHECK(th_response_is(c.response, want));
                    fastrpc_response_free(c.response);
                    done++;
                }
            }
        }
    }
    CHECK(done == total);
    CHECK(by_read_now <= total);
    if (caller_reads) CHECK(by_read_now >= total - 1);
    printf("  # %ld of %ld calls completed by fastrpc_client_read_now (caller reads: %d)\n",
           by_read_now, total, caller_reads);
out:
    close(ep);
    pair_stop(&p);
    /* Freed with its client. */
    CHECK(fcntl(rfd, F_GETFD) == -1 && errno == EBADF);
}

static void test_read_fd(void) {
    read_fd_case(0);
    read_fd_case(1);
}

/*
 * fastrpc_completion_queue_read_poll: a caller-reads client whose program waits on the read
 * descriptor (the queue's added) and reads and takes in one call, as the Go binding does.
 * Rounds of 3 calls, answered together, taken 2 at most per read-poll: every call
 * completes once with its own value; after each read-poll the queue's descriptor is
 * readable exactly when completions are left in the queue (more than the 2 taken), never
 * for the ones the read-poll took itself. NULL arguments and max 0 are refused; after the
 * queue's shutdown a read-poll of the empty queue returns CLOSED.
 */
static void test_read_poll(void) {
    pair p;
    REQUIRE(pair_start(&p));
    REQUIRE(use_caller_reads_client(&p));
    int rfd = -1, cfd = -1;
    REQUIRE_STATUS(fastrpc_client_read_fd(p.c, &rfd), FASTRPC_STATUS_OK);
    REQUIRE_STATUS(fastrpc_completion_queue_fd(p.q, &cfd), FASTRPC_STATUS_OK);
    REQUIRE(watch_fd(rfd, cfd));

    fastrpc_completion out[2];
    size_t n = 7, read = 7;
    CHECK_STATUS(fastrpc_completion_queue_read_poll(NULL, p.c, out, 2, &n, &read),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_completion_queue_read_poll(p.q, p.c, NULL, 2, &n, &read),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_completion_queue_read_poll(p.q, p.c, out, 0, &n, &read),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_completion_queue_read_poll(p.q, p.c, out, 2, NULL, &read),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_completion_queue_read_poll(p.q, p.c, out, 2, &n, NULL),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    /* Not connected: nothing read, nothing taken. */
    REQUIRE_STATUS(fastrpc_completion_queue_read_poll(p.q, p.c, out, 2, &n, &read),
                   FASTRPC_STATUS_OK);
    CHECK(n == 0 && read == 0);

    /* A first call connects (the library's reader may take its response: see read_fd). */
    REQUIRE_STATUS(fastrpc_client_call_queued(p.c, TH_B("w"), 1, TH_B("w"), 1, th_ms(10000), p.q,
                                              1000000),
                   FASTRPC_STATUS_OK);
    REQUIRE(answer(&p, 1));
    for (n = 0; n == 0;) {
        REQUIRE(readable(rfd, (int)th_ms(10000)));
        REQUIRE_STATUS(fastrpc_completion_queue_read_poll(p.q, p.c, out, 2, &n, &read),
                       FASTRPC_STATUS_OK);
    }
    CHECK(n == 1 && out[0].tag == 1000000 && th_response_is(out[0].response, "w:w"));
    fastrpc_response_free(out[0].response);

    const long rounds = th_count(300, 30);
    long done = 0, left_seen = 0;
    int seen[3];
    for (long r = 0; r < rounds; r++) {
        for (int k = 0; k < 3; k++) {
            char v[24];
            snprintf(v, sizeof v, "%ld", r * 3 + k);
            REQUIRE_STATUS(fastrpc_client_call_queued(p.c, TH_B("p"), 1, TH_B(v), strlen(v),
                                                      th_ms(10000), p.q, (uint64_t)(r * 3 + k)),
                           FASTRPC_STATUS_OK);
        }
        REQUIRE(answer(&p, 3)); /* all three */
        memset(seen, 0, sizeof seen);
        int taken = 0;
        while (taken < 3) {
            if (!readable(rfd, (int)th_ms(10000))) {
                printf("  # round %ld: nothing to read after %d taken\n", r, taken);
                CHECK(0);
                goto out;
            }
            REQUIRE_STATUS(fastrpc_completion_queue_read_poll(p.q, p.c, out, 2, &n, &read),
                           FASTRPC_STATUS_OK);
            CHECK(n <= 2 && read <= 3);
            for (size_t i = 0; i < n; i++) {
                long tag = (long)out[i].tag;
                CHECK(tag >= r * 3 && tag < r * 3 + 3);
                if (tag >= r * 3 && tag < r * 3 + 3) {
                    char want[32];
                    snprintf(want, sizeof want, "p:%ld", tag);
                    CHECK(out[i].status == FASTRPC_STATUS_OK);
                    CHECK(th_response_is(out[i].response, want));
                    CHECK(seen[tag - r * 3]++ == 0);
                }
                fastrpc_response_free(out[i].response);
            }
            taken += (int)n;
            done += (long)n;
            /* Readable exactly when completions wait in the queue: a plain poll agrees. */
            int ready = readable(cfd, 0);
            fastrpc_completion c;
            size_t m = 0;
            REQUIRE_STATUS(fastrpc_completion_queue_poll(p.q, &c, 1, 0, &m), FASTRPC_STATUS_OK);
            CHECK(ready == (m == 1));
            if (m == 1) {
                left_seen++;
                long tag = (long)c.tag;
                CHECK(tag >= r * 3 && tag < r * 3 + 3 && seen[tag - r * 3]++ == 0);
                fastrpc_response_free(c.response);
                taken++;
                done++;
            }
        }
        CHECK(taken == 3);
    }
    CHECK(done == rounds * 3);
    printf("  # %ld rounds; a completion was left after a read-poll in %ld of them\n", rounds,
           left_seen);
    /* Shut down and empty: CLOSED, and the descriptor readable. */
    REQUIRE_STATUS(fastrpc_completion_queue_shutdown(p.q), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_completion_queue_read_poll(p.q, p.c, out, 2, &n, &read),
                 FASTRPC_STATUS_CLOSED);
    CHECK(n == 0);
    CHECK(readable(cfd, 0));
out:
    pair_stop(&p);
}

static void test_version_number(void) {
    CHECK(FASTRPC_VERSION_NUMBER ==
          FASTRPC_VERSION_MAJOR * 10000 + FASTRPC_VERSION_MINOR * 100 + FASTRPC_VERSION_PATCH);
    CHECK(fastrpc_version_number() == FASTRPC_VERSION_NUMBER);
    CHECK(fastrpc_version_number() / 100 == FASTRPC_VERSION_NUMBER / 100);
    CHECK(FASTRPC_VERSION_NUMBER == 200); /* 0.2.0 */
}

static void test_stats_struct_size(void) {
    pair p;
    REQUIRE(pair_start(&p));
    /* Unset (0) or too small to hold struct_size itself: refused, nothing written. */
    fastrpc_client_stats cs;
    memset(&cs, 0xAB, sizeof cs);
    cs.struct_size = 0;
    CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(th_last_error(), "struct_size") != NULL);
    CHECK(cs.calls == 0xABABABABABABABABull);
    fastrpc_server_stats ss;
    memset(&ss, 0xAB, sizeof ss);
    ss.struct_size = 4;
    CHECK_STATUS(fastrpc_server_get_stats(p.s, &ss), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(ss.requests == 0xABABABABABABABABull);

    /* One call, so the counters are not all 0. */
    fastrpc_response *r = NULL;
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_call_queued(p.c, TH_B("s"), 1, TH_B("1"), 1, th_ms(10000), p.q, 1),
                 FASTRPC_STATUS_OK);
    fastrpc_request *req = NULL;
    size_t n = 0;
    int sfd = -1, cfd = -1;
    REQUIRE_STATUS(fastrpc_server_queue_fd(p.sq, &sfd), FASTRPC_STATUS_OK);
    REQUIRE_STATUS(fastrpc_completion_queue_fd(p.q, &cfd), FASTRPC_STATUS_OK);
    REQUIRE(readable(sfd, (int)th_ms(10000)));
    REQUIRE_STATUS(fastrpc_server_queue_poll(p.sq, &req, 1, 0, &n), FASTRPC_STATUS_OK);
    REQUIRE(n == 1);
    echo(req);
    fastrpc_completion comp;
    REQUIRE(readable(cfd, (int)th_ms(10000)));
    REQUIRE_STATUS(fastrpc_completion_queue_poll(p.q, &comp, 1, 0, &n), FASTRPC_STATUS_OK);
    REQUIRE(n == 1);
    fastrpc_response_free(comp.response);
    fastrpc_response_free(r);

    /* The full struct: everything written, struct_size says so. */
    memset(&cs, 0xAB, sizeof cs);
    cs.struct_size = sizeof cs;
    CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_OK);
    CHECK(cs.struct_size == sizeof cs);
    CHECK(cs.calls == 1 && cs.responses == 1);
    CHECK(cs.io.frames_received >= 1 && cs.io.frames_received < 1000);

    /* An older, smaller struct (up to `responses`): only those bytes are written. */
    memset(&cs, 0xAB, sizeof cs);
    cs.struct_size = offsetof(fastrpc_client_stats, sends);
    CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_OK);
    CHECK(cs.struct_size == offsetof(fastrpc_client_stats, sends));
    CHECK(cs.calls == 1 && cs.responses == 1);
    CHECK(cs.sends == 0xABABABABABABABABull); /* not written */

    /* A newer, larger struct: the library writes its own size and no further. */
    struct {
        fastrpc_server_stats s;
        uint64_t future_field;
    } big;
    memset(&big, 0xAB, sizeof big);
    big.s.struct_size = sizeof big;
    CHECK_STATUS(fastrpc_server_get_stats(p.s, &big.s), FASTRPC_STATUS_OK);
    CHECK(big.s.struct_size == sizeof(fastrpc_server_stats));
    CHECK(big.s.requests == 1);
    CHECK(big.future_field == 0xABABABABABABABABull);
    pair_stop(&p);
}

/* One ping-pong on this thread: a queued call, its request taken from the server queue and
 * answered here, its completion taken. Returns whether the response was exact. */
static int ping(pair *p, int i) {
    char v[32];
    snprintf(v, sizeof v, "v%d", i);
    if (fastrpc_client_call_queued(p->c, TH_B("n"), 1, TH_B(v), strlen(v), th_ms(10000), p->q,
                                   (uint64_t)i) != FASTRPC_STATUS_OK)
        return 0;
    fastrpc_request *req = NULL;
    size_t n = 0;
    if (fastrpc_server_queue_poll(p->sq, &req, 1, th_ms(10000), &n) != FASTRPC_STATUS_OK ||
        n != 1)
        return 0;
    echo(req);
    fastrpc_completion comp;
    if (fastrpc_completion_queue_poll(p->q, &comp, 1, th_ms(10000), &n) != FASTRPC_STATUS_OK ||
        n != 1)
        return 0;
    char want[40];
    snprintf(want, sizeof want, "n:%s", v);
    int ok = comp.tag == (uint64_t)i && comp.status == FASTRPC_STATUS_OK &&
             fastrpc_response_len(comp.response) == strlen(want) &&
             memcmp(fastrpc_response_data(comp.response), want, strlen(want)) == 0;
    fastrpc_response_free(comp.response);
    return ok;
}

/* The lone paths (README, "How it works"): a call started on this thread with no other call
 * waiting writes its own request here, and a reply made here with nothing else outstanding on
 * its connection writes itself, so neither wakes a library thread; the stats count them.
 * Once one of each has happened the writers stay parked, so every further ping-pong is lone
 * on both sides, exactly. */
static void test_lone_writes(void) {
    pair p;
    REQUIRE(pair_start(&p));
    fastrpc_client_stats cs;
    fastrpc_server_stats ss;
    cs.struct_size = sizeof cs;
    ss.struct_size = sizeof ss;
    int i = 0;
    for (; i < 200; i++) {
        REQUIRE(ping(&p, i));
        CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_OK);
        CHECK_STATUS(fastrpc_server_get_stats(p.s, &ss), FASTRPC_STATUS_OK);
        if (cs.lone_writes > 0 && ss.lone_writes > 0) break;
    }
    REQUIRE(cs.lone_writes > 0 && ss.lone_writes > 0);
    uint64_t c0 = cs.lone_writes, s0 = ss.lone_writes;
    for (int k = 1; k <= 20; k++) CHECK(ping(&p, i + k));
    CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_server_get_stats(p.s, &ss), FASTRPC_STATUS_OK);
    CHECK(cs.lone_writes == c0 + 20);
    CHECK(ss.lone_writes == s0 + 20);
    CHECK(cs.responses == (uint64_t)(i + 21));
    pair_stop(&p);
}

/* Takes k requests from the server queue (waiting up to 10 s in all) and echoes them. */
static int serve_n(pair *p, size_t k) {
    size_t got = 0;
    while (got < k) {
        fastrpc_request *req[8];
        size_t n = 0;
        size_t want = k - got < 8 ? k - got : 8;
        if (fastrpc_server_queue_poll(p->sq, req, want, th_ms(10000), &n) != FASTRPC_STATUS_OK ||
            n == 0)
            return 0;
        for (size_t i = 0; i < n; i++) echo(req[i]);
        got += n;
    }
    return 1;
}

/* Takes k completions (waiting up to 10 s in all); each must be tag t with "n:v<t>". Returns
 * the bit set of the tags seen (tags below 64). */
static uint64_t collect_n(pair *p, size_t k) {
    uint64_t seen = 0;
    for (size_t got = 0; got < k; got++) {
        fastrpc_completion comp;
        size_t n = 0;
        if (fastrpc_completion_queue_poll(p->q, &comp, 1, th_ms(10000), &n) !=
                FASTRPC_STATUS_OK ||
            n != 1)
            return seen;
        char want[40];
        snprintf(want, sizeof want, "n:v%llu", (unsigned long long)comp.tag);
        if (comp.status == FASTRPC_STATUS_OK && comp.tag < 64 &&
            fastrpc_response_len(comp.response) == strlen(want) &&
            memcmp(fastrpc_response_data(comp.response), want, strlen(want)) == 0)
            seen |= 1ull << comp.tag;
        fastrpc_response_free(comp.response);
    }
    return seen;
}

static fastrpc_status defer_call(pair *p, uint64_t tag) {
    char v[32];
    snprintf(v, sizeof v, "v%llu", (unsigned long long)tag);
    uint64_t id = 0;
    fastrpc_status st = fastrpc_client_call_queued_deferred(p->c, TH_B("n"), 1, TH_B(v),
                                                           strlen(v), th_ms(10000), p->q, tag,
                                                           &id);
    if (st == FASTRPC_STATUS_OK) CHECK(id != 0);
    return st;
}

/* Deferred calls and the flush (README, "The C API"): after a lone ping-pong the client's
 * writer is parked, and nothing else wakes it, so deferred requests stay queued, exactly:
 * none is sent until the flush, which writes them all in one write on this thread (counted
 * with the lone writes). */
static void test_deferred_flush(void) {
    pair p;
    REQUIRE(pair_start(&p));
    fastrpc_client_stats cs;
    cs.struct_size = sizeof cs;
    int i = 0;
    for (; i < 200; i++) {
        REQUIRE(ping(&p, 100 + i));
        CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_OK);
        if (cs.lone_writes > 0) break;
    }
    REQUIRE(cs.lone_writes > 0);
    uint64_t sent = cs.io.frames_sent, lone = cs.lone_writes, flushes = cs.io.flushes;
    for (uint64_t t = 1; t <= 3; t++) CHECK_STATUS(defer_call(&p, t), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_OK);
    CHECK(cs.io.frames_sent == sent);
    CHECK(fastrpc_client_pending_requests(p.c) == 3);
    CHECK_STATUS(fastrpc_client_flush(p.c), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_OK);
    CHECK(cs.io.frames_sent == sent + 3);
    CHECK(cs.io.flushes == flushes + 1);
    CHECK(cs.lone_writes == lone + 1);
    REQUIRE(serve_n(&p, 3));
    CHECK(collect_n(&p, 3) == 0xEull);
    /* Nothing queued: nothing happens. */
    CHECK_STATUS(fastrpc_client_flush(p.c), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_get_stats(p.c, &cs), FASTRPC_STATUS_OK);
    CHECK(cs.io.frames_sent == sent + 3);

    /* A deferred request, then a call made without deferring: both go out. */
    CHECK_STATUS(defer_call(&p, 4), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_call_queued(p.c, TH_B("n"), 1, TH_B("v5"), 2, th_ms(10000), p.q,
                                            5),
                 FASTRPC_STATUS_OK);
    REQUIRE(serve_n(&p, 2));
    CHECK(collect_n(&p, 2) == 0x30ull);

    CHECK_STATUS(fastrpc_client_flush(NULL), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_client_call_queued_deferred(NULL, TH_B("n"), 1, TH_B("v"), 1, 0, p.q, 9,
                                                    NULL),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    pair_stop(&p);
}

/* One thread in a queue's poll for one item, waiting up to 10 s. */
typedef struct blocked_poller {
    pair *p;
    int server_side; /* 1: the server queue; 0: the completion queue */
    th_counter *started;
    fastrpc_status st;
    size_t n;
    fastrpc_request *req;
    fastrpc_completion comp;
    int64_t waited_ms; /* how long the poll took */
    pthread_t th;
} blocked_poller;

static void *poll_one(void *arg) {
    blocked_poller *b = (blocked_poller *)arg;
    th_counter_add(b->started, 1);
    int64_t t0 = th_now_ms();
    if (b->server_side)
        b->st = fastrpc_server_queue_poll(b->p->sq, &b->req, 1, th_ms(10000), &b->n);
    else
        b->st = fastrpc_completion_queue_poll(b->p->q, &b->comp, 1, th_ms(10000), &b->n);
    b->waited_ms = th_now_ms() - t0;
    return NULL;
}

enum { BLOCKED = 4 };

/* Threads blocked in one queue's poll, each for one item, and as many items arriving together
 * (deferred calls flushed in one write: one read of the server pushes the requests back to
 * back): every thread gets one, woken before its 10 s wait runs out. A push wakes a poller
 * only when the queue was empty and someone waits (a busy queue costs no futex syscall per
 * item), so the poller that leaves items behind must wake the next: without that, the others
 * sit out their wait (and take an item only then). The threads start before the calls are
 * made (they block within microseconds, the calls take a round trip); any order of the two
 * passes. The server queue, then the completion queue. Every thread started is joined before
 * the test returns, also when a check fails (they use this frame). */
static void test_blocked_pollers_all_wake(void) {
    pair p;
    REQUIRE(pair_start(&p));
    REQUIRE(ping(&p, 1)); /* connected, the writer parked: the deferred calls wait for flush */
    for (int server_side = 1; server_side >= 0; server_side--) {
        th_counter started;
        th_counter_init(&started);
        blocked_poller b[BLOCKED];
        int made = 0;
        for (; made < BLOCKED; made++) {
            memset(&b[made], 0, sizeof b[made]);
            b[made].p = &p;
            b[made].server_side = server_side;
            b[made].started = &started;
            if (pthread_create(&b[made].th, NULL, poll_one, &b[made]) != 0) break;
        }
        CHECK(made == BLOCKED);
        CHECK(th_counter_wait(&started, made, th_ms(10000)));
        uint64_t t0 = server_side ? 10 : 20, want = 0;
        for (uint64_t t = t0; t < t0 + BLOCKED; t++) {
            CHECK_STATUS(defer_call(&p, t), FASTRPC_STATUS_OK);
            want |= 1ull << t;
        }
        CHECK_STATUS(fastrpc_client_flush(p.c), FASTRPC_STATUS_OK);
        if (!server_side) CHECK(serve_n(&p, BLOCKED));
        uint64_t seen = 0;
        for (int i = 0; i < made; i++) {
            CHECK(pthread_join(b[i].th, NULL) == 0);
            CHECK_STATUS(b[i].st, FASTRPC_STATUS_OK);
            CHECK(b[i].n == 1);
            /* Woken, not timed out: a poll whose wait runs out takes what is there then. */
            CHECK(b[i].waited_ms < (int64_t)th_ms(10000));
            if (b[i].n != 1) continue;
            if (server_side) {
                echo(b[i].req);
                continue;
            }
            char w[40];
            snprintf(w, sizeof w, "n:v%llu", (unsigned long long)b[i].comp.tag);
            if (b[i].comp.status == FASTRPC_STATUS_OK && b[i].comp.tag < 64 &&
                th_response_is(b[i].comp.response, w))
                seen |= 1ull << b[i].comp.tag;
            fastrpc_response_free(b[i].comp.response);
        }
        if (server_side) seen = collect_n(&p, BLOCKED);
        CHECK(seen == want);
        th_counter_destroy(&started);
    }
    pair_stop(&p);
}

static void test_tidy_edges(void) {
    /* (NULL, 0) measures: OK and the length. */
    size_t n = 0;
    CHECK_STATUS(fastrpc_status_message(FASTRPC_STATUS_TIMEOUT, NULL, 0, &n), FASTRPC_STATUS_OK);
    CHECK(n > 0);
    /* Buffer sizes of 0: refused with a message saying so. */
    fastrpc_client_config_builder *cb = NULL;
    REQUIRE_STATUS(fastrpc_client_config_builder_new(&cb), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_config_builder_set_read_buffer_size(cb, 0),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(th_last_error(), "read buffer size 0") != NULL);
    CHECK_STATUS(fastrpc_last_error_message(NULL, 0, &n), FASTRPC_STATUS_OK);
    CHECK(n == strlen(th_last_error()));
    CHECK_STATUS(fastrpc_client_config_builder_set_write_buffer_size(cb, 0),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(th_last_error(), "write buffer size 0") != NULL);
    CHECK_STATUS(fastrpc_client_config_builder_set_read_buffer_size(cb, 1), FASTRPC_STATUS_OK);
    /* C words, not Rust paths. */
    CHECK_STATUS(fastrpc_client_config_builder_set_flate_level(cb, 10),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strcmp(th_last_error(),
                 "fastrpc invalid argument: flate level 10 is not between 0 and 9") == 0);
    CHECK_STATUS(fastrpc_client_config_builder_set_max_frame_size(cb, 0),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(th_last_error(), "..=") == NULL && strstr(th_last_error(), "::") == NULL);
    /* Enum-typed parameters; an out-of-range value is still refused. */
    fastrpc_compression comp = FASTRPC_COMPRESSION_SNAPPY;
    CHECK_STATUS(fastrpc_client_config_builder_set_compression(cb, comp), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_config_builder_set_compression(cb, (fastrpc_compression)7),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    /* Every duration is a uint32_t. */
    uint32_t ms = 4000000000u;
    CHECK_STATUS(fastrpc_client_config_builder_set_request_timeout_ms(cb, ms), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_config_builder_set_reconnect_backoff_ms(cb, 5, 4),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(th_last_error(), "min_ms") != NULL);
    fastrpc_client_config_builder_free(cb);
    fastrpc_server_config_builder *sb = NULL;
    REQUIRE_STATUS(fastrpc_server_config_builder_new(&sb), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_server_config_builder_set_read_buffer_size(sb, 0),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_server_config_builder_set_write_buffer_size(sb, 0),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    fastrpc_server_config_builder_free(sb);

    /* A closed client says so in words. */
    pair p;
    REQUIRE(pair_start(&p));
    CHECK_STATUS(fastrpc_client_close(p.c, 0), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_send(p.c, TH_B("x"), 1, NULL, 0), FASTRPC_STATUS_CLOSED);
    CHECK(strcmp(th_last_error(), "fastrpc closed: the client was closed") == 0);
    fastrpc_client_free(p.c);

    /* fastrpc_request_get_id: 0 is exactly fire-and-forget; answered is a status. */
    p.c = th_client_new(p.addr);
    REQUIRE(p.c != NULL);
    int sfd = -1;
    REQUIRE_STATUS(fastrpc_server_queue_fd(p.sq, &sfd), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_send(p.c, TH_B("ff"), 2, NULL, 0), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_call_queued(p.c, TH_B("call"), 4, NULL, 0, th_ms(10000), p.q, 9),
                 FASTRPC_STATUS_OK);
    fastrpc_request *reqs[2];
    size_t got = 0;
    while (got < 2) {
        REQUIRE(readable(sfd, (int)th_ms(10000)));
        REQUIRE_STATUS(fastrpc_server_queue_poll(p.sq, reqs + got, 2 - got, 0, &n),
                       FASTRPC_STATUS_OK);
        got += n;
    }
    int seen_ff = 0, seen_call = 0;
    for (int i = 0; i < 2; i++) {
        const uint8_t *name;
        size_t nl;
        uint32_t id = 77;
        CHECK_STATUS(fastrpc_request_get_id(reqs[i], &id), FASTRPC_STATUS_OK);
        CHECK_STATUS(fastrpc_request_name(reqs[i], &name, &nl), FASTRPC_STATUS_OK);
        if (nl == 2) {
            seen_ff = 1;
            CHECK(id == 0);
        } else {
            seen_call = 1;
            CHECK(id != 0);
        }
        CHECK_STATUS(fastrpc_request_reply(reqs[i], TH_B("ok"), 2), FASTRPC_STATUS_OK);
        uint32_t after = 55;
        CHECK_STATUS(fastrpc_request_get_id(reqs[i], &after), FASTRPC_STATUS_ALREADY_ANSWERED);
        CHECK(after == 55); /* not written on failure */
        CHECK_STATUS(fastrpc_request_get_id(reqs[i], NULL), FASTRPC_STATUS_INVALID_ARGUMENT);
        fastrpc_request_free(reqs[i]);
    }
    CHECK(seen_ff && seen_call);
    uint32_t idx = 0;
    CHECK_STATUS(fastrpc_request_get_id(NULL, &idx),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    fastrpc_completion c;
    int cfd = -1;
    REQUIRE_STATUS(fastrpc_completion_queue_fd(p.q, &cfd), FASTRPC_STATUS_OK);
    REQUIRE(readable(cfd, (int)th_ms(10000)));
    REQUIRE_STATUS(fastrpc_completion_queue_poll(p.q, &c, 1, 0, &n), FASTRPC_STATUS_OK);
    CHECK(n == 1 && c.tag == 9 && c.status == FASTRPC_STATUS_OK);
    if (n == 1) fastrpc_response_free(c.response);
    pair_stop(&p);
}

/* Threads of this process named fastrpc-worker (from /proc/self/task/N/comm). */
static int worker_threads(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[288], comm[64] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(comm, sizeof comm, f) && strncmp(comm, "fastrpc-worker", 14) == 0) n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

typedef struct shutdown_cb {
    th_counter done;
    fastrpc_status status;
} shutdown_cb;

static void shutdown_in_callback(void *ud, fastrpc_status st, fastrpc_response *r) {
    shutdown_cb *s = (shutdown_cb *)ud;
    (void)st;
    s->status = fastrpc_shutdown();
    fastrpc_response_free(r);
    th_counter_add(&s->done, 1);
}

static void test_shutdown(void) {
    pair p;
    REQUIRE(pair_start(&p));
    CHECK(worker_threads() > 0);
    /* Something open: refused, nothing stopped, the client still works. */
    CHECK_STATUS(fastrpc_shutdown(), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(th_last_error(), "2 client(s) or server(s) are still open") != NULL);
    CHECK(worker_threads() > 0);
    /* From a callback (a library thread): refused. Nobody polls the server queue, so the
     * call ends by its 50 ms timeout and the callback runs on a library thread. */
    shutdown_cb sc;
    th_counter_init(&sc.done);
    sc.status = FASTRPC_STATUS_OK;
    CHECK_STATUS(fastrpc_client_call_async(p.c, TH_B("cb"), 2, NULL, 0, 50, shutdown_in_callback,
                                           &sc),
                 FASTRPC_STATUS_OK);
    CHECK(th_counter_wait(&sc.done, 1, th_ms(10000)));
    CHECK(sc.status == FASTRPC_STATUS_INVALID_ARGUMENT);
    th_counter_destroy(&sc.done);
    pair_stop(&p);

    /* A balanced client counts as open too (it once did not: the runtime stopped under it,
     * and its next call never returned). */
    fastrpc_client_config_builder *bb = NULL;
    REQUIRE_STATUS(fastrpc_client_config_builder_new(&bb), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_config_builder_add_addr(bb, "127.0.0.1:1"), FASTRPC_STATUS_OK);
    fastrpc_balanced_client *bc = NULL;
    REQUIRE_STATUS(fastrpc_balanced_client_new(bb, &bc), FASTRPC_STATUS_OK);
    fastrpc_client_config_builder_free(bb);
    CHECK_STATUS(fastrpc_shutdown(), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(th_last_error(), "1 client(s) or server(s) are still open") != NULL);
    CHECK(worker_threads() > 0);
    fastrpc_response *br = NULL;
    REQUIRE_STATUS(fastrpc_response_new(&br), FASTRPC_STATUS_OK);
    /* Nobody listens on port 1: the call ends with CONNECT (or its 2 s timeout), it returns. */
    fastrpc_status bs = fastrpc_balanced_client_call(bc, TH_B("x"), 1, TH_B("y"), 1, 2000, br);
    CHECK(bs == FASTRPC_STATUS_CONNECT || bs == FASTRPC_STATUS_TIMEOUT);
    fastrpc_response_free(br);
    fastrpc_balanced_client_free(bc);

    /* All freed: stops every library thread. Twice is fine. */
    CHECK_STATUS(fastrpc_shutdown(), FASTRPC_STATUS_OK);
    CHECK(worker_threads() == 0);
    CHECK_STATUS(fastrpc_shutdown(), FASTRPC_STATUS_OK);
    /* The runtime may be sized again, and the next use starts it again. */
    CHECK_STATUS(fastrpc_set_worker_threads(1), FASTRPC_STATUS_OK);
    REQUIRE(pair_start(&p));
    CHECK(worker_threads() == 1);
    int sfd = -1, cfd = -1;
    REQUIRE_STATUS(fastrpc_server_queue_fd(p.sq, &sfd), FASTRPC_STATUS_OK);
    REQUIRE_STATUS(fastrpc_completion_queue_fd(p.q, &cfd), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_call_queued(p.c, TH_B("again"), 5, TH_B("1"), 1, th_ms(10000),
                                            p.q, 5),
                 FASTRPC_STATUS_OK);
    fastrpc_request *req = NULL;
    size_t n = 0;
    REQUIRE(readable(sfd, (int)th_ms(10000)));
    REQUIRE_STATUS(fastrpc_server_queue_poll(p.sq, &req, 1, 0, &n), FASTRPC_STATUS_OK);
    REQUIRE(n == 1);
    echo(req);
    fastrpc_completion c;
    REQUIRE(readable(cfd, (int)th_ms(10000)));
    REQUIRE_STATUS(fastrpc_completion_queue_poll(p.q, &c, 1, 0, &n), FASTRPC_STATUS_OK);
    REQUIRE(n == 1);
    CHECK(c.status == FASTRPC_STATUS_OK && th_response_is(c.response, "again:1"));
    fastrpc_response_free(c.response);
    /* Queues and responses may outlive the shutdown; clients and servers may not. */
    fastrpc_client_free(p.c);
    fastrpc_server_free(p.s);
    CHECK_STATUS(fastrpc_shutdown(), FASTRPC_STATUS_OK);
    CHECK(worker_threads() == 0);
    fastrpc_completion_queue_free(p.q);
    fastrpc_server_queue_free(p.sq);
    CHECK_STATUS(fastrpc_set_worker_threads(0), FASTRPC_STATUS_OK);
}

int main(int argc, char **argv) {
    th_init(argc, argv, "test_abi");
    th_run("queue_fds_level_triggered", test_queue_fds_level_triggered);
    th_run("epoll_one_thread", test_epoll_one_thread);
    th_run("read_fd", test_read_fd);
    th_run("read_poll", test_read_poll);
    th_run("version_number", test_version_number);
    th_run("stats_struct_size", test_stats_struct_size);
    th_run("tidy_edges", test_tidy_edges);
    th_run("lone_writes", test_lone_writes);
    th_run("deferred_flush", test_deferred_flush);
    th_run("blocked_pollers_all_wake", test_blocked_pollers_all_wake);
    th_run("shutdown", test_shutdown); /* last: it stops the library's threads */
    return th_finish();
}
