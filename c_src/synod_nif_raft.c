/*
 * synod_nif_raft.c — the Raft core (raft.h) as NIF functions for the driver
 * (lib/synod/raft/member.ex).
 *
 * One resource wraps one raft_t. Only its member process uses it, but a
 * mutex guards it anyway so a resource handed to another process can never
 * race. Every call returns within the normal NIF budget except
 * raft_chunk_encode, which copies and checksums one snapshot chunk on a
 * dirty CPU scheduler.
 *
 * raft_ready/1 takes a Ready, copies everything in it into terms and calls
 * raft_advance before returning. The driver then persists, sends, applies
 * and notifies in the order raft.h requires, before it makes any other call
 * on the instance; the core cannot tell this apart from the loop in raft.h
 * (no call comes between ready and advance), and no pointer into the core
 * outlives the call. A Ready is the tuple
 *
 *   {HardState | nil, Sync, Snapshot | nil, Entries, Early, Msgs, Committed,
 *    Events, Reads, Chunks}
 *
 *   HardState = {Term, Vote, Commit}
 *   Sync      = boolean(): rd.must_sync, fsync what was written before Msgs
 *               leave (false: the hard state may be written without fsync)
 *             | Seq :: pos_integer(): with async_persist, a Ready that must
 *               be synced; every message may leave at once (Msgs is []),
 *               and once the writes are durable the driver calls
 *               raft_persisted(R, Seq) (raft.h, ASYNCHRONOUS PERSISTENCE)
 *   Early     = [Msg]: rd.msgs[0 .. n_early), may leave before the persist
 *   Snapshot  = {Index, Term, Voters, Learners, Size, Checksum}  (metadata:
 *               the bytes are in the driver's snapshot file)
 *   Entry     = {Index, Term, Type :: 0 | 1 | 2, Data}  (normal, noop, conf)
 *   Msg       = {To, EncodedMessage :: binary()}      (raft wire format)
 *             | {To, {chunk, Index, Offset, Len, Size, Template}}: a chunk
 *               to send; read bytes [Offset, Offset+Len) of snapshot Index
 *               and send raft_chunk_encode(Template, Bytes)
 *   Chunk     = {Index, Term, Size, Checksum, Offset, Data, Last}: received;
 *               write Data at Offset of the receive file (0: a new file); if
 *               Last, fsync, verify, then raft_snapshot_received/4
 *   Event     = {become_follower | become_candidate | become_leader, Cause,
 *                Term, OldLeader, NewLeader, OldRole, NewRole}
 *   Read      = {Ctx, Index}
 *
 * Errors of the core come back as {error, Atom}; arguments of the wrong
 * shape raise {badarg, Message}.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "raft.h"
#include "synod_nif.h"

/* Entries handed to raft_new on restart; the storage's compaction keeps the
 * persisted log far below this. */
#define MAX_RESTART_ENTRIES (1u << 22)

typedef struct nif_raft {
    ErlNifMutex *lock;
    raft_t *r;
} nif_raft;

static void raft_resource_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_raft *res = obj;
    raft_free(res->r);
    if (res->lock)
        enif_mutex_destroy(res->lock);
}

int synod_nif_raft_load(ErlNifEnv *env, nif_priv *priv)
{
    priv->raft_type = enif_open_resource_type(env, NULL, "synod_raft", raft_resource_dtor,
                                              ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    return priv->raft_type ? 0 : 1;
}

/* ---- small conversions ---- */

/* An atom named by a core (error, role, cause, event names). */
static ERL_NIF_TERM core_name(ErlNifEnv *env, const char *name)
{
    return enif_make_atom(env, name);
}

static ERL_NIF_TERM u64(ErlNifEnv *env, uint64_t v)
{
    return enif_make_uint64(env, (ErlNifUInt64)v);
}

static ERL_NIF_TERM error_term(ErlNifEnv *env, int err)
{
    return enif_make_tuple2(env, ATOM(env, error), core_name(env, raft_err_name(err)));
}

static ERL_NIF_TERM ok_or_error(ErlNifEnv *env, int err)
{
    return err == RAFT_OK ? ATOM(env, ok) : error_term(env, err);
}

/* An integer in [0, RAFT_INDEX_MAX): terms, indexes, ids and contexts. */
static bool get_index(ErlNifEnv *env, ERL_NIF_TERM t, uint64_t *out)
{
    ErlNifUInt64 v;
    if (!enif_get_uint64(env, t, &v) || v >= RAFT_INDEX_MAX)
        return false;
    *out = v;
    return true;
}

static bool get_id(ErlNifEnv *env, ERL_NIF_TERM t, uint64_t *out)
{
    return get_index(env, t, out) && *out != 0;
}

static nif_raft *get_raft(ErlNifEnv *env, ERL_NIF_TERM t)
{
    nif_raft *res;
    if (!enif_get_resource(env, t, synod_priv(env)->raft_type, (void **)&res))
        return NULL;
    return res;
}

static ERL_NIF_TERM id_list(ErlNifEnv *env, const uint64_t *ids, size_t n)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;)
        list = enif_make_list_cell(env, u64(env, ids[i]), list);
    return list;
}

static ERL_NIF_TERM entry_term(ErlNifEnv *env, const raft_entry *e)
{
    return enif_make_tuple4(env, u64(env, e->index), u64(env, e->term),
                            enif_make_uint(env, e->type), synod_binary(env, e->data, e->len));
}

static ERL_NIF_TERM entry_list(ErlNifEnv *env, const raft_entry *es, size_t n)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;)
        list = enif_make_list_cell(env, entry_term(env, &es[i]), list);
    return list;
}

static ERL_NIF_TERM snapshot_meta(ErlNifEnv *env, const raft_snapshot *s)
{
    return enif_make_tuple4(env, u64(env, s->index), u64(env, s->term),
                            id_list(env, s->voters, s->n_voters),
                            id_list(env, s->learners, s->n_learners));
}

static ERL_NIF_TERM hard_state_term(ErlNifEnv *env, const raft_hard_state *hs)
{
    return enif_make_tuple3(env, u64(env, hs->term), u64(env, hs->vote), u64(env, hs->commit));
}

/* ---- raft_new(Config :: map()) ---- */

/* What raft_new borrows while the config is parsed; freed after the call. */
typedef struct new_args {
    uint64_t *voters;
    uint64_t *snap_voters, *snap_learners;
    raft_entry *entries;
    raft_snapshot snapshot;
} new_args;

static void new_args_free(new_args *a)
{
    enif_free(a->voters);
    enif_free(a->snap_voters);
    enif_free(a->snap_learners);
    enif_free(a->entries);
}

/* A list of distinct member ids, at most RAFT_MAX_MEMBERS. */
static const char *get_ids(ErlNifEnv *env, ERL_NIF_TERM list, uint64_t **out, size_t *n)
{
    unsigned len;
    if (!enif_get_list_length(env, list, &len) || len > RAFT_MAX_MEMBERS)
        return "member lists must be proper lists of at most 64 ids";
    uint64_t *ids = enif_alloc(sizeof *ids * (len ? len : 1));
    if (!ids)
        return "out of memory";
    ERL_NIF_TERM head;
    for (unsigned i = 0; i < len; i++) {
        enif_get_list_cell(env, list, &head, &list);
        if (!get_id(env, head, &ids[i])) {
            enif_free(ids);
            return "a member id must be an integer in 1..2^62-1";
        }
        for (unsigned j = 0; j < i; j++) {
            if (ids[j] == ids[i]) {
                enif_free(ids);
                return "member ids must be distinct";
            }
        }
    }
    *out = ids;
    *n = len;
    return NULL;
}

static bool get_bool(ErlNifEnv *env, ERL_NIF_TERM t, bool *out)
{
    char buf[6];
    if (!enif_get_atom(env, t, buf, sizeof buf, ERL_NIF_LATIN1))
        return false;
    if (strcmp(buf, "true") == 0)
        *out = true;
    else if (strcmp(buf, "false") == 0)
        *out = false;
    else
        return false;
    return true;
}

static bool get_u32(ErlNifEnv *env, ERL_NIF_TERM t, uint32_t lo, uint32_t hi, uint32_t *out)
{
    unsigned v;
    if (!enif_get_uint(env, t, &v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool get_entry(ErlNifEnv *env, ERL_NIF_TERM t, raft_entry *e)
{
    const ERL_NIF_TERM *el;
    int arity;
    unsigned type;
    ErlNifBinary data;
    if (!enif_get_tuple(env, t, &arity, &el) || arity != 4 || !get_id(env, el[0], &e->index) ||
        !get_index(env, el[1], &e->term) || !enif_get_uint(env, el[2], &type) ||
        type > RAFT_ENTRY_CONF || !enif_inspect_binary(env, el[3], &data) ||
        data.size > RAFT_ENTRY_MAX_DATA)
        return false;
    e->type = (uint8_t)type;
    e->data = data.data;
    e->len = data.size;
    return true;
}

static const char *get_entries(ErlNifEnv *env, ERL_NIF_TERM list, new_args *a, size_t *n)
{
    unsigned len;
    if (!enif_get_list_length(env, list, &len) || len > MAX_RESTART_ENTRIES)
        return "entries must be a proper list of at most 2^22 entries";
    a->entries = enif_alloc(sizeof *a->entries * (len ? len : 1));
    if (!a->entries)
        return "out of memory";
    ERL_NIF_TERM head;
    for (unsigned i = 0; i < len; i++) {
        enif_get_list_cell(env, list, &head, &list);
        if (!get_entry(env, head, &a->entries[i]))
            return "an entry must be {Index >= 1, Term, Type in 0..2, Data :: binary() <= 1 MiB}";
    }
    *n = len;
    return NULL;
}

static const char *get_snapshot(ErlNifEnv *env, ERL_NIF_TERM t, new_args *a)
{
    const ERL_NIF_TERM *el;
    int arity;
    raft_snapshot *s = &a->snapshot;
    if (!enif_get_tuple(env, t, &arity, &el) || arity != 6 || !get_index(env, el[0], &s->index) ||
        !get_index(env, el[1], &s->term) || !get_index(env, el[4], &s->size) ||
        !get_index(env, el[5], &s->checksum))
        return "snapshot must be nil or {Index, Term, Voters, Learners, Size, Checksum}";
    const char *why = get_ids(env, el[2], &a->snap_voters, &s->n_voters);
    if (!why)
        why = get_ids(env, el[3], &a->snap_learners, &s->n_learners);
    s->voters = a->snap_voters;
    s->learners = a->snap_learners;
    return why;
}

static bool is_nil(ErlNifEnv *env, ERL_NIF_TERM t)
{
    return enif_is_identical(t, ATOM(env, nil));
}

/* Reads the optional key of the config map into *value. */
static bool opt(ErlNifEnv *env, ERL_NIF_TERM map, ERL_NIF_TERM key, ERL_NIF_TERM *value)
{
    return enif_get_map_value(env, map, key, value);
}

static const char *parse_config(ErlNifEnv *env, ERL_NIF_TERM map, raft_config *cfg, new_args *a)
{
    ERL_NIF_TERM v;
    uint64_t id, seed = 0;
    if (!enif_is_map(env, map))
        return "config must be a map";
    if (!opt(env, map, ATOM(env, id), &v) || !get_id(env, v, &id))
        return "id must be an integer in 1..2^62-1";
    if (opt(env, map, ATOM(env, seed), &v) && !enif_get_uint64(env, v, (ErlNifUInt64 *)&seed))
        return "seed must be a non-negative 64-bit integer";
    raft_config_init(cfg, id, seed);
    if (opt(env, map, ATOM(env, election_tick), &v) &&
        !get_u32(env, v, 2, 1000000, &cfg->election_tick))
        return "election_tick must be an integer in 2..1000000";
    if (opt(env, map, ATOM(env, heartbeat_tick), &v) &&
        !get_u32(env, v, 1, cfg->election_tick - 1, &cfg->heartbeat_tick))
        return "heartbeat_tick must be an integer in 1..election_tick-1";
    if (opt(env, map, ATOM(env, pre_vote), &v) && !get_bool(env, v, &cfg->pre_vote))
        return "pre_vote must be a boolean";
    if (opt(env, map, ATOM(env, check_quorum), &v) && !get_bool(env, v, &cfg->check_quorum))
        return "check_quorum must be a boolean";
    if (opt(env, map, ATOM(env, quiesce), &v) && !get_bool(env, v, &cfg->quiesce))
        return "quiesce must be a boolean";
    if (opt(env, map, ATOM(env, async_persist), &v) && !get_bool(env, v, &cfg->async_persist))
        return "async_persist must be a boolean";
    if (opt(env, map, ATOM(env, max_msg_entries), &v) &&
        !get_u32(env, v, 1, RAFT_MSG_MAX_ENTRIES, &cfg->max_msg_entries))
        return "max_msg_entries must be an integer in 1..4096";
    if (opt(env, map, ATOM(env, max_inflight), &v) &&
        !get_u32(env, v, 1, 1u << 20, &cfg->max_inflight))
        return "max_inflight must be an integer in 1..1048576";
    if (opt(env, map, ATOM(env, snapshot_chunk), &v) &&
        !get_u32(env, v, 1, RAFT_SNAPSHOT_MAX_CHUNK, &cfg->snapshot_chunk))
        return "snapshot_chunk must be an integer in 1..16777216";
    if (opt(env, map, ATOM(env, snapshot_window), &v) &&
        !get_u32(env, v, 1, 1024, &cfg->snapshot_window))
        return "snapshot_window must be an integer in 1..1024";
    if (opt(env, map, ATOM(env, voters), &v)) {
        const char *why = get_ids(env, v, &a->voters, &cfg->n_voters);
        if (why)
            return why;
        cfg->voters = a->voters;
    }
    if (opt(env, map, ATOM(env, hard_state), &v)) {
        const ERL_NIF_TERM *el;
        int arity;
        if (!enif_get_tuple(env, v, &arity, &el) || arity != 3 ||
            !get_index(env, el[0], &cfg->hard_state.term) ||
            !get_index(env, el[1], &cfg->hard_state.vote) ||
            !get_index(env, el[2], &cfg->hard_state.commit))
            return "hard_state must be {Term, Vote, Commit}";
    }
    if (opt(env, map, ATOM(env, snapshot), &v) && !is_nil(env, v)) {
        const char *why = get_snapshot(env, v, a);
        if (why)
            return why;
        cfg->snapshot = &a->snapshot;
    }
    if (opt(env, map, ATOM(env, entries), &v)) {
        const char *why = get_entries(env, v, a, &cfg->n_entries);
        if (why)
            return why;
        cfg->entries = a->entries;
    }
    if (opt(env, map, ATOM(env, applied), &v) && !get_index(env, v, &cfg->applied))
        return "applied must be a log index";
    return NULL;
}

ERL_NIF_TERM synod_raft_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    raft_config cfg;
    new_args a = {0};
    const char *why = parse_config(env, argv[0], &cfg, &a);
    if (why) {
        new_args_free(&a);
        return synod_raise_badarg(env, why);
    }
    int err = RAFT_OK;
    raft_t *r = raft_new(&cfg, &err);
    new_args_free(&a);
    if (!r)
        return error_term(env, err);
    nif_raft *res = enif_alloc_resource(synod_priv(env)->raft_type, sizeof *res);
    if (!res) {
        raft_free(r);
        return error_term(env, RAFT_ERR_NOMEM);
    }
    res->r = r;
    res->lock = enif_mutex_create("synod_raft");
    ERL_NIF_TERM term = enif_make_resource(env, res);
    enif_release_resource(res);
    if (!res->lock)
        return error_term(env, RAFT_ERR_NOMEM);
    return enif_make_tuple2(env, ATOM(env, ok), term);
}

/* raft_seed() -> a random 64-bit seed for a new instance's election jitter. */
ERL_NIF_TERM synod_raft_seed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    (void)argv;
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    return u64(env, seed);
}

/* ---- calls that drive the instance ---- */

#define WITH_RAFT(env, term, res)                                                                  \
    nif_raft *res = get_raft(env, term);                                                           \
    if (!res)                                                                                      \
        return synod_raise_badarg(env, "not a raft instance");

ERL_NIF_TERM synod_raft_tick(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    enif_mutex_lock(res->lock);
    int err = raft_tick(res->r);
    enif_mutex_unlock(res->lock);
    return ok_or_error(env, err);
}

/* raft_step(R, EncodedMessage): a message from another member, exactly as
 * its raft_ready produced it. Malformed input is {error, Why}, never a
 * crash: the decoder checks every field. */
ERL_NIF_TERM synod_raft_step(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, argv[1], &bin))
        return synod_raise_badarg(env, "a raft message must be a binary");
    raft_msg m;
    int err = raft_msg_decode(bin.data, bin.size, &m);
    if (err != RAFT_OK)
        return error_term(env, err);
    enif_mutex_lock(res->lock);
    err = raft_step(res->r, &m);
    enif_mutex_unlock(res->lock);
    raft_msg_release(&m);
    return ok_or_error(env, err);
}

/* {ok, Index, Term} for an accepted proposal (Term is the leader's term, the
 * term of the new entry) or {error, Why}. Called with the lock held; drops it. */
static ERL_NIF_TERM index_reply(ErlNifEnv *env, nif_raft *res, int err, uint64_t index)
{
    raft_status st;
    raft_status_get(res->r, &st);
    enif_mutex_unlock(res->lock);
    if (err != RAFT_OK)
        return error_term(env, err);
    return enif_make_tuple3(env, ATOM(env, ok), u64(env, index), u64(env, st.term));
}

ERL_NIF_TERM synod_raft_propose(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    ErlNifBinary data;
    if (!enif_inspect_iolist_as_binary(env, argv[1], &data))
        return synod_raise_badarg(env, "a command must be iodata");
    if (data.size > RAFT_ENTRY_MAX_DATA)
        return error_term(env, RAFT_ERR_TOO_LARGE);
    uint64_t index = 0;
    enif_mutex_lock(res->lock);
    int err = raft_propose(res->r, data.data, data.size, &index);
    return index_reply(env, res, err, index);
}

/* raft_conf_change(R, add_learner | add_voter | remove, Id) */
ERL_NIF_TERM synod_raft_conf_change(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    raft_conf_op op;
    uint64_t id, index = 0;
    if (enif_is_identical(argv[1], ATOM(env, add_learner)))
        op = RAFT_CONF_ADD_LEARNER;
    else if (enif_is_identical(argv[1], ATOM(env, add_voter)))
        op = RAFT_CONF_ADD_VOTER;
    else if (enif_is_identical(argv[1], ATOM(env, remove)))
        op = RAFT_CONF_REMOVE;
    else
        return synod_raise_badarg(env, "a change is add_learner, add_voter or remove");
    if (!get_id(env, argv[2], &id))
        return synod_raise_badarg(env, "a member id must be an integer in 1..2^62-1");
    enif_mutex_lock(res->lock);
    int err = raft_propose_conf_change(res->r, op, id, &index);
    return index_reply(env, res, err, index);
}

ERL_NIF_TERM synod_raft_read_index(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    uint64_t ctx;
    if (!get_index(env, argv[1], &ctx))
        return synod_raise_badarg(env, "a read context must be an integer in 0..2^62-1");
    enif_mutex_lock(res->lock);
    int err = raft_read_index(res->r, ctx);
    enif_mutex_unlock(res->lock);
    return ok_or_error(env, err);
}

/* raft_control(R, campaign | forget_leader | transfer_leader | wake, Arg):
 * Arg is the transfer target, and ignored by the others. */
ERL_NIF_TERM synod_raft_control(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    uint64_t target = 0;
    int which;
    if (enif_is_identical(argv[1], ATOM(env, campaign)))
        which = 0;
    else if (enif_is_identical(argv[1], ATOM(env, forget_leader)))
        which = 1;
    else if (enif_is_identical(argv[1], ATOM(env, transfer_leader)))
        which = 2;
    else if (enif_is_identical(argv[1], ATOM(env, wake)))
        which = 3;
    else
        return synod_raise_badarg(env,
                                  "a control is campaign, forget_leader, transfer_leader or wake");
    if (which == 2 && !get_id(env, argv[2], &target))
        return synod_raise_badarg(env, "a transfer target must be a member id");
    enif_mutex_lock(res->lock);
    int err = which == 0   ? raft_campaign(res->r)
              : which == 1 ? raft_forget_leader(res->r)
              : which == 2 ? raft_transfer_leader(res->r, target)
                           : raft_wake(res->r);
    enif_mutex_unlock(res->lock);
    return ok_or_error(env, err);
}

/* raft_compact(R, Index, Size, Checksum) -> {ok, {Index, Term, Voters,
 * Learners}, EntriesAfter}: the driver has written the snapshot at Index
 * (Size bytes, Checksum) to its file; returns the snapshot's metadata and the
 * log entries after it, which is everything the storage needs to rewrite its
 * files. Call it only with no Ready pending, so that every entry in the
 * core's log is persisted. */
ERL_NIF_TERM synod_raft_compact(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    uint64_t index, size, checksum;
    if (!get_id(env, argv[1], &index))
        return synod_raise_badarg(env, "a snapshot index must be an integer in 1..2^62-1");
    if (!get_index(env, argv[2], &size) || !get_index(env, argv[3], &checksum))
        return synod_raise_badarg(env, "snapshot size and checksum must be integers in 0..2^62-1");
    enif_mutex_lock(res->lock);
    int err = raft_compact(res->r, index, size, checksum);
    ERL_NIF_TERM reply;
    if (err != RAFT_OK) {
        reply = error_term(env, err);
    } else {
        raft_status st;
        raft_status_get(res->r, &st);
        ERL_NIF_TERM after = enif_make_list(env, 0);
        for (uint64_t i = st.last_index; i > index; i--) {
            const raft_entry *e = raft_entry_get(res->r, i);
            if (e)
                after = enif_make_list_cell(env, entry_term(env, e), after);
        }
        reply = enif_make_tuple3(env, ATOM(env, ok), snapshot_meta(env, raft_snapshot_get(res->r)),
                                 after);
    }
    enif_mutex_unlock(res->lock);
    return reply;
}

/* raft_snapshot_received(R, Index, Term, Ok :: boolean()) -> ok | {error, _} */
ERL_NIF_TERM synod_raft_snapshot_received(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    uint64_t index, term;
    bool ok;
    if (!get_id(env, argv[1], &index) || !get_id(env, argv[2], &term) ||
        !get_bool(env, argv[3], &ok))
        return synod_raise_badarg(env, "expected Index >= 1, Term >= 1, Ok :: boolean()");
    enif_mutex_lock(res->lock);
    int err = raft_snapshot_received(res->r, index, term, ok);
    enif_mutex_unlock(res->lock);
    return ok_or_error(env, err);
}

/* raft_chunk_encode(Template, Data :: iodata()) -> binary() | {error, _}:
 * the chunk message of a Ready's {chunk, ...} with its bytes filled in. */
ERL_NIF_TERM synod_raft_chunk_encode(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ErlNifBinary tpl, data;
    if (!enif_inspect_binary(env, argv[0], &tpl))
        return synod_raise_badarg(env, "a chunk template must be a binary");
    if (!enif_inspect_iolist_as_binary(env, argv[1], &data))
        return synod_raise_badarg(env, "chunk data must be iodata");
    raft_msg m;
    int err = raft_msg_decode(tpl.data, tpl.size, &m);
    if (err != RAFT_OK)
        return error_term(env, err);
    if (m.type != RAFT_MSG_SNAPSHOT || m.len != 0) {
        raft_msg_release(&m);
        return error_term(env, RAFT_ERR_INVALID);
    }
    m.data = data.size ? data.data : NULL;
    m.len = data.size;
    size_t size = raft_msg_encoded_size(&m), len = 0;
    ERL_NIF_TERM bin;
    unsigned char *buf = enif_make_new_binary(env, size, &bin);
    err = buf ? raft_msg_encode(&m, buf, size, &len) : RAFT_ERR_NOMEM;
    raft_msg_release(&m);
    return err == RAFT_OK ? bin : error_term(env, err);
}

/* ---- raft_ready(R) -> none | Ready (see the top of this file) ---- */

/* {To, {chunk, Index, Offset, Len, Size, Template}}: the template is the chunk
 * message without its bytes (raft_chunk_encode/2 fills them in). */
static ERL_NIF_TERM chunk_msg(ErlNifEnv *env, const raft_msg *orig, int *err)
{
    raft_msg m = *orig;
    m.data = NULL;
    m.len = 0;
    size_t size = raft_msg_encoded_size(&m), len = 0;
    ERL_NIF_TERM bin;
    unsigned char *buf = enif_make_new_binary(env, size, &bin);
    int rc = buf ? raft_msg_encode(&m, buf, size, &len) : RAFT_ERR_NOMEM;
    if (rc != RAFT_OK)
        *err = rc;
    ERL_NIF_TERM items[] = {
        ATOM(env, chunk),    u64(env, orig->snapshot.index), u64(env, orig->offset),
        u64(env, orig->len), u64(env, orig->snapshot.size),  bin};
    return enif_make_tuple2(env, u64(env, orig->to), enif_make_tuple_from_array(env, items, 6));
}

static ERL_NIF_TERM chunk_list(ErlNifEnv *env, const raft_chunk *cs, size_t n)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;) {
        const raft_chunk *c = &cs[i];
        ERL_NIF_TERM items[] = {
            u64(env, c->index),          u64(env, c->term),   u64(env, c->size),
            u64(env, c->checksum),       u64(env, c->offset), synod_binary(env, c->data, c->len),
            synod_boolean(env, c->last),
        };
        list = enif_make_list_cell(env, enif_make_tuple_from_array(env, items, 7), list);
    }
    return list;
}

static ERL_NIF_TERM msg_list(ErlNifEnv *env, const raft_msg *msgs, size_t n, int *err)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;) {
        if (msgs[i].type == RAFT_MSG_SNAPSHOT) {
            list = enif_make_list_cell(env, chunk_msg(env, &msgs[i], err), list);
            continue;
        }
        size_t size = raft_msg_encoded_size(&msgs[i]), len = 0;
        ERL_NIF_TERM bin;
        unsigned char *buf = enif_make_new_binary(env, size, &bin);
        if (!buf) {
            *err = RAFT_ERR_NOMEM;
            return list;
        }
        int rc = raft_msg_encode(&msgs[i], buf, size, &len);
        if (rc != RAFT_OK || len != size) {
            *err = rc != RAFT_OK ? rc : RAFT_ERR_INVALID;
            return list;
        }
        list = enif_make_list_cell(env, enif_make_tuple2(env, u64(env, msgs[i].to), bin), list);
    }
    return list;
}

static ERL_NIF_TERM event_list(ErlNifEnv *env, const raft_event *evs, size_t n)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;) {
        const raft_event *e = &evs[i];
        ERL_NIF_TERM items[] = {
            core_name(env, raft_event_name(e->type)),
            core_name(env, raft_cause_name(e->cause)),
            u64(env, e->term),
            u64(env, e->old_leader),
            u64(env, e->new_leader),
            core_name(env, raft_role_name((raft_role)e->old_role)),
            core_name(env, raft_role_name((raft_role)e->new_role)),
        };
        list = enif_make_list_cell(env, enif_make_tuple_from_array(env, items, 7), list);
    }
    return list;
}

static ERL_NIF_TERM read_list(ErlNifEnv *env, const raft_read_state *rs, size_t n)
{
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = n; i-- > 0;)
        list = enif_make_list_cell(
            env, enif_make_tuple2(env, u64(env, rs[i].ctx), u64(env, rs[i].index)), list);
    return list;
}

static ERL_NIF_TERM ready_term(ErlNifEnv *env, const raft_ready_t *rd, int *err)
{
    ERL_NIF_TERM nil = ATOM(env, nil);
    ERL_NIF_TERM snapshot = nil;
    if (rd->snapshot)
        snapshot =
            enif_make_tuple6(env, u64(env, rd->snapshot->index), u64(env, rd->snapshot->term),
                             id_list(env, rd->snapshot->voters, rd->snapshot->n_voters),
                             id_list(env, rd->snapshot->learners, rd->snapshot->n_learners),
                             u64(env, rd->snapshot->size), u64(env, rd->snapshot->checksum));
    ERL_NIF_TERM items[] = {
        rd->hard_state_changed ? hard_state_term(env, &rd->hard_state) : nil,
        rd->seq ? u64(env, rd->seq) : synod_boolean(env, rd->must_sync),
        snapshot,
        entry_list(env, rd->entries, rd->n_entries),
        msg_list(env, rd->msgs, rd->n_early, err),
        msg_list(env, rd->msgs + rd->n_early, rd->n_msgs - rd->n_early, err),
        entry_list(env, rd->committed, rd->n_committed),
        event_list(env, rd->events, rd->n_events),
        read_list(env, rd->reads, rd->n_reads),
        chunk_list(env, rd->chunks, rd->n_chunks),
    };
    return enif_make_tuple_from_array(env, items, sizeof items / sizeof *items);
}

ERL_NIF_TERM synod_raft_ready(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    enif_mutex_lock(res->lock);
    if (!raft_has_ready(res->r)) {
        enif_mutex_unlock(res->lock);
        return ATOM(env, none);
    }
    raft_ready_t rd;
    int err = raft_ready(res->r, &rd);
    ERL_NIF_TERM reply = 0;
    if (err == RAFT_OK) {
        reply = ready_term(env, &rd, &err);
        int adv = raft_advance(res->r, &rd);
        if (err == RAFT_OK)
            err = adv;
    }
    enif_mutex_unlock(res->lock);
    return err == RAFT_OK ? reply : error_term(env, err);
}

/* raft_persisted(R, Seq) -> ok | {error, invalid}: the writes of every
 * Ready up to the one whose Sync was Seq are durable (async_persist only;
 * {error, invalid} without it, or for a Seq never handed out; a Seq already
 * confirmed is ignored). */
ERL_NIF_TERM synod_raft_persisted(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    uint64_t seq;
    if (!get_id(env, argv[1], &seq))
        return synod_raise_badarg(env, "a persisted seq must be an integer in 1..2^62-1");
    enif_mutex_lock(res->lock);
    int err = raft_persisted(res->r, seq);
    enif_mutex_unlock(res->lock);
    return ok_or_error(env, err);
}

/* raft_status(R) -> map() */
ERL_NIF_TERM synod_raft_status(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    raft_status st;
    uint64_t voters[RAFT_MAX_MEMBERS], learners[RAFT_MAX_MEMBERS];
    enif_mutex_lock(res->lock);
    raft_status_get(res->r, &st);
    size_t nv = raft_voters(res->r, voters, RAFT_MAX_MEMBERS);
    size_t nl = raft_learners(res->r, learners, RAFT_MAX_MEMBERS);
    enif_mutex_unlock(res->lock);
    if (nv > RAFT_MAX_MEMBERS)
        nv = RAFT_MAX_MEMBERS;
    if (nl > RAFT_MAX_MEMBERS)
        nl = RAFT_MAX_MEMBERS;
    ERL_NIF_TERM keys[] = {
        ATOM(env, id),          ATOM(env, term),       ATOM(env, vote),      ATOM(env, leader),
        ATOM(env, role),        ATOM(env, voter),      ATOM(env, commit),    ATOM(env, applied),
        ATOM(env, first_index), ATOM(env, last_index), ATOM(env, last_term), ATOM(env, transferee),
        ATOM(env, voters),      ATOM(env, learners),   ATOM(env, quiesced),
    };
    ERL_NIF_TERM values[] = {
        u64(env, st.id),
        u64(env, st.term),
        u64(env, st.vote),
        u64(env, st.leader),
        core_name(env, raft_role_name((raft_role)st.role)),
        synod_boolean(env, st.is_voter),
        u64(env, st.commit),
        u64(env, st.applied),
        u64(env, st.first_index),
        u64(env, st.last_index),
        u64(env, st.last_term),
        u64(env, st.transferee),
        id_list(env, voters, nv),
        id_list(env, learners, nl),
        synod_boolean(env, st.quiesced),
    };
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, sizeof keys / sizeof *keys, &map);
    return map;
}

/* raft_quiesced(R) -> boolean: whether the member is quiesced (idle: its
 * ticks are ignored, so the driver may stop its timer until an input). */
ERL_NIF_TERM synod_raft_quiesced(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    WITH_RAFT(env, argv[0], res);
    raft_status st;
    enif_mutex_lock(res->lock);
    raft_status_get(res->r, &st);
    enif_mutex_unlock(res->lock);
    return synod_boolean(env, st.quiesced);
}
