/* support_raft_sim.h -- a deterministic network of raft_t members for tests
 * and the benchmark. No cmocka, no I/O: failures are recorded as a message
 * (rsim_error) for the caller to assert on.
 *
 * Each member has "stable storage" (hard state, snapshot, log) written only
 * by processing a Ready in the order raft.h prescribes (early sends, write,
 * fsync when the Ready says must_sync, other sends, apply); only what was
 * fsynced survives a crash, and a crash may come between any two of those
 * steps. Each Ready is also checked against the persistence rule (a
 * snapshot, entries or a new term or vote always asks for an fsync; only
 * the leader's own messages go out before it). Each member has a state machine
 * that is a hash chain over applied entries. A crash frees the raft_t and
 * loses everything not persisted; a restart rebuilds it from storage alone.
 * Every message goes through raft_msg_encode / raft_msg_decode.
 *
 * After every Ready the simulator checks the safety properties:
 *   election safety     at most one leader per term
 *   log matching        one (index, term) names one entry and one predecessor
 *   leader completeness a new leader holds every entry committed in an
 *                       earlier term
 *   state machine       applied entries agree with one committed sequence,
 *                       so applied sequences are prefixes of one another;
 *                       snapshots carry the same state as that sequence
 *   events              each event's old role/leader is the member's
 *                       previous new role/leader (old before new)
 *   reads               a read index covers everything committed before
 *                       the read was requested
 *
 * Time: in automatic mode one tick is RSIM_UNITS time units; messages take
 * [min_delay, max_delay] units and may be dropped or duplicated. In manual
 * mode (scripted tests) nothing happens until asked and messages are
 * delivered in FIFO order by rsim_deliver_all. */
#ifndef SYNOD_SUPPORT_RAFT_SIM_H
#define SYNOD_SUPPORT_RAFT_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define RSIM_MAX_NODES 9
#define RSIM_UNITS 10

typedef struct rsim rsim;

typedef struct rsim_opts {
    size_t n_nodes;  /* ids 1..n_nodes */
    size_t n_voters; /* bootstrap voters 1..n_voters (0 = all); others join later */
    uint64_t seed;
    uint32_t election_tick, heartbeat_tick;
    bool pre_vote, check_quorum;
    bool manual;              /* scripted: no clock, FIFO delivery, no faults */
    bool lockstep;            /* all members tick at the same instant */
    uint32_t drop_pm, dup_pm; /* per mille */
    uint32_t min_delay, max_delay;
    uint32_t compact_every; /* compact when this many entries applied (0 never) */
    uint32_t max_inflight, max_msg_entries;
    /* per mille of Readies in which the member crashes part way, at one of
     * the driver's steps: after its early sends and before the fsync (what
     * was written is lost), after the fsync, or after the other sends */
    uint32_t crash_ready_pm;
    /* bit id set: member id is a witness (raft_config.witness): it keeps no
     * entry bytes, applies nothing, and must never campaign or lead */
    uint32_t witness_mask;
    /* snapshots in chunks: chunk bytes and window (0: core defaults); per
     * mille of received snapshots whose file the driver finds damaged when
     * it checks it (the install must be retried from offset 0), and of chunk
     * messages damaged in transit (the codec's CRC must refuse them) */
    uint32_t snapshot_chunk, snapshot_window;
    uint32_t bad_install_pm, corrupt_chunk_pm;
    /* raft_config.quiesce on every member; with nodedown the simulated
     * driver also reports crashes and restarts as the BEAM's nodedown and
     * nodeup (rsim_crash: raft_forget_leader on the members whose leader it
     * was, raft_wake on the others; rsim_restart: raft_wake on the others;
     * rsim_heal: raft_wake on every member, the nodeups of reconnected
     * nodes) */
    bool quiesce, nodedown;
    /* raft_config.async_persist on every member: the simulated driver sends
     * every message of a Ready at once, queues its writes and applies what
     * the Ready says; each unit, with probability 1/persist_lag (>= 1), a
     * member's oldest queued writes (a random number of them) reach stable
     * storage and it calls raft_persisted. A crash loses the queue. Each
     * Ready is checked instead against what is stable: an append ack names
     * entries on stable storage, a vote grant or request a stable vote. */
    bool async_persist;
    uint32_t persist_lag;
} rsim_opts;

/* Snapshot bytes in the simulator: applied index, state machine hash, then
 * filler derived from both (so a transfer takes several chunks). */
#define RSIM_SNAP_LEN 64

void rsim_opts_default(rsim_opts *o, size_t n, uint64_t seed);
rsim *rsim_new(const rsim_opts *o);
void rsim_free(rsim *s);

const char *rsim_error(const rsim *s); /* NULL while all checks hold */
uint64_t rsim_now(const rsim *s);
uint64_t rsim_rand(rsim *s);             /* the simulation's seeded generator (splitmix64) */
raft_t *rsim_raft(rsim *s, uint64_t id); /* NULL while crashed */
uint64_t rsim_leader(rsim *s);           /* live leader of the highest term, or 0 */
uint64_t rsim_applied(const rsim *s, uint64_t id);
uint64_t rsim_max_committed(const rsim *s);
uint64_t rsim_delivered(const rsim *s); /* messages stepped so far */

/* automatic mode */
void rsim_run_units(rsim *s, uint64_t units);
void rsim_run_ticks(rsim *s, uint64_t ticks);
/* Runs until pred holds (checked every unit) or max_ticks pass. */
bool rsim_run_until(rsim *s, bool (*pred)(rsim *, void *), void *ctx, uint64_t max_ticks);
/* Predicates for rsim_run_until: some member leads; some member other than
 * *(const uint64_t *)ctx leads. */
bool rsim_has_leader(rsim *s, void *ctx);
bool rsim_has_other_leader(rsim *s, void *ctx);
void rsim_set_faults(rsim *s, uint32_t drop_pm, uint32_t dup_pm);

/* manual mode (also usable in automatic mode) */
void rsim_tick(rsim *s, uint64_t id);
void rsim_tick_n(rsim *s, uint64_t id, uint32_t n);
size_t rsim_deliver_all(rsim *s);
int rsim_campaign(rsim *s, uint64_t id);
int rsim_propose(rsim *s, uint64_t id, const void *data, size_t len, uint64_t *index);
int rsim_read_index(rsim *s, uint64_t id, uint64_t ctx);
int rsim_conf_change(rsim *s, uint64_t id, raft_conf_op op, uint64_t target);
int rsim_transfer(rsim *s, uint64_t id, uint64_t target);
int rsim_compact(rsim *s, uint64_t id);
/* Snapshot transfers counted so far: installs completed on followers,
 * installs the driver failed on purpose (bad_install_pm), chunk messages
 * sent and chunk messages damaged in transit. */
typedef struct rsim_snap_stats {
    uint64_t installed, failed_installs, chunks_sent, chunks_corrupted;
} rsim_snap_stats;
void rsim_snap_stats_get(const rsim *s, rsim_snap_stats *out);
/* Steps a hand-made message into a member and processes its Ready. */
int rsim_inject(rsim *s, const raft_msg *m);
void rsim_drain(rsim *s, uint64_t id);
/* async_persist: every queued write of `id` reaches stable storage now and
 * the member is told (raft_persisted); returns how many were queued. */
size_t rsim_flush(rsim *s, uint64_t id);
/* async_persist: writes queued on `id` and not yet stable. */
size_t rsim_pending_writes(const rsim *s, uint64_t id);

/* faults */
void rsim_crash(rsim *s, uint64_t id);
void rsim_restart(rsim *s, uint64_t id);
/* Crash, lose every file, restart empty (as a bootstrap voter if it was
 * one): the member that "lost its data dir". */
void rsim_wipe(rsim *s, uint64_t id);
void rsim_cut(rsim *s, uint64_t a, uint64_t b); /* both directions */
void rsim_isolate(rsim *s, uint64_t id);
void rsim_split(rsim *s, const uint64_t *side, size_t n); /* side vs the rest */
void rsim_ring(rsim *s); /* each member reaches just enough neighbours for a quorum */
void rsim_heal(rsim *s);
/* The driver's node monitor (also done by rsim_crash / rsim_restart when
 * opts.nodedown): `id` saw `down`'s node go down (raft_forget_leader if it
 * was its leader, else raft_wake), or come up (raft_wake). */
void rsim_nodedown(rsim *s, uint64_t id, uint64_t down);
void rsim_nodeup(rsim *s, uint64_t id, uint64_t up);
int rsim_wake(rsim *s, uint64_t id);

/* Hooks. The filter sees every message when it is sent (a copy it may
 * edit, e.g. to drop trailing entries); returning false drops it. */
typedef void (*rsim_event_fn)(void *ctx, uint64_t id, const raft_event *ev, uint64_t now);
typedef bool (*rsim_filter_fn)(void *ctx, raft_msg *m);
void rsim_set_event_hook(rsim *s, rsim_event_fn fn, void *ctx);
void rsim_set_filter(rsim *s, rsim_filter_fn fn, void *ctx);

/* Read states received by a member (ctx, index), in order. */
size_t rsim_reads(const rsim *s, uint64_t id, const raft_read_state **out);

/* One randomized run (chaos then heal-and-converge). Returns 0, or -1 with a
 * description in err. `heavy` lengthens the run. */
int rsim_run_random(uint64_t seed, char *err, size_t errlen);
/* The same with witnesses: 2 voters + 1 witness, 3 + 2 or 4 + 1; the
 * witnesses must never campaign (checked on every event). */
int rsim_run_random_witness(uint64_t seed, char *err, size_t errlen);

/* Runs `run` over seeds, as the environment says: `<env>_SEED` names one
 * seed; else `<env>_RUNS` seeds (default `runs`) from `<env>_BASE` (default
 * 1). Prints each failure (the first 5, with the line that replays it in
 * `binary`) and a count to stderr; returns how many runs failed. */
typedef int (*rsim_seeded_fn)(uint64_t seed, char *err, size_t errlen);
uint64_t rsim_run_seeds(rsim_seeded_fn run, const char *env, uint64_t runs, const char *binary);

/* ---- one member driven by hand (unit tests of single rules) ----------- */

/* What one or more Readies contained. Message entries and snapshot pointers
 * are cleared (they die at raft_advance); counts and indexes are kept. */
typedef struct rsim_cap {
    raft_msg msgs[128];
    bool early[128]; /* msgs[i] was among its Ready's n_early */
    size_t n_msgs;
    raft_event events[32];
    size_t n_events;
    raft_read_state reads[32];
    size_t n_reads;
    size_t n_entries;        /* entries to persist */
    uint64_t entries_from;   /* index of the first of them */
    size_t n_committed;      /* entries to apply */
    uint64_t committed_last; /* index of the last of them */
    bool hs_changed;
    raft_hard_state hs;
    bool must_sync;          /* some Ready asked for an fsync */
    uint64_t snapshot_index; /* 0: no snapshot to install */
    size_t n_readies;
} rsim_cap;

/* A bootstrap member `id` of voters 1..n_voters, its first Ready drained. */
raft_t *rsim_solo_new(uint64_t id, size_t n_voters, uint64_t seed, bool pre_vote,
                      bool check_quorum);
/* Processes every Ready of r into *cap (which it clears first). */
void rsim_solo_drain(raft_t *r, rsim_cap *cap);
/* The first captured message of that type to `to` (0: any), or NULL. */
const raft_msg *rsim_cap_find(const rsim_cap *c, uint8_t type, uint64_t to);
size_t rsim_cap_count(const rsim_cap *c, uint8_t type);

#endif
