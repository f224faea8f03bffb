/* cidr.h: IP addresses as 128-bit keys, and sets of IPv4/IPv6 CIDR ranges
 * built once and searched in O(log n) (trusted_proxies, issue #14; the `ip`
 * allow/deny policy, issue #17).
 *
 * Every address is one 16-byte key in network order: IPv6 as is, IPv4
 * mapped into ::ffff:0:0/96 (RFC 4291 2.5.5.2), so "::ffff:10.1.2.3" and
 * "10.1.2.3" are the same key and an IPv4 range is an IPv6 range of prefix
 * 96 + n. A consequence, stated because nginx differs: "::/0" also covers
 * every IPv4 address.
 *
 * A set is filled with mg_cidr_set_add (config load time: may allocate),
 * then frozen by mg_cidr_set_build, which sorts and merges overlapping and
 * adjacent ranges into one array; lookups after that never allocate and
 * never write, so one built set may be read by every worker thread.
 *
 * Ownership: mg_cidr_set_new returns a set owned by the caller, freed with
 * mg_cidr_set_free; nothing the set returns points into caller memory. */
#ifndef MG_CIDR_H
#define MG_CIDR_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;

typedef struct mg_addr_s {
    uint8_t b[16]; /* network order; IPv4 as ::ffff:a.b.c.d */
} mg_addr_t;

/* Parses one address literal of n bytes (no port, no brackets, no zone):
 * dotted-quad IPv4 without leading zeros, or any RFC 4291 IPv6 text.
 * Returns 0, or -1 when it is not exactly one address. */
int mg_addr_parse(const char *s, size_t n, mg_addr_t *out);

/* From 4 bytes of IPv4 in network order. */
void mg_addr_from_v4(const uint8_t v4[4], mg_addr_t *out);

/* From a socket address (AF_INET or AF_INET6); -1 for any other family. */
int mg_addr_from_sockaddr(const struct sockaddr *sa, mg_addr_t *out);

/* 1 when a is an IPv4 address (in ::ffff:0:0/96). */
int mg_addr_is_v4(const mg_addr_t *a);

/* Writes the canonical text (IPv4 dotted, else RFC 5952 IPv6) to buf, NUL-
 * terminated; cap >= 46 always suffices. Returns the length, -1 if cap is
 * too small. */
int mg_addr_format(const mg_addr_t *a, char *buf, size_t cap);

typedef struct mg_cidr_set_s mg_cidr_set_t;

/* An empty, unbuilt set (NULL when out of memory). */
mg_cidr_set_t *mg_cidr_set_new(void);

/* Adds "ADDR" or "ADDR/LEN" (n bytes, no surrounding blanks). A prefix
 * longer than the family's, a prefix with a sign or leading zeros, and an
 * address with bits set past the prefix ("10.1.2.3/8": the reason says
 * "did you mean 10.0.0.0/8?") are refused rather than silently masked, so a
 * typo cannot widen or narrow a trust list. Returns 0; -1 with a reason
 * written to err (cap errcap, NUL-terminated; err may be NULL); -2 when out
 * of memory or when the set was already built. */
int mg_cidr_set_add(mg_cidr_set_t *s, const char *text, size_t n, char *err, size_t errcap);

/* Sorts and merges the ranges; after this the set is read-only. Returns 0,
 * or -2 when out of memory. Building twice is a no-op. */
int mg_cidr_set_build(mg_cidr_set_t *s);

/* 1 when a is in a range of the built set s, else 0 (also when s is NULL
 * or unbuilt). When probes is not NULL, it receives the number of ranges
 * compared (the cost of the lookup, which the spec checks is logarithmic). */
int mg_cidr_set_contains(const mg_cidr_set_t *s, const mg_addr_t *a, unsigned *probes);

/* Parses the address text then looks it up: 1, 0, or -1 when not an
 * address. For Lua and the specs; C callers keep parsed keys. */
int mg_cidr_set_contains_text(const mg_cidr_set_t *s, const char *text, size_t n);

/* Number of ranges after merging (0 before building). */
size_t mg_cidr_set_count(const mg_cidr_set_t *s);

/* Range i of the built set, as first and last address, for the specs and
 * the admin API. Returns 0, or -1 when i is out of range. */
int mg_cidr_set_range(const mg_cidr_set_t *s, size_t i, mg_addr_t *first, mg_addr_t *last);

void mg_cidr_set_free(mg_cidr_set_t *s);

#endif
