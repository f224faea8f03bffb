/* dns.c: fuzz target for the DNS answer parser of src/dns.c
 * (mg_dns_parse) and the query builder (mg_dns_query_build).
 *
 * Input: byte 0 picks the question type (A, AAAA or SRV); the rest is a
 * DNS message, parsed as the answer to a query for "a.example" (SRV:
 * "_http._tcp.a.example") with the message's own id, from a buffer of
 * exactly its size (ASan sees one byte more). Checks the contract of
 * dns.h: the parser returns 0, MG_DNS_EMISMATCH or MG_DNS_EFORMAT; with 0
 * its status is one of the named ones, it keeps at most MG_DNS_MAX_RECORDS
 * records, each of the question's type, an SRV target and every extra's
 * name a NUL-ended string below MG_DNS_NAME_MAX without an empty label;
 * a failed status keeps no record; parsing again gives the same answer;
 * another id never parses as the answer. The input is also taken as a
 * name to build a query for: a query is never longer than its buffer and
 * is never mistaken for an answer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dns.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "dns: %s\n", what);
        abort();
    }
}

static void check_name(const char *s)
{
    size_t n = strnlen(s, MG_DNS_NAME_MAX);
    check(n < MG_DNS_NAME_MAX, "a name without its NUL");
    check(strstr(s, "..") == NULL && (n == 0 || (s[0] != '.' && s[n - 1] != '.')),
          "a name with an empty label");
}

static mg_dns_answer_t a1, a2; /* large: not on the stack */

static void parse(const uint8_t *msg, size_t n, uint16_t qtype, const char *name)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return;
    memcpy(copy, msg, n);
    uint16_t id = n >= 2 ? (uint16_t)(copy[0] << 8 | copy[1]) : 0;
    int rc = mg_dns_parse(copy, n, id, name, qtype, &a1);
    check(rc == 0 || rc == MG_DNS_EMISMATCH || rc == MG_DNS_EFORMAT, "an unknown return");
    if (rc == 0) {
        int st = a1.status;
        check(st == MG_DNS_OK || st == MG_DNS_NXDOMAIN || st == MG_DNS_SERVFAIL ||
                  st == MG_DNS_REFUSED || st == MG_DNS_RCODE || st == MG_DNS_EFORMAT,
              "an unknown status");
        check(a1.n <= MG_DNS_MAX_RECORDS && a1.nextra <= MG_DNS_MAX_RECORDS, "too many records");
        check(st == MG_DNS_OK || (a1.n == 0 && a1.nextra == 0), "records with a failure");
        for (size_t i = 0; i < a1.n; i++) {
            check(a1.rr[i].type == qtype, "a record of another type");
            if (qtype == MG_DNS_SRV)
                check_name(a1.rr[i].target);
        }
        for (size_t i = 0; i < a1.nextra; i++) {
            check(a1.extra[i].type == MG_DNS_A || a1.extra[i].type == MG_DNS_AAAA,
                  "an extra that is no address");
            check_name(a1.extra[i].name);
        }
        check(mg_dns_parse(copy, n, id, name, qtype, &a2) == 0 && a2.status == a1.status &&
                  a2.n == a1.n && a2.nextra == a1.nextra &&
                  memcmp(a1.rr, a2.rr, a1.n * sizeof(a1.rr[0])) == 0,
              "parsing twice differs");
        check(mg_dns_parse(copy, n, (uint16_t)(id + 1), name, qtype, &a2) == MG_DNS_EMISMATCH,
              "an answer to another id");
    }
    free(copy);
}

static void build(const uint8_t *data, size_t size)
{
    char name[320];
    size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;
    memcpy(name, data, n);
    name[n] = '\0';
    uint8_t *q = malloc(300); /* dns.h: always enough */
    if (!q)
        return;
    int len = mg_dns_query_build(q, 300, 0x1234, name, MG_DNS_A);
    check(len == MG_DNS_ENAME || (len > 12 && len <= 300), "a query longer than its room");
    if (len > 0)
        check(mg_dns_parse(q, (size_t)len, 0x1234, name, MG_DNS_A, &a1) == MG_DNS_EMISMATCH,
              "a query taken for an answer");
    free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint16_t types[3] = { MG_DNS_A, MG_DNS_AAAA, MG_DNS_SRV };
    if (size == 0)
        return 0;
    uint16_t qtype = types[data[0] % 3];
    parse(data + 1, size - 1, qtype, qtype == MG_DNS_SRV ? "_http._tcp.a.example" : "a.example");
    build(data + 1, size - 1);
    return 0;
}
