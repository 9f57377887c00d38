/* store.c -- the replicated store's state machine (see store.h for the
 * contract and docs/store.md for the formats).
 * Pure: no I/O, no clock, no globals, malloc/free only.
 *
 * Why it is built this way:
 *   - Key versions are immutable reference-counted records, so the live key,
 *     the history event and a result share one copy of the bytes, and a
 *     delete hands the record to the history without copying.
 *   - Every command runs in two phases: PREPARE checks and allocates
 *     everything the command can need (upper bounds computed from the state),
 *     COMMIT changes the state and cannot fail. This is what makes a command
 *     all-or-nothing even when malloc fails.
 *   - The skip list's levels come from a generator inside the store. The
 *     shape of the list is never visible (results and snapshots depend only
 *     on the keys), so members whose lists differ (one restored from a
 *     snapshot, one not) still agree bit for bit.
 *   - Varints are the canonical LEB128 of varint.h, the Raft wire format's
 *     too, so both formats share one decoder. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "store.h"
#include "varint.h"

#define LEVELS 24
/* Deterministic cap on the keys one command may return (TOO_LARGE above). */
#define MAX_RESULT_KVS ((uint64_t)1 << 20)
/* Bytes an event costs in the history's accounting besides its records. */
#define EVENT_OVERHEAD 64u
#define CHECKSUM_BYTES 16u
static const uint8_t snapshot_magic[4] = {'S', 'Y', 'S', 'T'};

/* ---- records: one immutable key version ---- */
typedef struct store_rec {
    uint32_t refs;
    uint32_t key_len, value_len;
    uint64_t create_revision, mod_revision, version, lease;
    uint8_t data[]; /* key, then value */
} store_rec;

static store_rec *rec_new(const uint8_t *key, size_t klen, const uint8_t *value, size_t vlen)
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

static store_rec *rec_ref(store_rec *r)
{
    r->refs++;
    return r;
}

static void rec_unref(store_rec *r)
{
    if (r && --r->refs == 0)
        free(r);
}

static const uint8_t *rec_key(const store_rec *r)
{
    return r->data;
}

static const uint8_t *rec_value(const store_rec *r)
{
    return r->data + r->key_len;
}

static store_kv rec_kv(const store_rec *r)
{
    return (store_kv){rec_key(r),         r->key_len,      rec_value(r), r->value_len,
                      r->create_revision, r->mod_revision, r->version,   r->lease};
}

static uint64_t rec_bytes(const store_rec *r)
{
    return r ? (uint64_t)r->key_len + r->value_len : 0;
}

/* Byte order, then length: etcd's key order. */
static int bytes_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

/* ---- the skip list ---- */
/* A node keeps a copy of its key right after its forward pointers, so a
 * search reads one allocation per step instead of two (node, then record). */
typedef struct store_node {
    store_rec *rec;
    struct store_node *lease_prev, *lease_next; /* the keys of rec->lease */
    uint32_t level, key_len;
    struct store_node *next[]; /* level pointers, then key_len key bytes */
} store_node;

static const uint8_t *node_key(const store_node *n)
{
    return (const uint8_t *)(n->next + n->level);
}

typedef struct store_lease {
    uint64_t id, ttl_ms;
    store_node *keys;
    size_t n_keys;
} store_lease;

typedef struct hist_event {
    uint64_t revision;
    uint8_t type;
    store_rec *rec;  /* PUT: the new version; DELETE: the deleted one */
    store_rec *prev; /* PUT with history_prev_kv: the version before */
} hist_event;

/* A ring: ev[(start + i) % cap] for i < n, in revision order. */
typedef struct history {
    hist_event *ev;
    size_t cap, start, n;
    uint64_t bytes;
} history;

struct store {
    store_config cfg;
    uint64_t revision, compact_revision, next_lease_id;
    uint64_t rng;
    store_node *head;
    uint32_t level; /* levels in use, >= 1 */
    size_t n_keys;
    store_lease *leases; /* sorted by id */
    size_t n_leases, cap_leases;
    history hist;
};

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static store_node *node_new(store_t *s, const uint8_t *key, size_t len)
{
    uint64_t x = splitmix64(&s->rng);
    uint32_t level = 1;
    while (level < LEVELS && (x & 3) == 0) {
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

static int node_cmp(const store_node *n, const uint8_t *key, size_t len)
{
    return bytes_cmp(node_key(n), n->key_len, key, len);
}

/* The first node >= key; update[i] (if given) is its predecessor at level i. */
static store_node *find_ge(const store_t *s, const uint8_t *key, size_t len, store_node **update)
{
    store_node *x = s->head, *stop = NULL; /* stop: known >= key */
    for (uint32_t i = s->level; i-- > 0;) {
        while (x->next[i] && x->next[i] != stop && node_cmp(x->next[i], key, len) < 0)
            x = x->next[i];
        stop = x->next[i];
        if (update)
            update[i] = x;
    }
    return x->next[0];
}

static store_node *find_eq(const store_t *s, const uint8_t *key, size_t len)
{
    store_node *n = find_ge(s, key, len, NULL);
    return n && node_cmp(n, key, len) == 0 ? n : NULL;
}

static void list_insert(store_t *s, store_node *n, store_node **update)
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

static void list_remove(store_t *s, store_node *n)
{
    store_node *update[LEVELS];
    store_node *found = find_ge(s, node_key(n), n->key_len, update);
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
static size_t lease_lower(const store_t *s, uint64_t id)
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

static store_lease *lease_find(const store_t *s, uint64_t id)
{
    size_t i = lease_lower(s, id);
    return i < s->n_leases && s->leases[i].id == id ? &s->leases[i] : NULL;
}

static void lease_attach(store_t *s, store_node *n)
{
    if (!n->rec->lease)
        return;
    store_lease *l = lease_find(s, n->rec->lease);
    assert(l); /* puts are checked against the lease table in PREPARE */
    n->lease_prev = NULL;
    n->lease_next = l->keys;
    if (l->keys)
        l->keys->lease_prev = n;
    l->keys = n;
    l->n_keys++;
}

static void lease_detach(store_t *s, store_node *n)
{
    if (!n->rec->lease)
        return;
    store_lease *l = lease_find(s, n->rec->lease);
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

static int leases_reserve(store_t *s, size_t extra)
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

static hist_event *hist_at(const history *h, size_t i)
{
    return &h->ev[(h->start + i) % h->cap];
}

static uint64_t event_bytes(const hist_event *e)
{
    return EVENT_OVERHEAD + rec_bytes(e->rec) + rec_bytes(e->prev);
}

/* Moves the ring into a new array of `cap` slots, oldest event first. */
static int hist_resize(history *h, size_t cap)
{
    hist_event *ev = malloc(cap * sizeof *ev);
    if (!ev)
        return STORE_ERR_NOMEM;
    for (size_t i = 0; i < h->n; i++)
        ev[i] = *hist_at(h, i);
    free(h->ev);
    h->ev = ev;
    h->cap = cap;
    h->start = 0;
    return STORE_OK;
}

static int hist_reserve(history *h, uint64_t extra)
{
    if (extra > SIZE_MAX / sizeof(hist_event) - h->n)
        return STORE_ERR_NOMEM;
    if (h->n + extra <= h->cap)
        return STORE_OK;
    size_t cap = h->cap ? h->cap : 16;
    while (cap < h->n + extra)
        cap = cap > SIZE_MAX / 4 / sizeof(hist_event) ? h->n + (size_t)extra : cap * 2;
    return hist_resize(h, cap);
}

/* Takes over the references in e. The slot was reserved. */
static void hist_push(history *h, hist_event e)
{
    assert(h->n < h->cap);
    *hist_at(h, h->n) = e;
    h->n++;
    h->bytes += event_bytes(&e);
}

static void hist_pop(history *h)
{
    hist_event *e = hist_at(h, 0);
    h->bytes -= event_bytes(e);
    rec_unref(e->rec);
    rec_unref(e->prev);
    h->start = (h->start + 1) % h->cap;
    h->n--;
}

/* Gives back memory after a burst (a big revoke); best effort, no state. */
static void hist_shrink(history *h)
{
    if (h->cap > 64 && h->n < h->cap / 4)
        hist_resize(h, h->cap / 2);
}

/* Drops whole revisions from the oldest end while over a bound. */
static void hist_evict(store_t *s)
{
    history *h = &s->hist;
    while (h->n && (h->n > s->cfg.history_max_events || h->bytes > s->cfg.history_max_bytes)) {
        uint64_t rev = hist_at(h, 0)->revision;
        while (h->n && hist_at(h, 0)->revision == rev)
            hist_pop(h);
        if (rev > s->compact_revision)
            s->compact_revision = rev;
    }
    hist_shrink(h);
}

/* ---- ranges ---- */

static bool range_contains(const store_op *op, const uint8_t *key, size_t len)
{
    int lo = bytes_cmp(key, len, op->key.p, op->key.len);
    if (op->range_end.len == 0)
        return lo == 0;
    if (lo < 0)
        return false;
    if (op->range_end.len == 1 && op->range_end.p[0] == 0)
        return true;
    return bytes_cmp(key, len, op->range_end.p, op->range_end.len) < 0;
}

static store_node *range_first(const store_t *s, const store_op *op)
{
    store_node *n = find_ge(s, op->key.p, op->key.len, NULL);
    return n && range_contains(op, node_key(n), n->key_len) ? n : NULL;
}

static store_node *range_next(const store_op *op, const store_node *n)
{
    store_node *x = n->next[0];
    return x && range_contains(op, node_key(x), x->key_len) ? x : NULL;
}

static uint64_t range_count(const store_t *s, const store_op *op)
{
    uint64_t c = 0;
    for (store_node *n = range_first(s, op); n; n = range_next(op, n))
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

/* ---- command codec ---- */

typedef struct cursor {
    const uint8_t *p, *end;
    int err;
} cursor;

static void cur_fail(cursor *c, int err)
{
    if (!c->err)
        c->err = err;
    c->p = c->end;
}

static uint8_t cur_u8(cursor *c)
{
    if (c->p >= c->end) {
        cur_fail(c, STORE_ERR_TRUNCATED);
        return 0;
    }
    return *c->p++;
}

static uint64_t cur_varint(cursor *c)
{
    uint64_t v = 0;
    size_t avail = (size_t)(c->end - c->p);
    size_t n = varint_get(c->p, avail, &v);
    if (!n) {
        /* a varint that runs off the end is truncated; one that ends is bad */
        bool ended = false;
        for (size_t i = 0; i < avail && i < 10; i++)
            if (!(c->p[i] & 0x80))
                ended = true;
        cur_fail(c, ended || avail >= 10 ? STORE_ERR_INVALID : STORE_ERR_TRUNCATED);
        return 0;
    }
    c->p += n;
    return v;
}

static store_bytes cur_bytes(cursor *c, size_t max)
{
    store_bytes b = {NULL, 0};
    uint64_t len = cur_varint(c);
    if (c->err)
        return b;
    if (len > max) {
        cur_fail(c, STORE_ERR_TOO_LARGE);
        return b;
    }
    if (len > (uint64_t)(c->end - c->p)) {
        cur_fail(c, STORE_ERR_TRUNCATED);
        return b;
    }
    b.p = c->p;
    b.len = (size_t)len;
    c->p += len;
    return b;
}

static void decode_op(cursor *c, uint8_t type, store_op *op)
{
    memset(op, 0, sizeof *op);
    op->type = type;
    op->flags = cur_u8(c);
    op->key = cur_bytes(c, STORE_MAX_KEY);
    switch (type) {
    case STORE_CMD_PUT:
        op->value = cur_bytes(c, STORE_MAX_VALUE);
        op->lease = cur_varint(c);
        break;
    case STORE_CMD_DELETE:
        op->range_end = cur_bytes(c, STORE_MAX_KEY);
        break;
    case STORE_CMD_RANGE:
        op->range_end = cur_bytes(c, STORE_MAX_KEY);
        op->limit = cur_varint(c);
        break;
    default:
        cur_fail(c, STORE_ERR_INVALID);
    }
}

static void decode_compare(cursor *c, store_compare *cmp)
{
    memset(cmp, 0, sizeof *cmp);
    cmp->target = cur_u8(c);
    cmp->result = cur_u8(c);
    cmp->key = cur_bytes(c, STORE_MAX_KEY);
    if (cmp->target == STORE_CMP_VALUE)
        cmp->value = cur_bytes(c, STORE_MAX_VALUE);
    else if (cmp->target != STORE_CMP_EXISTS)
        cmp->number = cur_varint(c);
}

/* The smallest encodings, which bound a count by the bytes left. */
#define MIN_OP_BYTES 5u
#define MIN_COMPARE_BYTES 4u

static size_t cur_count(cursor *c, size_t cap, size_t min_bytes)
{
    uint64_t n = cur_varint(c);
    if (c->err)
        return 0;
    if (n > cap) {
        cur_fail(c, STORE_ERR_TOO_LARGE);
        return 0;
    }
    if (n > (uint64_t)(c->end - c->p) / min_bytes) {
        cur_fail(c, STORE_ERR_TRUNCATED);
        return 0;
    }
    return (size_t)n;
}

/* Decodes a txn body; with NULL arrays it only counts (the first pass). */
static void decode_txn(cursor *c, store_cmd *cmd, store_compare *cmps, store_op *ops)
{
    store_compare cmp_scratch;
    store_op op_scratch;
    cmd->n_compares = cur_count(c, STORE_MAX_COMPARES, MIN_COMPARE_BYTES);
    for (size_t i = 0; i < cmd->n_compares && !c->err; i++)
        decode_compare(c, cmps ? &cmps[i] : &cmp_scratch);
    size_t done = 0;
    for (int branch = 0; branch < 2 && !c->err; branch++) {
        size_t n = cur_count(c, STORE_MAX_TXN_OPS, MIN_OP_BYTES);
        if (branch == 0)
            cmd->n_success = n;
        else
            cmd->n_failure = n;
        for (size_t i = 0; i < n && !c->err; i++) {
            uint8_t type = cur_u8(c);
            decode_op(c, type, ops ? &ops[done + i] : &op_scratch);
        }
        done += n;
    }
}

static bool num_ok(uint64_t v)
{
    return v < STORE_NUM_MAX;
}

static int check_op(const store_op *op)
{
    static const uint8_t allowed[] = {
        [STORE_CMD_PUT] = STORE_FLAG_PREV_KV,
        [STORE_CMD_DELETE] = STORE_FLAG_PREV_KV,
        [STORE_CMD_RANGE] = STORE_FLAG_KEYS_ONLY | STORE_FLAG_COUNT_ONLY,
    };
    if (op->type < STORE_CMD_PUT || op->type > STORE_CMD_RANGE || (op->flags & ~allowed[op->type]))
        return STORE_ERR_INVALID;
    if (op->key.len > STORE_MAX_KEY || op->range_end.len > STORE_MAX_KEY ||
        op->value.len > STORE_MAX_VALUE)
        return STORE_ERR_TOO_LARGE;
    if (op->key.len == 0 || !op->key.p || (op->range_end.len && !op->range_end.p) ||
        (op->value.len && !op->value.p))
        return STORE_ERR_INVALID;
    if (op->type != STORE_CMD_PUT && (op->value.len || op->lease))
        return STORE_ERR_INVALID;
    if (op->type == STORE_CMD_PUT && op->range_end.len)
        return STORE_ERR_INVALID;
    if (op->type != STORE_CMD_RANGE && op->limit)
        return STORE_ERR_INVALID;
    if (!num_ok(op->lease) || !num_ok(op->limit))
        return STORE_ERR_INVALID;
    return STORE_OK;
}

static int check_compare(const store_compare *c)
{
    if (c->target > STORE_CMP_LEASE || c->result > STORE_CMP_NOT_EQUAL)
        return STORE_ERR_INVALID;
    if (c->target == STORE_CMP_EXISTS && c->result != STORE_CMP_EQUAL &&
        c->result != STORE_CMP_NOT_EQUAL)
        return STORE_ERR_INVALID;
    if (c->key.len > STORE_MAX_KEY || c->value.len > STORE_MAX_VALUE)
        return STORE_ERR_TOO_LARGE;
    if (c->key.len == 0 || !c->key.p || (c->value.len && !c->value.p))
        return STORE_ERR_INVALID;
    if (c->target != STORE_CMP_VALUE && c->value.len)
        return STORE_ERR_INVALID;
    if ((c->target == STORE_CMP_VALUE || c->target == STORE_CMP_EXISTS) && c->number)
        return STORE_ERR_INVALID;
    return num_ok(c->number) ? STORE_OK : STORE_ERR_INVALID;
}

/* One branch may not write a key twice: two puts of one key, or a put of a
 * key that a delete of the same branch covers (etcd's rule). */
static int check_branch(const store_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = check_op(&ops[i]);
        if (rc != STORE_OK)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != STORE_CMD_PUT)
            continue;
        for (size_t j = 0; j < n; j++) {
            if (j == i)
                continue;
            const store_op *o = &ops[j];
            if ((o->type == STORE_CMD_PUT && j < i &&
                 bytes_cmp(o->key.p, o->key.len, ops[i].key.p, ops[i].key.len) == 0) ||
                (o->type == STORE_CMD_DELETE && range_contains(o, ops[i].key.p, ops[i].key.len)))
                return STORE_ERR_DUPLICATE_KEY;
        }
    }
    return STORE_OK;
}

int store_cmd_check(const store_cmd *c)
{
    if (!c)
        return STORE_ERR_INVALID;
    switch (c->type) {
    case STORE_CMD_PUT:
    case STORE_CMD_DELETE:
    case STORE_CMD_RANGE:
        return c->op.type == c->type ? check_op(&c->op) : STORE_ERR_INVALID;
    case STORE_CMD_TXN: {
        if (c->n_compares > STORE_MAX_COMPARES || c->n_success > STORE_MAX_TXN_OPS ||
            c->n_failure > STORE_MAX_TXN_OPS)
            return STORE_ERR_TOO_LARGE;
        if ((c->n_compares && !c->compares) || (c->n_success && !c->success) ||
            (c->n_failure && !c->failure))
            return STORE_ERR_INVALID;
        for (size_t i = 0; i < c->n_compares; i++) {
            int rc = check_compare(&c->compares[i]);
            if (rc != STORE_OK)
                return rc;
        }
        int rc = check_branch(c->success, c->n_success);
        return rc != STORE_OK ? rc : check_branch(c->failure, c->n_failure);
    }
    case STORE_CMD_LEASE_GRANT:
        if (!num_ok(c->lease_id) || c->ttl_ms == 0 || c->ttl_ms > STORE_MAX_TTL_MS)
            return STORE_ERR_INVALID;
        return STORE_OK;
    case STORE_CMD_LEASE_REVOKE:
        return c->lease_id && num_ok(c->lease_id) ? STORE_OK : STORE_ERR_INVALID;
    case STORE_CMD_COMPACT:
        return c->revision && num_ok(c->revision) ? STORE_OK : STORE_ERR_INVALID;
    default:
        return STORE_ERR_INVALID;
    }
}

int store_cmd_decode(const uint8_t *buf, size_t len, store_cmd *out)
{
    memset(out, 0, sizeof *out);
    if (!buf && len)
        return STORE_ERR_INVALID;
    if (len > STORE_MAX_COMMAND)
        return STORE_ERR_TOO_LARGE;
    if (len < 2)
        return STORE_ERR_TRUNCATED;
    if (buf[0] != STORE_CMD_VERSION)
        return STORE_ERR_VERSION;
    cursor c = {buf + 2, buf + len, 0};
    store_cmd cmd = {.type = buf[1]};
    switch (cmd.type) {
    case STORE_CMD_PUT:
    case STORE_CMD_DELETE:
    case STORE_CMD_RANGE:
        decode_op(&c, cmd.type, &cmd.op);
        break;
    case STORE_CMD_TXN: {
        decode_txn(&c, &cmd, NULL, NULL);
        if (c.err)
            break;
        size_t n_ops = cmd.n_success + cmd.n_failure;
        size_t size = cmd.n_compares * sizeof(store_compare) + n_ops * sizeof(store_op);
        cmd.mem = malloc(size ? size : 1);
        if (!cmd.mem)
            return STORE_ERR_NOMEM;
        store_compare *cmps = cmd.mem;
        store_op *ops = (store_op *)(cmps + cmd.n_compares);
        c.p = buf + 2;
        decode_txn(&c, &cmd, cmps, ops);
        cmd.compares = cmps;
        cmd.success = ops;
        cmd.failure = ops + cmd.n_success;
        break;
    }
    case STORE_CMD_LEASE_GRANT:
        cmd.lease_id = cur_varint(&c);
        cmd.ttl_ms = cur_varint(&c);
        break;
    case STORE_CMD_LEASE_REVOKE:
        cmd.lease_id = cur_varint(&c);
        break;
    case STORE_CMD_COMPACT:
        cmd.revision = cur_varint(&c);
        break;
    default:
        return STORE_ERR_INVALID;
    }
    int rc = c.err ? c.err : (c.p != c.end ? STORE_ERR_TRAILING : store_cmd_check(&cmd));
    if (rc != STORE_OK) {
        free(cmd.mem);
        return rc;
    }
    *out = cmd;
    return STORE_OK;
}

void store_cmd_release(store_cmd *c)
{
    if (!c)
        return;
    free(c->mem);
    memset(c, 0, sizeof *c);
}

/* A writer that only counts when buf is NULL, so sizes and bytes come from
 * one function. */
typedef struct writer {
    uint8_t *buf;
    size_t n;
} writer;

static void put_u8(writer *w, uint8_t v)
{
    if (w->buf)
        w->buf[w->n] = v;
    w->n++;
}

static void put_varint(writer *w, uint64_t v)
{
    w->n += w->buf ? varint_put(w->buf + w->n, v) : varint_len(v);
}

static void put_bytes(writer *w, const uint8_t *p, size_t len)
{
    put_varint(w, len);
    if (w->buf && len)
        memcpy(w->buf + w->n, p, len);
    w->n += len;
}

static void encode_op_body(writer *w, const store_op *op)
{
    put_u8(w, op->flags);
    put_bytes(w, op->key.p, op->key.len);
    if (op->type == STORE_CMD_PUT) {
        put_bytes(w, op->value.p, op->value.len);
        put_varint(w, op->lease);
    } else {
        put_bytes(w, op->range_end.p, op->range_end.len);
        if (op->type == STORE_CMD_RANGE)
            put_varint(w, op->limit);
    }
}

static void encode_cmd(writer *w, const store_cmd *c)
{
    put_u8(w, STORE_CMD_VERSION);
    put_u8(w, c->type);
    switch (c->type) {
    case STORE_CMD_PUT:
    case STORE_CMD_DELETE:
    case STORE_CMD_RANGE:
        encode_op_body(w, &c->op);
        break;
    case STORE_CMD_TXN:
        put_varint(w, c->n_compares);
        for (size_t i = 0; i < c->n_compares; i++) {
            const store_compare *cmp = &c->compares[i];
            put_u8(w, cmp->target);
            put_u8(w, cmp->result);
            put_bytes(w, cmp->key.p, cmp->key.len);
            if (cmp->target == STORE_CMP_VALUE)
                put_bytes(w, cmp->value.p, cmp->value.len);
            else if (cmp->target != STORE_CMP_EXISTS)
                put_varint(w, cmp->number);
        }
        for (int branch = 0; branch < 2; branch++) {
            const store_op *ops = branch ? c->failure : c->success;
            size_t n = branch ? c->n_failure : c->n_success;
            put_varint(w, n);
            for (size_t i = 0; i < n; i++) {
                put_u8(w, ops[i].type);
                encode_op_body(w, &ops[i]);
            }
        }
        break;
    case STORE_CMD_LEASE_GRANT:
        put_varint(w, c->lease_id);
        put_varint(w, c->ttl_ms);
        break;
    case STORE_CMD_LEASE_REVOKE:
        put_varint(w, c->lease_id);
        break;
    default: /* COMPACT */
        put_varint(w, c->revision);
        break;
    }
}

size_t store_cmd_encoded_size(const store_cmd *c)
{
    writer w = {NULL, 0};
    encode_cmd(&w, c);
    return w.n;
}

int store_cmd_encode(const store_cmd *c, uint8_t *buf, size_t cap, size_t *len)
{
    int rc = store_cmd_check(c);
    if (rc != STORE_OK)
        return rc;
    size_t need = store_cmd_encoded_size(c);
    if (need > STORE_MAX_COMMAND)
        return STORE_ERR_TOO_LARGE;
    if (need > cap || !buf)
        return STORE_ERR_TRUNCATED;
    writer w = {buf, 0};
    encode_cmd(&w, c);
    *len = w.n;
    return STORE_OK;
}

/* ---- results ---- */

/* One block: this header, the op results, the kvs and the record
 * references behind them. */
typedef struct result_mem {
    store_op_result *ops;
    store_kv *kvs;
    store_rec **refs;
    size_t n_kvs, cap_kvs;
} result_mem;

static result_mem *result_mem_new(size_t n_ops, size_t n_kvs)
{
    size_t size = sizeof(result_mem) + n_ops * sizeof(store_op_result) +
                  n_kvs * (sizeof(store_kv) + sizeof(store_rec *));
    result_mem *m = malloc(size);
    if (!m)
        return NULL;
    m->ops = (store_op_result *)(m + 1);
    m->kvs = (store_kv *)(m->ops + n_ops);
    m->refs = (store_rec **)(m->kvs + n_kvs);
    m->n_kvs = 0;
    m->cap_kvs = n_kvs;
    memset(m->ops, 0, n_ops * sizeof *m->ops);
    return m;
}

static void result_add_kv(result_mem *m, store_op_result *r, store_rec *rec, bool keys_only)
{
    assert(m->n_kvs < m->cap_kvs);
    if (r->n_kvs == 0)
        r->kvs = &m->kvs[m->n_kvs];
    store_kv kv = rec_kv(rec);
    if (keys_only)
        kv.value_len = 0;
    m->kvs[m->n_kvs] = kv;
    m->refs[m->n_kvs] = rec_ref(rec);
    m->n_kvs++;
    r->n_kvs++;
}

void store_result_release(store_result *r)
{
    if (!r)
        return;
    result_mem *m = r->mem;
    if (m) {
        for (size_t i = 0; i < m->n_kvs; i++)
            rec_unref(m->refs[i]);
        free(m);
    }
    memset(r, 0, sizeof *r);
}

/* ---- apply: transactions (PUT, DELETE and RANGE are one-op txns) ---- */

static bool compare_holds(const store_t *s, const store_compare *c)
{
    const store_node *n = find_eq(s, c->key.p, c->key.len);
    const store_rec *r = n ? n->rec : NULL;
    int cmp;
    switch (c->target) {
    case STORE_CMP_EXISTS:
        return (r != NULL) == (c->result == STORE_CMP_EQUAL);
    case STORE_CMP_VALUE:
        if (!r)
            return false;
        cmp = bytes_cmp(rec_value(r), r->value_len, c->value.p, c->value.len);
        break;
    default: {
        uint64_t v = 0;
        if (r)
            v = c->target == STORE_CMP_VERSION  ? r->version
                : c->target == STORE_CMP_CREATE ? r->create_revision
                : c->target == STORE_CMP_MOD    ? r->mod_revision
                                                : r->lease;
        cmp = (v > c->number) - (v < c->number);
        break;
    }
    }
    switch (c->result) {
    case STORE_CMP_EQUAL:
        return cmp == 0;
    case STORE_CMP_GREATER:
        return cmp > 0;
    case STORE_CMP_LESS:
        return cmp < 0;
    default:
        return cmp != 0;
    }
}

/* What PREPARE allocated for the chosen branch. */
typedef struct txn_prep {
    store_rec *recs[STORE_MAX_TXN_OPS];   /* the new version of each put */
    store_node *nodes[STORE_MAX_TXN_OPS]; /* a node for each put of an absent key */
    result_mem *mem;
} txn_prep;

static void txn_prep_free(txn_prep *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(p->recs[i]);
        free(p->nodes[i]);
    }
    free(p->mem);
}

static int txn_prepare(store_t *s, const store_op *ops, size_t n, txn_prep *p)
{
    memset(p, 0, sizeof *p);
    uint64_t n_puts = 0, max_kvs = 0, max_events = 0;
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != STORE_CMD_PUT)
            continue;
        if (ops[i].lease && !lease_find(s, ops[i].lease))
            return STORE_ERR_LEASE_NOT_FOUND;
        n_puts++;
    }
    for (size_t i = 0; i < n; i++) {
        const store_op *op = &ops[i];
        bool prev = op->flags & STORE_FLAG_PREV_KV;
        if (op->type == STORE_CMD_PUT) {
            max_events++;
            max_kvs += prev;
        } else if (op->type == STORE_CMD_DELETE) {
            uint64_t c = range_count(s, op);
            max_events += c;
            max_kvs += prev ? c : 0;
        } else if (!(op->flags & STORE_FLAG_COUNT_ONLY)) {
            /* puts of this txn can add keys to the range before it runs */
            uint64_t c = range_count(s, op) + n_puts;
            max_kvs += op->limit && op->limit < c ? op->limit : c;
        }
    }
    if (max_kvs > MAX_RESULT_KVS)
        return STORE_ERR_TOO_LARGE;
    if (max_events && s->revision + 1 >= STORE_NUM_MAX)
        return STORE_ERR_TOO_LARGE;
    p->mem = result_mem_new(n, (size_t)max_kvs);
    if (!p->mem)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        const store_op *op = &ops[i];
        if (op->type != STORE_CMD_PUT)
            continue;
        p->recs[i] = rec_new(op->key.p, op->key.len, op->value.p, op->value.len);
        if (!p->recs[i])
            goto nomem;
        if (!find_eq(s, op->key.p, op->key.len) &&
            !(p->nodes[i] = node_new(s, op->key.p, op->key.len)))
            goto nomem;
    }
    if (hist_reserve(&s->hist, max_events) != STORE_OK)
        goto nomem;
    return STORE_OK;
nomem:
    txn_prep_free(p, n);
    return STORE_ERR_NOMEM;
}

static void commit_put(store_t *s, const store_op *op, uint64_t rev, store_rec *r,
                       store_node *fresh, result_mem *m, store_op_result *res)
{
    store_node *update[LEVELS];
    store_node *n = find_ge(s, op->key.p, op->key.len, update);
    bool exists = n && node_cmp(n, op->key.p, op->key.len) == 0;
    assert(exists == (fresh == NULL)); /* no txn writes a key twice */
    r->mod_revision = rev;
    r->lease = op->lease;
    store_rec *prev = NULL;
    if (exists) {
        prev = n->rec;
        r->create_revision = prev->create_revision;
        r->version = prev->version + 1;
        if (op->flags & STORE_FLAG_PREV_KV)
            result_add_kv(m, res, prev, false);
        lease_detach(s, n);
        n->rec = r;
        lease_attach(s, n);
    } else {
        r->create_revision = rev;
        r->version = 1;
        n = fresh;
        n->rec = r;
        list_insert(s, n, update);
        lease_attach(s, n);
    }
    if (prev && !s->cfg.history_prev_kv) {
        rec_unref(prev);
        prev = NULL;
    }
    hist_push(&s->hist, (hist_event){rev, STORE_EVENT_PUT, rec_ref(r), prev});
}

/* Unlinks n and hands its record to the history. */
static void delete_node(store_t *s, store_node *n, uint64_t rev)
{
    lease_detach(s, n);
    list_remove(s, n);
    hist_push(&s->hist, (hist_event){rev, STORE_EVENT_DELETE, n->rec, NULL});
    free(n);
}

static int txn_apply(store_t *s, const store_cmd *c, store_result *out)
{
    bool ok = true;
    for (size_t i = 0; i < c->n_compares && ok; i++)
        ok = compare_holds(s, &c->compares[i]);
    const store_op *ops = ok ? c->success : c->failure;
    size_t n = ok ? c->n_success : c->n_failure;
    txn_prep p;
    int rc = txn_prepare(s, ops, n, &p);
    if (rc != STORE_OK)
        return rc;
    /* COMMIT: nothing below can fail. */
    uint64_t rev = s->revision + 1;
    bool changed = false;
    result_mem *m = p.mem;
    for (size_t i = 0; i < n; i++) {
        const store_op *op = &ops[i];
        store_op_result *res = &m->ops[i];
        res->type = op->type;
        if (op->type == STORE_CMD_PUT) {
            commit_put(s, op, rev, p.recs[i], p.nodes[i], m, res);
            changed = true;
        } else if (op->type == STORE_CMD_DELETE) {
            for (store_node *x = range_first(s, op), *next; x; x = next) {
                next = range_next(op, x);
                if (op->flags & STORE_FLAG_PREV_KV)
                    result_add_kv(m, res, x->rec, false);
                delete_node(s, x, rev);
                res->count++;
                changed = true;
            }
        } else {
            bool want = !(op->flags & STORE_FLAG_COUNT_ONLY);
            for (store_node *x = range_first(s, op); x; x = range_next(op, x)) {
                if (want && (!op->limit || res->n_kvs < op->limit))
                    result_add_kv(m, res, x->rec, op->flags & STORE_FLAG_KEYS_ONLY);
                res->count++;
            }
            res->more = res->count > res->n_kvs && want;
        }
    }
    if (changed) {
        s->revision = rev;
        hist_evict(s);
    }
    out->succeeded = ok;
    out->ops = m->ops;
    out->n_ops = n;
    out->mem = m;
    return STORE_OK;
}

/* ---- apply: leases and compaction ---- */

static int lease_grant(store_t *s, const store_cmd *c, store_result *out)
{
    uint64_t id = c->lease_id;
    if (id == 0) {
        id = s->next_lease_id;
        while (id < STORE_NUM_MAX && lease_find(s, id))
            id++;
        if (id >= STORE_NUM_MAX)
            return STORE_ERR_TOO_LARGE;
    } else if (lease_find(s, id)) {
        out->lease_id = id;
        return STORE_ERR_LEASE_EXISTS;
    }
    if (leases_reserve(s, 1) != STORE_OK)
        return STORE_ERR_NOMEM;
    size_t at = lease_lower(s, id);
    memmove(&s->leases[at + 1], &s->leases[at], (s->n_leases - at) * sizeof *s->leases);
    s->leases[at] = (store_lease){id, c->ttl_ms, NULL, 0};
    s->n_leases++;
    if (c->lease_id == 0)
        s->next_lease_id = id + 1;
    out->lease_id = id;
    out->ttl_ms = c->ttl_ms;
    return STORE_OK;
}

static int cmp_node_key(const void *a, const void *b)
{
    const store_node *x = *(store_node *const *)a, *y = *(store_node *const *)b;
    return bytes_cmp(node_key(x), x->key_len, node_key(y), y->key_len);
}

/* Deletes the lease's keys in key order, all in one revision. */
static int lease_revoke(store_t *s, const store_cmd *c, store_result *out)
{
    out->lease_id = c->lease_id;
    store_lease *l = lease_find(s, c->lease_id);
    if (!l)
        return STORE_ERR_LEASE_NOT_FOUND;
    size_t k = l->n_keys;
    if (k && s->revision + 1 >= STORE_NUM_MAX)
        return STORE_ERR_TOO_LARGE;
    store_node **nodes = malloc((k ? k : 1) * sizeof *nodes);
    if (!nodes || hist_reserve(&s->hist, k) != STORE_OK) {
        free(nodes);
        return STORE_ERR_NOMEM;
    }
    size_t i = 0;
    for (store_node *n = l->keys; n; n = n->lease_next)
        nodes[i++] = n;
    qsort(nodes, k, sizeof *nodes, cmp_node_key);
    uint64_t rev = s->revision + 1;
    for (i = 0; i < k; i++)
        delete_node(s, nodes[i], rev);
    free(nodes);
    size_t at = lease_lower(s, c->lease_id);
    memmove(&s->leases[at], &s->leases[at + 1], (s->n_leases - at - 1) * sizeof *s->leases);
    s->n_leases--;
    out->deleted = k;
    if (k) {
        s->revision = rev;
        hist_evict(s);
    }
    return STORE_OK;
}

static int compact(store_t *s, const store_cmd *c, store_result *out)
{
    out->compact_revision = s->compact_revision;
    if (c->revision > s->revision)
        return STORE_ERR_FUTURE_REV;
    if (c->revision <= s->compact_revision)
        return STORE_ERR_COMPACTED;
    while (s->hist.n && hist_at(&s->hist, 0)->revision <= c->revision)
        hist_pop(&s->hist);
    hist_shrink(&s->hist);
    s->compact_revision = c->revision;
    out->compact_revision = c->revision;
    return STORE_OK;
}

static int apply_checked(store_t *s, const store_cmd *c, store_result *out)
{
    int rc;
    out->type = c->type;
    switch (c->type) {
    case STORE_CMD_TXN:
        rc = txn_apply(s, c, out);
        break;
    case STORE_CMD_LEASE_GRANT:
        rc = lease_grant(s, c, out);
        break;
    case STORE_CMD_LEASE_REVOKE:
        rc = lease_revoke(s, c, out);
        break;
    case STORE_CMD_COMPACT:
        rc = compact(s, c, out);
        break;
    default: {
        store_cmd txn = {.type = STORE_CMD_TXN, .success = &c->op, .n_success = 1};
        rc = txn_apply(s, &txn, out);
        out->succeeded = false;
        break;
    }
    }
    out->revision = s->revision;
    return rc;
}

int store_apply_cmd(store_t *s, const store_cmd *c, store_result *out)
{
    memset(out, 0, sizeof *out);
    int rc = store_cmd_check(c);
    if (rc != STORE_OK) {
        out->revision = s->revision;
        return rc;
    }
    return apply_checked(s, c, out);
}

int store_apply(store_t *s, const uint8_t *buf, size_t len, store_result *out)
{
    memset(out, 0, sizeof *out);
    store_cmd c;
    int rc = store_cmd_decode(buf, len, &c);
    if (rc != STORE_OK) {
        out->revision = s->revision;
        return rc;
    }
    rc = apply_checked(s, &c, out);
    store_cmd_release(&c);
    return rc;
}

/* ---- reads ---- */

int store_range(const store_t *s, const store_op *op, store_kv_fn fn, void *ctx, uint64_t *count,
                bool *more)
{
    *count = 0;
    *more = false;
    if (op->type != STORE_CMD_RANGE)
        return STORE_ERR_INVALID;
    int rc = check_op(op);
    if (rc != STORE_OK)
        return rc;
    bool want = !(op->flags & STORE_FLAG_COUNT_ONLY);
    uint64_t given = 0;
    for (store_node *x = range_first(s, op); x; x = range_next(op, x)) {
        if (want && (!op->limit || given < op->limit)) {
            store_kv kv = rec_kv(x->rec);
            if (op->flags & STORE_FLAG_KEYS_ONLY)
                kv.value_len = 0;
            rc = fn(ctx, &kv);
            if (rc)
                return rc;
            given++;
        }
        (*count)++;
    }
    *more = want && *count > given;
    return STORE_OK;
}

static store_event event_view(const hist_event *e, bool prev_kv)
{
    store_event ev = {.type = e->type, .revision = e->revision};
    if (e->type == STORE_EVENT_PUT) {
        ev.kv = rec_kv(e->rec);
        if (e->prev) {
            ev.has_prev = true;
            ev.prev = rec_kv(e->prev);
        }
    } else {
        ev.kv = (store_kv){.key = rec_key(e->rec),
                           .key_len = e->rec->key_len,
                           .value = rec_value(e->rec),
                           .mod_revision = e->revision};
        if (prev_kv) {
            ev.has_prev = true;
            ev.prev = rec_kv(e->rec);
        }
    }
    return ev;
}

int store_events_since(const store_t *s, uint64_t from, size_t limit, store_event_fn fn, void *ctx,
                       uint64_t *next)
{
    const history *h = &s->hist;
    *next = from;
    if (from == 0)
        return STORE_ERR_INVALID;
    if (from <= s->compact_revision)
        return STORE_ERR_COMPACTED;
    size_t lo = 0, hi = h->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (hist_at(h, mid)->revision < from)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t given = 0;
    for (size_t i = lo; i < h->n;) {
        uint64_t rev = hist_at(h, i)->revision;
        size_t k = 0;
        while (i + k < h->n && hist_at(h, i + k)->revision == rev)
            k++;
        if (limit && given && given + k > limit) {
            *next = rev;
            return STORE_OK;
        }
        for (size_t j = 0; j < k; j++) {
            store_event ev = event_view(hist_at(h, i + j), s->cfg.history_prev_kv);
            int rc = fn(ctx, &ev);
            if (rc) {
                *next = rev;
                return rc;
            }
        }
        given += k;
        i += k;
    }
    *next = from > s->revision + 1 ? from : s->revision + 1;
    return STORE_OK;
}

static int cmp_kv_key(const void *a, const void *b)
{
    const store_kv *x = a, *y = b;
    return bytes_cmp(x->key, x->key_len, y->key, y->key_len);
}

int store_leases(const store_t *s, store_lease_fn fn, void *ctx)
{
    size_t most = 0;
    for (size_t i = 0; i < s->n_leases; i++)
        if (s->leases[i].n_keys > most)
            most = s->leases[i].n_keys;
    store_kv *kvs = malloc((most ? most : 1) * sizeof *kvs);
    if (!kvs)
        return STORE_ERR_NOMEM;
    int rc = STORE_OK;
    for (size_t i = 0; i < s->n_leases && rc == STORE_OK; i++) {
        const store_lease *l = &s->leases[i];
        size_t k = 0;
        for (const store_node *n = l->keys; n; n = n->lease_next)
            kvs[k++] = rec_kv(n->rec);
        qsort(kvs, k, sizeof *kvs, cmp_kv_key);
        rc = fn(ctx, l->id, l->ttl_ms, kvs, k);
    }
    free(kvs);
    return rc;
}

bool store_lease_get(const store_t *s, uint64_t id, uint64_t *ttl_ms, size_t *n_keys)
{
    const store_lease *l = lease_find(s, id);
    if (!l)
        return false;
    *ttl_ms = l->ttl_ms;
    *n_keys = l->n_keys;
    return true;
}

void store_stats_get(const store_t *s, store_stats *st)
{
    *st = (store_stats){.revision = s->revision,
                        .compact_revision = s->compact_revision,
                        .next_lease_id = s->next_lease_id,
                        .keys = s->n_keys,
                        .leases = s->n_leases,
                        .events = s->hist.n,
                        .history_bytes = s->hist.bytes,
                        .config = s->cfg};
}

uint64_t store_revision(const store_t *s)
{
    return s->revision;
}

uint64_t store_compact_revision(const store_t *s)
{
    return s->compact_revision;
}

/* ---- lifetime ---- */

void store_config_init(store_config *cfg)
{
    *cfg = (store_config){
        .history_max_events = 10000, .history_max_bytes = 16u << 20, .history_prev_kv = true};
}

static bool config_ok(const store_config *cfg)
{
    return cfg->history_max_events <= STORE_MAX_HISTORY_EVENTS &&
           cfg->history_max_bytes <= STORE_MAX_HISTORY_BYTES;
}

static store_t *store_alloc(const store_config *cfg, int *err)
{
    store_t *s = calloc(1, sizeof *s);
    store_node *head = malloc(sizeof *head + LEVELS * sizeof head->next[0]);
    if (!s || !head) {
        free(s);
        free(head);
        if (err)
            *err = STORE_ERR_NOMEM;
        return NULL;
    }
    memset(head, 0, sizeof *head + LEVELS * sizeof head->next[0]);
    head->level = LEVELS;
    s->head = head;
    s->level = 1;
    s->cfg = *cfg;
    s->next_lease_id = 1;
    s->rng = 0x5ca1ab1e5eed5eedULL;
    return s;
}

store_t *store_new(const store_config *cfg, int *err)
{
    store_config defaults;
    if (!cfg) {
        store_config_init(&defaults);
        cfg = &defaults;
    }
    if (!config_ok(cfg)) {
        if (err)
            *err = STORE_ERR_INVALID;
        return NULL;
    }
    return store_alloc(cfg, err);
}

void store_free(store_t *s)
{
    if (!s)
        return;
    for (store_node *n = s->head->next[0], *next; n; n = next) {
        next = n->next[0];
        rec_unref(n->rec);
        free(n);
    }
    free(s->head);
    while (s->hist.n)
        hist_pop(&s->hist);
    free(s->hist.ev);
    free(s->leases);
    free(s);
}

const char *store_strerror(int err)
{
    static const char *names[] = {"ok",
                                  "out of memory",
                                  "invalid",
                                  "truncated",
                                  "trailing bytes",
                                  "unknown version",
                                  "too large",
                                  "duplicate key in a txn branch",
                                  "lease not found",
                                  "lease exists",
                                  "compacted",
                                  "future revision",
                                  "corrupt snapshot"};
    size_t count = sizeof names / sizeof *names;
    return err <= 0 && err > -(int)count ? names[-err] : "unknown error";
}

/* ---- snapshots ---- */

static void snap_rec(writer *w, const store_rec *r)
{
    put_bytes(w, rec_key(r), r->key_len);
    put_bytes(w, rec_value(r), r->value_len);
    put_varint(w, r->create_revision);
    put_varint(w, r->mod_revision);
    put_varint(w, r->version);
    put_varint(w, r->lease);
}

static void snap_write(writer *w, const store_t *s)
{
    for (size_t i = 0; i < sizeof snapshot_magic; i++)
        put_u8(w, snapshot_magic[i]);
    put_u8(w, STORE_SNAPSHOT_VERSION);
    put_varint(w, s->cfg.history_max_events);
    put_varint(w, s->cfg.history_max_bytes);
    put_u8(w, s->cfg.history_prev_kv);
    put_varint(w, s->revision);
    put_varint(w, s->compact_revision);
    put_varint(w, s->next_lease_id);
    put_varint(w, s->n_leases);
    for (size_t i = 0; i < s->n_leases; i++) {
        put_varint(w, s->leases[i].id);
        put_varint(w, s->leases[i].ttl_ms);
    }
    put_varint(w, s->n_keys);
    for (const store_node *n = s->head->next[0]; n; n = n->next[0])
        snap_rec(w, n->rec);
    put_varint(w, s->hist.n);
    for (size_t i = 0; i < s->hist.n; i++) {
        const hist_event *e = hist_at(&s->hist, i);
        put_u8(w, e->type);
        put_varint(w, e->revision);
        snap_rec(w, e->rec);
        if (e->type == STORE_EVENT_PUT) {
            put_u8(w, e->prev != NULL);
            if (e->prev)
                snap_rec(w, e->prev);
        }
    }
}

size_t store_snapshot_size(const store_t *s)
{
    writer w = {NULL, 0};
    snap_write(&w, s);
    return w.n + CHECKSUM_BYTES;
}

int store_snapshot_write(const store_t *s, uint8_t *buf, size_t cap, size_t *len)
{
    size_t need = store_snapshot_size(s);
    if (!buf || cap < need)
        return STORE_ERR_TOO_LARGE;
    writer w = {buf, 0};
    snap_write(&w, s);
    crypto_generichash(buf + w.n, CHECKSUM_BYTES, buf, w.n, NULL, 0);
    *len = need;
    return STORE_OK;
}

/* Reads a record and checks what holds for every version of every key. */
static store_rec *restore_rec(cursor *c, uint64_t revision)
{
    store_bytes key = cur_bytes(c, STORE_MAX_KEY);
    store_bytes value = cur_bytes(c, STORE_MAX_VALUE);
    uint64_t create = cur_varint(c), mod = cur_varint(c), version = cur_varint(c),
             lease = cur_varint(c);
    if (c->err)
        return NULL;
    if (key.len == 0 || create == 0 || create > mod || mod > revision || version == 0 ||
        version > mod - create + 1 || !num_ok(lease)) {
        cur_fail(c, STORE_ERR_CORRUPT);
        return NULL;
    }
    store_rec *r = rec_new(key.p, key.len, value.p, value.len);
    if (!r) {
        cur_fail(c, STORE_ERR_NOMEM);
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

static void restore_leases(cursor *c, store_t *s)
{
    size_t n = cur_count(c, SIZE_MAX / sizeof(store_lease), 2);
    if (c->err || leases_reserve(s, n) != STORE_OK) {
        cur_fail(c, STORE_ERR_NOMEM);
        return;
    }
    for (size_t i = 0; i < n && !c->err; i++) {
        uint64_t id = cur_varint(c), ttl = cur_varint(c);
        if (id == 0 || !num_ok(id) || ttl == 0 || ttl > STORE_MAX_TTL_MS ||
            (i && id <= s->leases[i - 1].id))
            cur_fail(c, STORE_ERR_CORRUPT);
        s->leases[i] = (store_lease){id, ttl, NULL, 0};
        s->n_leases = i + 1;
    }
}

/* Keys come sorted, so each node is appended after the previous one. */
static void restore_keys(cursor *c, store_t *s)
{
    size_t n = cur_count(c, SIZE_MAX, 6);
    store_node *tail[LEVELS];
    for (uint32_t i = 0; i < LEVELS; i++)
        tail[i] = s->head;
    const store_rec *last = NULL;
    for (size_t i = 0; i < n && !c->err; i++) {
        store_rec *r = restore_rec(c, s->revision);
        if (!r)
            return;
        if ((last && bytes_cmp(rec_key(last), last->key_len, rec_key(r), r->key_len) >= 0) ||
            (r->lease && !lease_find(s, r->lease))) {
            rec_unref(r);
            cur_fail(c, STORE_ERR_CORRUPT);
            return;
        }
        store_node *node = node_new(s, rec_key(r), r->key_len);
        if (!node) {
            rec_unref(r);
            cur_fail(c, STORE_ERR_NOMEM);
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
        lease_attach(s, node);
        last = r;
    }
}

static void restore_history(cursor *c, store_t *s)
{
    size_t n = cur_count(c, s->cfg.history_max_events, 8);
    if (c->err)
        return;
    if (hist_reserve(&s->hist, n) != STORE_OK) {
        cur_fail(c, STORE_ERR_NOMEM);
        return;
    }
    uint64_t last = s->compact_revision + 1;
    for (size_t i = 0; i < n && !c->err; i++) {
        uint8_t type = cur_u8(c);
        uint64_t rev = cur_varint(c);
        if (c->err)
            return;
        if ((type != STORE_EVENT_PUT && type != STORE_EVENT_DELETE) || rev < last ||
            rev > s->revision) {
            cur_fail(c, STORE_ERR_CORRUPT);
            return;
        }
        last = rev;
        hist_event e = {rev, type, restore_rec(c, s->revision), NULL};
        if (!e.rec)
            return;
        hist_push(&s->hist, e);
        bool bad =
            type == STORE_EVENT_PUT ? e.rec->mod_revision != rev : e.rec->mod_revision >= rev;
        if (type == STORE_EVENT_PUT) {
            uint8_t has_prev = cur_u8(c);
            if (has_prev > 1 || (has_prev && !s->cfg.history_prev_kv))
                bad = true;
            if (has_prev && !bad && !c->err) {
                store_rec *prev = restore_rec(c, s->revision);
                if (!prev)
                    return;
                hist_event *at = hist_at(&s->hist, s->hist.n - 1);
                at->prev = prev;
                s->hist.bytes += rec_bytes(prev);
                bad = prev->mod_revision >= rev ||
                      bytes_cmp(rec_key(prev), prev->key_len, rec_key(e.rec), e.rec->key_len);
            }
            /* share the live key's record when it is this very version */
            const store_node *live = find_eq(s, rec_key(e.rec), e.rec->key_len);
            hist_event *at = hist_at(&s->hist, s->hist.n - 1);
            if (!bad && live && live->rec != at->rec && same_rec(live->rec, at->rec)) {
                rec_unref(at->rec);
                at->rec = rec_ref(live->rec);
            }
        }
        if (bad)
            cur_fail(c, STORE_ERR_CORRUPT);
    }
    if (!c->err && s->hist.bytes > s->cfg.history_max_bytes)
        cur_fail(c, STORE_ERR_CORRUPT);
}

store_t *store_restore(const uint8_t *buf, size_t len, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = STORE_ERR_CORRUPT;
    if (!buf || len < sizeof snapshot_magic + 1 + CHECKSUM_BYTES ||
        memcmp(buf, snapshot_magic, sizeof snapshot_magic) != 0)
        return NULL;
    if (buf[sizeof snapshot_magic] != STORE_SNAPSHOT_VERSION) {
        *err = STORE_ERR_VERSION;
        return NULL;
    }
    size_t body = len - CHECKSUM_BYTES;
    uint8_t sum[CHECKSUM_BYTES];
    crypto_generichash(sum, sizeof sum, buf, body, NULL, 0);
    if (memcmp(sum, buf + body, sizeof sum) != 0)
        return NULL;
    cursor c = {buf + sizeof snapshot_magic + 1, buf + body, 0};
    store_config cfg;
    uint64_t max_events = cur_varint(&c);
    cfg.history_max_bytes = cur_varint(&c);
    uint8_t prev_kv = cur_u8(&c);
    cfg.history_max_events = (uint32_t)max_events;
    cfg.history_prev_kv = prev_kv == 1;
    if (c.err || prev_kv > 1 || max_events > STORE_MAX_HISTORY_EVENTS || !config_ok(&cfg)) {
        *err = c.err == STORE_ERR_NOMEM ? c.err : STORE_ERR_CORRUPT;
        return NULL;
    }
    store_t *s = store_alloc(&cfg, err);
    if (!s)
        return NULL;
    s->revision = cur_varint(&c);
    s->compact_revision = cur_varint(&c);
    s->next_lease_id = cur_varint(&c);
    if (!c.err && (!num_ok(s->revision) || s->compact_revision > s->revision ||
                   s->next_lease_id == 0 || !num_ok(s->next_lease_id)))
        cur_fail(&c, STORE_ERR_CORRUPT);
    if (!c.err)
        restore_leases(&c, s);
    if (!c.err)
        restore_keys(&c, s);
    if (!c.err)
        restore_history(&c, s);
    if (!c.err && c.p != c.end)
        cur_fail(&c, STORE_ERR_CORRUPT);
    if (c.err) {
        *err = c.err == STORE_ERR_NOMEM ? c.err : STORE_ERR_CORRUPT;
        store_free(s);
        return NULL;
    }
    *err = STORE_OK;
    return s;
}
