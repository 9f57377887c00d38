/*
 * synod_nif.h — what the parts of the one NIF library share.
 *
 * The library is synod_nif.c (ring, fsync_dir, loading) plus one
 * synod_nif_<name>.c per subsystem. A subsystem exports:
 *   - int synod_nif_<name>_load(ErlNifEnv *, nif_priv *): opens its resource
 *     types (stored in nif_priv) and returns 0, or non-zero to fail the load;
 *   - SYNOD_NIF_<NAME>_FUNCS: its entries for the ErlNifFunc table;
 * and synod_nif.c lists both. Every function keeps the library's rules: each
 * argument is checked before any work and a bad one raises
 * error({badarg, Message}) through synod_raise_badarg.
 */
#ifndef SYNOD_NIF_H
#define SYNOD_NIF_H

#include <stddef.h>

#include <erl_nif.h>

#include "synod_nif_guard.h"

typedef struct nif_atoms {
    ERL_NIF_TERM badarg, members, vnodes, seed, points;
} nif_atoms;

typedef struct nif_priv {
    ErlNifResourceType *ring_type;
    ErlNifResourceType *raft_type;
    ErlNifResourceType *store_type;
    nif_atoms atoms;
} nif_priv;

nif_priv *synod_priv(ErlNifEnv *env);
/* A new binary holding a copy of data[0..len). */
ERL_NIF_TERM synod_binary(ErlNifEnv *env, const void *data, size_t len);
/* Raises error({badarg, <<Message>>}). */
ERL_NIF_TERM synod_raise_badarg(ErlNifEnv *env, const char *message);

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
ERL_NIF_TERM synod_raft_ready(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM synod_raft_status(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

#define SYNOD_NIF_RAFT_FUNCS                                                                       \
    {"raft_new", 1, synod_raft_new, 0}, {"raft_tick", 1, synod_raft_tick, 0},                      \
        {"raft_step", 2, synod_raft_step, 0}, {"raft_propose", 2, synod_raft_propose, 0},          \
        {"raft_conf_change", 3, synod_raft_conf_change, 0},                                        \
        {"raft_read_index", 2, synod_raft_read_index, 0},                                          \
        {"raft_control", 3, synod_raft_control, 0},                                                \
        {"raft_compact", 3, synod_raft_compact, ERL_NIF_DIRTY_JOB_CPU_BOUND},                      \
        {"raft_ready", 1, synod_raft_ready, 0}, {"raft_status", 1, synod_raft_status, 0},          \
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

#define SYNOD_NIF_STORE_FUNCS                                                                      \
    {"store_new", 1, synod_store_new, 0}, {"store_apply", 2, synod_store_apply, 0},                \
        {"store_range", 2, synod_store_range, 0},                                                  \
        {"store_events_since", 3, synod_store_events_since, 0},                                    \
        {"store_leases", 1, synod_store_leases, ERL_NIF_DIRTY_JOB_CPU_BOUND},                      \
        {"store_lease", 2, synod_store_lease, 0}, {"store_info", 1, synod_store_info, 0},          \
        {"store_snapshot", 1, synod_store_snapshot, ERL_NIF_DIRTY_JOB_CPU_BOUND},                  \
    {                                                                                              \
        "store_restore", 1, synod_store_restore, ERL_NIF_DIRTY_JOB_CPU_BOUND                       \
    }

#endif
