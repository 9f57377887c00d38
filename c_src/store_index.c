/* store_index.c -- the store's index: records, the skip list, leases, the
 * history ring, ranges (store_index.h states the invariants and costs).
 * Pure: no I/O, no clock, no globals, malloc/free only. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "store_index.h"

/* ---- records: one immutable key version ---- */

store_rec *store_rec_new(const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen)
{
    store_rec *r = malloc(sizeof *r + klen + vlen);
    if (!r)
        return NULL;
    r->refs = 1;
    r->key_len = (uint32_t)klen;
    r->value_len = (uint32_t)vlen;
    r->create_revision = r->mod_revision = r->version = r->lease = 0;
    if (klen)
        memcpy(r->data, key, klen);
    if (vlen)
        memcpy(r->data + klen, value, vlen);
    return r;
}

void store_rec_unref(store_rec *r)
{
    if (r && --r->refs == 0)
        free(r);
}

/* ---- the skip list ---- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

store_node *store_node_new(store_t *s, const uint8_t *key, size_t len)
{
    uint64_t x = splitmix64(&s->rng);
    uint32_t level = 1;
    while (level < STORE_LEVELS && (x & 3) == 0) {
        level++;
        x >>= 2;
    }
    store_node *n = malloc(sizeof *n + level * sizeof n->next[0] + len);
    if (!n)
        return NULL;
    n->rec = NULL;
    n->lease_prev = n->lease_next = NULL;
    n->level = level;
    n->key_len = (uint32_t)len;
    memcpy((uint8_t *)(n->next + level), key, len);
    return n;
}

int store_node_cmp(const store_node *n, const uint8_t *key, size_t len)
{
    return store_bytes_cmp(store_node_key(n), n->key_len, key, len);
}

/* The first node >= key; update[i] (if given) is its predecessor at level i. */
store_node *store_find_ge(const store_t *s, const uint8_t *key, size_t len, store_node **update)
{
    store_node *x = s->head, *stop = NULL; /* stop: known >= key */
    for (uint32_t i = s->level; i-- > 0;) {
        while (x->next[i] && x->next[i] != stop && store_node_cmp(x->next[i], key, len) < 0)
            x = x->next[i];
        stop = x->next[i];
        if (update)
            update[i] = x;
    }
    return x->next[0];
}

store_node *store_find_eq(const store_t *s, const uint8_t *key, size_t len)
{
    store_node *n = store_find_ge(s, key, len, NULL);
    return n && store_node_cmp(n, key, len) == 0 ? n : NULL;
}

void store_list_insert(store_t *s, store_node *n, store_node **update)
{
    for (uint32_t i = s->level; i < n->level; i++)
        update[i] = s->head;
    if (n->level > s->level)
        s->level = n->level;
    for (uint32_t i = 0; i < n->level; i++) {
        n->next[i] = update[i]->next[i];
        update[i]->next[i] = n;
    }
    s->n_keys++;
}

void store_list_remove(store_t *s, store_node *n)
{
    store_node *update[STORE_LEVELS];
    store_node *found = store_find_ge(s, store_node_key(n), n->key_len, update);
    assert(found == n);
    (void)found;
    for (uint32_t i = 0; i < s->level; i++)
        if (update[i]->next[i] == n)
            update[i]->next[i] = n->next[i];
    while (s->level > 1 && !s->head->next[s->level - 1])
        s->level--;
    s->n_keys--;
}

/* ---- leases ---- */

/* The index of the first lease with id >= `id`. */
size_t store_lease_lower(const store_t *s, uint64_t id)
{
    size_t lo = 0, hi = s->n_leases;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->leases[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

store_lease *store_lease_find(const store_t *s, uint64_t id)
{
    size_t i = store_lease_lower(s, id);
    return i < s->n_leases && s->leases[i].id == id ? &s->leases[i] : NULL;
}

void store_lease_attach(store_t *s, store_node *n)
{
    if (!n->rec->lease)
        return;
    store_lease *l = store_lease_find(s, n->rec->lease);
    assert(l); /* puts are checked against the lease table in PREPARE */
    n->lease_prev = NULL;
    n->lease_next = l->keys;
    if (l->keys)
        l->keys->lease_prev = n;
    l->keys = n;
    l->n_keys++;
}

void store_lease_detach(store_t *s, store_node *n)
{
    if (!n->rec->lease)
        return;
    store_lease *l = store_lease_find(s, n->rec->lease);
    assert(l);
    if (n->lease_prev)
        n->lease_prev->lease_next = n->lease_next;
    else
        l->keys = n->lease_next;
    if (n->lease_next)
        n->lease_next->lease_prev = n->lease_prev;
    n->lease_prev = n->lease_next = NULL;
    l->n_keys--;
}

int store_leases_reserve(store_t *s, size_t extra)
{
    if (s->n_leases + extra <= s->cap_leases)
        return STORE_OK;
    size_t cap = s->cap_leases ? s->cap_leases * 2 : 16;
    while (cap < s->n_leases + extra)
        cap *= 2;
    store_lease *l = realloc(s->leases, cap * sizeof *l);
    if (!l)
        return STORE_ERR_NOMEM;
    s->leases = l;
    s->cap_leases = cap;
    return STORE_OK;
}

/* ---- history ---- */

static uint64_t event_bytes(const store_hist_event *e)
{
    return STORE_EVENT_OVERHEAD + store_rec_bytes(e->rec) + store_rec_bytes(e->prev);
}

/* Moves the ring into a new array of `cap` slots, oldest event first. */
static int hist_resize(store_history *h, size_t cap)
{
    store_hist_event *ev = malloc(cap * sizeof *ev);
    if (!ev)
        return STORE_ERR_NOMEM;
    for (size_t i = 0; i < h->n; i++)
        ev[i] = *store_hist_at(h, i);
    free(h->ev);
    h->ev = ev;
    h->cap = cap;
    h->start = 0;
    return STORE_OK;
}

int store_hist_reserve(store_history *h, uint64_t extra)
{
    if (extra > SIZE_MAX / sizeof(store_hist_event) - h->n)
        return STORE_ERR_NOMEM;
    if (h->n + extra <= h->cap)
        return STORE_OK;
    size_t cap = h->cap ? h->cap : 16;
    while (cap < h->n + extra)
        cap = cap > SIZE_MAX / 4 / sizeof(store_hist_event) ? h->n + (size_t)extra : cap * 2;
    return hist_resize(h, cap);
}

/* Takes over the references in e. The slot was reserved. */
void store_hist_push(store_history *h, store_hist_event e)
{
    assert(h->n < h->cap);
    *store_hist_at(h, h->n) = e;
    h->n++;
    h->bytes += event_bytes(&e);
}

void store_hist_pop(store_history *h)
{
    store_hist_event *e = store_hist_at(h, 0);
    h->bytes -= event_bytes(e);
    store_rec_unref(e->rec);
    store_rec_unref(e->prev);
    h->start = (h->start + 1) % h->cap;
    h->n--;
}

/* Gives back memory after a burst (a big revoke); best effort, no state. */
void store_hist_shrink(store_history *h)
{
    if (h->cap > 64 && h->n < h->cap / 4)
        hist_resize(h, h->cap / 2);
}

/* Drops whole revisions from the oldest end while over a bound. */
void store_hist_evict(store_t *s)
{
    store_history *h = &s->hist;
    while (h->n && (h->n > s->cfg.history_max_events || h->bytes > s->cfg.history_max_bytes)) {
        uint64_t rev = store_hist_at(h, 0)->revision;
        while (h->n && store_hist_at(h, 0)->revision == rev)
            store_hist_pop(h);
        if (rev > s->compact_revision)
            s->compact_revision = rev;
    }
    store_hist_shrink(h);
}

/* ---- ranges ---- */

bool store_range_contains(const store_op *op, const uint8_t *key, size_t len)
{
    int lo = store_bytes_cmp(key, len, op->key.p, op->key.len);
    if (op->range_end.len == 0)
        return lo == 0;
    if (lo < 0)
        return false;
    if (op->range_end.len == 1 && op->range_end.p[0] == 0)
        return true;
    return store_bytes_cmp(key, len, op->range_end.p, op->range_end.len) < 0;
}

store_node *store_range_first(const store_t *s, const store_op *op)
{
    store_node *n = store_find_ge(s, op->key.p, op->key.len, NULL);
    return n && store_range_contains(op, store_node_key(n), n->key_len) ? n : NULL;
}

store_node *store_range_next(const store_op *op, const store_node *n)
{
    store_node *x = n->next[0];
    return x && store_range_contains(op, store_node_key(x), x->key_len) ? x : NULL;
}

uint64_t store_range_count(const store_t *s, const store_op *op)
{
    uint64_t c = 0;
    for (store_node *n = store_range_first(s, op); n; n = store_range_next(op, n))
        c++;
    return c;
}

size_t store_prefix_end(const uint8_t *prefix, size_t len, uint8_t *out)
{
    for (size_t i = len; i-- > 0;) {
        if (prefix[i] != 0xff) {
            memcpy(out, prefix, i);
            out[i] = (uint8_t)(prefix[i] + 1);
            return i + 1;
        }
    }
    out[0] = 0;
    return 1;
}

/* ---- lifetime of the index ---- */

bool store_config_ok(const store_config *cfg)
{
    return cfg->history_max_events <= STORE_MAX_HISTORY_EVENTS &&
           cfg->history_max_bytes <= STORE_MAX_HISTORY_BYTES;
}

store_t *store_alloc(const store_config *cfg, int *err)
{
    store_t *s = calloc(1, sizeof *s);
    store_node *head = malloc(sizeof *head + STORE_LEVELS * sizeof head->next[0]);
    if (!s || !head) {
        free(s);
        free(head);
        if (err)
            *err = STORE_ERR_NOMEM;
        return NULL;
    }
    memset(head, 0, sizeof *head + STORE_LEVELS * sizeof head->next[0]);
    head->level = STORE_LEVELS;
    s->head = head;
    s->level = 1;
    s->cfg = *cfg;
    s->next_lease_id = 1;
    s->rng = 0x5ca1ab1e5eed5eedULL;
    return s;
}

/* ---- the invariant walk ---- */

#ifdef NDEBUG
void store_check(const store_t *s)
{
    (void)s;
}
#else
void store_check(const store_t *s)
{
    /* skip list: ascending at every level, each level a sublist of the one
     * below, records matching their nodes */
    size_t n = 0;
    uint32_t top = 1;
    for (const store_node *x = s->head->next[0], *prev = NULL; x; prev = x, x = x->next[0]) {
        const store_rec *r = x->rec;
        assert(x->level >= 1 && x->level <= STORE_LEVELS);
        assert(r && r->refs >= 1 && r->key_len == x->key_len);
        assert(memcmp(store_rec_key(r), store_node_key(x), x->key_len) == 0);
        assert(!prev || store_node_cmp(prev, store_node_key(x), x->key_len) < 0);
        assert(r->create_revision >= 1 && r->create_revision <= r->mod_revision);
        assert(r->mod_revision <= s->revision);
        assert(r->version >= 1 && r->version <= r->mod_revision - r->create_revision + 1);
        assert(!r->lease || store_lease_find(s, r->lease));
        if (x->level > top)
            top = x->level;
        n++;
    }
    assert(n == s->n_keys && top <= s->level && s->level >= 1);
    for (uint32_t i = 1; i < s->level; i++) {
        const store_node *below = s->head->next[i - 1];
        for (const store_node *x = s->head->next[i]; x; x = x->next[i]) {
            while (below && below != x)
                below = below->next[i - 1];
            assert(below == x);
        }
    }
    /* leases: sorted, and each list holds exactly the keys naming it */
    size_t on_lists = 0;
    for (size_t i = 0; i < s->n_leases; i++) {
        const store_lease *l = &s->leases[i];
        assert(l->id != 0 && (i == 0 || s->leases[i - 1].id < l->id));
        size_t k = 0;
        for (const store_node *x = l->keys; x; x = x->lease_next) {
            assert(x->rec->lease == l->id);
            assert(x->lease_next == NULL || x->lease_next->lease_prev == x);
            k++;
        }
        assert(k == l->n_keys);
        on_lists += k;
    }
    size_t with_lease = 0;
    for (const store_node *x = s->head->next[0]; x; x = x->next[0])
        with_lease += x->rec->lease != 0;
    assert(on_lists == with_lease);
    /* history: ordered, within (compact_revision, revision], bytes summed */
    const store_history *h = &s->hist;
    uint64_t bytes = 0, last = 0;
    for (size_t i = 0; i < h->n; i++) {
        const store_hist_event *e = store_hist_at(h, i);
        assert(e->revision > s->compact_revision && e->revision <= s->revision);
        assert(e->revision >= last && e->rec && e->rec->refs >= 1);
        last = e->revision;
        bytes += STORE_EVENT_OVERHEAD + store_rec_bytes(e->rec) + store_rec_bytes(e->prev);
    }
    assert(bytes == h->bytes);
    assert(h->n <= s->cfg.history_max_events && h->bytes <= s->cfg.history_max_bytes);
}
#endif
