/* maglev.h: Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast
 * and Reliable Software Network Load Balancer", NSDI 2016, section 3.4),
 * the lookup table behind the `hash` balancer (balancer_hash.c).
 *
 * A table of prime size M (MG_MAGLEV_SIZE, 65537, by default) is filled
 * from N named, weighted targets: each target walks its own permutation of
 * the slots (offset and skip from two hashes of its name) and, turn by
 * turn, takes its next free slot; a target of weight w takes a turn in
 * w / max-weight of the rounds, so it owns about w / sum(w) of the slots.
 * A key's hash picks slot hash % M. Removing one target of N moves its own
 * keys and only a few others (the paper's figure 12; spec/c/maglev_spec.lua
 * measures it); the table depends only on the set of (name, weight), not
 * on the order the targets are given in, so putting a target back gives
 * the very same table and every key returns.
 *
 * Ownership: mg_maglev_build returns a table owned by the caller, freed
 * with mg_maglev_free; it keeps no pointer to the targets (names are read
 * during the build only). Lookups never allocate or write: one built table
 * may be shared by every worker thread and replaced whole on a change. */
#ifndef MG_MAGLEV_H
#define MG_MAGLEV_H

#include <stddef.h>
#include <stdint.h>

#define MG_MAGLEV_SIZE 65537u

typedef struct mg_maglev_target_s {
    const char *name; /* identity of the target, e.g. "10.0.0.1:8080" */
    size_t len;
    uint32_t weight; /* 0: gets no slot (drained) */
} mg_maglev_target_t;

typedef struct mg_maglev_s mg_maglev_t;

/* Builds the table over targets[0..n) with size slots (0: MG_MAGLEV_SIZE;
 * else a prime >= n and < 2^24). Returns NULL with *err set to a
 * static reason (no target with a weight, two targets of one name, a size
 * not prime or too small) or "out of memory". */
mg_maglev_t *mg_maglev_build(const mg_maglev_target_t *targets, size_t n, uint32_t size,
                             const char **err);

/* The index (into the targets given to the build) of the target for a key
 * of this hash. */
uint32_t mg_maglev_lookup(const mg_maglev_t *m, uint64_t hash);

/* Slot i's target index (i < size), and the size: for specs and /upstreams. */
uint32_t mg_maglev_slot(const mg_maglev_t *m, uint32_t i);
uint32_t mg_maglev_size(const mg_maglev_t *m);

void mg_maglev_free(mg_maglev_t *m);

/* A fast 64-bit hash of n bytes (keys: header values, client addresses,
 * paths), well mixed in every bit so that hash % M spreads evenly. Not for
 * hash tables under attack by chosen keys: a balancer's key only chooses
 * among targets that all serve it. */
uint64_t mg_maglev_hash(const void *p, size_t n, uint64_t seed);

#endif
