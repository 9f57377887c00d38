/* test_store_model.c -- the store against a reference model, over seeded
 * random operations: puts (with and without leases, some unknown), deletes
 * of keys and ranges (some of the first key only), range reads, txns with
 * random compares (count compares over ranges among them) and branches,
 * lease grants and revokes, compactions, watches from random revisions, and
 * snapshot/restore swaps. The model is the obvious one: one slot per
 * possible key, a list of events, the eviction rule of docs/store.md.
 * Every result and, every few steps, the whole state are compared.
 *
 * Replay one seed: STORE_MODEL_SEED=<n> build/test/test_store_model */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support_store.h"

#define SEEDS 6
#define STEPS 1500
#define NKEYS 84 /* every key of 1..3 bytes over {0x00, 'a', 'b', 0xff} */
#define MAX_LEASES 24
#define MAX_EVENTS 4096

typedef struct mkey {
    uint8_t b[3];
    size_t len;
} mkey;

typedef struct mrec {
    int key; /* index into keys[] */
    uint8_t value[8];
    size_t vlen;
    uint64_t create, mod, version, lease;
} mrec;

typedef struct mevent {
    uint8_t type;
    uint64_t rev;
    mrec rec;
    bool has_prev;
    mrec prev;
} mevent;

typedef struct model {
    store_config cfg;
    bool live[NKEYS];
    mrec kv[NKEYS];
    uint64_t revision, compact, next_lease;
    uint64_t lease_ids[MAX_LEASES], lease_ttls[MAX_LEASES];
    size_t n_leases;
    mevent ev[MAX_EVENTS];
    size_t n_ev;
    uint64_t ev_bytes;
} model;

static mkey keys[NKEYS]; /* sorted */
static uint64_t rng;

static uint64_t next_rand(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rnd(uint64_t n)
{
    return n ? next_rand() % n : 0;
}

static int key_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (alen > blen) - (alen < blen);
}

static int mkey_cmp(const void *a, const void *b)
{
    const mkey *x = a, *y = b;
    return key_cmp(x->b, x->len, y->b, y->len);
}

static void make_keys(void)
{
    static const uint8_t alphabet[4] = {0x00, 'a', 'b', 0xff};
    size_t n = 0;
    for (size_t len = 1; len <= 3; len++) {
        size_t combos = len == 1 ? 4 : len == 2 ? 16 : 64;
        for (size_t c = 0; c < combos; c++) {
            keys[n].len = len;
            for (size_t i = 0, x = c; i < len; i++, x /= 4)
                keys[n].b[i] = alphabet[x % 4];
            n++;
        }
    }
    qsort(keys, NKEYS, sizeof *keys, mkey_cmp);
}

static bool op_contains(const store_op *op, int k)
{
    const mkey *key = &keys[k];
    int lo = key_cmp(key->b, key->len, op->key.p, op->key.len);
    if (op->range_end.len == 0)
        return lo == 0;
    if (lo < 0)
        return false;
    if (op->range_end.len == 1 && op->range_end.p[0] == 0)
        return true;
    return key_cmp(key->b, key->len, op->range_end.p, op->range_end.len) < 0;
}

static int lease_index(const model *m, uint64_t id)
{
    for (size_t i = 0; i < m->n_leases; i++)
        if (m->lease_ids[i] == id)
            return (int)i;
    return -1;
}

static uint64_t mrec_bytes(const mrec *r)
{
    return keys[r->key].len + r->vlen;
}

static void model_push(model *m, mevent e)
{
    assert_true(m->n_ev < MAX_EVENTS);
    m->ev[m->n_ev++] = e;
    m->ev_bytes += 64 + mrec_bytes(&e.rec) + (e.has_prev ? mrec_bytes(&e.prev) : 0);
}

static void model_pop_front(model *m)
{
    const mevent *e = &m->ev[0];
    m->ev_bytes -= 64 + mrec_bytes(&e->rec) + (e->has_prev ? mrec_bytes(&e->prev) : 0);
    memmove(&m->ev[0], &m->ev[1], (m->n_ev - 1) * sizeof *m->ev);
    m->n_ev--;
}

static void model_evict(model *m)
{
    while (m->n_ev &&
           (m->n_ev > m->cfg.history_max_events || m->ev_bytes > m->cfg.history_max_bytes)) {
        uint64_t rev = m->ev[0].rev;
        while (m->n_ev && m->ev[0].rev == rev)
            model_pop_front(m);
        if (rev > m->compact)
            m->compact = rev;
    }
}

static void model_delete(model *m, int k, uint64_t rev)
{
    m->live[k] = false;
    model_push(m, (mevent){STORE_EVENT_DELETE, rev, m->kv[k], false, {0}});
}

/* ---- comparing a store's answers with the model's ---- */

static void assert_rec(const store_kv *kv, const mrec *r)
{
    const mkey *key = &keys[r->key];
    assert_int_equal(kv->key_len, key->len);
    assert_memory_equal(kv->key, key->b, key->len);
    assert_int_equal(kv->value_len, r->vlen);
    if (r->vlen)
        assert_memory_equal(kv->value, r->value, r->vlen);
    assert_int_equal(kv->create_revision, r->create);
    assert_int_equal(kv->mod_revision, r->mod);
    assert_int_equal(kv->version, r->version);
    assert_int_equal(kv->lease, r->lease);
}

typedef struct expect_op {
    uint8_t type;
    uint64_t count;
    bool more;
    mrec kvs[NKEYS + 8];
    size_t n_kvs;
    bool keys_only;
} expect_op;

static void expect_add(expect_op *e, const mrec *r)
{
    e->kvs[e->n_kvs] = *r;
    if (e->keys_only)
        e->kvs[e->n_kvs].vlen = 0;
    e->n_kvs++;
}

static void model_range(const model *m, const store_op *op, expect_op *e)
{
    bool want = !(op->flags & STORE_FLAG_COUNT_ONLY);
    e->keys_only = op->flags & STORE_FLAG_KEYS_ONLY;
    for (int k = 0; k < NKEYS; k++) {
        if (!m->live[k] || !op_contains(op, k))
            continue;
        if (want && (!op->limit || e->n_kvs < op->limit))
            expect_add(e, &m->kv[k]);
        e->count++;
    }
    e->more = want && e->count > e->n_kvs;
}

static int find_key(const store_bytes *b)
{
    for (int k = 0; k < NKEYS; k++)
        if (key_cmp(keys[k].b, keys[k].len, b->p, b->len) == 0)
            return k;
    return -1;
}

static bool model_compare(const model *m, const store_compare *c)
{
    int k = find_key(&c->key);
    const mrec *r = k >= 0 && m->live[k] ? &m->kv[k] : NULL;
    int cmp;
    if (c->target == STORE_CMP_EXISTS)
        return (r != NULL) == (c->result == STORE_CMP_EQUAL);
    if (c->target == STORE_CMP_COUNT) {
        store_op range = {.type = STORE_CMD_RANGE, .key = c->key, .range_end = c->range_end};
        uint64_t n = 0;
        for (int j = 0; j < NKEYS; j++)
            n += m->live[j] && op_contains(&range, j);
        cmp = (n > c->number) - (n < c->number);
    } else if (c->target == STORE_CMP_VALUE) {
        if (!r)
            return false;
        cmp = key_cmp(r->value, r->vlen, c->value.p, c->value.len);
    } else {
        uint64_t v = !r                               ? 0
                     : c->target == STORE_CMP_VERSION ? r->version
                     : c->target == STORE_CMP_CREATE  ? r->create
                     : c->target == STORE_CMP_MOD     ? r->mod
                                                      : r->lease;
        cmp = (v > c->number) - (v < c->number);
    }
    return c->result == STORE_CMP_EQUAL     ? cmp == 0
           : c->result == STORE_CMP_GREATER ? cmp > 0
           : c->result == STORE_CMP_LESS    ? cmp < 0
                                            : cmp != 0;
}

static bool model_branch_dup(const store_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != STORE_CMD_PUT)
            continue;
        int k = find_key(&ops[i].key);
        for (size_t j = 0; j < n; j++) {
            if (j == i)
                continue;
            if (ops[j].type == STORE_CMD_PUT && find_key(&ops[j].key) == k)
                return true;
            if (ops[j].type == STORE_CMD_DELETE && op_contains(&ops[j], k))
                return true;
        }
    }
    return false;
}

/* Applies a txn to the model; returns the expected rc, fills results. */
static int model_txn(model *m, const store_cmd *c, bool *succeeded, expect_op *res, size_t *n_res)
{
    if (model_branch_dup(c->success, c->n_success) || model_branch_dup(c->failure, c->n_failure))
        return STORE_ERR_DUPLICATE_KEY;
    bool ok = true;
    for (size_t i = 0; i < c->n_compares && ok; i++)
        ok = model_compare(m, &c->compares[i]);
    const store_op *ops = ok ? c->success : c->failure;
    size_t n = ok ? c->n_success : c->n_failure;
    for (size_t i = 0; i < n; i++)
        if (ops[i].type == STORE_CMD_PUT && ops[i].lease && lease_index(m, ops[i].lease) < 0)
            return STORE_ERR_LEASE_NOT_FOUND;
    *succeeded = ok;
    uint64_t rev = m->revision + 1;
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        const store_op *op = &ops[i];
        expect_op *e = &res[i];
        memset(e, 0, sizeof *e);
        e->type = op->type;
        if (op->type == STORE_CMD_PUT) {
            int k = find_key(&op->key);
            mrec r = {.key = k, .vlen = op->value.len, .mod = rev, .lease = op->lease};
            memcpy(r.value, op->value.p, op->value.len);
            mevent ev = {STORE_EVENT_PUT, rev, r, false, {0}};
            if (m->live[k]) {
                if (op->flags & STORE_FLAG_PREV_KV)
                    expect_add(e, &m->kv[k]);
                ev.rec.create = m->kv[k].create;
                ev.rec.version = m->kv[k].version + 1;
                if (m->cfg.history_prev_kv) {
                    ev.has_prev = true;
                    ev.prev = m->kv[k];
                }
            } else {
                ev.rec.create = rev;
                ev.rec.version = 1;
            }
            m->kv[k] = ev.rec;
            m->live[k] = true;
            model_push(m, ev);
            changed = true;
        } else if (op->type == STORE_CMD_DELETE) {
            for (int k = 0; k < NKEYS; k++) {
                if (!m->live[k] || !op_contains(op, k))
                    continue;
                if (op->flags & STORE_FLAG_PREV_KV)
                    expect_add(e, &m->kv[k]);
                model_delete(m, k, rev);
                e->count++;
                changed = true;
                if (op->flags & STORE_FLAG_FIRST)
                    break; /* keys[] is in key order */
            }
        } else {
            model_range(m, op, e);
        }
    }
    *n_res = n;
    if (changed) {
        m->revision = rev;
        model_evict(m);
    }
    return STORE_OK;
}

static void assert_results(const store_result *r, const expect_op *e, size_t n)
{
    assert_int_equal(r->n_ops, n);
    for (size_t i = 0; i < n; i++) {
        const store_op_result *o = &r->ops[i];
        assert_int_equal(o->type, e[i].type);
        assert_int_equal(o->count, e[i].count);
        assert_int_equal(o->more, e[i].more);
        assert_int_equal(o->n_kvs, e[i].n_kvs);
        for (size_t j = 0; j < o->n_kvs; j++)
            assert_rec(&o->kvs[j], &e[i].kvs[j]);
    }
}

/* ---- random commands ---- */

static store_bytes rand_key(void)
{
    const mkey *k = &keys[rnd(NKEYS)];
    return sbn(k->b, k->len);
}

static store_bytes rand_end(void)
{
    switch (rnd(4)) {
    case 0:
        return sbn(NULL, 0);
    case 1:
        return sbn("", 1); /* "\0": to the end */
    default:
        return rand_key();
    }
}

static uint8_t value_pool[64][8];

static store_bytes rand_value(void)
{
    size_t i = rnd(64);
    return sbn(value_pool[i], rnd(9));
}

static uint64_t rand_lease(void)
{
    return rnd(3) ? 0 : 1 + rnd(MAX_LEASES - 4);
}

static store_op rand_op(void)
{
    store_op op = {0};
    switch (rnd(4)) {
    case 0:
    case 1:
        op = (store_op){.type = STORE_CMD_PUT,
                        .key = rand_key(),
                        .value = rand_value(),
                        .lease = rand_lease(),
                        .flags = rnd(2) ? STORE_FLAG_PREV_KV : 0};
        break;
    case 2:
        op = (store_op){.type = STORE_CMD_DELETE,
                        .key = rand_key(),
                        .range_end = rnd(5) ? sbn(NULL, 0) : rand_end(),
                        .flags = (uint8_t)((rnd(2) ? STORE_FLAG_PREV_KV : 0) |
                                           (rnd(3) ? 0 : STORE_FLAG_FIRST))};
        break;
    default:
        op = (store_op){.type = STORE_CMD_RANGE,
                        .key = rand_key(),
                        .range_end = rand_end(),
                        .limit = rnd(3) ? 0 : rnd(5),
                        .flags = (uint8_t)(rnd(4) == 0   ? STORE_FLAG_COUNT_ONLY
                                           : rnd(3) == 0 ? STORE_FLAG_KEYS_ONLY
                                                         : 0)};
        break;
    }
    return op;
}

static store_compare rand_compare(const model *m)
{
    store_compare c = {.target = (uint8_t)rnd(7), .result = (uint8_t)rnd(4), .key = rand_key()};
    if (c.target == STORE_CMP_EXISTS)
        c.result = rnd(2) ? STORE_CMP_EQUAL : STORE_CMP_NOT_EQUAL;
    else if (c.target == STORE_CMP_COUNT) {
        c.range_end = rand_end();
        c.number = rnd(5);
    } else if (c.target == STORE_CMP_VALUE)
        c.value = rand_value();
    else
        c.number = rnd(m->revision + 3);
    return c;
}

typedef struct run {
    store_t *s;
    model *m;
    expect_op expect[2 * 4];
} run;

static void step_txn(run *t, store_cmd *c)
{
    bool ok = false;
    size_t n = 0;
    /* PUT, DELETE and RANGE commands are one-op txns */
    store_cmd one = {.type = STORE_CMD_TXN, .success = &c->op, .n_success = 1};
    int want = model_txn(t->m, c->type == STORE_CMD_TXN ? c : &one, &ok, t->expect, &n);
    store_result r;
    int rc = apply_cmd(t->s, c, &r);
    assert_int_equal(rc, want);
    assert_int_equal(r.revision, t->m->revision);
    if (rc == STORE_OK) {
        if (c->type == STORE_CMD_TXN)
            assert_int_equal(r.succeeded, ok);
        assert_results(&r, t->expect, n);
    }
    store_result_release(&r);
}

static void step_lease(run *t)
{
    model *m = t->m;
    store_result r;
    if (rnd(2)) {
        uint64_t id = rnd(3) ? 0 : 1 + rnd(MAX_LEASES - 4), ttl = 1 + rnd(100000);
        /* the model holds MAX_LEASES: no new lease past MAX_LEASES - 4 (an
         * explicit id of 1..MAX_LEASES - 4 can be free when the store picked
         * ids above them) */
        if (m->n_leases >= MAX_LEASES - 4 && (id == 0 || lease_index(m, id) < 0))
            return;
        store_cmd c = {.type = STORE_CMD_LEASE_GRANT, .lease_id = id, .ttl_ms = ttl};
        int rc = apply_cmd(t->s, &c, &r);
        if (id && lease_index(m, id) >= 0) {
            assert_int_equal(rc, STORE_ERR_LEASE_EXISTS);
        } else {
            assert_int_equal(rc, STORE_OK);
            uint64_t got = id;
            if (!id) {
                got = m->next_lease;
                while (lease_index(m, got) >= 0)
                    got++;
                m->next_lease = got + 1;
            }
            assert_int_equal(r.lease_id, got);
            m->lease_ids[m->n_leases] = got;
            m->lease_ttls[m->n_leases++] = ttl;
        }
    } else {
        uint64_t id = 1 + rnd(MAX_LEASES);
        store_cmd c = {.type = STORE_CMD_LEASE_REVOKE, .lease_id = id};
        int rc = apply_cmd(t->s, &c, &r);
        int at = lease_index(m, id);
        if (at < 0) {
            assert_int_equal(rc, STORE_ERR_LEASE_NOT_FOUND);
        } else {
            assert_int_equal(rc, STORE_OK);
            uint64_t rev = m->revision + 1, deleted = 0;
            for (int k = 0; k < NKEYS; k++) /* key order */
                if (m->live[k] && m->kv[k].lease == id) {
                    model_delete(m, k, rev);
                    deleted++;
                }
            m->lease_ids[at] = m->lease_ids[m->n_leases - 1];
            m->lease_ttls[at] = m->lease_ttls[m->n_leases - 1];
            m->n_leases--;
            if (deleted) {
                m->revision = rev;
                model_evict(m);
            }
            assert_int_equal(r.deleted, deleted);
        }
    }
    assert_int_equal(r.revision, m->revision);
    store_result_release(&r);
}

static void step_compact(run *t)
{
    model *m = t->m;
    uint64_t rev = 1 + rnd(m->revision + 1);
    store_cmd c = {.type = STORE_CMD_COMPACT, .revision = rev};
    store_result r;
    int rc = apply_cmd(t->s, &c, &r);
    if (rev > m->revision) {
        assert_int_equal(rc, STORE_ERR_FUTURE_REV);
    } else if (rev <= m->compact) {
        assert_int_equal(rc, STORE_ERR_COMPACTED);
        assert_int_equal(r.compact_revision, m->compact);
    } else {
        assert_int_equal(rc, STORE_OK);
        while (m->n_ev && m->ev[0].rev <= rev)
            model_pop_front(m);
        m->compact = rev;
    }
    store_result_release(&r);
}

typedef struct event_check {
    const model *m;
    size_t at;
} event_check;

static int check_event(void *ctx, const store_event *ev)
{
    event_check *c = ctx;
    const mevent *e = &c->m->ev[c->at++];
    assert_int_equal(ev->type, e->type);
    assert_int_equal(ev->revision, e->rev);
    if (e->type == STORE_EVENT_PUT) {
        assert_rec(&ev->kv, &e->rec);
        assert_int_equal(ev->has_prev, e->has_prev);
        if (e->has_prev)
            assert_rec(&ev->prev, &e->prev);
    } else {
        assert_int_equal(ev->kv.mod_revision, e->rev);
        assert_int_equal(ev->kv.key_len, keys[e->rec.key].len);
        assert_int_equal(ev->has_prev, c->m->cfg.history_prev_kv);
        if (ev->has_prev)
            assert_rec(&ev->prev, &e->rec);
    }
    return 0;
}

static void step_watch(run *t)
{
    const model *m = t->m;
    uint64_t from = rnd(m->revision + 3);
    size_t limit = rnd(3) ? 0 : rnd(6);
    size_t first = 0;
    while (first < m->n_ev && m->ev[first].rev < from)
        first++;
    event_check c = {m, first};
    uint64_t next;
    int rc = store_events_since(t->s, from, limit, check_event, &c, &next);
    if (from == 0) {
        assert_int_equal(rc, STORE_ERR_INVALID);
        return;
    }
    if (from <= m->compact) {
        assert_int_equal(rc, STORE_ERR_COMPACTED);
        return;
    }
    assert_int_equal(rc, STORE_OK);
    /* model: whole revisions up to the limit (the first always whole) */
    size_t end = first;
    uint64_t want_next = from > m->revision + 1 ? from : m->revision + 1;
    while (end < m->n_ev) {
        size_t k = 0;
        while (end + k < m->n_ev && m->ev[end + k].rev == m->ev[end].rev)
            k++;
        if (limit && end > first && end - first + k > limit) {
            want_next = m->ev[end].rev;
            break;
        }
        end += k;
    }
    assert_int_equal(c.at, end);
    assert_int_equal(next, want_next);
}

static void check_state(run *t)
{
    store_op all = {.type = STORE_CMD_RANGE, .key = sbn("", 1), .range_end = sbn("", 1)};
    expect_op e = {.type = STORE_CMD_RANGE};
    model_range(t->m, &all, &e);
    store_cmd c = {.type = STORE_CMD_RANGE, .op = all};
    store_result r;
    assert_int_equal(apply_cmd(t->s, &c, &r), STORE_OK);
    assert_results(&r, &e, 1);
    store_result_release(&r);
    store_stats st;
    store_stats_get(t->s, &st);
    assert_int_equal(st.revision, t->m->revision);
    assert_int_equal(st.compact_revision, t->m->compact);
    assert_int_equal(st.events, t->m->n_ev);
    assert_int_equal(st.history_bytes, t->m->ev_bytes);
    assert_int_equal(st.leases, t->m->n_leases);
}

static void step_snapshot_swap(run *t)
{
    size_t len, len2;
    uint8_t *snap = snapshot_of(t->s, &len);
    int err;
    store_t *restored = store_restore(snap, len, &err);
    assert_non_null(restored);
    uint8_t *again = snapshot_of(restored, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(snap, again, len);
    free(snap);
    free(again);
    store_free(t->s);
    t->s = restored;
}

static void run_seed(uint64_t seed)
{
    rng = seed;
    static model m;
    memset(&m, 0, sizeof m);
    store_config_init(&m.cfg);
    static const uint32_t max_events[] = {0, 5, 60, 4000};
    static const uint64_t max_bytes[] = {300, 6000, 1u << 24};
    m.cfg.history_max_events = max_events[rnd(4)];
    m.cfg.history_max_bytes = max_bytes[rnd(3)];
    m.cfg.history_prev_kv = rnd(2);
    m.next_lease = 1;
    for (size_t i = 0; i < 64; i++)
        for (size_t j = 0; j < 8; j++)
            value_pool[i][j] = (uint8_t)next_rand();
    static run t;
    t.m = &m;
    t.s = store_new(&m.cfg, NULL);
    assert_non_null(t.s);
    for (int step = 0; step < STEPS; step++) {
        uint64_t what = rnd(100);
        if (what < 55) {
            store_op op = rand_op();
            store_cmd c = {.type = op.type, .op = op};
            step_txn(&t, &c);
        } else if (what < 70) {
            store_compare cmps[3];
            store_op succ[4], fail[4];
            store_cmd c = {.type = STORE_CMD_TXN,
                           .compares = cmps,
                           .n_compares = rnd(4),
                           .success = succ,
                           .n_success = rnd(5),
                           .failure = fail,
                           .n_failure = rnd(3)};
            for (size_t i = 0; i < c.n_compares; i++)
                cmps[i] = rand_compare(&m);
            for (size_t i = 0; i < 4; i++) {
                succ[i] = rand_op();
                fail[i] = rand_op();
            }
            step_txn(&t, &c);
        } else if (what < 80) {
            step_lease(&t);
        } else if (what < 83) {
            step_compact(&t);
        } else if (what < 97) {
            step_watch(&t);
        } else {
            step_snapshot_swap(&t);
        }
        if (step % 25 == 0)
            check_state(&t);
    }
    check_state(&t);
    store_stats st;
    store_stats_get(t.s, &st);
    print_message("  revision %llu, %zu keys, %zu leases, %zu events, compacted at %llu\n",
                  (unsigned long long)st.revision, st.keys, st.leases, st.events,
                  (unsigned long long)st.compact_revision);
    store_free(t.s);
}

static void test_model(void **state)
{
    (void)state;
    make_keys();
    const char *env = getenv("STORE_MODEL_SEED");
    if (env) {
        uint64_t seed = strtoull(env, NULL, 10);
        print_message("store model: seed %llu\n", (unsigned long long)seed);
        run_seed(seed);
        return;
    }
    for (uint64_t seed = 1; seed <= SEEDS; seed++) {
        print_message("store model: seed %llu (%d steps)\n", (unsigned long long)seed, STEPS);
        run_seed(seed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
