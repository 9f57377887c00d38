/*
 * synod_nif_store.c — the store's state machine (store.h) as NIF functions
 * for Synod.Store.Machine.
 *
 * One resource wraps one store_t behind a mutex. Glue only: it checks every
 * argument, calls the core and turns its answers into terms (docs/store.md
 * lists every shape). Results hold references into the store's records, so
 * they are turned into terms and released before the mutex is let go.
 *
 * Calls stay short: a command or read that touches one key runs on a normal
 * scheduler; anything that walks a range (range deletes and reads, revokes,
 * compactions, long event lists) runs on a dirty CPU scheduler, and so do
 * snapshots, restores and the lease listing. A dirty job holds the mutex, so
 * a store should be used by one process (its Raft member), as the machine
 * does.
 *
 * Malformed arguments raise {badarg, Message}. A command binary is data from
 * the Raft log, not an argument: a bad one is {error, Reason}, because every
 * member must answer it the same way instead of crashing.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "store.h"
#include "synod_nif.h"

/* Events handed out inline by store_events_since; more go dirty. */
#define EVENTS_INLINE 256

typedef struct nif_store {
    ErlNifMutex *lock;
    store_t *s;
} nif_store;

static void store_resource_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_store *res = obj;
    store_free(res->s);
    if (res->lock)
        enif_mutex_destroy(res->lock);
}

/* A streaming snapshot writer keeps its store alive (enif_keep_resource):
 * it holds references on the store's records. Its own mutex serializes
 * next/close; reference counts change under the store's mutex. */
typedef struct nif_writer {
    ErlNifMutex *lock;
    nif_store *store;
    store_snap_writer *w;
} nif_writer;

typedef struct nif_restorer {
    ErlNifMutex *lock;
    store_restorer *r;
} nif_restorer;

static void writer_close(nif_writer *res)
{
    if (res->w) {
        enif_mutex_lock(res->store->lock);
        store_snap_writer_free(res->w);
        enif_mutex_unlock(res->store->lock);
        res->w = NULL;
    }
    if (res->store) {
        enif_release_resource(res->store);
        res->store = NULL;
    }
}

static void writer_resource_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_writer *res = obj;
    writer_close(res);
    if (res->lock)
        enif_mutex_destroy(res->lock);
}

static void restorer_resource_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_restorer *res = obj;
    store_restorer_free(res->r);
    if (res->lock)
        enif_mutex_destroy(res->lock);
}

int synod_nif_store_load(ErlNifEnv *env, nif_priv *priv)
{
    int flags = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
    priv->store_type =
        enif_open_resource_type(env, NULL, "synod_store", store_resource_dtor, flags, NULL);
    priv->store_writer_type =
        enif_open_resource_type(env, NULL, "synod_store_writer", writer_resource_dtor, flags, NULL);
    priv->store_restorer_type = enif_open_resource_type(env, NULL, "synod_store_restorer",
                                                        restorer_resource_dtor, flags, NULL);
    return priv->store_type && priv->store_writer_type && priv->store_restorer_type ? 0 : 1;
}

/* ---- conversions ---- */

static ERL_NIF_TERM u64(ErlNifEnv *env, uint64_t v)
{
    return enif_make_uint64(env, (ErlNifUInt64)v);
}

static ERL_NIF_TERM error_term(ErlNifEnv *env, int err, uint64_t compact_revision)
{
    if (err == STORE_ERR_COMPACTED)
        return enif_make_tuple2(
            env, ATOM(env, error),
            enif_make_tuple2(env, ATOM(env, compacted), u64(env, compact_revision)));
    return enif_make_tuple2(env, ATOM(env, error), enif_make_atom(env, store_err_name(err)));
}

/* #{key, value, create_revision, mod_revision, version, lease} */
static ERL_NIF_TERM kv_term(ErlNifEnv *env, const store_kv *kv)
{
    ERL_NIF_TERM keys[] = {ATOM(env, key),          ATOM(env, value),   ATOM(env, create_revision),
                           ATOM(env, mod_revision), ATOM(env, version), ATOM(env, lease)};
    ERL_NIF_TERM values[] = {synod_binary(env, kv->key, kv->key_len),
                             synod_binary(env, kv->value, kv->value_len),
                             u64(env, kv->create_revision),
                             u64(env, kv->mod_revision),
                             u64(env, kv->version),
                             u64(env, kv->lease)};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, 6, &map);
    return map;
}

static ERL_NIF_TERM kv_list(ErlNifEnv *env, const store_kv *kvs, size_t n)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;)
        list = enif_make_list_cell(env, kv_term(env, &kvs[i]), list);
    return list;
}

static ERL_NIF_TERM op_term(ErlNifEnv *env, const store_op_result *op)
{
    switch (op->type) {
    case STORE_CMD_PUT:
        return enif_make_tuple2(env, ATOM(env, put),
                                op->n_kvs ? kv_term(env, &op->kvs[0]) : ATOM(env, nil));
    case STORE_CMD_DELETE:
        return enif_make_tuple3(env, ATOM(env, delete), u64(env, op->count),
                                kv_list(env, op->kvs, op->n_kvs));
    default:
        return enif_make_tuple4(env, ATOM(env, range), kv_list(env, op->kvs, op->n_kvs),
                                u64(env, op->count), synod_boolean(env, op->more));
    }
}

/* {ok, Revision, Payload} for every command (docs/store.md). */
static ERL_NIF_TERM result_term(ErlNifEnv *env, const store_result *r)
{
    ERL_NIF_TERM payload;
    switch (r->type) {
    case STORE_CMD_TXN: {
        ERL_NIF_TERM ops = enif_make_list(env, 0);
        for (size_t i = r->n_ops; i-- > 0;)
            ops = enif_make_list_cell(env, op_term(env, &r->ops[i]), ops);
        payload = enif_make_tuple3(env, ATOM(env, txn), synod_boolean(env, r->succeeded), ops);
        break;
    }
    case STORE_CMD_LEASE_GRANT:
        payload = enif_make_tuple3(env, ATOM(env, lease_granted), u64(env, r->lease_id),
                                   u64(env, r->ttl_ms));
        break;
    case STORE_CMD_LEASE_REVOKE:
        payload = enif_make_tuple3(env, ATOM(env, lease_revoked), u64(env, r->lease_id),
                                   u64(env, r->deleted));
        break;
    case STORE_CMD_COMPACT:
        payload = enif_make_tuple2(env, ATOM(env, compacted), u64(env, r->compact_revision));
        break;
    default:
        payload = op_term(env, &r->ops[0]);
        break;
    }
    return enif_make_tuple3(env, ATOM(env, ok), u64(env, r->revision), payload);
}

static nif_store *get_store(ErlNifEnv *env, ERL_NIF_TERM t)
{
    nif_store *res;
    if (!enif_get_resource(env, t, synod_priv(env)->store_type, (void **)&res))
        return NULL;
    return res;
}

#define WITH_STORE(env, term, res)                                                                 \
    nif_store *res = get_store(env, term);                                                         \
    if (!res)                                                                                      \
        return synod_raise_badarg(env, "not a store");

static ERL_NIF_TERM wrap_store(ErlNifEnv *env, store_t *s)
{
    nif_store *res = enif_alloc_resource(synod_priv(env)->store_type, sizeof *res);
    if (!res) {
        store_free(s);
        return error_term(env, STORE_ERR_NOMEM, 0);
    }
    res->s = s;
    res->lock = enif_mutex_create("synod_store");
    ERL_NIF_TERM term = enif_make_resource(env, res);
    enif_release_resource(res);
    if (!res->lock)
        return error_term(env, STORE_ERR_NOMEM, 0);
    return enif_make_tuple2(env, ATOM(env, ok), term);
}

/* ---- store_new(Opts :: map()) ---- */

ERL_NIF_TERM synod_store_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    store_config cfg;
    store_config_init(&cfg);
    ERL_NIF_TERM v;
    ErlNifUInt64 n;
    if (!enif_is_map(env, argv[0]))
        return synod_raise_badarg(env, "store options must be a map");
    size_t size;
    enif_get_map_size(env, argv[0], &size);
    size_t known = 0;
    if (enif_get_map_value(env, argv[0], ATOM(env, history_max_events), &v)) {
        if (!enif_get_uint64(env, v, &n) || n > STORE_MAX_HISTORY_EVENTS)
            return synod_raise_badarg(env, "history_max_events must be an integer in 0..16777216");
        cfg.history_max_events = (uint32_t)n;
        known++;
    }
    if (enif_get_map_value(env, argv[0], ATOM(env, history_max_bytes), &v)) {
        if (!enif_get_uint64(env, v, &n) || n > STORE_MAX_HISTORY_BYTES)
            return synod_raise_badarg(env, "history_max_bytes must be an integer in 0..2^40");
        cfg.history_max_bytes = n;
        known++;
    }
    if (enif_get_map_value(env, argv[0], ATOM(env, history_prev_kv), &v)) {
        if (!enif_is_identical(v, ATOM(env, true_)) && !enif_is_identical(v, ATOM(env, false_)))
            return synod_raise_badarg(env, "history_prev_kv must be a boolean");
        cfg.history_prev_kv = enif_is_identical(v, ATOM(env, true_));
        known++;
    }
    if (known != size)
        return synod_raise_badarg(env, "store options are history_max_events, "
                                       "history_max_bytes and history_prev_kv");
    int err = STORE_OK;
    store_t *s = store_new(&cfg, &err);
    if (!s)
        return error_term(env, err, 0);
    return wrap_store(env, s);
}

/* ---- store_apply(S, Command :: binary()) ---- */

/* Long calls re-enter themselves on a dirty CPU scheduler. */
static bool on_dirty(void)
{
    return enif_thread_type() == ERL_NIF_THR_DIRTY_CPU_SCHEDULER;
}

static bool op_is_point(const store_op *op)
{
    return op->range_end.len == 0;
}

/* Touches at most a few keys: safe on a normal scheduler. */
static bool cmd_is_point(const store_cmd *c)
{
    switch (c->type) {
    case STORE_CMD_PUT:
    case STORE_CMD_DELETE:
    case STORE_CMD_RANGE:
        return op_is_point(&c->op);
    case STORE_CMD_TXN:
        for (size_t i = 0; i < c->n_success; i++)
            if (!op_is_point(&c->success[i]))
                return false;
        for (size_t i = 0; i < c->n_failure; i++)
            if (!op_is_point(&c->failure[i]))
                return false;
        return true;
    case STORE_CMD_LEASE_GRANT:
        return true;
    default: /* a revoke deletes every key of its lease; compaction frees history */
        return false;
    }
}

static ERL_NIF_TERM apply_decoded(ErlNifEnv *env, nif_store *res, const store_cmd *c)
{
    store_result r;
    enif_mutex_lock(res->lock);
    int err = store_apply_cmd(res->s, c, &r);
    ERL_NIF_TERM reply =
        err == STORE_OK ? result_term(env, &r) : error_term(env, err, r.compact_revision);
    store_result_release(&r);
    enif_mutex_unlock(res->lock);
    return reply;
}

/* Decodes argv[1]; NULL and *reply set if it is refused. */
static bool decode_arg(ErlNifEnv *env, ERL_NIF_TERM t, store_cmd *c, ERL_NIF_TERM *reply)
{
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, t, &bin)) {
        *reply = synod_raise_badarg(env, "a store command must be a binary");
        return false;
    }
    int err = store_cmd_decode(bin.data, bin.size, c);
    if (err != STORE_OK) {
        *reply = error_term(env, err, 0);
        return false;
    }
    return true;
}

ERL_NIF_TERM synod_store_apply(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    WITH_STORE(env, argv[0], res);
    store_cmd c;
    ERL_NIF_TERM reply;
    if (!decode_arg(env, argv[1], &c, &reply))
        return reply;
    if (!cmd_is_point(&c) && !on_dirty()) {
        store_cmd_release(&c);
        return enif_schedule_nif(env, "store_apply", ERL_NIF_DIRTY_JOB_CPU_BOUND, synod_store_apply,
                                 argc, argv);
    }
    reply = apply_decoded(env, res, &c);
    store_cmd_release(&c);
    return reply;
}

/* ---- store_range(S, RangeCommand :: binary()) -> {Kvs, Count, More} ---- */

typedef struct kv_acc {
    ErlNifEnv *env;
    ERL_NIF_TERM list;
} kv_acc;

static int cons_kv(void *ctx, const store_kv *kv)
{
    kv_acc *a = ctx;
    a->list = enif_make_list_cell(a->env, kv_term(a->env, kv), a->list);
    return 0;
}

static ERL_NIF_TERM range_now(ErlNifEnv *env, nif_store *res, const store_cmd *c)
{
    kv_acc acc = {env, enif_make_list(env, 0)};
    uint64_t count;
    bool more;
    enif_mutex_lock(res->lock);
    int err = store_range(res->s, &c->op, cons_kv, &acc, &count, &more);
    enif_mutex_unlock(res->lock);
    if (err != STORE_OK)
        return error_term(env, err, 0);
    ERL_NIF_TERM kvs;
    enif_make_reverse_list(env, acc.list, &kvs);
    return enif_make_tuple3(env, kvs, u64(env, count), synod_boolean(env, more));
}

/* A range read takes its request as a RANGE command (the same bytes the
 * log would carry); anything else is a bad argument here. */
static bool range_arg(ErlNifEnv *env, ERL_NIF_TERM t, store_cmd *c, ERL_NIF_TERM *reply)
{
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, t, &bin) || store_cmd_decode(bin.data, bin.size, c) != STORE_OK) {
        *reply = synod_raise_badarg(env, "a range request must be an encoded range command");
        return false;
    }
    if (c->type != STORE_CMD_RANGE) {
        store_cmd_release(c);
        *reply = synod_raise_badarg(env, "a range request must be an encoded range command");
        return false;
    }
    return true;
}

ERL_NIF_TERM synod_store_range(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    WITH_STORE(env, argv[0], res);
    store_cmd c;
    ERL_NIF_TERM reply;
    if (!range_arg(env, argv[1], &c, &reply))
        return reply;
    if (!op_is_point(&c.op) && !on_dirty())
        return enif_schedule_nif(env, "store_range", ERL_NIF_DIRTY_JOB_CPU_BOUND, synod_store_range,
                                 argc, argv);
    return range_now(env, res, &c);
}

/* ---- store_events_since(S, FromRevision, Limit) ---- */

typedef struct event_acc {
    ErlNifEnv *env;
    ERL_NIF_TERM list;
} event_acc;

/* {put | delete, Revision, Kv, PrevKv | nil} */
static int cons_event(void *ctx, const store_event *ev)
{
    event_acc *a = ctx;
    ErlNifEnv *env = a->env;
    ERL_NIF_TERM t =
        enif_make_tuple4(env, ev->type == STORE_EVENT_PUT ? ATOM(env, put) : ATOM(env, delete),
                         u64(env, ev->revision), kv_term(env, &ev->kv),
                         ev->has_prev ? kv_term(env, &ev->prev) : ATOM(env, nil));
    a->list = enif_make_list_cell(env, t, a->list);
    return 0;
}

static bool events_args(ErlNifEnv *env, const ERL_NIF_TERM argv[], uint64_t *from, size_t *limit,
                        ERL_NIF_TERM *reply)
{
    ErlNifUInt64 f, l;
    if (!enif_get_uint64(env, argv[1], &f) || f == 0 || f >= STORE_NUM_MAX) {
        *reply = synod_raise_badarg(env, "a revision must be an integer in 1..2^62-1");
        return false;
    }
    if (!enif_get_uint64(env, argv[2], &l) || l > (1u << 24)) {
        *reply = synod_raise_badarg(env, "limit must be an integer in 0..16777216 (0: no limit)");
        return false;
    }
    *from = f;
    *limit = (size_t)l;
    return true;
}

static ERL_NIF_TERM events_now(ErlNifEnv *env, nif_store *res, uint64_t from, size_t limit)
{
    event_acc acc = {env, enif_make_list(env, 0)};
    uint64_t next = 0, compact;
    enif_mutex_lock(res->lock);
    int err = store_events_since(res->s, from, limit, cons_event, &acc, &next);
    compact = store_compact_revision(res->s);
    enif_mutex_unlock(res->lock);
    if (err != STORE_OK)
        return error_term(env, err, compact);
    ERL_NIF_TERM events;
    enif_make_reverse_list(env, acc.list, &events);
    return enif_make_tuple3(env, ATOM(env, ok), events, u64(env, next));
}

ERL_NIF_TERM synod_store_events_since(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    WITH_STORE(env, argv[0], res);
    uint64_t from;
    size_t limit;
    ERL_NIF_TERM reply;
    if (!events_args(env, argv, &from, &limit, &reply))
        return reply;
    if ((limit == 0 || limit > EVENTS_INLINE) && !on_dirty())
        return enif_schedule_nif(env, "store_events_since", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 synod_store_events_since, argc, argv);
    return events_now(env, res, from, limit);
}

/* ---- store_leases(S) -> [{Id, TtlMs, [Key]}] (dirty) ---- */

static int cons_lease(void *ctx, uint64_t id, uint64_t ttl, const store_kv *keys, size_t n)
{
    event_acc *a = ctx;
    ErlNifEnv *env = a->env;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;)
        list = enif_make_list_cell(env, synod_binary(env, keys[i].key, keys[i].key_len), list);
    a->list =
        enif_make_list_cell(env, enif_make_tuple3(env, u64(env, id), u64(env, ttl), list), a->list);
    return 0;
}

ERL_NIF_TERM synod_store_leases(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_STORE(env, argv[0], res);
    event_acc acc = {env, enif_make_list(env, 0)};
    enif_mutex_lock(res->lock);
    int err = store_leases(res->s, cons_lease, &acc);
    enif_mutex_unlock(res->lock);
    if (err != STORE_OK)
        return error_term(env, err, 0);
    ERL_NIF_TERM leases;
    enif_make_reverse_list(env, acc.list, &leases);
    return leases;
}

/* ---- store_lease(S, Id) -> {ok, TtlMs, KeyCount} | {error, lease_not_found} ---- */

ERL_NIF_TERM synod_store_lease(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_STORE(env, argv[0], res);
    ErlNifUInt64 id;
    if (!enif_get_uint64(env, argv[1], &id) || id == 0 || id >= STORE_NUM_MAX)
        return synod_raise_badarg(env, "a lease id must be an integer in 1..2^62-1");
    uint64_t ttl;
    size_t keys;
    enif_mutex_lock(res->lock);
    bool found = store_lease_get(res->s, id, &ttl, &keys);
    enif_mutex_unlock(res->lock);
    if (!found)
        return error_term(env, STORE_ERR_LEASE_NOT_FOUND, 0);
    return enif_make_tuple3(env, ATOM(env, ok), u64(env, ttl), u64(env, keys));
}

/* ---- store_info(S) -> map() ---- */

ERL_NIF_TERM synod_store_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_STORE(env, argv[0], res);
    store_stats st;
    enif_mutex_lock(res->lock);
    store_stats_get(res->s, &st);
    enif_mutex_unlock(res->lock);
    ERL_NIF_TERM keys[] = {
        ATOM(env, revision),
        ATOM(env, compact_revision),
        ATOM(env, next_lease_id),
        ATOM(env, keys),
        ATOM(env, leases),
        ATOM(env, events),
        ATOM(env, history_bytes),
        ATOM(env, history_max_events),
        ATOM(env, history_max_bytes),
        ATOM(env, history_prev_kv),
    };
    ERL_NIF_TERM values[] = {
        u64(env, st.revision),
        u64(env, st.compact_revision),
        u64(env, st.next_lease_id),
        u64(env, st.keys),
        u64(env, st.leases),
        u64(env, st.events),
        u64(env, st.history_bytes),
        u64(env, st.config.history_max_events),
        u64(env, st.config.history_max_bytes),
        synod_boolean(env, st.config.history_prev_kv),
    };
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, sizeof keys / sizeof *keys, &map);
    return map;
}

/* ---- snapshots (dirty) ---- */

ERL_NIF_TERM synod_store_snapshot(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_STORE(env, argv[0], res);
    ERL_NIF_TERM bin;
    enif_mutex_lock(res->lock);
    size_t need = store_snapshot_size(res->s), len = 0;
    unsigned char *buf = enif_make_new_binary(env, need, &bin);
    int err = buf ? store_snapshot_write(res->s, buf, need, &len) : STORE_ERR_NOMEM;
    enif_mutex_unlock(res->lock);
    if (err != STORE_OK)
        return enif_raise_exception(env, ATOM(env, enomem));
    return bin;
}

ERL_NIF_TERM synod_store_restore(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, argv[0], &bin))
        return synod_raise_badarg(env, "a store snapshot must be a binary");
    int err = STORE_OK;
    store_t *s = store_restore(bin.data, bin.size, &err);
    if (!s)
        return error_term(env, err, 0);
    return wrap_store(env, s);
}

/* ---- streaming snapshots (docs/store.md, "Streaming snapshots") ----
 *
 * store_snapshot_open(S) -> {ok, W} | {error, nomem}      (dirty: O(keys))
 * store_snapshot_next(W, Target) -> binary() | eof        (dirty)
 * store_snapshot_close(W) -> ok                           (dirty)
 * store_restore_open(Size) -> R
 * store_restore_feed(R, Bin) -> ok | {error, Reason}      (dirty)
 * store_restore_finish(R) -> {ok, S} | {error, Reason}    (dirty)
 *
 * The writer's pieces are today's snapshot bytes of the state at open, in
 * order; the store may be applied to meanwhile. A piece is one copy into a
 * fresh binary of about Target bytes (a record never splits). */

/* Pieces bigger than this are refused as an argument (a piece is a binary
 * the caller holds). */
#define PIECE_MAX (64u << 20)

ERL_NIF_TERM synod_store_snapshot_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_STORE(env, argv[0], store);
    nif_writer *res = enif_alloc_resource(synod_priv(env)->store_writer_type, sizeof *res);
    if (!res)
        return error_term(env, STORE_ERR_NOMEM, 0);
    res->w = NULL;
    res->store = NULL;
    res->lock = enif_mutex_create("synod_store_writer");
    ERL_NIF_TERM term = enif_make_resource(env, res);
    enif_release_resource(res);
    if (!res->lock)
        return error_term(env, STORE_ERR_NOMEM, 0);
    int err = STORE_OK;
    enif_mutex_lock(store->lock);
    res->w = store_snap_writer_new(store->s, &err);
    enif_mutex_unlock(store->lock);
    if (!res->w)
        return error_term(env, err, 0);
    enif_keep_resource(store);
    res->store = store;
    return enif_make_tuple2(env, ATOM(env, ok), term);
}

static nif_writer *get_writer(ErlNifEnv *env, ERL_NIF_TERM t)
{
    nif_writer *res;
    if (!enif_get_resource(env, t, synod_priv(env)->store_writer_type, (void **)&res))
        return NULL;
    return res;
}

ERL_NIF_TERM synod_store_snapshot_next(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_writer *res = get_writer(env, argv[0]);
    if (!res)
        return synod_raise_badarg(env, "not a store snapshot writer");
    ErlNifUInt64 target;
    if (!enif_get_uint64(env, argv[1], &target) || target == 0 || target > PIECE_MAX)
        return synod_raise_badarg(env, "a piece size must be an integer in 1..67108864");
    enif_mutex_lock(res->lock);
    if (!res->w) {
        enif_mutex_unlock(res->lock);
        return synod_raise_badarg(env, "the store snapshot writer is closed");
    }
    const uint8_t *piece;
    size_t len;
    int err = store_snap_writer_next(res->w, (size_t)target, &piece, &len);
    ERL_NIF_TERM reply;
    if (err != STORE_OK) {
        reply = error_term(env, err, 0);
    } else if (len == 0) {
        reply = ATOM(env, eof);
    } else {
        unsigned char *buf = enif_make_new_binary(env, len, &reply);
        if (buf)
            memcpy(buf, piece, len);
        else
            reply = error_term(env, STORE_ERR_NOMEM, 0);
    }
    enif_mutex_unlock(res->lock);
    return reply;
}

ERL_NIF_TERM synod_store_snapshot_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_writer *res = get_writer(env, argv[0]);
    if (!res)
        return synod_raise_badarg(env, "not a store snapshot writer");
    enif_mutex_lock(res->lock);
    writer_close(res);
    enif_mutex_unlock(res->lock);
    return ATOM(env, ok);
}

static nif_restorer *get_restorer(ErlNifEnv *env, ERL_NIF_TERM t)
{
    nif_restorer *res;
    if (!enif_get_resource(env, t, synod_priv(env)->store_restorer_type, (void **)&res))
        return NULL;
    return res;
}

ERL_NIF_TERM synod_store_restore_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ErlNifUInt64 size;
    if (!enif_get_uint64(env, argv[0], &size))
        return synod_raise_badarg(env, "a snapshot size must be a non-negative integer");
    nif_restorer *res = enif_alloc_resource(synod_priv(env)->store_restorer_type, sizeof *res);
    if (!res)
        return error_term(env, STORE_ERR_NOMEM, 0);
    res->r = store_restorer_new(size);
    res->lock = enif_mutex_create("synod_store_restorer");
    ERL_NIF_TERM term = enif_make_resource(env, res);
    enif_release_resource(res);
    if (!res->r || !res->lock)
        return error_term(env, STORE_ERR_NOMEM, 0);
    return enif_make_tuple2(env, ATOM(env, ok), term);
}

ERL_NIF_TERM synod_store_restore_feed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_restorer *res = get_restorer(env, argv[0]);
    if (!res)
        return synod_raise_badarg(env, "not a store restorer");
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, argv[1], &bin))
        return synod_raise_badarg(env, "a snapshot piece must be a binary");
    enif_mutex_lock(res->lock);
    int err = res->r ? store_restorer_feed(res->r, bin.data, bin.size) : STORE_ERR_INVALID;
    enif_mutex_unlock(res->lock);
    if (err == STORE_ERR_INVALID)
        return synod_raise_badarg(env, "the store restorer is finished");
    return err == STORE_OK ? ATOM(env, ok) : error_term(env, err, 0);
}

ERL_NIF_TERM synod_store_restore_finish(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_restorer *res = get_restorer(env, argv[0]);
    if (!res)
        return synod_raise_badarg(env, "not a store restorer");
    enif_mutex_lock(res->lock);
    store_restorer *r = res->r;
    res->r = NULL;
    enif_mutex_unlock(res->lock);
    if (!r)
        return synod_raise_badarg(env, "the store restorer is finished");
    int err = STORE_OK;
    store_t *s = store_restorer_finish(r, &err);
    if (!s)
        return error_term(env, err, 0);
    return wrap_store(env, s);
}
