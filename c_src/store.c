/* store.c -- the replicated store's state machine: apply (transactions,
 * leases, compaction), reads and lifetime. See store.h for the contract and
 * docs/store.md for the formats. The index it changes is store_index.c, the
 * command codec store_codec.c, snapshots store_snapshot.c.
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
 *     too, so both formats share one decoder.
 *   - Test builds (-DSYNOD_STORE_CHECK) walk every invariant of the index
 *     (store_check) after every apply. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "store_codec.h"
#include "store_index.h"

/* Deterministic cap on the keys one command may return (TOO_LARGE above). */
#define MAX_RESULT_KVS ((uint64_t)1 << 20)

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
    store_kv kv = store_rec_kv(rec);
    if (keys_only)
        kv.value_len = 0;
    m->kvs[m->n_kvs] = kv;
    m->refs[m->n_kvs] = store_rec_ref(rec);
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
            store_rec_unref(m->refs[i]);
        free(m);
    }
    memset(r, 0, sizeof *r);
}

/* ---- apply: transactions (PUT, DELETE and RANGE are one-op txns) ---- */

/* The keys in the compare's range, counted up to number + 1: enough to
 * decide every operator against number, and bounded by the compare. */
static uint64_t compare_count(const store_t *s, const store_compare *c)
{
    store_op range = {.type = STORE_CMD_RANGE, .key = c->key, .range_end = c->range_end};
    uint64_t n = 0;
    for (store_node *x = store_range_first(s, &range); x && n <= c->number;
         x = store_range_next(&range, x))
        n++;
    return n;
}

static bool compare_holds(const store_t *s, const store_compare *c)
{
    if (c->target == STORE_CMP_COUNT) {
        uint64_t n = compare_count(s, c);
        int cmp = (n > c->number) - (n < c->number);
        return c->result == STORE_CMP_EQUAL     ? cmp == 0
               : c->result == STORE_CMP_GREATER ? cmp > 0
               : c->result == STORE_CMP_LESS    ? cmp < 0
                                                : cmp != 0;
    }
    const store_node *n = store_find_eq(s, c->key.p, c->key.len);
    const store_rec *r = n ? n->rec : NULL;
    int cmp;
    switch (c->target) {
    case STORE_CMP_EXISTS:
        return (r != NULL) == (c->result == STORE_CMP_EQUAL);
    case STORE_CMP_VALUE:
        if (!r)
            return false;
        cmp = store_bytes_cmp(store_rec_value(r), r->value_len, c->value.p, c->value.len);
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
        if (ops[i].lease && !store_lease_find(s, ops[i].lease))
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
            uint64_t c = op->flags & STORE_FLAG_FIRST ? store_range_first(s, op) != NULL
                                                      : store_range_count(s, op);
            max_events += c;
            max_kvs += prev ? c : 0;
        } else if (!(op->flags & STORE_FLAG_COUNT_ONLY)) {
            /* puts of this txn can add keys to the range before it runs */
            uint64_t c = store_range_count(s, op) + n_puts;
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
        p->recs[i] = store_rec_new(op->key.p, op->key.len, op->value.p, op->value.len);
        if (!p->recs[i])
            goto nomem;
        if (!store_find_eq(s, op->key.p, op->key.len) &&
            !(p->nodes[i] = store_node_new(s, op->key.p, op->key.len)))
            goto nomem;
    }
    if (store_hist_reserve(&s->hist, max_events) != STORE_OK)
        goto nomem;
    return STORE_OK;
nomem:
    txn_prep_free(p, n);
    return STORE_ERR_NOMEM;
}

static void commit_put(store_t *s, const store_op *op, uint64_t rev, store_rec *r,
                       store_node *fresh, result_mem *m, store_op_result *res)
{
    store_node *update[STORE_LEVELS];
    store_node *n = store_find_ge(s, op->key.p, op->key.len, update);
    bool exists = n && store_node_cmp(n, op->key.p, op->key.len) == 0;
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
        store_lease_detach(s, n);
        n->rec = r;
        store_lease_attach(s, n);
    } else {
        r->create_revision = rev;
        r->version = 1;
        n = fresh;
        n->rec = r;
        store_list_insert(s, n, update);
        store_lease_attach(s, n);
    }
    if (prev && !s->cfg.history_prev_kv) {
        store_rec_unref(prev);
        prev = NULL;
    }
    store_hist_push(&s->hist, (store_hist_event){rev, STORE_EVENT_PUT, store_rec_ref(r), prev});
}

/* Unlinks n and hands its record to the history. */
static void delete_node(store_t *s, store_node *n, uint64_t rev)
{
    store_lease_detach(s, n);
    store_list_remove(s, n);
    store_hist_push(&s->hist, (store_hist_event){rev, STORE_EVENT_DELETE, n->rec, NULL});
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
            for (store_node *x = store_range_first(s, op), *next; x; x = next) {
                next = store_range_next(op, x);
                if (op->flags & STORE_FLAG_PREV_KV)
                    result_add_kv(m, res, x->rec, false);
                delete_node(s, x, rev);
                res->count++;
                changed = true;
                if (op->flags & STORE_FLAG_FIRST)
                    break;
            }
        } else {
            bool want = !(op->flags & STORE_FLAG_COUNT_ONLY);
            for (store_node *x = store_range_first(s, op); x; x = store_range_next(op, x)) {
                if (want && (!op->limit || res->n_kvs < op->limit))
                    result_add_kv(m, res, x->rec, op->flags & STORE_FLAG_KEYS_ONLY);
                res->count++;
            }
            res->more = res->count > res->n_kvs && want;
        }
    }
    if (changed) {
        s->revision = rev;
        store_hist_evict(s);
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
        while (id < STORE_NUM_MAX && store_lease_find(s, id))
            id++;
        if (id >= STORE_NUM_MAX)
            return STORE_ERR_TOO_LARGE;
    } else if (store_lease_find(s, id)) {
        out->lease_id = id;
        return STORE_ERR_LEASE_EXISTS;
    }
    if (store_leases_reserve(s, 1) != STORE_OK)
        return STORE_ERR_NOMEM;
    size_t at = store_lease_lower(s, id);
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
    return store_bytes_cmp(store_node_key(x), x->key_len, store_node_key(y), y->key_len);
}

/* Deletes the lease's keys in key order, all in one revision. */
static int lease_revoke(store_t *s, const store_cmd *c, store_result *out)
{
    out->lease_id = c->lease_id;
    store_lease *l = store_lease_find(s, c->lease_id);
    if (!l)
        return STORE_ERR_LEASE_NOT_FOUND;
    size_t k = l->n_keys;
    if (k && s->revision + 1 >= STORE_NUM_MAX)
        return STORE_ERR_TOO_LARGE;
    store_node **nodes = malloc((k ? k : 1) * sizeof *nodes);
    if (!nodes || store_hist_reserve(&s->hist, k) != STORE_OK) {
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
    size_t at = store_lease_lower(s, c->lease_id);
    memmove(&s->leases[at], &s->leases[at + 1], (s->n_leases - at - 1) * sizeof *s->leases);
    s->n_leases--;
    out->deleted = k;
    if (k) {
        s->revision = rev;
        store_hist_evict(s);
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
    while (s->hist.n && store_hist_at(&s->hist, 0)->revision <= c->revision)
        store_hist_pop(&s->hist);
    store_hist_shrink(&s->hist);
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
#ifdef SYNOD_STORE_CHECK
    store_check(s);
#endif
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
    int rc = store_check_op(op);
    if (rc != STORE_OK)
        return rc;
    bool want = !(op->flags & STORE_FLAG_COUNT_ONLY);
    uint64_t given = 0;
    for (store_node *x = store_range_first(s, op); x; x = store_range_next(op, x)) {
        if (want && (!op->limit || given < op->limit)) {
            store_kv kv = store_rec_kv(x->rec);
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

static store_event event_view(const store_hist_event *e, bool prev_kv)
{
    store_event ev = {.type = e->type, .revision = e->revision};
    if (e->type == STORE_EVENT_PUT) {
        ev.kv = store_rec_kv(e->rec);
        if (e->prev) {
            ev.has_prev = true;
            ev.prev = store_rec_kv(e->prev);
        }
    } else {
        ev.kv = (store_kv){.key = store_rec_key(e->rec),
                           .key_len = e->rec->key_len,
                           .value = store_rec_value(e->rec),
                           .mod_revision = e->revision};
        if (prev_kv) {
            ev.has_prev = true;
            ev.prev = store_rec_kv(e->rec);
        }
    }
    return ev;
}

int store_events_since(const store_t *s, uint64_t from, size_t limit, store_event_fn fn, void *ctx,
                       uint64_t *next)
{
    const store_history *h = &s->hist;
    *next = from;
    if (from == 0)
        return STORE_ERR_INVALID;
    if (from <= s->compact_revision)
        return STORE_ERR_COMPACTED;
    size_t lo = 0, hi = h->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (store_hist_at(h, mid)->revision < from)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t given = 0;
    for (size_t i = lo; i < h->n;) {
        uint64_t rev = store_hist_at(h, i)->revision;
        size_t k = 0;
        while (i + k < h->n && store_hist_at(h, i + k)->revision == rev)
            k++;
        if (limit && given && given + k > limit) {
            *next = rev;
            return STORE_OK;
        }
        for (size_t j = 0; j < k; j++) {
            store_event ev = event_view(store_hist_at(h, i + j), s->cfg.history_prev_kv);
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
    return store_bytes_cmp(x->key, x->key_len, y->key, y->key_len);
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
            kvs[k++] = store_rec_kv(n->rec);
        qsort(kvs, k, sizeof *kvs, cmp_kv_key);
        rc = fn(ctx, l->id, l->ttl_ms, kvs, k);
    }
    free(kvs);
    return rc;
}

bool store_lease_get(const store_t *s, uint64_t id, uint64_t *ttl_ms, size_t *n_keys)
{
    const store_lease *l = store_lease_find(s, id);
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

store_t *store_new(const store_config *cfg, int *err)
{
    store_config defaults;
    if (!cfg) {
        store_config_init(&defaults);
        cfg = &defaults;
    }
    if (!store_config_ok(cfg)) {
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
        store_rec_unref(n->rec);
        free(n);
    }
    free(s->head);
    while (s->hist.n)
        store_hist_pop(&s->hist);
    free(s->hist.ev);
    free(s->leases);
    free(s);
}

const char *store_err_name(int err)
{
    switch (err) {
    case STORE_OK:
        return "ok";
    case STORE_ERR_NOMEM:
        return "nomem";
    case STORE_ERR_INVALID:
        return "invalid";
    case STORE_ERR_TRUNCATED:
        return "truncated";
    case STORE_ERR_TRAILING:
        return "trailing";
    case STORE_ERR_VERSION:
        return "version";
    case STORE_ERR_TOO_LARGE:
        return "too_large";
    case STORE_ERR_DUPLICATE_KEY:
        return "duplicate_key";
    case STORE_ERR_LEASE_NOT_FOUND:
        return "lease_not_found";
    case STORE_ERR_LEASE_EXISTS:
        return "lease_exists";
    case STORE_ERR_COMPACTED:
        return "compacted";
    case STORE_ERR_FUTURE_REV:
        return "future_revision";
    case STORE_ERR_CORRUPT:
        return "corrupt";
    }
    return "unknown";
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
