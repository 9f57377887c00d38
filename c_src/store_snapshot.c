/* store_snapshot.c -- the store's snapshot: written whole, or in pieces
 * from a frozen view (store_snap_writer), and restored from pieces
 * (store_restorer; store_restore feeds it once). See store_snapshot.h for
 * the format's invariants.
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

/* ---- the streaming writer ---- */

typedef struct snap_lease {
    uint64_t id, ttl_ms;
} snap_lease;

enum { W_HEAD, W_LEASES, W_NKEYS, W_KEYS, W_NHIST, W_HIST, W_SUM, W_END };

struct store_snap_writer {
    /* the frozen state */
    store_config cfg;
    uint64_t revision, compact_revision, next_lease_id;
    snap_lease *leases;
    size_t n_leases;
    store_rec **keys; /* a reference each, in key order */
    size_t n_keys;
    store_hist_event *events; /* a reference on rec (and prev) each */
    size_t n_events;
    /* progress */
    int stage;
    size_t at;
    uint64_t written;
    crypto_generichash_state hash;
    uint8_t *buf;
    size_t cap;
};

store_snap_writer *store_snap_writer_new(store_t *s, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = STORE_ERR_NOMEM;
    store_snap_writer *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->leases = malloc((s->n_leases ? s->n_leases : 1) * sizeof *w->leases);
    w->keys = malloc((s->n_keys ? s->n_keys : 1) * sizeof *w->keys);
    w->events = malloc((s->hist.n ? s->hist.n : 1) * sizeof *w->events);
    if (!w->leases || !w->keys || !w->events) {
        free(w->leases);
        free(w->keys);
        free(w->events);
        free(w);
        return NULL;
    }
    w->cfg = s->cfg;
    w->revision = s->revision;
    w->compact_revision = s->compact_revision;
    w->next_lease_id = s->next_lease_id;
    for (size_t i = 0; i < s->n_leases; i++)
        w->leases[i] = (snap_lease){s->leases[i].id, s->leases[i].ttl_ms};
    w->n_leases = s->n_leases;
    for (const store_node *n = s->head->next[0]; n; n = n->next[0])
        w->keys[w->n_keys++] = store_rec_ref(n->rec);
    for (size_t i = 0; i < s->hist.n; i++) {
        store_hist_event e = *store_hist_at(&s->hist, i);
        store_rec_ref(e.rec);
        if (e.prev)
            store_rec_ref(e.prev);
        w->events[w->n_events++] = e;
    }
    crypto_generichash_init(&w->hash, NULL, 0, STORE_SNAPSHOT_CHECKSUM_BYTES);
    *err = STORE_OK;
    return w;
}

void store_snap_writer_free(store_snap_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_keys; i++)
        store_rec_unref(w->keys[i]);
    for (size_t i = 0; i < w->n_events; i++) {
        store_rec_unref(w->events[i].rec);
        store_rec_unref(w->events[i].prev);
    }
    free(w->leases);
    free(w->keys);
    free(w->events);
    free(w->buf);
    free(w);
}

uint64_t store_snap_writer_written(const store_snap_writer *w)
{
    return w->written;
}

/* An upper bound of a record's encoding: two lengths, four numbers. */
static size_t rec_bound(const store_rec *r)
{
    return 6 * 10 + (size_t)r->key_len + r->value_len;
}

/* The bytes the next item may take (the header is the largest small one). */
static size_t item_bound(const store_snap_writer *w)
{
    switch (w->stage) {
    case W_KEYS:
        return w->at < w->n_keys ? rec_bound(w->keys[w->at]) : 0;
    case W_HIST: {
        if (w->at == w->n_events)
            return 0;
        const store_hist_event *e = &w->events[w->at];
        return 1 + 10 + rec_bound(e->rec) + 1 + (e->prev ? rec_bound(e->prev) : 0);
    }
    default:
        return 128;
    }
}

/* Appends the next item (as snap_write would write it) and moves on. */
static void emit_item(store_snap_writer *w, store_writer *out)
{
    switch (w->stage) {
    case W_HEAD:
        for (size_t i = 0; i < sizeof snapshot_magic; i++)
            store_put_u8(out, snapshot_magic[i]);
        store_put_u8(out, STORE_SNAPSHOT_VERSION);
        store_put_varint(out, w->cfg.history_max_events);
        store_put_varint(out, w->cfg.history_max_bytes);
        store_put_u8(out, w->cfg.history_prev_kv);
        store_put_varint(out, w->revision);
        store_put_varint(out, w->compact_revision);
        store_put_varint(out, w->next_lease_id);
        store_put_varint(out, w->n_leases);
        w->stage = W_LEASES;
        w->at = 0;
        break;
    case W_LEASES:
        if (w->at < w->n_leases) {
            store_put_varint(out, w->leases[w->at].id);
            store_put_varint(out, w->leases[w->at].ttl_ms);
            w->at++;
        } else {
            w->stage = W_NKEYS;
        }
        break;
    case W_NKEYS:
        store_put_varint(out, w->n_keys);
        w->stage = W_KEYS;
        w->at = 0;
        break;
    case W_KEYS:
        if (w->at < w->n_keys)
            snap_rec(out, w->keys[w->at++]);
        else
            w->stage = W_NHIST;
        break;
    case W_NHIST:
        store_put_varint(out, w->n_events);
        w->stage = W_HIST;
        w->at = 0;
        break;
    case W_HIST:
        if (w->at < w->n_events) {
            const store_hist_event *e = &w->events[w->at++];
            store_put_u8(out, e->type);
            store_put_varint(out, e->revision);
            snap_rec(out, e->rec);
            if (e->type == STORE_EVENT_PUT) {
                store_put_u8(out, e->prev != NULL);
                if (e->prev)
                    snap_rec(out, e->prev);
            }
        } else {
            w->stage = W_SUM;
        }
        break;
    default:
        break;
    }
}

int store_snap_writer_next(store_snap_writer *w, size_t target, const uint8_t **piece, size_t *len)
{
    *piece = w->buf;
    *len = 0;
    if (w->stage == W_END)
        return STORE_OK;
    if (target == 0)
        target = 1;
    store_writer out = {w->buf, 0};
    /* room for the item and the checksum after it, so the last piece ends
     * with the sum; an item is emitted only once it fits (a failed realloc
     * ends the piece early, or is NOMEM with nothing moved) */
    while (out.n < target && w->stage < W_SUM) {
        size_t need = out.n + item_bound(w) + STORE_SNAPSHOT_CHECKSUM_BYTES;
        if (need > w->cap) {
            size_t cap = target + 128 + STORE_SNAPSHOT_CHECKSUM_BYTES;
            uint8_t *buf = realloc(w->buf, need > cap ? need : cap);
            if (!buf) {
                if (out.n == 0)
                    return STORE_ERR_NOMEM;
                break;
            }
            w->buf = out.buf = buf;
            w->cap = need > cap ? need : cap;
        }
        emit_item(w, &out);
    }
    if (out.n)
        crypto_generichash_update(&w->hash, out.buf, out.n);
    if (w->stage == W_SUM) {
        if (w->cap < out.n + STORE_SNAPSHOT_CHECKSUM_BYTES) {
            uint8_t *buf = realloc(w->buf, out.n + STORE_SNAPSHOT_CHECKSUM_BYTES);
            if (!buf && out.n == 0)
                return STORE_ERR_NOMEM;
            if (buf) {
                w->buf = buf;
                w->cap = out.n + STORE_SNAPSHOT_CHECKSUM_BYTES;
            }
        }
        if (w->cap >= out.n + STORE_SNAPSHOT_CHECKSUM_BYTES) {
            crypto_generichash_final(&w->hash, w->buf + out.n, STORE_SNAPSHOT_CHECKSUM_BYTES);
            out.n += STORE_SNAPSHOT_CHECKSUM_BYTES;
            w->stage = W_END;
        }
    }
    *piece = w->buf;
    *len = out.n;
    w->written += out.n;
    return STORE_OK;
}

/* ---- the streaming restorer ---- */

/* Reads a record and checks what holds for every version of every key.
 * NULL with c->err set if it failed; nothing is allocated then. */
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

enum { R_HEAD, R_LEASES, R_NKEYS, R_KEYS, R_NHIST, R_HIST, R_DONE };

struct store_restorer {
    uint64_t len, body; /* bytes in all; before the checksum */
    uint64_t fed;       /* bytes fed so far */
    uint64_t parsed;    /* body bytes parsed */
    crypto_generichash_state hash;
    uint8_t sum[STORE_SNAPSHOT_CHECKSUM_BYTES];
    uint8_t *buf; /* body bytes fed, not parsed yet (one unfinished item) */
    size_t buf_n, buf_cap;
    size_t retry_at; /* an unfinished item is parsed again once buf_n >= it */
    int err;
    int stage;
    size_t left; /* items left in the stage */
    store_t *s;
    store_node *tail[STORE_LEVELS];
    const store_rec *last_key;
    uint64_t last_rev;
};

static void restorer_fail(store_restorer *r, int err)
{
    if (!r->err)
        r->err = err == STORE_ERR_NOMEM || err == STORE_ERR_VERSION ? err : STORE_ERR_CORRUPT;
    store_free(r->s);
    r->s = NULL;
    free(r->buf);
    r->buf = NULL;
    r->buf_n = r->buf_cap = 0;
}

store_restorer *store_restorer_new(uint64_t len)
{
    store_restorer *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->len = len;
    if (len < sizeof snapshot_magic + 1 + STORE_SNAPSHOT_CHECKSUM_BYTES) {
        r->err = STORE_ERR_CORRUPT;
        return r;
    }
    r->body = len - STORE_SNAPSHOT_CHECKSUM_BYTES;
    crypto_generichash_init(&r->hash, NULL, 0, STORE_SNAPSHOT_CHECKSUM_BYTES);
    return r;
}

void store_restorer_free(store_restorer *r)
{
    if (!r)
        return;
    store_free(r->s);
    free(r->buf);
    free(r);
}

size_t store_restorer_buffered(const store_restorer *r)
{
    return r->buf_cap;
}

/* A count of items: at most cap, and at most the body bytes left after it
 * divided by the smallest encoding of one (a forged count cannot make the
 * restorer allocate more than the input implies). */
static size_t item_count(store_restorer *r, store_cursor *c, const uint8_t *start, size_t cap,
                         size_t min_bytes)
{
    uint64_t n = store_cur_varint(c);
    if (c->err)
        return 0;
    uint64_t left = r->body - r->parsed - (uint64_t)(c->p - start);
    if (n > cap || n > left / min_bytes) {
        store_cur_fail(c, STORE_ERR_CORRUPT);
        return 0;
    }
    return (size_t)n;
}

static void parse_head(store_restorer *r, store_cursor *c, const uint8_t *start)
{
    if ((size_t)(c->end - c->p) >= sizeof snapshot_magic + 1) {
        if (memcmp(c->p, snapshot_magic, sizeof snapshot_magic) != 0) {
            store_cur_fail(c, STORE_ERR_CORRUPT);
            return;
        }
        if (c->p[sizeof snapshot_magic] != STORE_SNAPSHOT_VERSION) {
            store_cur_fail(c, STORE_ERR_VERSION);
            return;
        }
    }
    for (size_t i = 0; i <= sizeof snapshot_magic; i++)
        (void)store_cur_u8(c);
    store_config cfg;
    uint64_t max_events = store_cur_varint(c);
    cfg.history_max_bytes = store_cur_varint(c);
    uint8_t prev_kv = store_cur_u8(c);
    uint64_t revision = store_cur_varint(c), compact = store_cur_varint(c),
             next_lease = store_cur_varint(c);
    size_t n_leases = item_count(r, c, start, SIZE_MAX / sizeof(store_lease), 2);
    if (c->err)
        return;
    cfg.history_max_events = (uint32_t)max_events;
    cfg.history_prev_kv = prev_kv == 1;
    if (prev_kv > 1 || max_events > STORE_MAX_HISTORY_EVENTS || !store_config_ok(&cfg) ||
        !store_num_ok(revision) || compact > revision || next_lease == 0 ||
        !store_num_ok(next_lease)) {
        store_cur_fail(c, STORE_ERR_CORRUPT);
        return;
    }
    int err = STORE_OK;
    store_t *s = store_alloc(&cfg, &err);
    if (!s) {
        store_cur_fail(c, err);
        return;
    }
    s->revision = revision;
    s->compact_revision = compact;
    s->next_lease_id = next_lease;
    r->s = s;
    if (store_leases_reserve(s, n_leases) != STORE_OK) {
        store_cur_fail(c, STORE_ERR_NOMEM);
        return;
    }
    for (uint32_t i = 0; i < STORE_LEVELS; i++)
        r->tail[i] = s->head;
    r->stage = R_LEASES;
    r->left = n_leases;
}

static void parse_lease(store_restorer *r, store_cursor *c)
{
    store_t *s = r->s;
    uint64_t id = store_cur_varint(c), ttl = store_cur_varint(c);
    if (c->err)
        return;
    size_t i = s->n_leases;
    if (id == 0 || !store_num_ok(id) || ttl == 0 || ttl > STORE_MAX_TTL_MS ||
        (i && id <= s->leases[i - 1].id)) {
        store_cur_fail(c, STORE_ERR_CORRUPT);
        return;
    }
    s->leases[i] = (store_lease){id, ttl, NULL, 0};
    s->n_leases = i + 1;
    r->left--;
}

/* Keys come sorted, so each node is appended after the previous one. */
static void parse_key(store_restorer *r, store_cursor *c)
{
    store_t *s = r->s;
    store_rec *rec = restore_rec(c, s->revision);
    if (!rec)
        return;
    const store_rec *last = r->last_key;
    if ((last && store_bytes_cmp(store_rec_key(last), last->key_len, store_rec_key(rec),
                                 rec->key_len) >= 0) ||
        (rec->lease && !store_lease_find(s, rec->lease))) {
        store_rec_unref(rec);
        store_cur_fail(c, STORE_ERR_CORRUPT);
        return;
    }
    store_node *node = store_node_new(s, store_rec_key(rec), rec->key_len);
    if (!node) {
        store_rec_unref(rec);
        store_cur_fail(c, STORE_ERR_NOMEM);
        return;
    }
    node->rec = rec;
    for (uint32_t l = 0; l < node->level; l++) {
        node->next[l] = NULL;
        r->tail[l]->next[l] = node;
        r->tail[l] = node;
    }
    if (node->level > s->level)
        s->level = node->level;
    s->n_keys++;
    store_lease_attach(s, node);
    r->last_key = rec;
    r->left--;
}

/* One history event, read whole before anything is kept. */
static void parse_event(store_restorer *r, store_cursor *c)
{
    store_t *s = r->s;
    uint8_t type = store_cur_u8(c);
    uint64_t rev = store_cur_varint(c);
    if (c->err)
        return;
    if ((type != STORE_EVENT_PUT && type != STORE_EVENT_DELETE) || rev < r->last_rev ||
        rev > s->revision) {
        store_cur_fail(c, STORE_ERR_CORRUPT);
        return;
    }
    store_rec *rec = restore_rec(c, s->revision), *prev = NULL;
    if (!rec)
        return;
    bool bad = type == STORE_EVENT_PUT ? rec->mod_revision != rev : rec->mod_revision >= rev;
    if (type == STORE_EVENT_PUT && !bad) {
        uint8_t has_prev = store_cur_u8(c);
        if (!c->err && (has_prev > 1 || (has_prev && !s->cfg.history_prev_kv)))
            bad = true;
        if (has_prev && !bad && !c->err) {
            prev = restore_rec(c, s->revision);
            if (prev)
                bad =
                    prev->mod_revision >= rev || store_bytes_cmp(store_rec_key(prev), prev->key_len,
                                                                 store_rec_key(rec), rec->key_len);
        }
    }
    if (c->err || bad) {
        store_rec_unref(rec);
        store_rec_unref(prev);
        store_cur_fail(c, STORE_ERR_CORRUPT);
        return;
    }
    r->last_rev = rev;
    if (type == STORE_EVENT_PUT) {
        /* share the live key's record when it is this very version */
        const store_node *live = store_find_eq(s, store_rec_key(rec), rec->key_len);
        if (live && live->rec != rec && same_rec(live->rec, rec)) {
            store_rec_unref(rec);
            rec = store_rec_ref(live->rec);
        }
    }
    store_hist_push(&s->hist, (store_hist_event){rev, type, rec, NULL});
    if (prev) {
        store_hist_at(&s->hist, s->hist.n - 1)->prev = prev;
        s->hist.bytes += store_rec_bytes(prev);
    }
    r->left--;
}

/* One item at c->p; false (nothing kept) if it failed or needs more bytes. */
static bool parse_item(store_restorer *r, store_cursor *c, const uint8_t *start)
{
    switch (r->stage) {
    case R_HEAD:
        parse_head(r, c, start);
        break;
    case R_LEASES:
        if (r->left == 0) {
            r->stage = R_NKEYS;
            return true;
        }
        parse_lease(r, c);
        break;
    case R_NKEYS:
        r->left = item_count(r, c, start, SIZE_MAX, 6);
        if (!c->err)
            r->stage = R_KEYS;
        break;
    case R_KEYS:
        if (r->left == 0) {
            r->stage = R_NHIST;
            return true;
        }
        parse_key(r, c);
        break;
    case R_NHIST:
        r->left = item_count(r, c, start, r->s->cfg.history_max_events, 8);
        if (!c->err && store_hist_reserve(&r->s->hist, r->left) != STORE_OK)
            store_cur_fail(c, STORE_ERR_NOMEM);
        if (!c->err) {
            r->stage = R_HIST;
            r->last_rev = r->s->compact_revision + 1;
        }
        break;
    case R_HIST:
        if (r->left == 0) {
            if (r->s->hist.bytes > r->s->cfg.history_max_bytes) {
                store_cur_fail(c, STORE_ERR_CORRUPT);
                return false;
            }
            r->stage = R_DONE;
            return true;
        }
        parse_event(r, c);
        break;
    default: /* bytes after the history */
        store_cur_fail(c, STORE_ERR_CORRUPT);
        break;
    }
    return !c->err;
}

/* Parses every whole item of p[0, n) (the body bytes not parsed yet);
 * returns how many bytes it used. A short item waits for more bytes unless
 * the body ends here. */
static size_t parse_some(store_restorer *r, const uint8_t *p, size_t n)
{
    bool last = r->parsed + n == r->body;
    store_cursor c = {p, p + n, 0};
    const uint8_t *at = p;
    while (!r->err) {
        if (c.p == c.end && !(last && r->stage != R_DONE))
            break;
        if (parse_item(r, &c, p)) {
            at = c.p;
            continue;
        }
        if (c.err == STORE_ERR_TRUNCATED && !last)
            break; /* the item continues in the next piece */
        restorer_fail(r, c.err);
    }
    r->parsed += (uint64_t)(at - p);
    return (size_t)(at - p);
}

static bool buf_append(store_restorer *r, const uint8_t *p, size_t n)
{
    if (r->buf_n + n > r->buf_cap) {
        size_t cap = r->buf_cap ? r->buf_cap : 4096;
        while (cap < r->buf_n + n)
            cap *= 2;
        uint8_t *buf = realloc(r->buf, cap);
        if (!buf)
            return false;
        r->buf = buf;
        r->buf_cap = cap;
    }
    memcpy(r->buf + r->buf_n, p, n);
    r->buf_n += n;
    return true;
}

int store_restorer_feed(store_restorer *r, const uint8_t *p, size_t n)
{
    if (r->err)
        return r->err;
    if (n > r->len - r->fed) {
        restorer_fail(r, STORE_ERR_CORRUPT);
        return r->err;
    }
    size_t body = r->fed < r->body ? (size_t)(r->body - r->fed < n ? r->body - r->fed : n) : 0;
    if (n > body) /* checksum bytes */
        memcpy(r->sum + (r->fed + body - r->body), p + body, n - body);
    r->fed += n;
    if (body == 0)
        return STORE_OK;
    crypto_generichash_update(&r->hash, p, body);
    if (r->buf_n == 0) {
        size_t used = parse_some(r, p, body);
        r->retry_at = 2 * (body - used);
        if (!r->err && used < body && !buf_append(r, p + used, body - used))
            restorer_fail(r, STORE_ERR_NOMEM);
        return r->err;
    }
    if (!buf_append(r, p, body)) {
        restorer_fail(r, STORE_ERR_NOMEM);
        return r->err;
    }
    /* tiny pieces: an unfinished item is retried once the bytes kept have
     * doubled (or the body is complete), not at every piece; the header at
     * once, so a wrong version is refused as soon as its byte is in */
    if (r->buf_n < r->retry_at && r->parsed + r->buf_n < r->body && r->stage != R_HEAD)
        return STORE_OK;
    size_t used = parse_some(r, r->buf, r->buf_n);
    r->retry_at = 2 * (r->buf_n - used);
    if (!r->err) {
        memmove(r->buf, r->buf + used, r->buf_n - used);
        r->buf_n -= used;
    }
    return r->err;
}

store_t *store_restorer_finish(store_restorer *r, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    store_t *s = NULL;
    if (!r) {
        *err = STORE_ERR_NOMEM;
        return NULL;
    }
    if (!r->err && (r->fed != r->len || r->parsed != r->body || r->stage != R_DONE))
        restorer_fail(r, STORE_ERR_CORRUPT);
    if (!r->err) {
        uint8_t sum[STORE_SNAPSHOT_CHECKSUM_BYTES];
        crypto_generichash_final(&r->hash, sum, sizeof sum);
        if (memcmp(sum, r->sum, sizeof sum) != 0)
            restorer_fail(r, STORE_ERR_CORRUPT);
    }
    *err = r->err;
    if (!r->err) {
        s = r->s;
        r->s = NULL;
    }
    store_restorer_free(r);
    return s;
}

store_t *store_restore(const uint8_t *buf, size_t len, int *err)
{
    store_restorer *r = store_restorer_new(len);
    if (r && buf)
        store_restorer_feed(r, buf, len);
    else if (r)
        restorer_fail(r, STORE_ERR_CORRUPT);
    return store_restorer_finish(r, err);
}
