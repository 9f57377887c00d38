/*
 * ring.c — consistent hash ring; see ring.h for the structure and its costs.
 *
 * Pure: no I/O, no clock, no global state. Allocates with malloc/free only
 * inside ring_build and ring_free; lookups never allocate.
 *
 * Invariants of a built ring (checked by ring_check_invariants in debug
 * builds):
 *   - points[] is sorted ascending and holds exactly sum(weight * vnodes)
 *     words, each with a member index < member_count in its low 16 bits;
 *   - members[] is sorted by name (bytewise, shorter first on a tie of the
 *     common prefix), so names are distinct;
 *   - bucket[b] is the index of the first point whose top bucket_bits bits are
 *     >= b, and bucket[1 << bucket_bits] == point_count;
 *   - first[b] is the successor of the start of bucket b: points[bucket[b]],
 *     or, when no point lies at or after that bucket, WRAP_POINT carrying the
 *     member of points[0] (the ring wraps). So a key whose position is <=
 *     first[b] belongs to first[b]'s member, with one load and no search.
 */
#include "ring.h"

#include <assert.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_BITS 16
#define INDEX_MASK ((uint64_t)((1u << INDEX_BITS) - 1))
/* Up to this many owners a linear "seen" check beats clearing a bitmap. */
#define OWNERS_LINEAR_MAX 16
/* The largest 48-bit position with a zero member field: every key position
 * (low 16 bits clear) is <= WRAP_POINT | m. */
#define WRAP_POINT (~INDEX_MASK)

typedef struct ring_member {
    const uint8_t *name; /* points into ring->names */
    size_t name_len;
    uint32_t weight;
    uint32_t tag;
} ring_member;

struct ring {
    uint64_t *points;
    uint32_t *bucket;
    uint64_t *first;
    ring_member *members;
    uint8_t *names;
    uint32_t point_count;
    uint32_t member_count;
    uint32_t vnodes;
    unsigned bucket_shift; /* 64 - bucket_bits */
    uint8_t seed[RING_SEED_BYTES];
};

static uint64_t load_le64(const unsigned char *b)
{
    uint64_t v;
    memcpy(&v, b, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static uint64_t siphash(const uint8_t seed[RING_SEED_BYTES], const void *data, size_t len)
{
    unsigned char out[crypto_shorthash_siphash24_BYTES];
    crypto_shorthash_siphash24(out, data, len, seed);
    return load_le64(out);
}

static int name_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return (alen > blen) - (alen < blen);
}

static int member_cmp(const void *pa, const void *pb)
{
    const ring_member *a = pa, *b = pb;
    return name_cmp(a->name, a->name_len, b->name, b->name_len);
}

static unsigned ceil_log2(uint32_t n)
{
    unsigned bits = 0;
    while ((1ull << bits) < n)
        bits++;
    return bits;
}

static unsigned bucket_bits(uint32_t points)
{
    unsigned bits = ceil_log2(points);
    return bits == 0 ? 1 : bits;
}

/* Sorts the points of `unsorted` into r->points and fills the bucket index in
 * the same pass: a counting sort on the top bucket_bits bits, then an
 * insertion sort inside each bucket. Hash positions are uniform and there are
 * at least as many buckets as points, so a bucket holds about one point and
 * the whole sort is O(P). */
static void sort_into_buckets(ring_t *r, const uint64_t *unsorted)
{
    unsigned shift = r->bucket_shift;
    size_t buckets = (size_t)1 << (64 - shift);
    uint32_t *start = r->bucket;
    memset(start, 0, (buckets + 1) * sizeof *start);
    for (uint32_t i = 0; i < r->point_count; i++)
        start[(unsorted[i] >> shift) + 1]++;
    for (size_t b = 0; b < buckets; b++)
        start[b + 1] += start[b];
    /* start[b] is now the first slot of bucket b; use start[b+1] as a moving
     * cursor, then shift it back. */
    for (uint32_t i = 0; i < r->point_count; i++) {
        size_t b = (size_t)(unsorted[i] >> shift);
        r->points[start[b + 1] - 1] = unsorted[i];
        start[b + 1]--;
    }
    /* Now start[b + 1] == first slot of bucket b; shift the index down. */
    for (size_t b = 0; b < buckets; b++)
        start[b] = start[b + 1];
    start[buckets] = r->point_count;
    for (size_t b = 0; b < buckets; b++) {
        for (uint32_t i = start[b] + 1; i < start[b + 1]; i++) {
            uint64_t v = r->points[i];
            uint32_t j = i;
            while (j > start[b] && r->points[j - 1] > v) {
                r->points[j] = r->points[j - 1];
                j--;
            }
            r->points[j] = v;
        }
    }
}

static void fill_first(ring_t *r)
{
    size_t buckets = (size_t)1 << (64 - r->bucket_shift);
    uint64_t wrap = WRAP_POINT | (r->points[0] & INDEX_MASK);
    for (size_t b = 0; b <= buckets; b++)
        r->first[b] = r->bucket[b] < r->point_count ? r->points[r->bucket[b]] : wrap;
}

#ifndef NDEBUG
static void ring_check_invariants(const ring_t *r)
{
    for (uint32_t i = 0; i < r->point_count; i++) {
        assert((r->points[i] & INDEX_MASK) < r->member_count);
        assert(i == 0 || r->points[i - 1] <= r->points[i]);
    }
    for (uint32_t m = 1; m < r->member_count; m++)
        assert(member_cmp(&r->members[m - 1], &r->members[m]) < 0);
    size_t buckets = (size_t)1 << (64 - r->bucket_shift);
    assert(r->bucket[buckets] == r->point_count);
    for (size_t b = 0; b < buckets; b++)
        for (uint32_t i = r->bucket[b]; i < r->bucket[b + 1]; i++)
            assert((r->points[i] >> r->bucket_shift) == b);
    for (size_t b = 0; b <= buckets; b++)
        assert(r->bucket[b] == r->point_count ? (r->first[b] & ~INDEX_MASK) == WRAP_POINT
                                              : r->first[b] == r->points[r->bucket[b]]);
}
#else
#define ring_check_invariants(r) ((void)(r))
#endif

static ring_error validate(const ring_member_spec *members, size_t count, uint32_t vnodes,
                           size_t *total_points, size_t *total_name_bytes, size_t *bad)
{
    if (count == 0)
        return RING_ENOMEMBERS;
    if (count > RING_MAX_MEMBERS)
        return RING_ETOOMANY;
    if (vnodes == 0 || vnodes > RING_MAX_VNODES)
        return RING_EVNODES;
    size_t points = 0, bytes = 0;
    for (size_t i = 0; i < count; i++) {
        if (members[i].name_len == 0 || members[i].name_len > RING_MAX_NAME ||
            members[i].name == NULL) {
            if (bad)
                *bad = i;
            return RING_ENAME;
        }
        if (members[i].weight == 0 || members[i].weight > RING_MAX_WEIGHT) {
            if (bad)
                *bad = i;
            return RING_EWEIGHT;
        }
        points += (size_t)members[i].weight * vnodes;
        bytes += members[i].name_len;
    }
    if (points > RING_MAX_POINTS)
        return RING_EPOINTS;
    *total_points = points;
    *total_name_bytes = bytes;
    return RING_OK;
}

/* Copies and sorts the members; reports a duplicate by its input position. */
static ring_error copy_members(ring_t *r, const ring_member_spec *members, size_t count,
                               size_t *bad)
{
    uint8_t *cursor = r->names;
    for (size_t i = 0; i < count; i++) {
        memcpy(cursor, members[i].name, members[i].name_len);
        r->members[i] = (ring_member){cursor, members[i].name_len, members[i].weight, (uint32_t)i};
        cursor += members[i].name_len;
    }
    qsort(r->members, count, sizeof *r->members, member_cmp);
    for (size_t i = 1; i < count; i++) {
        if (member_cmp(&r->members[i - 1], &r->members[i]) == 0) {
            if (bad) {
                uint32_t a = r->members[i - 1].tag, b = r->members[i].tag;
                *bad = a > b ? a : b;
            }
            return RING_EDUPLICATE;
        }
    }
    for (size_t i = 0; i < count; i++)
        r->members[i].tag = members[r->members[i].tag].tag;
    return RING_OK;
}

static void place_points(const ring_t *r, uint64_t *points)
{
    uint8_t buf[RING_MAX_NAME + 4];
    size_t p = 0;
    for (uint32_t m = 0; m < r->member_count; m++) {
        const ring_member *mem = &r->members[m];
        memcpy(buf, mem->name, mem->name_len);
        uint32_t n = mem->weight * r->vnodes;
        for (uint32_t j = 0; j < n; j++) {
            buf[mem->name_len + 0] = (uint8_t)j;
            buf[mem->name_len + 1] = (uint8_t)(j >> 8);
            buf[mem->name_len + 2] = (uint8_t)(j >> 16);
            buf[mem->name_len + 3] = (uint8_t)(j >> 24);
            uint64_t h = siphash(r->seed, buf, mem->name_len + 4);
            points[p++] = (h & ~INDEX_MASK) | m;
        }
    }
    assert(p == r->point_count);
}

ring_error ring_build(ring_t **out, const ring_member_spec *members, size_t count, uint32_t vnodes,
                      const uint8_t seed[RING_SEED_BYTES], size_t *bad)
{
    size_t points = 0, name_bytes = 0;
    ring_error err = validate(members, count, vnodes, &points, &name_bytes, bad);
    if (err != RING_OK)
        return err;

    ring_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return RING_ENOMEM;
    r->point_count = (uint32_t)points;
    r->member_count = (uint32_t)count;
    r->vnodes = vnodes;
    memcpy(r->seed, seed, RING_SEED_BYTES);
    r->bucket_shift = 64 - bucket_bits(r->point_count);
    size_t buckets = (size_t)1 << bucket_bits(r->point_count);
    r->points = malloc(points * sizeof *r->points);
    r->bucket = malloc((buckets + 1) * sizeof *r->bucket);
    r->first = malloc((buckets + 1) * sizeof *r->first);
    r->members = malloc(count * sizeof *r->members);
    r->names = malloc(name_bytes);
    uint64_t *unsorted = malloc(points * sizeof *unsorted);
    if (!r->points || !r->bucket || !r->first || !r->members || !r->names || !unsorted) {
        free(unsorted);
        ring_free(r);
        return RING_ENOMEM;
    }
    err = copy_members(r, members, count, bad);
    if (err != RING_OK) {
        free(unsorted);
        ring_free(r);
        return err;
    }
    place_points(r, unsorted);
    sort_into_buckets(r, unsorted);
    free(unsorted);
    fill_first(r);
    ring_check_invariants(r);
    *out = r;
    return RING_OK;
}

void ring_free(ring_t *r)
{
    if (r == NULL)
        return;
    free(r->points);
    free(r->bucket);
    free(r->first);
    free(r->members);
    free(r->names);
    free(r);
}

const char *ring_strerror(ring_error err)
{
    switch (err) {
    case RING_OK:
        return "ok";
    case RING_ENOMEMBERS:
        return "the member list is empty";
    case RING_ETOOMANY:
        return "too many members (at most 4096)";
    case RING_ENAME:
        return "a member name is empty or longer than 255 bytes";
    case RING_EWEIGHT:
        return "a weight is not an integer in 1..1024";
    case RING_EDUPLICATE:
        return "duplicate member";
    case RING_EVNODES:
        return "vnodes is not an integer in 1..16384";
    case RING_EPOINTS:
        return "too many points (sum of weight * vnodes above 4194304)";
    case RING_ENOMEM:
        return "out of memory";
    }
    return "unknown ring error";
}

uint64_t ring_hash(const ring_t *r, const void *key, size_t len)
{
    return siphash(r->seed, key, len);
}

/* Branchless lower bound in points[lo, hi): the first index whose point is
 * >= target, or hi. */
static uint32_t search_bucket(const ring_t *r, uint32_t lo, uint32_t hi, uint64_t target)
{
    size_t n = hi - lo;
    if (n == 0)
        return hi;
    const uint64_t *base = r->points + lo;
    while (n > 1) {
        size_t half = n / 2;
        base = base[half - 1] < target ? base + half : base;
        n -= half;
    }
    return (uint32_t)(base - r->points) + (*base < target);
}

/* Index of the first point >= the key's position, wrapping to 0. */
static uint32_t successor(const ring_t *r, uint64_t hash)
{
    uint64_t target = hash & ~INDEX_MASK;
    size_t b = (size_t)(target >> r->bucket_shift);
    if (target <= r->first[b])
        return r->bucket[b] < r->point_count ? r->bucket[b] : 0;
    /* Bucket b holds points and the first is below target; every point at or
     * after bucket[b + 1] lies in a later bucket, so it is > target. */
    uint32_t i = search_bucket(r, r->bucket[b] + 1, r->bucket[b + 1], target);
    return i == r->point_count ? 0 : i;
}

uint32_t ring_lookup_hash(const ring_t *r, uint64_t hash)
{
    uint64_t target = hash & ~INDEX_MASK;
    size_t b = (size_t)(target >> r->bucket_shift);
    uint64_t first = r->first[b];
    if (target <= first)
        return (uint32_t)(first & INDEX_MASK);
    uint32_t hi = r->bucket[b + 1];
    uint32_t i = search_bucket(r, r->bucket[b] + 1, hi, target);
    return (uint32_t)((i < hi ? r->points[i] : r->first[b + 1]) & INDEX_MASK);
}

uint32_t ring_lookup(const ring_t *r, const void *key, size_t len)
{
    return ring_lookup_hash(r, ring_hash(r, key, len));
}

size_t ring_owners_hash(const ring_t *r, uint64_t hash, uint32_t *out, size_t n)
{
    if (n > r->member_count)
        n = r->member_count;
    if (n == 0)
        return 0;
    uint32_t i = successor(r, hash);
    size_t found = 0;
    if (n <= OWNERS_LINEAR_MAX) {
        for (uint32_t step = 0; step < r->point_count && found < n; step++) {
            uint32_t m = (uint32_t)(r->points[i] & INDEX_MASK);
            size_t k = 0;
            while (k < found && out[k] != m)
                k++;
            if (k == found)
                out[found++] = m;
            if (++i == r->point_count)
                i = 0;
        }
    } else {
        uint64_t seen[RING_MAX_MEMBERS / 64] = {0};
        for (uint32_t step = 0; step < r->point_count && found < n; step++) {
            uint32_t m = (uint32_t)(r->points[i] & INDEX_MASK);
            uint64_t bit = 1ull << (m & 63);
            if (!(seen[m >> 6] & bit)) {
                seen[m >> 6] |= bit;
                out[found++] = m;
            }
            if (++i == r->point_count)
                i = 0;
        }
    }
    /* Every member has at least one point, so a full turn finds them all. */
    assert(found == n);
    return found;
}

size_t ring_owners(const ring_t *r, const void *key, size_t len, uint32_t *out, size_t n)
{
    return ring_owners_hash(r, ring_hash(r, key, len), out, n);
}

uint32_t ring_member_count(const ring_t *r)
{
    return r->member_count;
}

uint32_t ring_point_count(const ring_t *r)
{
    return r->point_count;
}

uint32_t ring_vnodes(const ring_t *r)
{
    return r->vnodes;
}

const uint8_t *ring_seed(const ring_t *r)
{
    return r->seed;
}

const uint8_t *ring_member_name(const ring_t *r, uint32_t index, size_t *len)
{
    assert(index < r->member_count);
    *len = r->members[index].name_len;
    return r->members[index].name;
}

uint32_t ring_member_weight(const ring_t *r, uint32_t index)
{
    assert(index < r->member_count);
    return r->members[index].weight;
}

uint32_t ring_member_tag(const ring_t *r, uint32_t index)
{
    assert(index < r->member_count);
    return r->members[index].tag;
}

int32_t ring_find_member(const ring_t *r, const uint8_t *name, size_t len)
{
    size_t lo = 0, hi = r->member_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(r->members[mid].name, r->members[mid].name_len, name, len);
        if (c == 0)
            return (int32_t)mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

void ring_shares(const ring_t *r, double *shares)
{
    for (uint32_t m = 0; m < r->member_count; m++)
        shares[m] = 0.0;
    /* Point i owns the arc (points[i-1], points[i]]; point 0 also owns the
     * wrap-around arc after the last point. Positions are the top 48 bits. */
    const double circle = 281474976710656.0; /* 2^48 */
    for (uint32_t i = 0; i < r->point_count; i++) {
        uint64_t here = r->points[i] >> INDEX_BITS;
        uint64_t prev = r->points[i == 0 ? r->point_count - 1 : i - 1] >> INDEX_BITS;
        uint64_t arc = (here - prev) & ((1ull << 48) - 1);
        if (r->point_count == 1)
            arc = 1ull << 48;
        shares[r->points[i] & INDEX_MASK] += (double)arc / circle;
    }
}
