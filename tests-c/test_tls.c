/*
 * test_tls.c: TLS through the C ABI, with certificates made at test time.
 *
 * FASTRPC_TEST_CERT_DIR must name a directory holding (scripts/test-c.sh makes them with
 * `openssl req -x509`):
 *   server.crt, server.key   self-signed, CN=localhost, SAN DNS:localhost and IP:127.0.0.1
 *   client.crt, client.key   self-signed, CN=fastrpc-test-client, for mutual TLS (and, as a
 *                            CA that did not sign the server's certificate, for failures)
 *
 * Also checks the log callback: a failed TLS handshake makes the server log a warning.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char g_dir[1024];

static void path_of(char *out, size_t len, const char *file) {
    snprintf(out, len, "%s/%s", g_dir, file);
}

/* Reads a whole file (NUL-terminated too); NULL on failure. */
static uint8_t *read_file(const char *file, size_t *len) {
    char p[1200];
    path_of(p, sizeof p, file);
    FILE *f = fopen(p, "rb");
    if (f == NULL) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = (uint8_t *)malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = 0;
        *len = (size_t)n;
    }
    return buf;
}

/* Log messages, collected under a mutex. */
struct log_sink {
    pthread_mutex_t mu;
    long count, warn;
    char last_warn[512];
};

static struct log_sink g_logs;

static void log_cb(void *ud, fastrpc_log_level level, const char *msg, size_t len) {
    struct log_sink *l = (struct log_sink *)ud;
    pthread_mutex_lock(&l->mu);
    l->count++;
    if (level == FASTRPC_LOG_WARN) {
        l->warn++;
        snprintf(l->last_warn, sizeof l->last_warn, "%.*s", (int)len, msg);
    }
    pthread_mutex_unlock(&l->mu);
}

static long warnings(void) {
    pthread_mutex_lock(&g_logs.mu);
    long n = g_logs.warn;
    pthread_mutex_unlock(&g_logs.mu);
    return n;
}

/* A TLS server from the certificate files (NULL on failure). */
static fastrpc_server *tls_server(th_handler *h, char *addr, size_t addr_len, int require_tls,
                                  int mutual) {
    fastrpc_server_config_builder *sb = NULL;
    if (fastrpc_server_config_builder_new(&sb) != FASTRPC_STATUS_OK) return NULL;
    char crt[1200], key[1200];
    path_of(crt, sizeof crt, "server.crt");
    path_of(key, sizeof key, "server.key");
    CHECK_STATUS(fastrpc_server_config_builder_set_tls_cert_files(sb, crt, key), FASTRPC_STATUS_OK);
    if (require_tls)
        CHECK_STATUS(fastrpc_server_config_builder_set_require_tls(sb, true), FASTRPC_STATUS_OK);
    if (mutual) {
        size_t n = 0;
        uint8_t *ca = read_file("client.crt", &n);
        CHECK(ca != NULL);
        CHECK_STATUS(fastrpc_server_config_builder_set_tls_client_ca_pem(sb, ca, n),
                     FASTRPC_STATUS_OK);
        free(ca);
    }
    fastrpc_server *s = th_server_start(sb, h, addr, addr_len);
    fastrpc_server_config_builder_free(sb);
    return s;
}

/* A client trusting `ca_file` (a file in the cert dir; NULL: no TLS). */
static fastrpc_client_config_builder *tls_client_builder(const char *addr, const char *ca_file) {
    fastrpc_client_config_builder *cb = th_client_builder(addr);
    if (cb != NULL && ca_file != NULL) {
        char p[1200];
        path_of(p, sizeof p, ca_file);
        CHECK_STATUS(fastrpc_client_config_builder_set_tls_ca_file(cb, p), FASTRPC_STATUS_OK);
    }
    return cb;
}

/* Blocking, callback and queued calls over TLS with the certificate files. */
static void test_tls_roundtrip_files(void) {
    th_handler h;
    th_handler_init(&h);
    char addr[64];
    fastrpc_server *s = tls_server(&h, addr, sizeof addr, 0, 0);
    REQUIRE(s != NULL);
    fastrpc_client *c = th_client_from(tls_client_builder(addr, "server.crt"));
    fastrpc_response *r = NULL;
    REQUIRE(c != NULL);
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    for (int i = 0; i < 20; i++) {
        char v[32], want[48];
        snprintf(v, sizeof v, "secret-%d", i);
        snprintf(want, sizeof want, "tls:%s", v);
        CHECK_STATUS(th_call(c, "tls", v, th_ms(10000), r), FASTRPC_STATUS_OK);
        CHECK(th_response_is(r, want));
    }
    /* Callbacks. */
    th_counter done;
    th_counter_init(&done);
    enum { A = 50 };
    th_async a[A];
    memset(a, 0, sizeof a);
    for (int i = 0; i < A; i++) {
        char v[32];
        snprintf(v, sizeof v, "%d", i);
        a[i].done = &done;
        snprintf(a[i].expect, sizeof a[i].expect, "cb:%s", v);
        CHECK_STATUS(fastrpc_client_call_async(c, TH_B("cb"), 2, TH_B(v), strlen(v), th_ms(10000),
                                               th_async_cb, &a[i]),
                     FASTRPC_STATUS_OK);
    }
    CHECK(th_counter_wait(&done, A, th_ms(10000)));
    for (int i = 0; i < A; i++) CHECK(a[i].status == FASTRPC_STATUS_OK && a[i].value_ok);
    /* A completion queue. */
    fastrpc_completion_queue *q = NULL;
    REQUIRE_STATUS(fastrpc_completion_queue_new(&q), FASTRPC_STATUS_OK);
    const long n = th_count(1000, 100);
    for (long i = 0; i < n; i++) {
        char v[32];
        snprintf(v, sizeof v, "%ld", i);
        CHECK_STATUS(fastrpc_client_call_queued(c, TH_B("q"), 1, TH_B(v), strlen(v), th_ms(20000),
                                                q, (uint64_t)i),
                     FASTRPC_STATUS_OK);
    }
    long got = 0, bad = 0;
    int64_t end = th_now_ms() + th_ms(20000);
    while (got < n && th_now_ms() < end) {
        fastrpc_completion out[64];
        size_t k = 0;
        CHECK_STATUS(fastrpc_completion_queue_poll(q, out, 64, 200, &k), FASTRPC_STATUS_OK);
        for (size_t j = 0; j < k; j++) {
            char want[48];
            snprintf(want, sizeof want, "q:%llu", (unsigned long long)out[j].tag);
            if (out[j].status != FASTRPC_STATUS_OK || !th_response_is(out[j].response, want)) bad++;
            fastrpc_response_free(out[j].response);
            got++;
        }
    }
    CHECK(got == n);
    CHECK(bad == 0);
    fastrpc_client_stats cs;
    cs.struct_size = sizeof cs;
    CHECK_STATUS(fastrpc_client_get_stats(c, &cs), FASTRPC_STATUS_OK);
    CHECK(cs.connects == 1);
    CHECK(cs.responses == (uint64_t)(20 + A + n));
    fastrpc_server_stats ss;
    ss.struct_size = sizeof ss;
    CHECK_STATUS(fastrpc_server_get_stats(s, &ss), FASTRPC_STATUS_OK);
    CHECK(ss.handshake_failures == 0);
    CHECK(ss.connections_accepted == 1);
    fastrpc_completion_queue_free(q);
    th_counter_destroy(&done);
    fastrpc_response_free(r);
    fastrpc_client_free(c);
    fastrpc_server_free(s);
    th_handler_destroy(&h);
}

/* PEM bytes instead of files, a server name instead of the IP, each compression. */
static void test_tls_pem_bytes_and_server_name(void) {
    size_t crt_len = 0, key_len = 0;
    uint8_t *crt = read_file("server.crt", &crt_len);
    uint8_t *key = read_file("server.key", &key_len);
    REQUIRE(crt != NULL && key != NULL);
    static const uint32_t comps[] = {FASTRPC_COMPRESSION_NONE, FASTRPC_COMPRESSION_FLATE,
                                     FASTRPC_COMPRESSION_SNAPPY};
    for (int i = 0; i < 3; i++) {
        th_handler h;
        th_handler_init(&h);
        fastrpc_server_config_builder *sb = NULL;
        CHECK_STATUS(fastrpc_server_config_builder_new(&sb), FASTRPC_STATUS_OK);
        CHECK_STATUS(fastrpc_server_config_builder_set_tls_cert_pem(sb, crt, crt_len, key, key_len),
                     FASTRPC_STATUS_OK);
        CHECK_STATUS(fastrpc_server_config_builder_set_compression(sb, (fastrpc_compression)comps[i]), FASTRPC_STATUS_OK);
        char addr[64];
        fastrpc_server *s = th_server_start(sb, &h, addr, sizeof addr);
        fastrpc_server_config_builder_free(sb);
        fastrpc_client_config_builder *cb = th_client_builder(addr);
        CHECK_STATUS(fastrpc_client_config_builder_set_tls_ca_pem(cb, crt, crt_len),
                     FASTRPC_STATUS_OK);
        CHECK_STATUS(fastrpc_client_config_builder_set_tls_server_name(cb, "localhost"),
                     FASTRPC_STATUS_OK);
        CHECK_STATUS(fastrpc_client_config_builder_set_compression(cb, (fastrpc_compression)comps[(i + 1) % 3]),
                     FASTRPC_STATUS_OK);
        fastrpc_client *c = th_client_from(cb);
        fastrpc_response *r = NULL;
        CHECK_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
        if (s != NULL && c != NULL) {
            CHECK_STATUS(th_call(c, "pem", "bytes", th_ms(10000), r), FASTRPC_STATUS_OK);
            CHECK(th_response_is(r, "pem:bytes"));
        }
        fastrpc_response_free(r);
        fastrpc_client_free(c);
        fastrpc_server_free(s);
        th_handler_destroy(&h);
    }
    free(crt);
    free(key);
}

/* Verification failures: TLS for the client, a warning logged by the server. */
static void check_tls_failure(const char *ca_file, const char *server_name, const char *what,
                              fastrpc_tls_detail want) {
    th_handler h;
    th_handler_init(&h);
    char addr[64];
    fastrpc_server *s = tls_server(&h, addr, sizeof addr, 0, 0);
    REQUIRE(s != NULL);
    fastrpc_client_config_builder *cb = tls_client_builder(addr, ca_file);
    if (server_name != NULL)
        CHECK_STATUS(fastrpc_client_config_builder_set_tls_server_name(cb, server_name),
                     FASTRPC_STATUS_OK);
    fastrpc_client *c = th_client_from(cb);
    fastrpc_response *r = NULL;
    REQUIRE(c != NULL);
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    long before = warnings();
    CHECK_STATUS(th_call(c, "x", "", th_ms(10000), r), FASTRPC_STATUS_TLS);
    /* Which problem it was, without reading the message: on the response and as this
     * thread's last error. */
    CHECK(fastrpc_response_tls_detail(r) == want);
    CHECK(fastrpc_last_error_tls_detail() == want);
    char err[512];
    th_response_error(r, err, sizeof err);
    if (strstr(err, "TLS") == NULL) {
        printf("  # %s: message \"%s\"\n", what, err);
        CHECK(strstr(err, "TLS") != NULL);
    }
    /* The server logs the failed handshake as a warning, through the log callback. */
    CHECK(TH_WAIT_UNTIL(warnings() > before, th_ms(10000)));
    pthread_mutex_lock(&g_logs.mu);
    CHECK(strstr(g_logs.last_warn, "handshake") != NULL);
    pthread_mutex_unlock(&g_logs.mu);
    fastrpc_server_stats ss;
    ss.struct_size = sizeof ss;
    CHECK(TH_WAIT_UNTIL(fastrpc_server_get_stats(s, &ss) == FASTRPC_STATUS_OK &&
                            ss.handshake_failures >= 1,
                        th_ms(10000)));
    CHECK(ss.requests == 0);
    fastrpc_response_free(r);
    fastrpc_client_free(c);
    fastrpc_server_free(s);
    th_handler_destroy(&h);
}

static void test_tls_untrusted_certificate(void) {
    check_tls_failure("client.crt", NULL, "untrusted certificate", FASTRPC_TLS_DETAIL_UNKNOWN_CA);
}

static void test_tls_wrong_server_name(void) {
    check_tls_failure("server.crt", "not-the-server.example", "wrong server name",
                      FASTRPC_TLS_DETAIL_NAME_MISMATCH);
}

/* Encryption without verification (for tests only). */
static void test_tls_insecure_skip_verify(void) {
    th_handler h;
    th_handler_init(&h);
    char addr[64];
    fastrpc_server *s = tls_server(&h, addr, sizeof addr, 0, 0);
    REQUIRE(s != NULL);
    fastrpc_client_config_builder *cb = th_client_builder(addr);
    CHECK_STATUS(
        fastrpc_client_config_builder_set_tls_insecure_skip_verify_for_testing_only(cb, true),
        FASTRPC_STATUS_OK);
    fastrpc_client *c = th_client_from(cb);
    fastrpc_response *r = NULL;
    REQUIRE(c != NULL);
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    CHECK_STATUS(th_call(c, "insecure", "ok", th_ms(10000), r), FASTRPC_STATUS_OK);
    CHECK(th_response_is(r, "insecure:ok"));
    fastrpc_response_free(r);
    fastrpc_client_free(c);
    fastrpc_server_free(s);
    th_handler_destroy(&h);
}

/* Plaintext against a server that requires TLS, and TLS against a plaintext server. */
static void test_tls_required_and_refused(void) {
    th_handler h;
    th_handler_init(&h);
    char addr[64];
    fastrpc_server *s = tls_server(&h, addr, sizeof addr, 1, 0);
    REQUIRE(s != NULL);
    fastrpc_client *plain = th_client_new(addr);
    fastrpc_response *r = NULL;
    REQUIRE(plain != NULL);
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    CHECK_STATUS(th_call(plain, "x", "", th_ms(10000), r), FASTRPC_STATUS_TLS);
    CHECK(strstr(th_last_error(), "requires TLS") != NULL);
    /* A TLS client is served. */
    fastrpc_client *c = th_client_from(tls_client_builder(addr, "server.crt"));
    CHECK_STATUS(th_call(c, "y", "1", th_ms(10000), r), FASTRPC_STATUS_OK);
    CHECK(th_response_is(r, "y:1"));
    fastrpc_client_free(c);
    fastrpc_server_free(s);

    /* TLS asked of a plaintext server: TLS, never a plaintext fallback. */
    s = th_server_start(NULL, &h, addr, sizeof addr);
    REQUIRE(s != NULL);
    c = th_client_from(tls_client_builder(addr, "server.crt"));
    CHECK_STATUS(th_call(c, "z", "", th_ms(10000), r), FASTRPC_STATUS_TLS);
    fastrpc_server_stats ss;
    ss.struct_size = sizeof ss;
    CHECK_STATUS(fastrpc_server_get_stats(s, &ss), FASTRPC_STATUS_OK);
    CHECK(ss.requests == 0);
    fastrpc_client_free(c);
    fastrpc_client_free(plain);
    fastrpc_response_free(r);
    fastrpc_server_free(s);
    th_handler_destroy(&h);
}

/* Mutual TLS: a client with the certificate the server trusts is served; one without is not. */
static void test_tls_mutual(void) {
    th_handler h;
    th_handler_init(&h);
    char addr[64];
    fastrpc_server *s = tls_server(&h, addr, sizeof addr, 0, 1);
    REQUIRE(s != NULL);
    size_t cl = 0, kl = 0;
    uint8_t *ccrt = read_file("client.crt", &cl);
    uint8_t *ckey = read_file("client.key", &kl);
    REQUIRE(ccrt != NULL && ckey != NULL);
    fastrpc_client_config_builder *cb = tls_client_builder(addr, "server.crt");
    CHECK_STATUS(fastrpc_client_config_builder_set_tls_client_cert_pem(cb, ccrt, cl, ckey, kl),
                 FASTRPC_STATUS_OK);
    fastrpc_client *c = th_client_from(cb);
    fastrpc_response *r = NULL;
    REQUIRE(c != NULL);
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    CHECK_STATUS(th_call(c, "mtls", "ok", th_ms(10000), r), FASTRPC_STATUS_OK);
    CHECK(th_response_is(r, "mtls:ok"));
    CHECK(fastrpc_response_tls_detail(r) == FASTRPC_TLS_DETAIL_NONE);
    CHECK(fastrpc_response_tls_detail(NULL) == FASTRPC_TLS_DETAIL_NONE);
    fastrpc_client_free(c);
    /* Without a client certificate the server refuses the handshake. */
    c = th_client_from(tls_client_builder(addr, "server.crt"));
    REQUIRE(c != NULL);
    fastrpc_status st = th_call(c, "mtls", "no", th_ms(10000), r);
    th_note_status(st);
    CHECK(st != FASTRPC_STATUS_OK);
    CHECK_STATUS(st, FASTRPC_STATUS_TLS);
    CHECK(fastrpc_response_tls_detail(r) == FASTRPC_TLS_DETAIL_NO_CLIENT_CERTIFICATE);
    fastrpc_server_stats ss;
    ss.struct_size = sizeof ss;
    CHECK(TH_WAIT_UNTIL(fastrpc_server_get_stats(s, &ss) == FASTRPC_STATUS_OK &&
                            ss.handshake_failures >= 1,
                        th_ms(10000)));
    CHECK(ss.requests == 1);
    free(ccrt);
    free(ckey);
    fastrpc_response_free(r);
    fastrpc_client_free(c);
    fastrpc_server_free(s);
    th_handler_destroy(&h);
}

/* Unusable certificates are refused when the server or client is made. */
static void test_tls_bad_certificates(void) {
    char crt[1200], key[1200];
    path_of(crt, sizeof crt, "server.crt");
    path_of(key, sizeof key, "server.key");
    fastrpc_server_config_builder *sb = NULL;
    REQUIRE_STATUS(fastrpc_server_config_builder_new(&sb), FASTRPC_STATUS_OK);
    /* A missing file: refused by the setter (the message names the file). */
    fastrpc_status st =
        fastrpc_server_config_builder_set_tls_cert_files(sb, "/nonexistent/fastrpc.crt", key);
    th_note_status(st);
    CHECK(st == FASTRPC_STATUS_TLS || st == FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(th_last_error(), "/nonexistent/fastrpc.crt") != NULL);
    /* A key where the certificate should be: refused by fastrpc_server_new. */
    CHECK_STATUS(fastrpc_server_config_builder_set_tls_cert_files(sb, key, key), FASTRPC_STATUS_OK);
    fastrpc_server *s = NULL;
    th_handler h;
    th_handler_init(&h);
    CHECK_STATUS(fastrpc_server_new(sb, "127.0.0.1:0", th_handle, &h, &s), FASTRPC_STATUS_TLS);
    CHECK(s == NULL);
    /* A certificate with a key that is not PEM. */
    size_t cl = 0;
    uint8_t *cert = read_file("server.crt", &cl);
    REQUIRE(cert != NULL);
    CHECK_STATUS(fastrpc_server_config_builder_set_tls_cert_pem(sb, cert, cl, TH_B("not a key"), 9),
                 FASTRPC_STATUS_OK);
    free(cert);
    CHECK_STATUS(fastrpc_server_new(sb, "127.0.0.1:0", th_handle, &h, &s), FASTRPC_STATUS_TLS);
    CHECK(s == NULL);
    /* A certificate without its key: a bad option. */
    CHECK_STATUS(fastrpc_server_config_builder_set_tls_cert_pem(sb, TH_B("x"), 1, NULL, 0),
                 FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_server_new(sb, "127.0.0.1:0", th_handle, &h, &s),
                 FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK(s == NULL);
    fastrpc_server_config_builder_free(sb);

    /* Client side: a CA file that does not exist, and CA bytes that are not PEM. */
    fastrpc_client_config_builder *cb = th_client_builder("127.0.0.1:1");
    REQUIRE(cb != NULL);
    st = fastrpc_client_config_builder_set_tls_ca_file(cb, "/nonexistent/ca.crt");
    th_note_status(st);
    CHECK(st == FASTRPC_STATUS_TLS || st == FASTRPC_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(fastrpc_client_config_builder_set_tls_ca_pem(cb, TH_B("not a pem"), 9),
                 FASTRPC_STATUS_OK);
    fastrpc_client *c = NULL;
    CHECK_STATUS(fastrpc_client_new(cb, &c), FASTRPC_STATUS_TLS);
    CHECK(c == NULL);
    fastrpc_client_config_builder_free(cb);
    th_handler_destroy(&h);
}

/* Mutual TLS is enforced by construction: a server with a client CA refuses a plaintext
 * client (want_tls = 0) even with require_tls explicitly off, and serves nothing to it. */
static void test_tls_mutual_refuses_plaintext(void) {
    th_handler h;
    th_handler_init(&h);
    char addr[64];
    fastrpc_server_config_builder *sb = NULL;
    REQUIRE_STATUS(fastrpc_server_config_builder_new(&sb), FASTRPC_STATUS_OK);
    char crt[1200], key[1200];
    path_of(crt, sizeof crt, "server.crt");
    path_of(key, sizeof key, "server.key");
    CHECK_STATUS(fastrpc_server_config_builder_set_tls_cert_files(sb, crt, key), FASTRPC_STATUS_OK);
    size_t n = 0;
    uint8_t *ca = read_file("client.crt", &n);
    REQUIRE(ca != NULL);
    CHECK_STATUS(fastrpc_server_config_builder_set_tls_client_ca_pem(sb, ca, n), FASTRPC_STATUS_OK);
    free(ca);
    CHECK_STATUS(fastrpc_server_config_builder_set_require_tls(sb, false), FASTRPC_STATUS_OK);
    fastrpc_server *s = th_server_start(sb, &h, addr, sizeof addr);
    fastrpc_server_config_builder_free(sb);
    REQUIRE(s != NULL);
    fastrpc_client *plain = th_client_new(addr);
    fastrpc_response *r = NULL;
    REQUIRE(plain != NULL);
    REQUIRE_STATUS(fastrpc_response_new(&r), FASTRPC_STATUS_OK);
    CHECK_STATUS(th_call(plain, "secret", "x", th_ms(10000), r), FASTRPC_STATUS_TLS);
    CHECK(strstr(th_last_error(), "the server requires TLS: configure TLS on the client") != NULL);
    fastrpc_server_stats ss;
    ss.struct_size = sizeof ss;
    CHECK(TH_WAIT_UNTIL(fastrpc_server_get_stats(s, &ss) == FASTRPC_STATUS_OK &&
                            ss.handshake_failures == 1,
                        th_ms(10000)));
    CHECK(ss.requests == 0);
    CHECK(ss.errors.tls == 1);
    fastrpc_response_free(r);
    fastrpc_client_free(plain);
    fastrpc_server_free(s);
    th_handler_destroy(&h);
}

/*
 * Who the peer is: a held request tells its handler the client's address, whether the
 * connection is TLS, and with mutual TLS the verified client certificate and its subject
 * (the test's client.crt: CN=fastrpc-test-client, no SAN). mode 0 plaintext, 1 TLS, 2 mTLS.
 */
static void peer_identity(int mode) {
    th_handler h;
    th_handler_init(&h);
    char addr[64];
    fastrpc_server *s = mode == 0 ? th_server_start(NULL, &h, addr, sizeof addr)
                                  : tls_server(&h, addr, sizeof addr, 0, mode == 2);
    REQUIRE(s != NULL);
    fastrpc_client_config_builder *cb = tls_client_builder(addr, mode == 0 ? NULL : "server.crt");
    REQUIRE(cb != NULL);
    size_t cl = 0, kl = 0;
    uint8_t *ccrt = read_file("client.crt", &cl);
    uint8_t *ckey = read_file("client.key", &kl);
    REQUIRE(ccrt != NULL && ckey != NULL);
    if (mode == 2)
        CHECK_STATUS(fastrpc_client_config_builder_set_tls_client_cert_pem(cb, ccrt, cl, ckey, kl),
                     FASTRPC_STATUS_OK);
    free(ccrt);
    free(ckey);
    fastrpc_client *c = th_client_from(cb);
    REQUIRE(c != NULL);
    th_counter done;
    th_counter_init(&done);
    th_async a;
    memset(&a, 0, sizeof a);
    a.done = &done;
    CHECK_STATUS(fastrpc_client_call_async(c, TH_B("hold-peer"), 9, TH_B("v"), 1, th_ms(10000),
                                           th_async_cb, &a),
                 FASTRPC_STATUS_OK);
    fastrpc_request *req = th_handler_take(&h, th_ms(10000));
    REQUIRE(req != NULL);

    char text[512];
    size_t n = 0;
    CHECK_STATUS(fastrpc_request_peer_addr(req, NULL, 0, &n), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_request_peer_addr(req, text, sizeof text, &n), FASTRPC_STATUS_OK);
    CHECK(strncmp(text, "127.0.0.1:", 10) == 0 && n == strlen(text) && atoi(text + 10) > 0);
    bool tls = !(mode != 0);
    CHECK_STATUS(fastrpc_request_is_tls(req, &tls), FASTRPC_STATUS_OK);
    CHECK(tls == (mode != 0));
    const uint8_t *der = (const uint8_t *)"x";
    size_t dl = 99;
    CHECK_STATUS(fastrpc_request_peer_certificate(req, &der, &dl), FASTRPC_STATUS_OK);
    CHECK_STATUS(fastrpc_request_peer_subject(req, text, sizeof text, &n), FASTRPC_STATUS_OK);
    if (mode == 2) {
        /* A DER SEQUENCE with a two-byte length, as long as it says. */
        CHECK(der != NULL && dl > 100 && der[0] == 0x30 && der[1] == 0x82 &&
              (size_t)((der[2] << 8) | der[3]) + 4 == dl);
        CHECK(strcmp(text, "CN=fastrpc-test-client") == 0);
        if (strcmp(text, "CN=fastrpc-test-client") != 0) printf("  # subject %s\n", text);
    } else {
        CHECK(der == NULL && dl == 0);
        CHECK(text[0] == '\0' && n == 0);
    }
    CHECK_STATUS(fastrpc_request_peer_subject_alt_names(req, text, sizeof text, &n),
                 FASTRPC_STATUS_OK);
    CHECK(text[0] == '\0' && n == 0); /* client.crt has no SAN */
    CHECK_STATUS(fastrpc_request_reply(req, TH_B("seen"), 4), FASTRPC_STATUS_OK);
    /* Answered: the accessors say so. */
    CHECK_STATUS(fastrpc_request_is_tls(req, &tls), FASTRPC_STATUS_ALREADY_ANSWERED);
    CHECK_STATUS(fastrpc_request_peer_addr(req, text, sizeof text, &n),
                 FASTRPC_STATUS_ALREADY_ANSWERED);
    CHECK_STATUS(fastrpc_request_peer_certificate(req, &der, &dl), FASTRPC_STATUS_ALREADY_ANSWERED);
    CHECK_STATUS(fastrpc_request_peer_certificate(NULL, &der, &dl), FASTRPC_STATUS_INVALID_ARGUMENT);
    fastrpc_request_free(req);
    CHECK(th_counter_wait(&done, 1, th_ms(10000)));
    CHECK(a.status == FASTRPC_STATUS_OK);
    th_counter_destroy(&done);
    fastrpc_client_free(c);
    fastrpc_server_free(s);
    th_handler_destroy(&h);
}

static void test_peer_identity_plaintext(void) { peer_identity(0); }
static void test_peer_identity_tls(void) { peer_identity(1); }
static void test_peer_identity_mutual_tls(void) { peer_identity(2); }

int main(int argc, char **argv) {
    th_init(argc, argv, "test_tls");
    const char *dir = getenv("FASTRPC_TEST_CERT_DIR");
    if (dir == NULL || *dir == '\0') {
        printf("FASTRPC_TEST_CERT_DIR is not set: run scripts/test-c.sh, which makes the "
               "certificates with openssl\n");
        printf("0 passed, 1 failed\n");
        return 1;
    }
    snprintf(g_dir, sizeof g_dir, "%s", dir);
    memset(&g_logs, 0, sizeof g_logs);
    pthread_mutex_init(&g_logs.mu, NULL);
    if (fastrpc_set_log_callback(log_cb, &g_logs, FASTRPC_LOG_WARN) != FASTRPC_STATUS_OK) {
        printf("fastrpc_set_log_callback failed\n0 passed, 1 failed\n");
        return 1;
    }
    th_run("tls_roundtrip_files", test_tls_roundtrip_files);
    th_run("tls_pem_bytes_and_server_name", test_tls_pem_bytes_and_server_name);
    th_run("tls_untrusted_certificate", test_tls_untrusted_certificate);
    th_run("tls_wrong_server_name", test_tls_wrong_server_name);
    th_run("tls_insecure_skip_verify", test_tls_insecure_skip_verify);
    th_run("tls_required_and_refused", test_tls_required_and_refused);
    th_run("tls_mutual", test_tls_mutual);
    th_run("tls_mutual_refuses_plaintext", test_tls_mutual_refuses_plaintext);
    th_run("tls_bad_certificates", test_tls_bad_certificates);
    th_run("peer_identity_plaintext", test_peer_identity_plaintext);
    th_run("peer_identity_tls", test_peer_identity_tls);
    th_run("peer_identity_mutual_tls", test_peer_identity_mutual_tls);
    /* Stop logging before g_logs goes away. */
    fastrpc_set_log_callback(NULL, NULL, FASTRPC_LOG_ERROR);
    int rc = th_finish();
    pthread_mutex_destroy(&g_logs.mu);
    return rc;
}
