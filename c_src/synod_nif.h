/*
 * synod_nif.h — what the parts of the one NIF library share.
 *
 * The library is synod_nif.c (loading, the atom table, fsync_dir) plus one
 * synod_nif_<name>.c per subsystem (ring, raft, store). A subsystem exports:
 *   - int synod_nif_<name>_load(ErlNifEnv *, nif_priv *): opens its resource
 *     types (stored in nif_priv) and returns 0, or non-zero to fail the load;
 *   - SYNOD_NIF_<NAME>_FUNCS: its entries for the ErlNifFunc table;
 * and synod_nif.c lists both. Every function keeps the library's rules: each
 * argument is checked before any work and a bad one raises
 * error({badarg, Message}) through synod_raise_badarg.
 */
#ifndef SYNOD_NIF_H
#define SYNOD_NIF_H

#include <stdbool.h>
#include <stddef.h>

#include <erl_nif.h>

#include "synod_nif_guard.h"

/* Every atom the library matches or hands out under a fixed name, made once
 * at load (one table for every subsystem). Names that come from a core at
 * run time (error, role, cause and event names: raft_err_name,
 * store_err_name, ...) are made with enif_make_atom from the core's string. */
/* clang-format off */
#define SYNOD_NIF_ATOMS(X)                                                                   \
    /* common */                                                                             \
    X(ok) X(error) X(nil) X(none) X(badarg) X(enomem)                                        \
    /* ring */                                                                               \
    X(members) X(vnodes) X(seed) X(points)                                                   \
    /* raft */                                                                               \
    X(add_learner) X(add_voter) X(remove) X(campaign) X(forget_leader) X(transfer_leader)    \
    X(id) X(term) X(vote) X(leader) X(role) X(voter)                                         \
    X(commit) X(applied) X(first_index) X(last_index) X(last_term) X(transferee)             \
    X(voters) X(learners) X(election_tick) X(heartbeat_tick) X(pre_vote) X(check_quorum)     \
    X(max_inflight) X(max_msg_entries) X(hard_state) X(snapshot) X(entries)                  \
    X(snapshot_chunk) X(snapshot_window) X(chunk) X(quiesce) X(quiesced) X(wake) X(async_persist)             \
    /* store */                                                                              \
    X(put) X(delete) X(range) X(txn) X(lease_granted) X(lease_revoked)                       \
    X(compacted) X(key) X(value) X(create_revision) X(mod_revision) X(version)               \
    X(lease) X(revision) X(compact_revision) X(next_lease_id) X(keys) X(leases)              \
    X(events) X(history_bytes) X(history_max_events) X(history_max_bytes) X(history_prev_kv) \
    X(eof)
/* clang-format on */

typedef struct nif_atoms {
#define SYNOD_NIF_ATOM_FIELD(name) ERL_NIF_TERM name;
    SYNOD_NIF_ATOMS(SYNOD_NIF_ATOM_FIELD)
#undef SYNOD_NIF_ATOM_FIELD
    ERL_NIF_TERM true_, false_; /* not field names C allows */
} nif_atoms;

typedef struct nif_priv {
    ErlNifResourceType *ring_type;
    ErlNifResourceType *raft_type;
    ErlNifResourceType *store_type;
    ErlNifResourceType *store_writer_type;
    ErlNifResourceType *store_restorer_type;
    nif_atoms atoms;
} nif_priv;

nif_priv *synod_priv(ErlNifEnv *env);
/* The load-time atom `name` (a field of nif_atoms). */
#define ATOM(env, name) (synod_priv(env)->atoms.name)
/* true / false as atoms. */
ERL_NIF_TERM synod_boolean(ErlNifEnv *env, bool b);
/* A new binary holding a copy of data[0..len). */
ERL_NIF_TERM synod_binary(ErlNifEnv *env, const void *data, size_t len);
/* Raises error({badarg, <<Message>>}). */
ERL_NIF_TERM synod_raise_badarg(ErlNifEnv *env, const char *message);

/* ---- Ring (synod_nif_ring.c) ---- */
int synod_nif_ring_load(ErlNifEnv *env, nif_priv *priv);
ERL_NIF_TERM synod_ring_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_ring_lookup(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_ring_owners(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_ring_lookup_many(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_ring_diff(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_ring_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#define SYNOD_NIF_RING_FUNCS                                                                       \
    {"ring_new", 3, synod_ring_new, 0}, {"ring_lookup", 2, synod_ring_lookup, 0},                  \
        {"ring_owners", 3, synod_ring_owners, 0},                                                  \
        {"ring_lookup_many", 3, synod_ring_lookup_many, 0}, {"ring_diff", 4, synod_ring_diff, 0},  \
    {                                                                                              \
        "ring_info", 1, synod_ring_info, 0                                                         \
    }

/* ---- Raft (synod_nif_raft.c) ---- */
int synod_nif_raft_load(ErlNifEnv *env, nif_priv *priv);
ERL_NIF_TERM synod_raft_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_seed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_tick(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_step(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_propose(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_conf_change(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_read_index(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_control(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_compact(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_snapshot_received(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_chunk_encode(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_ready(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_status(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_quiesced(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_persisted(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#define SYNOD_NIF_RAFT_FUNCS                                                                       \
    {"raft_new", 1, synod_raft_new, 0}, {"raft_tick", 1, synod_raft_tick, 0},                      \
        {"raft_step", 2, synod_raft_step, 0}, {"raft_propose", 2, synod_raft_propose, 0},          \
        {"raft_conf_change", 3, synod_raft_conf_change, 0},                                        \
        {"raft_read_index", 2, synod_raft_read_index, 0},                                          \
        {"raft_control", 3, synod_raft_control, 0}, {"raft_compact", 4, synod_raft_compact, 0},    \
        {"raft_snapshot_received", 4, synod_raft_snapshot_received, 0},                            \
        {"raft_chunk_encode", 2, synod_raft_chunk_encode, ERL_NIF_DIRTY_JOB_CPU_BOUND},            \
        {"raft_ready", 1, synod_raft_ready, 0}, {"raft_status", 1, synod_raft_status, 0},          \
        {"raft_quiesced", 1, synod_raft_quiesced, 0},                                              \
        {"raft_persisted", 2, synod_raft_persisted, 0},                                            \
    {                                                                                              \
        "raft_seed", 0, synod_raft_seed, 0                                                         \
    }

/* ---- Store (synod_nif_store.c) ---- */
int synod_nif_store_load(ErlNifEnv *env, nif_priv *priv);
ERL_NIF_TERM synod_store_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_apply(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_range(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_events_since(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_leases(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_lease(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_snapshot(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_restore(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_snapshot_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_snapshot_next(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_snapshot_close(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_restore_open(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_restore_feed(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_store_restore_finish(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#define SYNOD_NIF_STORE_FUNCS                                                                      \
    {"store_new", 1, synod_store_new, 0}, {"store_apply", 2, synod_store_apply, 0},                \
        {"store_range", 2, synod_store_range, 0},                                                  \
        {"store_events_since", 3, synod_store_events_since, 0},                                    \
        {"store_leases", 1, synod_store_leases, ERL_NIF_DIRTY_JOB_CPU_BOUND},                      \
        {"store_lease", 2, synod_store_lease, 0}, {"store_info", 1, synod_store_info, 0},          \
        {"store_snapshot", 1, synod_store_snapshot, ERL_NIF_DIRTY_JOB_CPU_BOUND},                  \
        {"store_snapshot_open", 1, synod_store_snapshot_open, ERL_NIF_DIRTY_JOB_CPU_BOUND},        \
        {"store_snapshot_next", 2, synod_store_snapshot_next, ERL_NIF_DIRTY_JOB_CPU_BOUND},        \
        {"store_snapshot_close", 1, synod_store_snapshot_close, ERL_NIF_DIRTY_JOB_CPU_BOUND},      \
        {"store_restore_open", 1, synod_store_restore_open, 0},                                    \
        {"store_restore_feed", 2, synod_store_restore_feed, ERL_NIF_DIRTY_JOB_CPU_BOUND},          \
        {"store_restore_finish", 1, synod_store_restore_finish, ERL_NIF_DIRTY_JOB_CPU_BOUND},      \
    {                                                                                              \
        "store_restore", 1, synod_store_restore, ERL_NIF_DIRTY_JOB_CPU_BOUND                       \
    }

#endif
