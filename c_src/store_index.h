/* store_index.h -- the store's index: immutable key versions, the skip list
 * of live keys, the lease table and the history ring. Internal to the store
 * (store.c, store_codec.c, store_snapshot.c); drivers include store.h only.
 * Pure: no I/O, no clock, no globals, malloc/free only.
 *
 * INVARIANTS (walked by store_check(), after every apply in test builds)
 *
 *   records   A store_rec is immutable once shared; refs counts every holder
 *             (a live node, history events, results). key_len > 0;
 *             1 <= create_revision <= mod_revision <= store revision;
 *             1 <= version <= mod_revision - create_revision + 1.
 *   skip list Nodes are strictly ascending by (bytes, then length) at every
 *             level; level i's list is a sublist of level i-1's; every node
 *             has 1 <= level <= STORE_LEVELS and holds a record whose key is
 *             the node's key; n_keys counts level 0; the store's `level` is
 *             the highest level in use (>= 1).
 *   leases    leases[] is sorted by id, ids unique and non-zero; a key whose
 *             record names lease L is on L's list and nowhere else; L.n_keys
 *             is the length of that list.
 *   history   A ring of events in non-decreasing revision order, every one
 *             in (compact_revision, revision]; bytes is the sum of
 *             STORE_EVENT_OVERHEAD plus the records' bytes of each event; n
 *             and bytes stay within the configured bounds once an apply has
 *             returned (store_hist_evict).
 *
 * COSTS: find/insert/remove O(log n) expected (levels from a seeded
 * generator, p = 1/4); a node is one allocation (pointers then a copy of
 * the key); a record is one allocation (header, key, value). */
#ifndef SYNOD_STORE_INDEX_H
#define SYNOD_STORE_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "store.h"

#define STORE_LEVELS 24
/* Bytes an event costs in the history's accounting besides its records. */
#define STORE_EVENT_OVERHEAD 64u

typedef struct store_rec {
    uint32_t refs;
    uint32_t key_len, value_len;
    uint64_t create_revision, mod_revision, version, lease;
    uint8_t data[]; /* key, then value */
} store_rec;

/* A node keeps a copy of its key right after its forward pointers, so a
 * search reads one allocation per step instead of two (node, then record). */
typedef struct store_node {
    store_rec *rec;
    struct store_node *lease_prev, *lease_next; /* the keys of rec->lease */
    uint32_t level, key_len;
    struct store_node *next[]; /* level pointers, then key_len key bytes */
} store_node;

typedef struct store_lease {
    uint64_t id, ttl_ms;
    store_node *keys;
    size_t n_keys;
} store_lease;

typedef struct store_hist_event {
    uint64_t revision;
    uint8_t type;
    store_rec *rec;  /* PUT: the new version; DELETE: the deleted one */
    store_rec *prev; /* PUT with history_prev_kv: the version before */
} store_hist_event;

/* A ring: ev[(start + i) % cap] for i < n, in revision order. */
typedef struct store_history {
    store_hist_event *ev;
    size_t cap, start, n;
    uint64_t bytes;
} store_history;

struct store {
    store_config cfg;
    uint64_t revision, compact_revision, next_lease_id;
    uint64_t rng;
    store_node *head;
    uint32_t level; /* levels in use, >= 1 */
    size_t n_keys;
    store_lease *leases; /* sorted by id */
    size_t n_leases, cap_leases;
    store_history hist;
};

/* ---- small accessors ---- */

static inline store_rec *store_rec_ref(store_rec *r)
{
    r->refs++;
    return r;
}

static inline const uint8_t *store_rec_key(const store_rec *r)
{
    return r->data;
}

static inline const uint8_t *store_rec_value(const store_rec *r)
{
    return r->data + r->key_len;
}

static inline store_kv store_rec_kv(const store_rec *r)
{
    return (store_kv){store_rec_key(r),   r->key_len,      store_rec_value(r), r->value_len,
                      r->create_revision, r->mod_revision, r->version,         r->lease};
}

static inline uint64_t store_rec_bytes(const store_rec *r)
{
    return r ? (uint64_t)r->key_len + r->value_len : 0;
}

/* Byte order, then length: etcd's key order. */
static inline int store_bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

static inline const uint8_t *store_node_key(const store_node *n)
{
    return (const uint8_t *)(n->next + n->level);
}

static inline store_hist_event *store_hist_at(const store_history *h, size_t i)
{
    return &h->ev[(h->start + i) % h->cap];
}

/* ---- records, skip list, leases, history, ranges (store_index.c) ---- */

store_rec *store_rec_new(const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen);
void store_rec_unref(store_rec *r);
store_node *store_node_new(store_t *s, const uint8_t *key, size_t len);
int store_node_cmp(const store_node *n, const uint8_t *key, size_t len);
store_node *store_find_ge(const store_t *s, const uint8_t *key, size_t len, store_node **update);
store_node *store_find_eq(const store_t *s, const uint8_t *key, size_t len);
void store_list_insert(store_t *s, store_node *n, store_node **update);
void store_list_remove(store_t *s, store_node *n);
/* The index in leases[] of the first lease with id >= `id`. */
size_t store_lease_lower(const store_t *s, uint64_t id);
store_lease *store_lease_find(const store_t *s, uint64_t id);
void store_lease_attach(store_t *s, store_node *n);
void store_lease_detach(store_t *s, store_node *n);
int store_leases_reserve(store_t *s, size_t extra);
int store_hist_reserve(store_history *h, uint64_t extra);
void store_hist_push(store_history *h, store_hist_event e);
void store_hist_pop(store_history *h);
void store_hist_shrink(store_history *h);
void store_hist_evict(store_t *s);
/* Whether a key is in the range of op (key .. range_end as in etcd). */
bool store_range_contains(const store_op *op, const uint8_t *key, size_t len);
store_node *store_range_first(const store_t *s, const store_op *op);
store_node *store_range_next(const store_op *op, const store_node *n);
uint64_t store_range_count(const store_t *s, const store_op *op);

/* A store with an empty index (store_new and store_restore start here). */
store_t *store_alloc(const store_config *cfg, int *err);
bool store_config_ok(const store_config *cfg);

/* Walks every invariant above; assert()s on the first that fails. */
void store_check(const store_t *s);

#endif
