/* store_snapshot.c -- the store's snapshot: write and restore (see
 * store_snapshot.h for the format's invariants).
 * Pure: no I/O, no clock, no globals, malloc/free only. */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "store_codec.h"
#include "store_index.h"
#include "store_snapshot.h"

static const uint8_t snapshot_magic[4] = {'S', 'Y', 'S', 'T'};

static void snap_rec(store_writer *w, const store_rec *r)
{
    store_put_bytes(w, store_rec_key(r), r->key_len);
    store_put_bytes(w, store_rec_value(r), r->value_len);
    store_put_varint(w, r->create_revision);
    store_put_varint(w, r->mod_revision);
    store_put_varint(w, r->version);
    store_put_varint(w, r->lease);
}

static void snap_write(store_writer *w, const store_t *s)
{
    for (size_t i = 0; i < sizeof snapshot_magic; i++)
        store_put_u8(w, snapshot_magic[i]);
    store_put_u8(w, STORE_SNAPSHOT_VERSION);
    store_put_varint(w, s->cfg.history_max_events);
    store_put_varint(w, s->cfg.history_max_bytes);
    store_put_u8(w, s->cfg.history_prev_kv);
    store_put_varint(w, s->revision);
    store_put_varint(w, s->compact_revision);
    store_put_varint(w, s->next_lease_id);
    store_put_varint(w, s->n_leases);
    for (size_t i = 0; i < s->n_leases; i++) {
        store_put_varint(w, s->leases[i].id);
        store_put_varint(w, s->leases[i].ttl_ms);
    }
    store_put_varint(w, s->n_keys);
    for (const store_node *n = s->head->next[0]; n; n = n->next[0])
        snap_rec(w, n->rec);
    store_put_varint(w, s->hist.n);
    for (size_t i = 0; i < s->hist.n; i++) {
        const store_hist_event *e = store_hist_at(&s->hist, i);
        store_put_u8(w, e->type);
        store_put_varint(w, e->revision);
        snap_rec(w, e->rec);
        if (e->type == STORE_EVENT_PUT) {
            store_put_u8(w, e->prev != NULL);
            if (e->prev)
                snap_rec(w, e->prev);
        }
    }
}

size_t store_snapshot_size(const store_t *s)
{
    store_writer w = {NULL, 0};
    snap_write(&w, s);
    return w.n + STORE_SNAPSHOT_CHECKSUM_BYTES;
}

int store_snapshot_write(const store_t *s, uint8_t *buf, size_t cap, size_t *len)
{
    size_t need = store_snapshot_size(s);
    if (!buf || cap < need)
        return STORE_ERR_TOO_LARGE;
    store_writer w = {buf, 0};
    snap_write(&w, s);
    crypto_generichash(buf + w.n, STORE_SNAPSHOT_CHECKSUM_BYTES, buf, w.n, NULL, 0);
    *len = need;
    return STORE_OK;
}

/* Reads a record and checks what holds for every version of every key. */
static store_rec *restore_rec(store_cursor *c, uint64_t revision)
{
    store_bytes key = store_cur_bytes(c, STORE_MAX_KEY);
    store_bytes value = store_cur_bytes(c, STORE_MAX_VALUE);
    uint64_t create = store_cur_varint(c), mod = store_cur_varint(c), version = store_cur_varint(c),
             lease = store_cur_varint(c);
    if (c->err)
        return NULL;
    if (key.len == 0 || create == 0 || create > mod || mod > revision || version == 0 ||
        version > mod - create + 1 || !store_num_ok(lease)) {
        store_cur_fail(c, STORE_ERR_CORRUPT);
        return NULL;
    }
    store_rec *r = store_rec_new(key.p, key.len, value.p, value.len);
    if (!r) {
        store_cur_fail(c, STORE_ERR_NOMEM);
        return NULL;
    }
    r->create_revision = create;
    r->mod_revision = mod;
    r->version = version;
    r->lease = lease;
    return r;
}

static bool same_rec(const store_rec *a, const store_rec *b)
{
    return a->key_len == b->key_len && a->value_len == b->value_len &&
           a->create_revision == b->create_revision && a->mod_revision == b->mod_revision &&
           a->version == b->version && a->lease == b->lease &&
           memcmp(a->data, b->data, a->key_len + a->value_len) == 0;
}

static void restore_leases(store_cursor *c, store_t *s)
{
    size_t n = store_cur_count(c, SIZE_MAX / sizeof(store_lease), 2);
    if (c->err || store_leases_reserve(s, n) != STORE_OK) {
        store_cur_fail(c, STORE_ERR_NOMEM);
        return;
    }
    for (size_t i = 0; i < n && !c->err; i++) {
        uint64_t id = store_cur_varint(c), ttl = store_cur_varint(c);
        if (id == 0 || !store_num_ok(id) || ttl == 0 || ttl > STORE_MAX_TTL_MS ||
            (i && id <= s->leases[i - 1].id))
            store_cur_fail(c, STORE_ERR_CORRUPT);
        s->leases[i] = (store_lease){id, ttl, NULL, 0};
        s->n_leases = i + 1;
    }
}

/* Keys come sorted, so each node is appended after the previous one. */
static void restore_keys(store_cursor *c, store_t *s)
{
    size_t n = store_cur_count(c, SIZE_MAX, 6);
    store_node *tail[STORE_LEVELS];
    for (uint32_t i = 0; i < STORE_LEVELS; i++)
        tail[i] = s->head;
    const store_rec *last = NULL;
    for (size_t i = 0; i < n && !c->err; i++) {
        store_rec *r = restore_rec(c, s->revision);
        if (!r)
            return;
        if ((last && store_bytes_cmp(store_rec_key(last), last->key_len, store_rec_key(r),
                                     r->key_len) >= 0) ||
            (r->lease && !store_lease_find(s, r->lease))) {
            store_rec_unref(r);
            store_cur_fail(c, STORE_ERR_CORRUPT);
            return;
        }
        store_node *node = store_node_new(s, store_rec_key(r), r->key_len);
        if (!node) {
            store_rec_unref(r);
            store_cur_fail(c, STORE_ERR_NOMEM);
            return;
        }
        node->rec = r;
        for (uint32_t l = 0; l < node->level; l++) {
            node->next[l] = NULL;
            tail[l]->next[l] = node;
            tail[l] = node;
        }
        if (node->level > s->level)
            s->level = node->level;
        s->n_keys++;
        store_lease_attach(s, node);
        last = r;
    }
}

static void restore_history(store_cursor *c, store_t *s)
{
    size_t n = store_cur_count(c, s->cfg.history_max_events, 8);
    if (c->err)
        return;
    if (store_hist_reserve(&s->hist, n) != STORE_OK) {
        store_cur_fail(c, STORE_ERR_NOMEM);
        return;
    }
    uint64_t last = s->compact_revision + 1;
    for (size_t i = 0; i < n && !c->err; i++) {
        uint8_t type = store_cur_u8(c);
        uint64_t rev = store_cur_varint(c);
        if (c->err)
            return;
        if ((type != STORE_EVENT_PUT && type != STORE_EVENT_DELETE) || rev < last ||
            rev > s->revision) {
            store_cur_fail(c, STORE_ERR_CORRUPT);
            return;
        }
        last = rev;
        store_hist_event e = {rev, type, restore_rec(c, s->revision), NULL};
        if (!e.rec)
            return;
        store_hist_push(&s->hist, e);
        bool bad =
            type == STORE_EVENT_PUT ? e.rec->mod_revision != rev : e.rec->mod_revision >= rev;
        if (type == STORE_EVENT_PUT) {
            uint8_t has_prev = store_cur_u8(c);
            if (has_prev > 1 || (has_prev && !s->cfg.history_prev_kv))
                bad = true;
            if (has_prev && !bad && !c->err) {
                store_rec *prev = restore_rec(c, s->revision);
                if (!prev)
                    return;
                store_hist_event *at = store_hist_at(&s->hist, s->hist.n - 1);
                at->prev = prev;
                s->hist.bytes += store_rec_bytes(prev);
                bad = prev->mod_revision >= rev ||
                      store_bytes_cmp(store_rec_key(prev), prev->key_len, store_rec_key(e.rec),
                                      e.rec->key_len);
            }
            /* share the live key's record when it is this very version */
            const store_node *live = store_find_eq(s, store_rec_key(e.rec), e.rec->key_len);
            store_hist_event *at = store_hist_at(&s->hist, s->hist.n - 1);
            if (!bad && live && live->rec != at->rec && same_rec(live->rec, at->rec)) {
                store_rec_unref(at->rec);
                at->rec = store_rec_ref(live->rec);
            }
        }
        if (bad)
            store_cur_fail(c, STORE_ERR_CORRUPT);
    }
    if (!c->err && s->hist.bytes > s->cfg.history_max_bytes)
        store_cur_fail(c, STORE_ERR_CORRUPT);
}

store_t *store_restore(const uint8_t *buf, size_t len, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = STORE_ERR_CORRUPT;
    if (!buf || len < sizeof snapshot_magic + 1 + STORE_SNAPSHOT_CHECKSUM_BYTES ||
        memcmp(buf, snapshot_magic, sizeof snapshot_magic) != 0)
        return NULL;
    if (buf[sizeof snapshot_magic] != STORE_SNAPSHOT_VERSION) {
        *err = STORE_ERR_VERSION;
        return NULL;
    }
    size_t body = len - STORE_SNAPSHOT_CHECKSUM_BYTES;
    uint8_t sum[STORE_SNAPSHOT_CHECKSUM_BYTES];
    crypto_generichash(sum, sizeof sum, buf, body, NULL, 0);
    if (memcmp(sum, buf + body, sizeof sum) != 0)
        return NULL;
    store_cursor c = {buf + sizeof snapshot_magic + 1, buf + body, 0};
    store_config cfg;
    uint64_t max_events = store_cur_varint(&c);
    cfg.history_max_bytes = store_cur_varint(&c);
    uint8_t prev_kv = store_cur_u8(&c);
    cfg.history_max_events = (uint32_t)max_events;
    cfg.history_prev_kv = prev_kv == 1;
    if (c.err || prev_kv > 1 || max_events > STORE_MAX_HISTORY_EVENTS || !store_config_ok(&cfg)) {
        *err = c.err == STORE_ERR_NOMEM ? c.err : STORE_ERR_CORRUPT;
        return NULL;
    }
    store_t *s = store_alloc(&cfg, err);
    if (!s)
        return NULL;
    s->revision = store_cur_varint(&c);
    s->compact_revision = store_cur_varint(&c);
    s->next_lease_id = store_cur_varint(&c);
    if (!c.err && (!store_num_ok(s->revision) || s->compact_revision > s->revision ||
                   s->next_lease_id == 0 || !store_num_ok(s->next_lease_id)))
        store_cur_fail(&c, STORE_ERR_CORRUPT);
    if (!c.err)
        restore_leases(&c, s);
    if (!c.err)
        restore_keys(&c, s);
    if (!c.err)
        restore_history(&c, s);
    if (!c.err && c.p != c.end)
        store_cur_fail(&c, STORE_ERR_CORRUPT);
    if (c.err) {
        *err = c.err == STORE_ERR_NOMEM ? c.err : STORE_ERR_CORRUPT;
        store_free(s);
        return NULL;
    }
    *err = STORE_OK;
    return s;
}
