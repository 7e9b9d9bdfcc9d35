/*
 * test_balance.c: the balanced client of the C ABI (fastrpc_balanced_client) against real
 * servers on 127.0.0.1 (port 0): calls of the three kinds spread over three servers with
 * two connections each, per-server stats, a server that goes away (its calls go to the
 * others), every server down (CONNECT naming them), argument errors, cancellation
 * (fastrpc_balanced_client_cancel of calls made with the _id variants). Waits are counters with
 * condition variables or the completion queue's own wait; each test is bounded by the
 * harness watchdog.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { NS = 3 };

/* A port nothing listens on (bound, then closed). */
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static fastrpc_balanced_client *balanced_new(char addrs[][64], int n, uint32_t per_server) {
    fastrpc_client_config_builder *cb = NULL;
    if (fastrpc_client_config_builder_new(&cb) != FASTRPC_STATUS_OK) return NULL;
    for (int i = 0; i < n; i++)
        CHECK_STATUS(fastrpc_client_config_builder_add_addr(cb, addrs[i]), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_config_builder_set_connections_per_server(cb, per_server),
                 FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_config_builder_set_resolve_interval_ms(cb, 0),
                 FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_client_config_builder_set_reconnect_backoff_ms(cb, 5000, 10000),
                 FASTRPC_STATUS_OK);
    fastrpc_balanced_client *c = NULL;
    CHECK_STATUS(fastrpc_balanced_client_new(cb, &c), FASTRPC_STATUS_OK);
    fastrpc_client_config_builder_free(cb);
    return c;
}

static fastrpc_status bcall(const fastrpc_balanced_client *c, const char *name,
                            const char *value, fastrpc_response *r) {
    return fastrpc_balanced_client_call(c, TH_B(name), strlen(name), TH_B(value),
                                        strlen(value), th_ms(10000), r);
}

/* Blocking, callback and queued calls over three servers with two connections each: every
 * call answered by its echo, every server used, the per-server stats add up to the servers'
 * own counts. */
static void test_spread_three_kinds(void) {
    th_handler h[NS];
    fastrpc_server *s[NS];
    char addrs[NS][64];
    for (int i = 0; i < NS; i++) {
        th_handler_init(&h[i]);
        s[i] = th_server_start(NULL, &h[i], addrs[i], sizeof addrs[i]);
        REQUIRE(s[i] != NULL);
    }
    fastrpc_balanced_client *c = balanced_new(addrs, NS, 2);
    fastrpc_response *r = NULL;
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    REQUIRE(c != NULL);
    CHECK(fastrpc_balanced_client_server_count(c) == NS);

    const long n = 300;
    for (long i = 0; i < n; i++) {
        char name[32], expect[64];
        snprintf(name, sizeof name, "b%ld", i);
        snprintf(expect, sizeof expect, "b%ld:v", i);
        CHECK_STATUS(bcall(c, name, "v", r), FASTRPC_STATUS_OK);
        CHECK(th_response_is(r, expect));
    }

    th_counter done;
    th_counter_init(&done);
    th_async *a = (th_async *)calloc((size_t)n, sizeof *a);
    REQUIRE(a != NULL);
    for (long i = 0; i < n; i++) {
        a[i].done = &done;
        snprintf(a[i].expect, sizeof a[i].expect, "cb:%ld", i);
        char value[32];
        snprintf(value, sizeof value, "%ld", i);
        CHECK_STATUS(fastrpc_balanced_client_call_async(c, TH_B("cb"), 2, TH_B(value),
                                                        strlen(value), th_ms(10000),
                                                        th_async_cb, &a[i]),
                     FASTRPC_STATUS_OK);
    }
    CHECK(th_counter_wait(&done, n, th_ms(20000)));
    for (long i = 0; i < n; i++) CHECK(a[i].calls == 1 && a[i].value_ok);

    fastrpc_completion_queue *q = NULL;
    REQUIRE_STATUS(fastrpc_completion_queue_new(&q), FASTRPC_STATUS_OK);
    for (long i = 0; i < n; i++)
        CHECK_STATUS(fastrpc_balanced_client_call_queued(c, TH_B("q"), 1, TH_B("x"), 1,
                                                         th_ms(10000), q, (uint64_t)i + 1),
                     FASTRPC_STATUS_OK);
    long got = 0, bad = 0;
    int64_t end = th_now_ms() + th_ms(20000);
    while (got < n && th_now_ms() < end) {
        fastrpc_completion out[64];
        size_t k = 0;
        CHECK_STATUS(fastrpc_completion_queue_poll(q, out, 64, 200, &k), FASTRPC_STATUS_OK);
        for (size_t j = 0; j < k; j++) {
            if (out[j].status != FASTRPC_STATUS_OK || !th_response_is(out[j].response, "q:x") ||
                out[j].tag == 0 || out[j].tag > (uint64_t)n)
                bad++;
            fastrpc_response_free(out[j].response);
        }
        got += (long)k;
    }
    CHECK(got == n && bad == 0);
    CHECK_STATUS(fastrpc_balanced_client_send(c, TH_B("nowait"), 6, NULL, 0),
                 FASTRPC_STATUS_OK);

    fastrpc_client_stats total;
    total.struct_size = sizeof total;
    CHECK_STATUS(fastrpc_balanced_client_get_stats(c, &total), FASTRPC_STATUS_OK);
    CHECK(total.calls == (uint64_t)(3 * n));
    CHECK(total.responses == (uint64_t)(3 * n));
    CHECK(total.sends == 1);
    uint64_t sum = 0;
    for (size_t i = 0; i < NS; i++) {
        fastrpc_balanced_server_stats st;
        st.struct_size = sizeof st;
        char addr[64];
        size_t alen = 0;
        CHECK_STATUS(fastrpc_balanced_client_get_server_stats(c, i, &st, addr, sizeof addr,
                                                              &alen),
                     FASTRPC_STATUS_OK);
        CHECK(strcmp(addr, addrs[i]) == 0 && alen == strlen(addrs[i]));
        CHECK(st.up == 1 && st.connections == 2);
        CHECK(st.stats.calls > 0);
        /* every call it counted reached its server */
        CHECK((long)st.stats.calls == th_handler_handled(&h[i]) - (long)h[i].nowait);
        sum += st.stats.calls;
    }
    CHECK(sum == (uint64_t)(3 * n));
    CHECK(fastrpc_balanced_client_pending_requests(c) == 0);

    fastrpc_completion_queue_free(q);
    free(a);
    th_counter_destroy(&done);
    fastrpc_response_free(r);
    fastrpc_balanced_client_free(c);
    for (int i = 0; i < NS; i++) {
        fastrpc_server_free(s[i]);
        th_handler_destroy(&h[i]);
    }
}

/* A server freed: its connect fails and its calls go to the others with no error; then with
 * every server gone calls fail with CONNECT naming each, and at once. */
static void test_server_down_then_all_down(void) {
    th_handler h[2];
    fastrpc_server *s[2];
    char addrs[2][64];
    for (int i = 0; i < 2; i++) {
        th_handler_init(&h[i]);
        s[i] = th_server_start(NULL, &h[i], addrs[i], sizeof addrs[i]);
        REQUIRE(s[i] != NULL);
    }
    fastrpc_balanced_client *c = balanced_new(addrs, 2, 1);
    fastrpc_response *r = NULL;
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    REQUIRE(c != NULL);
    for (int i = 0; i < 20; i++) CHECK_STATUS(bcall(c, "a", "b", r), FASTRPC_STATUS_OK);

    fastrpc_server_free(s[0]);
    s[0] = NULL;
    /* Calls on the freed server's connection fail with CONNECTION only if they were in
     * flight (none here); afterwards the connect fails and the calls go to server 1. */
    long ok = 0, connection = 0;
    for (int i = 0; i < 100; i++) {
        fastrpc_status st = bcall(c, "a", "b", r);
        if (st == FASTRPC_STATUS_OK)
            ok++;
        else if (st == FASTRPC_STATUS_CONNECTION)
            connection++;
        else
            CHECK_STATUS(st, FASTRPC_STATUS_OK);
    }
    CHECK(ok >= 99 && connection <= 1);
    fastrpc_balanced_server_stats st0;
    st0.struct_size = sizeof st0;
    CHECK_STATUS(fastrpc_balanced_client_get_server_stats(c, 0, &st0, NULL, 0, NULL),
                 FASTRPC_STATUS_OK);
    CHECK(st0.up == 0);
    CHECK(st0.stats.errors.connect >= 1);

    fastrpc_server_free(s[1]);
    s[1] = NULL;
    /* The connection to server 1 breaks (CONNECTION at most once), then CONNECT. */
    fastrpc_status st = bcall(c, "a", "b", r);
    if (st == FASTRPC_STATUS_CONNECTION) st = bcall(c, "a", "b", r);
    CHECK_STATUS(st, FASTRPC_STATUS_CONNECT);
    char err[512];
    th_response_error(r, err, sizeof err);
    CHECK(strstr(err, addrs[0]) != NULL && strstr(err, addrs[1]) != NULL);
    fastrpc_client_stats before, after;
    before.struct_size = sizeof before;
    after.struct_size = sizeof after;
    CHECK_STATUS(fastrpc_balanced_client_get_stats(c, &before), FASTRPC_STATUS_OK);
    CHECK_STATUS(bcall(c, "a", "b", r), FASTRPC_STATUS_CONNECT);
    CHECK(strstr(th_last_error(), addrs[1]) != NULL);
    CHECK_STATUS(fastrpc_balanced_client_get_stats(c, &after), FASTRPC_STATUS_OK);
    CHECK(after.connect_failures == before.connect_failures); /* no attempt: at once */

    CHECK_STATUS(fastrpc_balanced_client_close(c, 100), FASTRPC_STATUS_OK);
    CHECK_STATUS(bcall(c, "a", "b", r), FASTRPC_STATUS_CLOSED);
    fastrpc_response_free(r);
    fastrpc_balanced_client_free(c);
    for (int i = 0; i < 2; i++) th_handler_destroy(&h[i]);
}

/* NULL and bad arguments give INVALID_ARGUMENT; a cut address gives BUFFER_TOO_SMALL. */
static void test_arguments(void) {
    fastrpc_balanced_client *c = NULL;
    fastrpc_client_config_builder *cb = NULL;
    REQUIRE_STATUS(fastrpc_client_config_builder_new(&cb), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_balanced_client_new(NULL, &c), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_balanced_client_new(cb, NULL), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_balanced_client_new(cb, &c), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_client_config_builder_add_addr(cb, NULL),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_client_config_builder_add_addr(cb, ""),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_client_config_builder_set_connections_per_server(cb, 0),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    int port = closed_port();
    REQUIRE(port > 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    /* set_addr counts as one server */
    CHECK_STATUS(fastrpc_client_config_builder_set_addr(cb, addr), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_balanced_client_new(cb, &c), FASTRPC_STATUS_OK);
    fastrpc_client_config_builder_free(cb);
    REQUIRE(c != NULL);
    CHECK(fastrpc_balanced_client_server_count(c) == 1);
    fastrpc_balanced_server_stats st;
    st.struct_size = sizeof st;
    CHECK_STATUS(fastrpc_balanced_client_get_server_stats(c, 1, &st, NULL, 0, NULL),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_balanced_client_get_server_stats(c, 0, NULL, NULL, 0, NULL),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    char small[4];
    size_t len = 0;
    CHECK_STATUS(fastrpc_balanced_client_get_server_stats(c, 0, &st, small, sizeof small, &len),
                 FASTRPC_STATUS_BUFFER_TOO_SMALL);
    CHECK(len == strlen(addr) && small[3] == '\0');
    CHECK_STATUS(fastrpc_balanced_client_call_async(c, TH_B("a"), 1, NULL, 0, 0, NULL, NULL),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(fastrpc_balanced_client_pending_requests(NULL) == 0);
    CHECK(fastrpc_balanced_client_server_count(NULL) == 0);
    fastrpc_balanced_client_free(c);
    fastrpc_balanced_client_free(NULL);
}

/* fastrpc_balanced_client_cancel: calls the servers hold, made through a callback and through
 * a completion queue, complete once with CANCELLED and free their pending slot at once;
 * cancelling a finished call (or no call) returns CLOSED; 5000 calls cancelled in a row never
 * overflow the default 1000 pending calls per connection. */
static void test_cancel(void) {
    th_handler h; /* shared by both servers: it holds every "hold" request */
    th_handler_init(&h);
    char addrs[2][64];
    fastrpc_server *s[2];
    for (int i = 0; i < 2; i++) {
        s[i] = th_server_start(NULL, &h, addrs[i], sizeof addrs[i]);
        REQUIRE(s[i] != NULL);
    }
    fastrpc_balanced_client *c = balanced_new(addrs, 2, 1);
    REQUIRE(c != NULL);
    fastrpc_completion_queue *q = NULL;
    REQUIRE_STATUS(fastrpc_completion_queue_new(&q), FASTRPC_STATUS_OK);
    th_counter done;
    th_counter_init(&done);

    /* Through a callback. */
    th_async a;
    memset(&a, 0, sizeof a);
    a.done = &done;
    uint64_t id = 0;
    CHECK_STATUS(fastrpc_balanced_client_call_async_id(c, TH_B("hold"), 4, TH_B("a"), 1,
                                                       th_ms(30000), th_async_cb, &a, &id),
                 FASTRPC_STATUS_OK);
    CHECK(id != 0);
    CHECK(th_handler_wait_held(&h, 1, th_ms(10000)));
    CHECK(fastrpc_balanced_client_pending_requests(c) == 1);
    CHECK_STATUS(fastrpc_balanced_client_cancel(c, id), FASTRPC_STATUS_OK);
    CHECK(fastrpc_balanced_client_pending_requests(c) == 0);
    CHECK(th_counter_wait(&done, 1, th_ms(10000)));
    CHECK_STATUS(a.status, FASTRPC_STATUS_CANCELLED);
    CHECK_STATUS(fastrpc_balanced_client_cancel(c, id), FASTRPC_STATUS_CLOSED);
    CHECK(strstr(th_last_error(), "no such call is waiting") != NULL);

    /* Through a queue. */
    uint64_t qid = 0;
    CHECK_STATUS(fastrpc_balanced_client_call_queued_id(c, TH_B("hold"), 4, TH_B("b"), 1,
                                                        th_ms(30000), q, 77, &qid),
                 FASTRPC_STATUS_OK);
    CHECK(qid != 0 && qid != id);
    CHECK(th_handler_wait_held(&h, 2, th_ms(10000)));
    CHECK_STATUS(fastrpc_balanced_client_cancel(c, qid), FASTRPC_STATUS_OK);
    CHECK(fastrpc_balanced_client_pending_requests(c) == 0);
    fastrpc_completion out[4];
    size_t m = 0;
    CHECK_STATUS(fastrpc_completion_queue_poll(q, out, 4, th_ms(10000), &m), FASTRPC_STATUS_OK);
    REQUIRE(m == 1);
    CHECK(out[0].tag == 77);
    CHECK_STATUS(out[0].status, FASTRPC_STATUS_CANCELLED);
    char msg[128];
    CHECK(strstr(th_response_error(out[0].response, msg, sizeof msg), "the call was cancelled") !=
          NULL);
    fastrpc_response_free(out[0].response);
    CHECK_STATUS(fastrpc_balanced_client_cancel(c, qid), FASTRPC_STATUS_CLOSED);

    /* Many in a row: each cancel frees its slot (2 connections x 1000 would overflow). Each
     * call is alone, so it is written before its cancel: the servers hold all 5000. */
    long overflows = 0, not_cancelled = 0;
    for (uint64_t i = 0; i < 5000; i++) {
        uint64_t cid = 0;
        fastrpc_status st = fastrpc_balanced_client_call_queued_id(
            c, TH_B("hold"), 4, TH_B("c"), 1, th_ms(30000), q, 1000 + i, &cid);
        if (st == FASTRPC_STATUS_OVERFLOW) overflows++;
        if (st != FASTRPC_STATUS_OK) break;
        if (fastrpc_balanced_client_cancel(c, cid) != FASTRPC_STATUS_OK) not_cancelled++;
        m = 0;
        if (fastrpc_completion_queue_poll(q, out, 4, th_ms(10000), &m) != FASTRPC_STATUS_OK ||
            m != 1) {
            not_cancelled++;
            break;
        }
        if (out[0].tag != 1000 + i || out[0].status != FASTRPC_STATUS_CANCELLED) not_cancelled++;
        fastrpc_response_free(out[0].response);
    }
    CHECK(overflows == 0);
    CHECK(not_cancelled == 0);
    CHECK(fastrpc_balanced_client_pending_requests(c) == 0);

    /* The servers answer the held ones late: dropped, no second completion. */
    th_handler_release_all(&h);
    fastrpc_client_stats cs;
    memset(&cs, 0, sizeof cs);
    cs.struct_size = sizeof cs;
    CHECK_STATUS(fastrpc_balanced_client_get_stats(c, &cs), FASTRPC_STATUS_OK);
    CHECK(cs.cancelled == 5002);
    CHECK(cs.errors.overflow == 0);
    m = 9;
    CHECK_STATUS(fastrpc_completion_queue_poll(q, out, 4, 0, &m), FASTRPC_STATUS_OK);
    CHECK(m == 0);
    CHECK(a.calls == 1);

    /* A finished call, id 0, an unknown id, a NULL client; NULL call_id is the plain call. */
    th_async b;
    memset(&b, 0, sizeof b);
    b.done = &done;
    snprintf(b.expect, sizeof b.expect, "echo:x");
    uint64_t bid = 0;
    CHECK_STATUS(fastrpc_balanced_client_call_async_id(c, TH_B("echo"), 4, TH_B("x"), 1,
                                                       th_ms(30000), th_async_cb, &b, &bid),
                 FASTRPC_STATUS_OK);
    CHECK(th_counter_wait(&done, 2, th_ms(10000)));
    CHECK(b.status == FASTRPC_STATUS_OK && b.value_ok);
    CHECK_STATUS(fastrpc_balanced_client_cancel(c, bid), FASTRPC_STATUS_CLOSED);
    CHECK_STATUS(fastrpc_balanced_client_cancel(c, 0), FASTRPC_STATUS_CLOSED);
    CHECK_STATUS(fastrpc_balanced_client_cancel(c, UINT64_MAX), FASTRPC_STATUS_CLOSED);
    CHECK_STATUS(fastrpc_balanced_client_cancel(NULL, bid), FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_balanced_client_call_queued_id(c, TH_B("echo"), 4, TH_B("y"), 1,
                                                        th_ms(30000), q, 78, NULL),
                 FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_completion_queue_poll(q, out, 4, th_ms(10000), &m), FASTRPC_STATUS_OK);
    REQUIRE(m == 1);
    CHECK(out[0].tag == 78 && out[0].status == FASTRPC_STATUS_OK);
    fastrpc_response_free(out[0].response);
    CHECK(a.calls == 1 && b.calls == 1);

    fastrpc_balanced_client_free(c);
    fastrpc_completion_queue_free(q);
    for (int i = 0; i < 2; i++) fastrpc_server_free(s[i]);
    th_handler_destroy(&h);
}

int main(int argc, char **argv) {
    th_init(argc, argv, "test_balance");
    th_run("spread_three_kinds", test_spread_three_kinds);
    th_run("server_down_then_all_down", test_server_down_then_all_down);
    th_run("arguments", test_arguments);
    th_run("cancel", test_cancel);
    return th_finish();
}
