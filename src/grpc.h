/* grpc.h: what the gateway knows of gRPC (grpc.c), one rule each: which
 * requests are gRPC (the content type), the service and method of a
 * request's :path, the grpc-timeout header, and the gRPC status the
 * gateway's own answers carry for an HTTP status.
 *
 * All pure functions over the caller's bytes: no allocation, any thread.
 */
#ifndef MG_GRPC_H
#define MG_GRPC_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum {
    MG_GRPC_OK = 0,
    MG_GRPC_CANCELLED = 1,
    MG_GRPC_UNKNOWN = 2,
    MG_GRPC_INVALID_ARGUMENT = 3,
    MG_GRPC_DEADLINE_EXCEEDED = 4,
    MG_GRPC_NOT_FOUND = 5,
    MG_GRPC_ALREADY_EXISTS = 6,
    MG_GRPC_PERMISSION_DENIED = 7,
    MG_GRPC_RESOURCE_EXHAUSTED = 8,
    MG_GRPC_FAILED_PRECONDITION = 9,
    MG_GRPC_ABORTED = 10,
    MG_GRPC_OUT_OF_RANGE = 11,
    MG_GRPC_UNIMPLEMENTED = 12,
    MG_GRPC_INTERNAL = 13,
    MG_GRPC_UNAVAILABLE = 14,
    MG_GRPC_DATA_LOSS = 15,
    MG_GRPC_UNAUTHENTICATED = 16,
};

/* Is a request with this Content-Type value gRPC? "application/grpc",
 * alone or followed by '+' (a codec: +proto, +json) or ';' (parameters);
 * case-insensitive, as media types are (RFC 9110 8.3.1). */
int mg_grpc_content_type(const char *v, size_t len);

/* Splits a gRPC path "/package.Service/Method" into the service
 * ("package.Service") and the method: 1 when it has that shape (both
 * non-empty, nothing after the method), 0 otherwise. The outputs point
 * into path. */
int mg_grpc_path_split(const char *path, size_t len, const char **service, size_t *service_len,
                       const char **method, size_t *method_len);

/* A grpc-timeout value ("1..8 ASCII digits" then a unit H M S m u n) in
 * milliseconds, rounded up (a timeout of 1 ns still leaves 1 ms), capped
 * at UINT64_MAX / 2; -1 when the value is not of that form. */
int64_t mg_grpc_timeout_ms(const char *v, size_t len);

/* The gRPC status of a gateway-made answer with this HTTP status (the one
 * table: 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429
 * RESOURCE_EXHAUSTED, 502/503 UNAVAILABLE, 504 DEADLINE_EXCEEDED, ...);
 * MG_GRPC_OK for 2xx. */
int mg_grpc_status_of_http(int http_status);

/* The name of a gRPC status code ("UNAVAILABLE"), "UNKNOWN" out of range. */
const char *mg_grpc_status_name(int code);

/* grpc-message is percent-encoded (gRPC's PROTOCOL-HTTP2.md): bytes outside
 * 0x20-0x7E and '%' become "%XX". Writes at most cap bytes of the encoding
 * of msg (never cutting an escape); returns the length written. */
size_t mg_grpc_message_encode(const char *msg, size_t len, char *out, size_t cap);

/* The config's checks (mg_ffi_str_check_fn, mg_ffi.h) of route.grpc's
 * names, the grammar of a proto file's identifiers: a service is dotted
 * ("helloworld.Greeter": letters, digits, '_', parts not starting with a
 * digit), a method one identifier. */
int mg_grpc_service_check(const char *s, size_t len, char *out, size_t cap);
int mg_grpc_method_check(const char *s, size_t len, char *out, size_t cap);

#endif
