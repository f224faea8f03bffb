/* proxy_protocol.h: the PROXY protocol header, versions 1 and 2
 * (HAProxy's proxy-protocol.txt, 2.8), parsed incrementally from the first
 * bytes a listener reads (issue #14: `proxy_protocol = true`, only from
 * trusted_proxies).
 *
 * mg_pp_parse is called on the bytes received so far, from the start of the
 * connection, each time more arrive: it answers "need more", "done: the
 * header is the first N bytes" or "error" with a static reason. It keeps no
 * state between calls (a header is at most 107 bytes in v1 and 16 + the
 * announced length in v2, so re-reading is cheaper than a state machine),
 * never allocates and never reads past n.
 *
 * Strict, as the spec asks ("any sequence which does not exactly match the
 * protocol must be discarded"): v1 needs single spaces, canonical addresses
 * of the announced family, ports without leading zeros, CRLF within 107
 * bytes; v2 needs version 2, command LOCAL or PROXY, a known family and
 * transport, an address block as long as the family's, TLVs that exactly
 * fill the rest, a valid SSL TLV, a UNIQUE_ID of at most 128 bytes and a
 * matching CRC32C when one is sent. LOCAL (health checks of the sender)
 * and UNSPEC carry no address: the caller keeps the socket's. AF_UNIX
 * addresses are accepted and ignored the same way.
 *
 * TLVs are kept as (offset, length) spans into the caller's buffer, so the
 * result stays valid if the caller moves its buffer (not if it drops the
 * header bytes: copy what must outlive them). */
#ifndef MG_PROXY_PROTOCOL_H
#define MG_PROXY_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include "cidr.h"

enum {
    MG_PP_AGAIN = -11, /* not yet: call again with more bytes */
    MG_PP_ERROR = -22, /* not a valid header: close the connection */
};

#define MG_PP_V1_MAX 107  /* the longest v1 line, CRLF included */
#define MG_PP_MAX_TLVS 16 /* more is refused: no sender needs that many */

enum { MG_PP_LOCAL = 0, MG_PP_PROXY = 1 };
enum { MG_PP_AF_UNSPEC = 0, MG_PP_AF_INET = 1, MG_PP_AF_INET6 = 2, MG_PP_AF_UNIX = 3 };
enum { MG_PP_TRANSPORT_UNSPEC = 0, MG_PP_STREAM = 1, MG_PP_DGRAM = 2 };

/* TLV types of the spec (2.2) */
enum {
    MG_PP2_TYPE_ALPN = 0x01,
    MG_PP2_TYPE_AUTHORITY = 0x02,
    MG_PP2_TYPE_CRC32C = 0x03,
    MG_PP2_TYPE_NOOP = 0x04,
    MG_PP2_TYPE_UNIQUE_ID = 0x05,
    MG_PP2_TYPE_SSL = 0x20,
    MG_PP2_SUBTYPE_SSL_VERSION = 0x21,
    MG_PP2_SUBTYPE_SSL_CN = 0x22,
    MG_PP2_SUBTYPE_SSL_CIPHER = 0x23,
    MG_PP2_SUBTYPE_SSL_SIG_ALG = 0x24,
    MG_PP2_SUBTYPE_SSL_KEY_ALG = 0x25,
    MG_PP2_TYPE_NETNS = 0x30,
};

typedef struct mg_pp_tlv_s {
    uint32_t off; /* of the value, from the start of the buffer */
    uint16_t len;
    uint8_t type;
} mg_pp_tlv_t;

typedef struct mg_pp_header_s {
    int version;   /* 1 or 2 */
    int command;   /* MG_PP_PROXY, or MG_PP_LOCAL (v1 UNKNOWN is LOCAL too) */
    int family;    /* MG_PP_AF_* */
    int transport; /* MG_PP_STREAM, ... (v1: always STREAM) */
    int has_addr;  /* src/dst below are set (PROXY over INET or INET6) */
    mg_addr_t src, dst;
    uint16_t src_port, dst_port;
    size_t len; /* bytes of the header: the payload starts there */
    unsigned ntlvs;
    mg_pp_tlv_t tlvs[MG_PP_MAX_TLVS]; /* top level, in order; SSL's own
                                         sub-TLVs are found with
                                         mg_pp_ssl_sub */
    uint8_t ssl_client;               /* of the SSL TLV when present */
    uint32_t ssl_verify;              /* 0: a client certificate was verified */
} mg_pp_header_t;

/* Parses buf[0..n) (the first bytes of a connection). max_len caps a v2
 * header (16 + its length; 0 means 65551, the protocol's own limit) so that
 * a peer cannot make the caller buffer 64 KiB. Returns the header length
 * (> 0) with *h filled, MG_PP_AGAIN, or MG_PP_ERROR with *err set to a
 * static reason. */
int mg_pp_parse(const uint8_t *buf, size_t n, size_t max_len, mg_pp_header_t *h, const char **err);

/* The first top-level TLV of that type, or NULL. */
const mg_pp_tlv_t *mg_pp_tlv(const mg_pp_header_t *h, uint8_t type);

/* A sub-TLV of the SSL TLV (MG_PP2_SUBTYPE_SSL_*): 0 with its value's span
 * in *out, or -1 when absent. buf is the buffer given to mg_pp_parse. */
int mg_pp_ssl_sub(const mg_pp_header_t *h, const uint8_t *buf, uint8_t type, mg_pp_tlv_t *out);

/* CRC32c (Castagnoli, RFC 4960 appendix B) of n bytes, for the CRC32C TLV. */
uint32_t mg_pp_crc32c(const uint8_t *p, size_t n);

#endif
