/*
 * ring.h — a consistent hash ring (Karger et al.) with virtual nodes.
 *
 * Pure: no I/O, no clock, no global state, no erl_nif.h or ei.h. The NIF
 * (c_src/synod_nif.c) and the C node link this same file, so both place every
 * key on the same member for the same membership and seed.
 *
 * The data structure
 * ------------------
 * Every member gets `weight * vnodes` points on a 64-bit circle. Point j of a
 * member is SipHash-2-4 (libsodium's crypto_shorthash, keyed by the 16-byte
 * ring seed) of the member's name followed by j as 4 little-endian bytes. A
 * key is hashed the same way (its bytes alone) and belongs to the first point
 * clockwise from it, wrapping at 2^64.
 *
 * A point is stored as one uint64: the top 48 bits of its hash, and the
 * member's index in the low 16 bits. Sorting these words sorts the ring, with
 * equal 48-bit positions broken by member index; member indexes follow the
 * bytewise order of names, so the ring does not depend on the order members
 * were given in. A key's position is its hash with the low 16 bits cleared,
 * and its owner is the first point >= that position.
 *
 * Search: the top `bucket_bits` bits of a position pick a bucket (there are
 * at least as many buckets as points, so a bucket holds about one point). For
 * each bucket the ring keeps the first point at or after the bucket's start
 * (first[]): a key at or before it belongs to that point's member, which
 * settles about two lookups in three with a single load. Otherwise a
 * branchless lower-bound search runs over the rest of the bucket. A lookup
 * costs one SipHash and one or two cache misses.
 *
 * Costs (P = total points, M = members)
 *   build           O(P) hashes + O(P) counting sort by bucket
 *   memory          8 B/point + 12 B/bucket (buckets = next power of two >= P)
 *   lookup          O(1) expected, O(points in one bucket) worst case
 *   owners(n)       lookup, then a clockwise walk until n distinct members are seen
 *
 * Guarantees: answers depend only on (members with weights, vnodes, seed),
 * never on input order, platform endianness or allocation. A built ring is
 * immutable, so any number of threads may read it without locks.
 */
#ifndef SYNOD_RING_H
#define SYNOD_RING_H

#include <stddef.h>
#include <stdint.h>

#define RING_SEED_BYTES 16
/* The default seed, the 16 ASCII bytes "synod-ring-v1.00". Changing it moves
 * every key; it is part of the wire-visible behaviour. */
#define RING_DEFAULT_SEED "synod-ring-v1.00"
#define RING_DEFAULT_VNODES 2048
#define RING_MAX_MEMBERS 4096
#define RING_MAX_NAME 255
#define RING_MAX_WEIGHT 1024
#define RING_MAX_VNODES 16384
#define RING_MAX_POINTS (1u << 22)

typedef enum ring_error {
    RING_OK = 0,
    RING_ENOMEMBERS = -1, /* empty member list */
    RING_ETOOMANY = -2,   /* more than RING_MAX_MEMBERS */
    RING_ENAME = -3,      /* empty name, or longer than RING_MAX_NAME */
    RING_EWEIGHT = -4,    /* weight 0 or above RING_MAX_WEIGHT */
    RING_EDUPLICATE = -5, /* two members with the same name */
    RING_EVNODES = -6,    /* vnodes 0 or above RING_MAX_VNODES */
    RING_EPOINTS = -7,    /* sum of weight * vnodes above RING_MAX_POINTS */
    RING_ENOMEM = -8,
} ring_error;

/* A member as given to ring_build. `name` is copied; `tag` is returned by
 * ring_member_tag so a caller can map members back to its own objects. */
typedef struct ring_member_spec {
    const uint8_t *name;
    size_t name_len;
    uint32_t weight;
    uint32_t tag;
} ring_member_spec;

typedef struct ring ring_t;

/* Builds a ring. On success stores it in *out and returns RING_OK; otherwise
 * returns an error and leaves *out untouched. On RING_EDUPLICATE, *bad (if not
 * NULL) is set to the position in `members` of the second duplicate; on
 * RING_ENAME and RING_EWEIGHT to the offending position. */
ring_error ring_build(ring_t **out, const ring_member_spec *members, size_t count, uint32_t vnodes,
                      const uint8_t seed[RING_SEED_BYTES], size_t *bad);
void ring_free(ring_t *ring);
const char *ring_strerror(ring_error err);

/* The 64-bit hash of a key under this ring's seed. Two rings with the same
 * seed hash a key alike, so ring_diff-style callers may hash once. */
uint64_t ring_hash(const ring_t *ring, const void *key, size_t len);

/* Index (0 .. ring_member_count-1) of the owner of a key or of a hash. */
uint32_t ring_lookup(const ring_t *ring, const void *key, size_t len);
uint32_t ring_lookup_hash(const ring_t *ring, uint64_t hash);

/* Writes up to n distinct member indexes, in ring order starting with the
 * owner, to out[]; returns how many were written: min(n, member count). */
size_t ring_owners(const ring_t *ring, const void *key, size_t len, uint32_t *out, size_t n);
size_t ring_owners_hash(const ring_t *ring, uint64_t hash, uint32_t *out, size_t n);

uint32_t ring_member_count(const ring_t *ring);
uint32_t ring_point_count(const ring_t *ring);
uint32_t ring_vnodes(const ring_t *ring);
const uint8_t *ring_seed(const ring_t *ring);
/* Members are indexed in bytewise order of their names. */
const uint8_t *ring_member_name(const ring_t *ring, uint32_t index, size_t *len);
uint32_t ring_member_weight(const ring_t *ring, uint32_t index);
uint32_t ring_member_tag(const ring_t *ring, uint32_t index);
/* Index of the member with this name, or -1. O(log M). */
int32_t ring_find_member(const ring_t *ring, const uint8_t *name, size_t len);

/* Fraction of the circle (0..1) owned by each member, written to shares[]
 * (ring_member_count entries). Exact, from the point positions. */
void ring_shares(const ring_t *ring, double *shares);

#endif
