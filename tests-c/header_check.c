/*
 * header_check.c: include/fastrpc.h on its own, compiled as C11 and as C++17 with every
 * warning an error, included twice (the guard), every exported function referenced (so the
 * link proves the library exports each one), and the values the ABI promises never to change.
 * Runs in a few microseconds and prints the usual summary line.
 */
#include <fastrpc.h>
#include <fastrpc.h> /* the include guard */

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int passed, failed;

#define EXPECT(cond)                                                                       \
    do {                                                                                   \
        if (cond) {                                                                        \
            passed++;                                                                      \
        } else {                                                                           \
            failed++;                                                                      \
            printf("  %s:%d: EXPECT(%s) failed\n", __FILE__, __LINE__, #cond);             \
        }                                                                                  \
    } while (0)

typedef void (*any_fn)(void);
#define FN(f) ((any_fn)(f))

/* Every function of the header: a missing definition fails the link. */
static const any_fn every_function[] = {
    FN(fastrpc_client_new),
    FN(fastrpc_client_call),
    FN(fastrpc_client_call_async),
    FN(fastrpc_client_call_queued),
    FN(fastrpc_client_call_async_id),
    FN(fastrpc_client_call_queued_id),
    FN(fastrpc_client_call_queued_deferred),
    FN(fastrpc_client_flush),
    FN(fastrpc_client_cancel),
    FN(fastrpc_client_send),
    FN(fastrpc_client_pending_requests),
    FN(fastrpc_client_get_stats),
    FN(fastrpc_client_close),
    FN(fastrpc_client_free),
    FN(fastrpc_client_config_builder_new),
    FN(fastrpc_client_config_builder_free),
    FN(fastrpc_client_config_builder_set_addr),
    FN(fastrpc_client_config_builder_add_addr),
    FN(fastrpc_client_config_builder_set_connections_per_server),
    FN(fastrpc_client_config_builder_set_resolve_interval_ms),
    FN(fastrpc_balanced_client_new),
    FN(fastrpc_balanced_client_call),
    FN(fastrpc_balanced_client_call_async),
    FN(fastrpc_balanced_client_call_queued),
    FN(fastrpc_balanced_client_call_async_id),
    FN(fastrpc_balanced_client_call_queued_id),
    FN(fastrpc_balanced_client_cancel),
    FN(fastrpc_balanced_client_send),
    FN(fastrpc_balanced_client_pending_requests),
    FN(fastrpc_balanced_client_get_stats),
    FN(fastrpc_balanced_client_server_count),
    FN(fastrpc_balanced_client_get_server_stats),
    FN(fastrpc_balanced_client_close),
    FN(fastrpc_balanced_client_free),
    FN(fastrpc_client_config_builder_set_sniff_header),
    FN(fastrpc_client_config_builder_set_protocol_version),
    FN(fastrpc_client_config_builder_set_compression),
    FN(fastrpc_client_config_builder_set_flate_level),
    FN(fastrpc_client_config_builder_set_max_pending_requests),
    FN(fastrpc_client_config_builder_set_max_queued_bytes),
    FN(fastrpc_client_config_builder_set_prioritize_new_requests),
    FN(fastrpc_client_config_builder_set_max_batch_delay_us),
    FN(fastrpc_client_config_builder_set_read_spin_us),
    FN(fastrpc_client_config_builder_set_request_timeout_ms),
    FN(fastrpc_client_config_builder_set_read_timeout_ms),
    FN(fastrpc_client_config_builder_set_write_timeout_ms),
    FN(fastrpc_client_config_builder_set_read_buffer_size),
    FN(fastrpc_client_config_builder_set_write_buffer_size),
    FN(fastrpc_client_config_builder_set_max_frame_size),
    FN(fastrpc_client_config_builder_set_handshake_timeout_ms),
    FN(fastrpc_client_config_builder_set_reconnect_backoff_ms),
    FN(fastrpc_client_config_builder_set_tls_ca_pem),
    FN(fastrpc_client_config_builder_set_tls_ca_file),
    FN(fastrpc_client_config_builder_set_tls_server_name),
    FN(fastrpc_client_config_builder_set_tls_client_cert_pem),
    FN(fastrpc_client_config_builder_set_tls_insecure_skip_verify_for_testing_only),
    FN(fastrpc_completion_queue_new),
    FN(fastrpc_completion_queue_poll),
    FN(fastrpc_completion_queue_shutdown),
    FN(fastrpc_completion_queue_free),
    FN(fastrpc_version),
    FN(fastrpc_version_number),
    FN(fastrpc_shutdown),
    FN(fastrpc_completion_queue_fd),
    FN(fastrpc_server_queue_fd),
    FN(fastrpc_client_read_fd),
    FN(fastrpc_client_read_now),
    FN(fastrpc_request_get_id),
    FN(fastrpc_request_peer_addr),
    FN(fastrpc_request_is_tls),
    FN(fastrpc_request_peer_certificate),
    FN(fastrpc_request_peer_subject),
    FN(fastrpc_request_peer_subject_alt_names),
    FN(fastrpc_set_worker_threads),
    FN(fastrpc_set_log_callback),
    FN(fastrpc_request_name),
    FN(fastrpc_request_value),
    FN(fastrpc_request_id),
    FN(fastrpc_request_reply),
    FN(fastrpc_request_free),
    FN(fastrpc_response_new),
    FN(fastrpc_response_free),
    FN(fastrpc_response_data),
    FN(fastrpc_response_len),
    FN(fastrpc_response_status),
    FN(fastrpc_response_error_message),
    FN(fastrpc_server_new),
    FN(fastrpc_server_new_queued),
    FN(fastrpc_server_local_addr),
    FN(fastrpc_server_get_stats),
    FN(fastrpc_server_stop),
    FN(fastrpc_server_free),
    FN(fastrpc_server_config_builder_new),
    FN(fastrpc_server_config_builder_free),
    FN(fastrpc_server_config_builder_set_sniff_header),
    FN(fastrpc_server_config_builder_set_protocol_version),
    FN(fastrpc_server_config_builder_set_compression),
    FN(fastrpc_server_config_builder_set_flate_level),
    FN(fastrpc_server_config_builder_set_concurrency),
    FN(fastrpc_server_config_builder_set_concurrency_limit_reply),
    FN(fastrpc_server_config_builder_set_error_reply),
    FN(fastrpc_server_config_builder_set_pipeline_requests),
    FN(fastrpc_server_config_builder_set_max_batch_delay_us),
    FN(fastrpc_server_config_builder_set_read_spin_us),
    FN(fastrpc_server_config_builder_set_read_timeout_ms),
    FN(fastrpc_server_config_builder_set_write_timeout_ms),
    FN(fastrpc_server_config_builder_set_idle_timeout_ms),
    FN(fastrpc_server_config_builder_set_read_buffer_size),
    FN(fastrpc_server_config_builder_set_write_buffer_size),
    FN(fastrpc_server_config_builder_set_max_frame_size),
    FN(fastrpc_server_config_builder_set_handshake_timeout_ms),
    FN(fastrpc_server_config_builder_set_tls_cert_pem),
    FN(fastrpc_server_config_builder_set_tls_cert_files),
    FN(fastrpc_server_config_builder_set_tls_client_ca_pem),
    FN(fastrpc_server_config_builder_set_require_tls),
    FN(fastrpc_server_queue_new),
    FN(fastrpc_server_queue_poll),
    FN(fastrpc_server_queue_shutdown),
    FN(fastrpc_server_queue_free),
    FN(fastrpc_status_message),
    FN(fastrpc_last_error_message),
    FN(fastrpc_last_error_tls_detail),
    FN(fastrpc_response_tls_detail),
};

int main(void) {
    size_t n = sizeof every_function / sizeof every_function[0];
    size_t nonnull = 0;
    for (size_t i = 0; i < n; i++) nonnull += every_function[i] != NULL;
    EXPECT(nonnull == n);

    /* Status values never change meaning. */
    EXPECT(FASTRPC_STATUS_OK == 0);
    EXPECT(FASTRPC_STATUS_TIMEOUT == 1);
    EXPECT(FASTRPC_STATUS_OVERFLOW == 2);
    EXPECT(FASTRPC_STATUS_CONNECT == 3);
    EXPECT(FASTRPC_STATUS_CONNECTION == 4);
    EXPECT(FASTRPC_STATUS_CLOSED == 5);
    EXPECT(FASTRPC_STATUS_PROTOCOL == 6);
    EXPECT(FASTRPC_STATUS_TLS == 7);
    EXPECT(FASTRPC_STATUS_TOO_LARGE == 8);
    EXPECT(FASTRPC_STATUS_INVALID_ARGUMENT == 9);
    EXPECT(FASTRPC_STATUS_IO == 10);
    EXPECT(FASTRPC_STATUS_PANIC == 11);
    EXPECT(FASTRPC_STATUS_ALREADY_ANSWERED == 12);
    EXPECT(FASTRPC_STATUS_BUFFER_TOO_SMALL == 13);
    EXPECT(sizeof(fastrpc_status) == 4);
    /* Wire codes and levels. */
    EXPECT(FASTRPC_COMPRESSION_FLATE == 0);
    EXPECT(FASTRPC_COMPRESSION_NONE == 1);
    EXPECT(FASTRPC_COMPRESSION_SNAPPY == 2);
    EXPECT(sizeof(fastrpc_compression) == 4);
    EXPECT(FASTRPC_LOG_ERROR == 1 && FASTRPC_LOG_WARN == 2 && FASTRPC_LOG_INFO == 3 &&
           FASTRPC_LOG_DEBUG == 4);
    EXPECT(sizeof(fastrpc_log_level) == 4);
    /* Plain structs: all u64 counters, so their layout is fixed. */
    EXPECT(sizeof(fastrpc_error_counts) == 10 * 8);
    EXPECT(sizeof(fastrpc_io_stats) == 7 * 8);
    /* Stats structs start with their size (set by the caller), then u64 counters. */
    EXPECT(offsetof(fastrpc_client_stats, struct_size) == 0);
    EXPECT(offsetof(fastrpc_server_stats, struct_size) == 0);
    EXPECT(sizeof(fastrpc_client_stats) == 11 * 8 + sizeof(fastrpc_error_counts) +
                                              sizeof(fastrpc_io_stats));
    /* Appended after `io` (a field added later goes at the end: see struct_size). */
    EXPECT(offsetof(fastrpc_client_stats, cancelled) ==
           9 * 8 + sizeof(fastrpc_error_counts) + sizeof(fastrpc_io_stats));
    EXPECT(offsetof(fastrpc_client_stats, lone_writes) ==
           10 * 8 + sizeof(fastrpc_error_counts) + sizeof(fastrpc_io_stats));
    EXPECT(offsetof(fastrpc_client_stats, errors) == 9 * 8);
    EXPECT(sizeof(fastrpc_server_stats) == 12 * 8 + sizeof(fastrpc_error_counts) +
                                              sizeof(fastrpc_io_stats));
    EXPECT(offsetof(fastrpc_server_stats, lone_writes) ==
           11 * 8 + sizeof(fastrpc_error_counts) + sizeof(fastrpc_io_stats));
    EXPECT(offsetof(fastrpc_completion, tag) == 0);
    EXPECT(offsetof(fastrpc_completion, status) == 8);
    EXPECT(offsetof(fastrpc_completion, response) == 16);
    /* The version macros agree with each other and with the library. */
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", FASTRPC_VERSION_MAJOR, FASTRPC_VERSION_MINOR,
             FASTRPC_VERSION_PATCH);
    EXPECT(strcmp(v, FASTRPC_VERSION) == 0);
    EXPECT(strcmp(fastrpc_version(), FASTRPC_VERSION) == 0);
    EXPECT(FASTRPC_VERSION_NUMBER == FASTRPC_VERSION_MAJOR * 10000 +
                                         FASTRPC_VERSION_MINOR * 100 + FASTRPC_VERSION_PATCH);
    EXPECT(fastrpc_version_number() == FASTRPC_VERSION_NUMBER);

    printf("# header_check (%s)\n",
#ifdef __cplusplus
           "C++"
#else
           "C"
#endif
    );
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
