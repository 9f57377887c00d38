/*
 * bench_store.c — speed of the store's state machine (c_src/store.c).
 *
 * Every figure is the median of ROUNDS rounds over KEYS random 16-byte keys
 * with 32-byte values; ranges read 100 consecutive keys. The baseline, measured in the same run, is
 * the simple structure a store could start with: a sorted array of {key, value} (each a malloc'ed
 * copy), binary search for lookups, memmove to insert. Synod's side does everything a command does
 * (a record per put, history events with eviction, revision bookkeeping, result references),
 * through store_apply_cmd (decoding is measured separately). Ratios are Synod ops/s divided by
 * baseline ops/s (higher is better for Synod).
 *
 *   make bench            (or: build/bench/bench_store [keys])
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"

#define ROUNDS 5
#define KEY_BYTES 16
#define VALUE_BYTES 32
#define RANGES 2000
#define RANGE_LIMIT 100

static size_t nkeys = 100000;
static uint8_t (*keys)[KEY_BYTES];
static uint8_t value[VALUE_BYTES];
static uint32_t *order;              /* a random permutation for lookups */
static uint8_t (*sorted)[KEY_BYTES]; /* the keys in order: range bounds */
static volatile uint64_t sink;

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

static int cmp_key(const void *a, const void *b)
{
    return memcmp(a, b, KEY_BYTES);
}

static uint64_t rng_state = 42;
static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---- the baseline: a sorted array ---- */
typedef struct base_kv {
    uint8_t *key, *value;
} base_kv;

typedef struct base {
    base_kv *kv;
    size_t n, cap;
} base;

static size_t base_lower(const base *b, const uint8_t *key)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(b->kv[mid].key, key, KEY_BYTES) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void base_put(base *b, const uint8_t *key)
{
    size_t at = base_lower(b, key);
    if (at < b->n && memcmp(b->kv[at].key, key, KEY_BYTES) == 0) {
        memcpy(b->kv[at].value, value, VALUE_BYTES);
        return;
    }
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 1024;
        b->kv = realloc(b->kv, b->cap * sizeof *b->kv);
    }
    memmove(&b->kv[at + 1], &b->kv[at], (b->n - at) * sizeof *b->kv);
    b->kv[at].key = malloc(KEY_BYTES);
    b->kv[at].value = malloc(VALUE_BYTES);
    memcpy(b->kv[at].key, key, KEY_BYTES);
    memcpy(b->kv[at].value, value, VALUE_BYTES);
    b->n++;
}

static void base_free(base *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->kv[i].key);
        free(b->kv[i].value);
    }
    free(b->kv);
}

/* ---- Synod ---- */
static int touch(void *ctx, const store_kv *kv)
{
    (void)ctx;
    sink += kv->value[0] + kv->mod_revision;
    return 0;
}

static store_op point_put(const uint8_t *key)
{
    return (store_op){
        .type = STORE_CMD_PUT, .key = {key, KEY_BYTES}, .value = {value, VALUE_BYTES}};
}

static void synod_put(store_t *s, const uint8_t *key)
{
    store_cmd c = {.type = STORE_CMD_PUT, .op = point_put(key)};
    store_result r;
    if (store_apply_cmd(s, &c, &r) != STORE_OK)
        abort();
    store_result_release(&r);
}

typedef struct figures {
    double put, get, range, update, decode;
} figures;

static void round_synod(figures *f)
{
    store_t *s = store_new(NULL, NULL);
    double t0 = now_ns();
    for (size_t i = 0; i < nkeys; i++)
        synod_put(s, keys[i]);
    double t1 = now_ns();
    uint64_t count;
    bool more;
    for (size_t i = 0; i < nkeys; i++) {
        store_op op = {.type = STORE_CMD_RANGE, .key = {keys[order[i]], KEY_BYTES}};
        store_range(s, &op, touch, NULL, &count, &more);
    }
    double t2 = now_ns();
    for (size_t i = 0; i < RANGES; i++) {
        size_t at = order[i] % (nkeys - RANGE_LIMIT);
        store_op op = {.type = STORE_CMD_RANGE,
                       .key = {sorted[at], KEY_BYTES},
                       .range_end = {sorted[at + RANGE_LIMIT], KEY_BYTES}};
        store_range(s, &op, touch, NULL, &count, &more);
        if (count != RANGE_LIMIT)
            abort();
    }
    double t3 = now_ns();
    for (size_t i = 0; i < nkeys; i++)
        synod_put(s, keys[order[i]]);
    double t4 = now_ns();
    uint8_t buf[128];
    size_t len;
    store_cmd c = {.type = STORE_CMD_PUT, .op = point_put(keys[0])};
    store_cmd_encode(&c, buf, sizeof buf, &len);
    double t5 = now_ns();
    for (size_t i = 0; i < nkeys; i++) {
        store_cmd d;
        store_cmd_decode(buf, len, &d);
        sink += d.op.key.len;
        store_cmd_release(&d);
    }
    double t6 = now_ns();
    f->put = nkeys / ((t1 - t0) / 1e9);
    f->get = nkeys / ((t2 - t1) / 1e9);
    f->range = RANGES / ((t3 - t2) / 1e9);
    f->update = nkeys / ((t4 - t3) / 1e9);
    f->decode = nkeys / ((t6 - t5) / 1e9);
    store_free(s);
}

static void round_base(figures *f)
{
    base b = {0};
    double t0 = now_ns();
    for (size_t i = 0; i < nkeys; i++)
        base_put(&b, keys[i]);
    double t1 = now_ns();
    for (size_t i = 0; i < nkeys; i++) {
        size_t at = base_lower(&b, keys[order[i]]);
        if (at < b.n && memcmp(b.kv[at].key, keys[order[i]], KEY_BYTES) == 0)
            sink += b.kv[at].value[0];
    }
    double t2 = now_ns();
    for (size_t i = 0; i < RANGES; i++) {
        size_t from = order[i] % (nkeys - RANGE_LIMIT);
        size_t at = base_lower(&b, sorted[from]), end = base_lower(&b, sorted[from + RANGE_LIMIT]);
        for (size_t j = at; j < end; j++)
            sink += b.kv[j].value[0];
        if (end - at != RANGE_LIMIT)
            abort();
    }
    double t3 = now_ns();
    for (size_t i = 0; i < nkeys; i++)
        base_put(&b, keys[order[i]]);
    double t4 = now_ns();
    f->put = nkeys / ((t1 - t0) / 1e9);
    f->get = nkeys / ((t2 - t1) / 1e9);
    f->range = RANGES / ((t3 - t2) / 1e9);
    f->update = nkeys / ((t4 - t3) / 1e9);
    base_free(&b);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        nkeys = strtoul(argv[1], NULL, 10);
    keys = malloc(nkeys * sizeof *keys);
    order = malloc(nkeys * sizeof *order);
    for (size_t i = 0; i < nkeys; i++) {
        for (size_t j = 0; j < KEY_BYTES; j++)
            keys[i][j] = (uint8_t)rng();
        order[i] = (uint32_t)i;
    }
    for (size_t i = nkeys; i > 1; i--) {
        size_t j = rng() % i;
        uint32_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    sorted = malloc(nkeys * sizeof *sorted);
    memcpy(sorted, keys, nkeys * sizeof *keys);
    qsort(sorted, nkeys, sizeof *sorted, cmp_key);
    memset(value, 'v', sizeof value);
    double sp[ROUNDS], sg[ROUNDS], sr[ROUNDS], su[ROUNDS], sd[ROUNDS];
    double bp[ROUNDS], bg[ROUNDS], br[ROUNDS], bu[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        figures fs, fb;
        round_synod(&fs);
        round_base(&fb);
        sp[r] = fs.put, sg[r] = fs.get, sr[r] = fs.range, su[r] = fs.update, sd[r] = fs.decode;
        bp[r] = fb.put, bg[r] = fb.get, br[r] = fb.range, bu[r] = fb.update;
    }
    printf("store: %zu keys of %d bytes, values of %d bytes, median of %d rounds\n", nkeys,
           KEY_BYTES, VALUE_BYTES, ROUNDS);
    printf("%-28s %14s %14s %8s\n", "operation", "synod ops/s", "baseline ops/s", "ratio");
    const char *names[] = {"put (new keys, random order)", "get (random point reads)",
                           "range (100 keys)", "put (overwrite, random)"};
    double *s[] = {sp, sg, sr, su}, *b[] = {bp, bg, br, bu};
    for (int i = 0; i < 4; i++) {
        double ms = median(s[i], ROUNDS), mb = median(b[i], ROUNDS);
        printf("%-28s %14.0f %14.0f %8.2f\n", names[i], ms, mb, ms / mb);
    }
    printf("%-28s %14.0f\n", "decode (one put command)", median(sd, ROUNDS));
    printf("(baseline: sorted array + binary search + memmove; synod includes history and "
           "revision bookkeeping; sink %llu)\n",
           (unsigned long long)(sink & 1));
    free(keys);
    free(sorted);
    free(order);
    return 0;
}
