/*
 * bench_ring.c — speed and balance of the hash ring core.
 *
 * Every timing is the median of ROUNDS rounds. The baseline, measured in the
 * same run, is the textbook ring: an array of {hash, member} structs sorted
 * with qsort and searched with bsearch-style branching binary search, hashing
 * with the same SipHash and seed. Ratios are baseline / Synod (higher is
 * better for Synod).
 *
 *   make bench            (or: build/bench/bench_ring [vnodes])
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "ring.h"

#define MEMBERS 16
#define KEYS (1u << 16)
#define ROUNDS 21

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return v[n / 2];
}

static char names[MEMBERS + 1][32];
static ring_member_spec specs[MEMBERS + 1];
static uint8_t keys[KEYS][16];
static volatile uint64_t sink;

/* ---- the baseline: a textbook sorted-array ring ---- */
typedef struct naive_point {
    uint64_t hash;
    uint32_t member;
} naive_point;

typedef struct naive_ring {
    naive_point *points;
    size_t count;
    uint8_t seed[16];
} naive_ring;

static uint64_t sip(const uint8_t *seed, const void *data, size_t len)
{
    unsigned char out[8];
    uint64_t v = 0;
    crypto_shorthash(out, data, len, seed);
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | out[i];
    return v;
}

static int cmp_point(const void *a, const void *b)
{
    const naive_point *x = a, *y = b;
    return (x->hash > y->hash) - (x->hash < y->hash);
}

static void naive_build(naive_ring *r, uint32_t vnodes)
{
    r->count = (size_t)MEMBERS * vnodes;
    r->points = malloc(r->count * sizeof *r->points);
    memcpy(r->seed, RING_DEFAULT_SEED, 16);
    size_t p = 0;
    for (uint32_t m = 0; m < MEMBERS; m++) {
        uint8_t buf[40];
        memcpy(buf, specs[m].name, specs[m].name_len);
        for (uint32_t j = 0; j < vnodes; j++) {
            memcpy(buf + specs[m].name_len, &j, 4);
            r->points[p++] = (naive_point){sip(r->seed, buf, specs[m].name_len + 4), m};
        }
    }
    qsort(r->points, r->count, sizeof *r->points, cmp_point);
}

static uint32_t naive_lookup(const naive_ring *r, const void *key, size_t len)
{
    uint64_t h = sip(r->seed, key, len);
    size_t lo = 0, hi = r->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return r->points[lo == r->count ? 0 : lo].member;
}

/* ---- measurements ---- */
static double time_naive_lookup(const naive_ring *r)
{
    double t0 = now_ns();
    uint64_t acc = 0;
    for (uint32_t k = 0; k < KEYS; k++)
        acc += naive_lookup(r, keys[k], 16);
    sink = acc;
    return (now_ns() - t0) / KEYS;
}

static double time_lookup(const ring_t *r)
{
    double t0 = now_ns();
    uint64_t acc = 0;
    for (uint32_t k = 0; k < KEYS; k++)
        acc += ring_lookup(r, keys[k], 16);
    sink = acc;
    return (now_ns() - t0) / KEYS;
}

static double time_hash_only(const ring_t *r)
{
    double t0 = now_ns();
    uint64_t acc = 0;
    for (uint32_t k = 0; k < KEYS; k++)
        acc += ring_hash(r, keys[k], 16);
    sink = acc;
    return (now_ns() - t0) / KEYS;
}

static double time_owners3(const ring_t *r)
{
    uint32_t out[3];
    double t0 = now_ns();
    uint64_t acc = 0;
    for (uint32_t k = 0; k < KEYS; k++)
        acc += ring_owners(r, keys[k], 16, out, 3) + out[2];
    sink = acc;
    return (now_ns() - t0) / KEYS;
}

static double time_build(uint32_t vnodes, size_t members)
{
    ring_t *r = NULL;
    double t0 = now_ns();
    if (ring_build(&r, specs, members, vnodes, (const uint8_t *)RING_DEFAULT_SEED, NULL) != RING_OK)
        abort();
    double t = now_ns() - t0;
    ring_free(r);
    return t / 1e6;
}

static double time_naive_build(uint32_t vnodes)
{
    naive_ring nr;
    double t0 = now_ns();
    naive_build(&nr, vnodes);
    double t = now_ns() - t0;
    free(nr.points);
    return t / 1e6;
}

static ring_t *build(size_t members, uint32_t vnodes)
{
    ring_t *r = NULL;
    if (ring_build(&r, specs, members, vnodes, (const uint8_t *)RING_DEFAULT_SEED, NULL) != RING_OK)
        abort();
    return r;
}

int main(int argc, char **argv)
{
    uint32_t vnodes = argc > 1 ? (uint32_t)atoi(argv[1]) : RING_DEFAULT_VNODES;
    if (sodium_init() < 0)
        return 1;
    for (int i = 0; i <= MEMBERS; i++) {
        int n = snprintf(names[i], sizeof names[i], "node%d@127.0.0.1", i + 1);
        specs[i] = (ring_member_spec){(const uint8_t *)names[i], (size_t)n, 1, (uint32_t)i};
    }
    randombytes_buf(keys, sizeof keys);

    ring_t *r = build(MEMBERS, vnodes);
    naive_ring nr;
    naive_build(&nr, vnodes);
    double t_lookup[ROUNDS], t_naive[ROUNDS], t_hash[ROUNDS], t_own[ROUNDS], t_build[ROUNDS],
        t_nbuild[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        t_naive[i] = time_naive_lookup(&nr);
        t_lookup[i] = time_lookup(r);
        t_hash[i] = time_hash_only(r);
        t_own[i] = time_owners3(r);
        t_build[i] = time_build(vnodes, MEMBERS);
        t_nbuild[i] = time_naive_build(vnodes);
    }
    double lookup = median(t_lookup, ROUNDS), naive = median(t_naive, ROUNDS);
    double build_ms = median(t_build, ROUNDS), nbuild_ms = median(t_nbuild, ROUNDS);
    printf("ring, %d members x %u vnodes = %u points, %d random 16-byte keys, medians of %d\n",
           MEMBERS, vnodes, ring_point_count(r), KEYS, ROUNDS);
    printf("  siphash of a 16-byte key   %6.1f ns\n", median(t_hash, ROUNDS));
    printf("  lookup                     %6.1f ns   baseline %6.1f ns   ratio %.2fx  (target <= 25 "
           "ns)\n",
           lookup, naive, naive / lookup);
    printf("  preference list of 3       %6.1f ns   (target <= 60 ns)\n", median(t_own, ROUNDS));
    printf("  build                      %6.3f ms   baseline %6.3f ms   ratio %.2fx  (target <= 2 "
           "ms)\n",
           build_ms, nbuild_ms, nbuild_ms / build_ms);

    double shares[MEMBERS], peak = 0;
    ring_shares(r, shares);
    for (int i = 0; i < MEMBERS; i++)
        peak = shares[i] > peak ? shares[i] : peak;
    ring_t *r17 = build(MEMBERS + 1, vnodes);
    uint32_t moved = 0;
    for (uint32_t k = 0; k < KEYS; k++) {
        size_t l1, l2;
        const uint8_t *a = ring_member_name(r, ring_lookup(r, keys[k], 16), &l1);
        const uint8_t *b = ring_member_name(r17, ring_lookup(r17, keys[k], 16), &l2);
        moved += l1 != l2 || memcmp(a, b, l1) != 0;
    }
    printf("  balance peak/mean          %6.4f     (target <= 1.06)\n", peak * MEMBERS);
    printf("  moved by a 17th member     %6.4f of keys = %.3f x 1/17  (target <= 1.1)\n",
           (double)moved / KEYS, (double)moved / KEYS * 17);
    ring_free(r);
    ring_free(r17);
    free(nr.points);
    return 0;
}
