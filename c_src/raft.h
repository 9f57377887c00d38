/* raft.h -- Synod's Raft consensus core: a pure, deterministic state machine.
 *
 * WHAT IT IS
 *
 *   One raft_t is one member of one Raft group. It never does I/O, never reads
 *   a clock, never sleeps and keeps no global state. Everything happens through
 *   five kinds of call, in the shape of etcd's raft library:
 *
 *     raft_tick(r)               time: one logical tick (the driver's timer)
 *     raft_step(r, msg)          a message from another member
 *     raft_propose(r, ...)       a command from a client (leader only), and the
 *                                other requests: conf change, read index,
 *                                leadership transfer, campaign, compaction
 *     raft_ready(r, &rd)         what the driver must now do (persist, send,
 *                                apply, notify) ...
 *     raft_advance(r, &rd)       ... and the acknowledgement that it did it.
 *
 *   Randomness (election jitter) comes from raft_config.seed through a
 *   splitmix64 generator inside the instance: the same seed and the same calls
 *   give the same outputs, bit for bit, on every platform.
 *
 *   Implemented: pre-vote, check-quorum, leader stickiness, a no-op entry at
 *   the start of each term, the commit rule of Raft §5.4.2, conflict
 *   resolution with fast backtracking hints, pipelined replication with a
 *   window, snapshots and compaction, single-server membership changes with
 *   learners, leadership transfer, read-index and leader watch events.
 *
 * THE DRIVER LOOP (the order is part of the contract)
 *
 *     for each input (tick / received message / client request):
 *         call raft_tick / raft_step / raft_propose ...
 *         while (raft_has_ready(r)) {
 *             raft_ready(r, &rd);
 *             0. SEND EARLY rd.msgs[0 .. rd.n_early) (may also go out during
 *                or after step 1; they never wait for the disk).
 *             1. PERSIST, in this order:
 *                  a. rd.snapshot (if not NULL): write it, then delete the
 *                     whole persisted log (the entries after it follow in b);
 *                  b. rd.entries: delete every persisted entry whose index is
 *                     >= rd.entries[0].index, then append rd.entries;
 *                  c. rd.hard_state if rd.hard_state_changed;
 *                  d. rd.chunks: write each at its offset into the receive
 *                     file (offset 0: a new file); if one is `last`, fsync
 *                     that file and check its size and checksum;
 *                then, if rd.must_sync, fsync everything written so far
 *                (including hard states of earlier Readies not yet synced).
 *             2. SEND the rest, rd.msgs[rd.n_early .. rd.n_msgs), only after
 *                step 1 returned. Messages may be sent in any order, dropped,
 *                duplicated or delayed; Raft tolerates all of that, but not a
 *                late message sent before the fsync.
 *             3. APPLY: if rd.snapshot, restore the state machine from it;
 *                then apply rd.committed in order.
 *             4. NOTIFY: deliver rd.events (leader watches) and rd.reads.
 *                Deliver asynchronously: a watcher must never block the loop.
 *             raft_advance(r, &rd);   (only after step 1's fsync)
 *             if a chunk was `last`: raft_snapshot_received(r, index, term, ok)
 *         }
 *   Leader side of step 0/2: a RAFT_MSG_SNAPSHOT in rd.msgs has `len` set and
 *   `data` NULL: the driver reads bytes [offset, offset + len) of its
 *   snapshot file (snapshot `snapshot.index`) into `data` before encoding it.
 *
 *   Between raft_ready and raft_advance no other raft_* call that changes the
 *   instance may be made (they return RAFT_ERR_BUSY). This keeps every pointer
 *   in raft_ready valid until raft_advance.
 *
 * THE PERSISTENCE RULE (decided here, carried in the Ready)
 *
 *   rd.must_sync is true when the Ready holds a snapshot, entries, or a term
 *   or vote that differs from the last Ready's: those are promises. A vote
 *   response promises the vote is durable (two leaders in one term
 *   otherwise); an append response promises the entries are durable (a
 *   committed entry could vanish otherwise); a vote request promises the
 *   candidate's own vote. A Ready whose only change to the hard state is the
 *   commit index has must_sync false: the driver writes the hard state but
 *   need not fsync it (it becomes durable with the next fsync, or never).
 *   That is safe because the commit index is not a promise: the log it
 *   points into is durable (entries are synced before they are acknowledged
 *   or applied), a restart from an older commit index re-applies nothing
 *   twice (the state machine is rebuilt from the snapshot), and the member
 *   relearns the commit index from the leader's next append or heartbeat,
 *   or, as the new leader, by committing an entry of its own term. So in
 *   steady state a member fsyncs once per batch of entries, not twice.
 *
 *   rd.n_early counts the leader's own appends, heartbeats, snapshots and
 *   timeout-now messages when the term and vote are already durable (Raft
 *   thesis §10.2.1): they promise nothing about the leader's disk, so the
 *   followers write while the leader writes. The leader counts its own copy
 *   towards a commit quorum only when it steps a follower's answer, which
 *   can only happen after raft_advance, which comes after the fsync: no
 *   entry commits on the strength of a copy not on the leader's disk.
 *
 * SNAPSHOTS IN CHUNKS
 *
 *   A follower that needs entries the leader has compacted gets the leader's
 *   snapshot in chunks of snapshot_chunk bytes, at most snapshot_window of
 *   them unacknowledged. Every chunk carries the snapshot's metadata, so the
 *   follower tells transfers apart by (index, term, size, checksum). It takes
 *   only the chunk at the offset it expects: a duplicate is answered with
 *   that offset, a gap (a lost or reordered chunk) or an unknown transfer at
 *   offset > 0 (it restarted) with a reject naming it; the leader resends
 *   from there. No ack progress for an election timeout resends from the
 *   last acked offset (from the last chunk if all were acked). A new leader
 *   sends offset 0; a follower holding the same snapshot's first bytes
 *   answers with its offset and the transfer resumes. A leader that compacts
 *   again restarts its transfers with the new snapshot.
 *   The persistence rule for chunks: an ack of a chunk that is not the last
 *   promises nothing durable (a follower that crashes forgets its transfer
 *   and asks from 0), so chunks need no fsync. The last chunk is not acked
 *   by the core at all: the driver fsyncs the whole file and checks it, then
 *   calls raft_snapshot_received; only then is the snapshot installed, and
 *   the ack (an APPEND_RESP at the snapshot's index) goes out after the
 *   Ready with rd.snapshot has been persisted. A failed check restarts the
 *   transfer from 0: never fatal, never partial state.
 *
 * WHAT MUST BE PERSISTED
 *
 *   The hard state (term, vote, commit), the log (entries after the snapshot)
 *   and the latest snapshot (raft_snapshot: index, term, membership, data).
 *   On restart the driver hands exactly that back in raft_config (hard_state,
 *   snapshot, entries); the commit index may be older than the one before
 *   the crash (see above), never newer than the durable log.
 *   A fresh member of a new group gives the bootstrap voters instead; every
 *   bootstrap member must be given the same list. A member that joins an
 *   existing group is started with no voters and no state: the leader brings
 *   it up to date (it must first be added as a learner).
 *
 * MEMORY OWNERSHIP
 *
 *   - Everything passed in (config arrays, messages, proposal bytes, snapshot
 *     bytes) is borrowed for the duration of the call and copied if kept.
 *   - Everything handed out in raft_ready (entries, messages, snapshot,
 *     events, reads) is owned by the instance and valid until raft_advance.
 *   - raft_msg_decode fills a raft_msg whose entry and snapshot bytes point
 *     INTO the input buffer (zero copy) and whose arrays are allocated;
 *     release it with raft_msg_release while the input buffer is still alive.
 *   - Allocation is malloc/free only. If an allocation fails the call returns
 *     RAFT_ERR_NOMEM and the instance is poisoned: every later call returns
 *     RAFT_ERR_NOMEM and the driver must raft_free it and restart from
 *     persisted state (nothing of the failed batch was persisted or sent, so
 *     this is exactly a crash, which Raft tolerates).
 *
 * COSTS
 *
 *   The log lives in memory between the snapshot and the last index (one
 *   malloc per entry's bytes); the driver bounds it with raft_compact. The
 *   core never holds snapshot bytes beyond the chunks of one Ready.
 *   Member lookups are linear scans over at most RAFT_MAX_MEMBERS members.
 *   A step costs O(members + entries in the message).
 *
 * QUIESCING (raft_config.quiesce; docs/raft.md, "Quiescing idle groups")
 *
 *   An idle group stops its timers and sends nothing. At a heartbeat tick a
 *   leader whose group is idle -- no transfer, no pending read, everything
 *   committed in this term and applied here, every other member in
 *   REPLICATE with match = last index (or silent for over a check-quorum
 *   round: its node is down), a quorum heard from this round -- sends its
 *   heartbeats flagged RAFT_FLAG_QUIESCE (plain to a lagging member) and
 *   stops heartbeating and running check-quorum. A follower that gets that
 *   heartbeat in the leader's term while caught up (last index = commit =
 *   the heartbeat's commit) stops its election timer and does not answer;
 *   one that is not caught up answers RAFT_FLAG_WAKE. A quiesced member
 *   ignores raft_tick (the driver may stop ticking it: raft_status.quiesced)
 *   and wakes on: any raft_step except the leader's quiesce heartbeat
 *   (follower) or a plain heartbeat answer from a caught-up member
 *   (leader); raft_propose, raft_propose_conf_change, raft_read_index,
 *   raft_transfer_leader, raft_campaign, raft_forget_leader, and raft_wake
 *   (the driver saw a member's node go down or come up). Waking restarts the
 *   timers from 0; a leader heartbeats at once (and its check-quorum window
 *   starts over), a follower woken by anyone but its leader sends the leader
 *   RAFT_FLAG_WAKE. Quiescing is volatile: a restarted member is awake.
 *   A quiesced group notices a dead leader only through the driver (nodedown
 *   -> raft_forget_leader) or a message: with quiescing the driver must
 *   report node failures. Reads stay safe: the core has no lease reads, and
 *   raft_read_index always waits for a quorum's answer to a heartbeat sent
 *   after the request.
 *
 * ASYNCHRONOUS PERSISTENCE (raft_config.async_persist; docs/raft.md,
 * "Members that keep stepping: raft_persisted")
 *
 *   Off by default: then everything above holds as written. With it on, a
 *   handed-out Ready is not taken as persisted, and the driver need not wait
 *   for its disk before the next input:
 *
 *     - Every message in rd.msgs may be sent at once (n_early == n_msgs):
 *       the core itself holds back each message that depends on a write
 *       not yet durable (an append ack, a vote grant, a vote request, and,
 *       while the term or vote is not durable, everything) and hands it
 *       out in a later Ready, once raft_persisted covers that write.
 *     - rd.seq is non-zero exactly when rd.must_sync: the driver writes the
 *       Ready's snapshot, entries and hard state (in order, after those of
 *       every earlier Ready), and once they are durable calls
 *       raft_persisted(r, rd.seq). Confirming seq confirms every earlier
 *       write too. The driver may call raft_advance at once, and keep
 *       calling raft_tick / raft_step / raft_propose / raft_ready meanwhile.
 *     - rd.committed holds only entries that are committed AND durable on
 *       this member, so the driver applies at once (step 3 does not wait).
 *       A Ready with rd.snapshot must have its snapshot written before the
 *       state machine is restored from it.
 *     - The leader counts its own copy of an entry towards a commit only
 *       once raft_persisted covers it.
 *     - A confirmation of a write whose entries a new leader has since cut
 *       (a conflicting append stepped while the write was in flight)
 *       confirms the term and vote of that write, and entries only as far
 *       as the current log still agrees with them (same index and term):
 *       the entries that replaced them wait for their own write.
 *
 *   raft_persisted returns RAFT_ERR_INVALID without async_persist, for 0,
 *   and for a seq never handed out; a seq already confirmed is ignored
 *   (RAFT_OK). After a restart seq starts again from 1: a driver must not
 *   carry confirmations across raft_free.
 *
 * THREADS: none. One raft_t must not be used by two threads at once; distinct
 * instances are independent.
 */
#ifndef SYNOD_RAFT_H
#define SYNOD_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits. The decoder rejects anything above them. */
#define RAFT_MAX_MEMBERS 64                 /* voters + learners */
#define RAFT_MSG_MAX_ENTRIES 4096           /* entries in one append */
#define RAFT_ENTRY_MAX_DATA (1u << 20)      /* bytes of one entry's data */
#define RAFT_SNAPSHOT_MAX_CHUNK (16u << 20) /* bytes of one snapshot chunk */
#define RAFT_MSG_MAX_BYTES (64u << 20)      /* one encoded message */
#define RAFT_INDEX_MAX ((uint64_t)1 << 62)  /* terms, indexes, ids, ctx */
#define RAFT_WIRE_VERSION 1

enum raft_err {
    RAFT_OK = 0,
    RAFT_ERR_NOMEM = -1,         /* allocation failed; instance poisoned */
    RAFT_ERR_INVALID = -2,       /* bad argument or malformed message */
    RAFT_ERR_NOT_LEADER = -3,    /* request needs the leader */
    RAFT_ERR_BUSY = -4,          /* called between raft_ready and raft_advance */
    RAFT_ERR_TRANSFERRING = -5,  /* leadership transfer in progress */
    RAFT_ERR_CONF_PENDING = -6,  /* a conf change is uncommitted, or no entry of
                                    this term is committed yet */
    RAFT_ERR_NOT_CAUGHT_UP = -7, /* learner too far behind to be promoted */
    RAFT_ERR_NOT_MEMBER = -8,    /* id is not (or already) a member */
    RAFT_ERR_COMPACTED = -9,     /* index already covered by the snapshot */
    RAFT_ERR_UNAVAILABLE = -10,  /* index not applied yet / not in the log */
    RAFT_ERR_TOO_LARGE = -11,    /* over a documented cap */
    RAFT_ERR_TRUNCATED = -12,    /* decode: input ends inside a field */
    RAFT_ERR_VERSION = -13,      /* decode: unknown wire version */
    RAFT_ERR_TRAILING = -14,     /* decode: bytes left after the message */
    RAFT_ERR_CHECKSUM = -15,     /* decode: a snapshot chunk's bytes fail their
                                    CRC-32C (damaged in transit) */
};

const char *raft_strerror(int err);
/* The error's name for drivers to hand out (an Erlang atom in the NIF):
 * "not_leader", "compacted", ...; "unknown" for a code not above. */
const char *raft_err_name(int err);

typedef enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE = 1,
    RAFT_CANDIDATE = 2,
    RAFT_LEADER = 3,
} raft_role;

const char *raft_role_name(raft_role role);

typedef enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* opaque command for the state machine */
    RAFT_ENTRY_NOOP = 1,   /* appended by each new leader; apply as nothing */
    RAFT_ENTRY_CONF = 2,   /* membership change (see raft_conf_change_decode) */
} raft_entry_type;

typedef struct raft_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type; /* raft_entry_type */
    const uint8_t *data;
    size_t len;
} raft_entry;

/* Membership changes are single-server: at most one uncommitted at a time.
 * A new member joins as a learner (receives the log, does not vote), is
 * promoted with ADD_VOTER once caught up, and leaves with REMOVE. A change
 * takes effect on every member as soon as its entry is in that member's log
 * (Raft dissertation §4.1), and is undone if the entry is truncated. */
typedef enum raft_conf_op {
    RAFT_CONF_ADD_LEARNER = 1,
    RAFT_CONF_ADD_VOTER = 2, /* promote a learner */
    RAFT_CONF_REMOVE = 3,
    RAFT_CONF_BOOTSTRAP = 4, /* index 1 of a new group; made by the core */
} raft_conf_op;

typedef struct raft_conf_change {
    uint8_t op;  /* raft_conf_op */
    uint64_t id; /* 0 for BOOTSTRAP */
} raft_conf_change;

/* Decode the data of a RAFT_ENTRY_CONF entry (for the driver's own records). */
int raft_conf_change_decode(const uint8_t *data, size_t len, raft_conf_change *out);

/* A snapshot: the state machine at `index`, plus the membership at `index`.
 * The core holds only this metadata; the state machine's bytes (`size` of
 * them) live in the driver's snapshot file, and `checksum` is the driver's
 * checksum over them (opaque to the core: it only compares it, to tell one
 * snapshot's bytes from another's). */
typedef struct raft_snapshot {
    uint64_t index;
    uint64_t term;
    const uint64_t *voters;
    size_t n_voters;
    const uint64_t *learners;
    size_t n_learners;
    uint64_t size;     /* bytes of state machine data, < RAFT_INDEX_MAX */
    uint64_t checksum; /* driver's checksum of those bytes */
} raft_snapshot;

/* One piece of a snapshot in transit (see "SNAPSHOTS IN CHUNKS" above). */
typedef struct raft_chunk {
    uint64_t index, term, size, checksum; /* the snapshot it belongs to */
    uint64_t offset;                      /* of data[0] in the snapshot bytes */
    const uint8_t *data;
    size_t len;
    bool last; /* offset + len == size */
} raft_chunk;

typedef struct raft_hard_state {
    uint64_t term;
    uint64_t vote; /* 0 = none */
    uint64_t commit;
} raft_hard_state;

typedef enum raft_msg_type {
    RAFT_MSG_PREVOTE = 1,
    RAFT_MSG_PREVOTE_RESP = 2,
    RAFT_MSG_VOTE = 3,
    RAFT_MSG_VOTE_RESP = 4,
    RAFT_MSG_APPEND = 5,
    RAFT_MSG_APPEND_RESP = 6,
    RAFT_MSG_HEARTBEAT = 7,
    RAFT_MSG_HEARTBEAT_RESP = 8,
    RAFT_MSG_SNAPSHOT = 9,
    RAFT_MSG_TIMEOUT_NOW = 10,
    RAFT_MSG_SNAPSHOT_RESP = 11,
} raft_msg_type;

#define RAFT_MSG_TYPE_MAX 11

const char *raft_msg_type_name(int type);

/* Message flags. */
#define RAFT_FLAG_REJECT 0x01 /* *_RESP: request refused */
#define RAFT_FLAG_TRANSFER                                                                         \
    0x02 /* VOTE: campaign of a leadership transfer,                                               \
            overrides leader stickiness */
#define RAFT_FLAG_LOST                                                                             \
    0x04 /* APPEND_RESP (with REJECT): the follower lacks entries the                              \
            leader knows it acknowledged (its files were lost); hint is its                        \
            last index: the leader starts over from there */
#define RAFT_FLAG_QUIESCE                                                                          \
    0x08 /* HEARTBEAT: the leader's last one before it quiesces (see                               \
            "QUIESCING"); a caught-up follower stops its election timer */
#define RAFT_FLAG_WAKE                                                                             \
    0x10 /* HEARTBEAT_RESP: the sender is awake (or would not quiesce) and                         \
            asks the leader to heartbeat again */

/* One message between members. Which fields mean what, per type:
 *
 *   type            index            log_term        commit  hint    ctx
 *   PREVOTE, VOTE   last log index   last log term   -       -       -
 *   *VOTE_RESP      -                -               -       -       -
 *   APPEND          prev log index   prev log term   commit  -       -
 *   APPEND_RESP     match / rejected hint term       -       hint    -
 *   HEARTBEAT       -                -               commit  -       read round
 *   HEARTBEAT_RESP  -                -               -       -       read round
 *   SNAPSHOT        (uses .snapshot, .offset, .data, .len: one chunk)
 *   SNAPSHOT_RESP   snapshot index   snapshot term   -       offset  -
 *   TIMEOUT_NOW     -                -               -       -       -
 *
 * SNAPSHOT_RESP's hint is the offset the follower expects next (all bytes
 * before it received); with RAFT_FLAG_REJECT the leader must resend from
 * there (a gap, a restarted follower, a failed install: hint 0).
 *
 * For PREVOTE the term is the term the sender would campaign in (its own + 1).
 * Fields a type does not use must be zero (the encoder does not carry them).
 * `mem` belongs to whoever built the message; leave it NULL in your own. */
typedef struct raft_msg {
    uint8_t type;  /* raft_msg_type */
    uint8_t flags; /* RAFT_FLAG_* */
    uint64_t from;
    uint64_t to;
    uint64_t term;
    uint64_t index;
    uint64_t log_term;
    uint64_t commit;
    uint64_t hint;
    uint64_t ctx;
    const raft_entry *entries; /* APPEND only; entries[i].index == index+1+i */
    size_t n_entries;
    raft_snapshot snapshot; /* SNAPSHOT only: the snapshot's metadata */
    uint64_t offset;        /* SNAPSHOT only: of data[0] in the snapshot bytes */
    const uint8_t *data;    /* SNAPSHOT only: the chunk (see rd.msgs) */
    size_t len;             /* SNAPSHOT only: chunk bytes, offset + len <= size */
    void *mem;
} raft_msg;

/* Why a role or leader changed. */
typedef enum raft_cause {
    RAFT_CAUSE_ELECTION_TIMEOUT = 1, /* election timer fired */
    RAFT_CAUSE_CAMPAIGN = 2,         /* driver called raft_campaign */
    RAFT_CAUSE_PRE_VOTE_WON = 3,     /* pre-vote quorum: real election starts */
    RAFT_CAUSE_ELECTION_WON = 4,
    RAFT_CAUSE_ELECTION_LOST = 5, /* a quorum refused the (pre-)vote */
    RAFT_CAUSE_LEADER_FOUND = 6,  /* heard from the leader of the term */
    RAFT_CAUSE_HIGHER_TERM = 7,   /* saw a higher term (e.g. a vote request) */
    RAFT_CAUSE_CHECK_QUORUM = 8,  /* leader lost contact with a quorum */
    RAFT_CAUSE_TRANSFER = 9,      /* campaign of a leadership transfer */
    RAFT_CAUSE_REMOVED = 10,      /* leader's removal committed */
    RAFT_CAUSE_LEADER_LOST = 11,  /* driver called raft_forget_leader */
} raft_cause;

const char *raft_cause_name(int cause);

typedef enum raft_event_type {
    RAFT_EVENT_BECOME_FOLLOWER = 1,  /* new role is follower */
    RAFT_EVENT_BECOME_CANDIDATE = 2, /* new role is pre-candidate or candidate */
    RAFT_EVENT_BECOME_LEADER = 3,    /* this member won an election */
} raft_event_type;

const char *raft_event_name(int type); /* "become_leader", ...; "?" if unknown */

/* Leader watch event: one for every change of role or of known leader, in the
 * order the changes happened. `old_*` is the state before the change and
 * `new_*` the state after it, always. `term` is the term after the change.
 * A leader of 0 means "no known leader". */
typedef struct raft_event {
    uint8_t type;  /* raft_event_type */
    uint8_t cause; /* raft_cause */
    uint64_t term;
    uint64_t old_leader;
    uint64_t new_leader;
    uint8_t old_role; /* raft_role */
    uint8_t new_role;
} raft_event;

/* A linearizable read may be served once the state machine has applied
 * `index` (on this member, which was leader when the read was confirmed). */
typedef struct raft_read_state {
    uint64_t ctx;
    uint64_t index;
} raft_read_state;

typedef struct raft_ready {
    /* 1. persist (write), then fsync if must_sync */
    const raft_snapshot *snapshot;
    const raft_entry *entries;
    size_t n_entries;
    bool hard_state_changed; /* term, vote or commit differ from the last Ready */
    raft_hard_state hard_state;
    bool must_sync; /* snapshot, entries, or a new term or vote: fsync before
                       msgs[n_early..n_msgs) leave and before raft_advance */
    /* 2. send: msgs[0..n_early) at any time (even before step 1), the rest
     * only after step 1 */
    const raft_msg *msgs;
    size_t n_msgs;
    size_t n_early;
    /* 3. apply (after restoring rd.snapshot, if any) */
    const raft_entry *committed;
    size_t n_committed;
    /* 1d. snapshot chunks received: write each at its offset into the
     * receive file (offset 0 starts a new one); a `last` one asks for fsync,
     * checksum and raft_snapshot_received after raft_advance */
    const raft_chunk *chunks;
    size_t n_chunks;
    /* 4. notify */
    const raft_event *events;
    size_t n_events;
    const raft_read_state *reads;
    size_t n_reads;
    /* async_persist: non-zero iff must_sync; hand it to raft_persisted once
     * this Ready's writes are durable. Always 0 otherwise. */
    uint64_t seq;
} raft_ready_t;

typedef struct raft_config {
    uint64_t id; /* this member; non-zero, < RAFT_INDEX_MAX */
    uint64_t seed;
    uint32_t election_tick;  /* T: election timeout drawn in [T, 2T) ticks */
    uint32_t heartbeat_tick; /* leader heartbeat period; < election_tick */
    bool pre_vote;
    bool check_quorum;        /* also enables leader stickiness */
    uint32_t max_msg_entries; /* entries per append message */
    size_t max_msg_bytes;     /* entry bytes per append (at least one entry) */
    uint32_t max_inflight;    /* entries sent beyond a follower's match */
    /* Witness (docs/raft.md, "Witness"): this member votes and acknowledges
     * appends but never campaigns (so never leads), keeps no entry bytes of
     * normal entries (only their index, term and type) and keeps no snapshot
     * data (only its index, term and membership). Its driver applies nothing.
     * A local setting: the other members see an ordinary voter. */
    bool witness;
    /* Quiesce when idle (see "QUIESCING" above); off by default. */
    bool quiesce;
    /* Persist asynchronously (see "ASYNCHRONOUS PERSISTENCE"); off by
     * default. */
    bool async_persist;
    uint32_t snapshot_chunk;  /* bytes per snapshot chunk, 1..RAFT_SNAPSHOT_MAX_CHUNK */
    uint32_t snapshot_window; /* snapshot chunks in flight per follower, >= 1 */
    /* Bootstrap (fresh member of a new group, nothing persisted). */
    const uint64_t *voters;
    size_t n_voters;
    /* Restart: exactly what was persisted (all zero/NULL on first start). */
    raft_hard_state hard_state;
    const raft_snapshot *snapshot;
    const raft_entry *entries; /* entries after the snapshot, contiguous */
    size_t n_entries;
    uint64_t applied; /* last index the state machine still has applied, or 0;
                         <= the last index (it implies the commit index) */
} raft_config;

/* Defaults: election_tick 10, heartbeat_tick 1, pre_vote and check_quorum on,
 * quiesce off,
 * 64 entries / 1 MiB per append, 1024 entries in flight, snapshot chunks of
 * 1 MiB with 4 in flight. */
void raft_config_init(raft_config *cfg, uint64_t id, uint64_t seed);

typedef struct raft_t raft_t;

/* Returns NULL with *err set (RAFT_ERR_INVALID, RAFT_ERR_NOMEM) on failure.
 * A bootstrap member has entry 1 (the bootstrap configuration, committed) in
 * its first Ready; it must be persisted like any other entry. */
raft_t *raft_new(const raft_config *cfg, int *err);
void raft_free(raft_t *r);

int raft_tick(raft_t *r);
int raft_step(raft_t *r, const raft_msg *m);

/* Leader only. On success *index (if not NULL) is the entry's index; the
 * command is committed when an applied entry has that index and this term. */
int raft_propose(raft_t *r, const void *data, size_t len, uint64_t *index);
int raft_propose_conf_change(raft_t *r, raft_conf_op op, uint64_t id, uint64_t *index);

/* Leader only. A raft_read_state with this ctx appears in a later Ready once
 * a quorum confirmed this member is still leader; requests pending when
 * leadership is lost are dropped (the driver times them out). */
int raft_read_index(raft_t *r, uint64_t ctx);

/* Leader only: hand leadership to `target` (a voter) once it is caught up.
 * Proposals fail with RAFT_ERR_TRANSFERRING until it completes or an election
 * timeout passes. */
int raft_transfer_leader(raft_t *r, uint64_t target);

/* Start an election now (pre-vote first if enabled), e.g. on nodedown of the
 * leader. No-op on a leader or a non-voter. */
int raft_campaign(raft_t *r);

/* Forget the current leader (driver saw it go down): ends leader stickiness
 * so this member will vote for a new candidate at once. On a leader: step
 * down to follower in the same term, knowing no leader (its driver cannot
 * persist; docs/reliability.md, "A full disk"). */
int raft_forget_leader(raft_t *r);

/* The driver saw the node of a member go down or come up (or wants the
 * group awake for another reason): a quiesced member wakes as on a message
 * (a leader heartbeats at once and runs check-quorum again; a follower
 * restarts its election timer and wakes its leader). No-op when awake. */
int raft_wake(raft_t *r);

/* Compaction: the driver has written the state machine's snapshot at `index`
 * (<= applied), `size` bytes with checksum `checksum`, to its snapshot file.
 * The core records the metadata (to send the snapshot to slow followers, in
 * chunks the driver reads from that file) and drops the log up to `index`.
 * The driver persists raft_snapshot_get() and may then delete its persisted
 * entries <= index and its older snapshot. Transfers of an older snapshot in
 * progress restart with this one. */
int raft_compact(raft_t *r, uint64_t index, uint64_t size, uint64_t checksum);

/* Follower: the driver has written every chunk of the snapshot (index, term)
 * that a Ready handed out with `last`, fsynced the receive file and checked
 * its size and checksum (ok), or failed to (ok false: a bad checksum, a disk
 * error). With ok the core installs it: the next Ready carries it in
 * rd.snapshot (persist = make the receive file the snapshot, then restore
 * the state machine from it) and the acknowledgement to the leader among its
 * late messages. Without ok the transfer restarts from offset 0.
 * RAFT_ERR_INVALID if no such snapshot is awaiting installation. */
int raft_snapshot_received(raft_t *r, uint64_t index, uint64_t term, bool ok);
const raft_snapshot *raft_snapshot_get(const raft_t *r); /* index 0: none */

/* async_persist: the writes of every Ready up to the one that carried
 * rd.seq == seq are durable (see "ASYNCHRONOUS PERSISTENCE"). */
int raft_persisted(raft_t *r, uint64_t seq);

bool raft_has_ready(const raft_t *r);
int raft_ready(raft_t *r, raft_ready_t *rd);
int raft_advance(raft_t *r, const raft_ready_t *rd);

typedef struct raft_status {
    uint64_t id;
    uint64_t term;
    uint64_t vote;
    uint64_t leader;
    uint8_t role; /* raft_role */
    bool is_voter;
    uint64_t commit;
    uint64_t applied;
    uint64_t first_index; /* snapshot index + 1 */
    uint64_t last_index;
    uint64_t last_term;
    uint64_t transferee;
    size_t n_voters;
    size_t n_learners;
    bool quiesced; /* idle: ticks are ignored until something wakes it */
} raft_status;

void raft_status_get(const raft_t *r, raft_status *st);
/* The entry at `index`, or NULL if it is compacted or beyond the log. */
const raft_entry *raft_entry_get(const raft_t *r, uint64_t index);
/* Membership: copies up to `cap` ids; returns how many there are. */
size_t raft_voters(const raft_t *r, uint64_t *ids, size_t cap);
size_t raft_learners(const raft_t *r, uint64_t *ids, size_t cap);

/* Wire format (version 1, see docs/raft.md). All integers are unsigned
 * LEB128 varints (little-endian base-128), canonical (shortest) form. */
size_t raft_msg_encoded_size(const raft_msg *m);
int raft_msg_encode(const raft_msg *m, uint8_t *buf, size_t cap, size_t *len);
/* Checks every length and every field; on error *out is zeroed and nothing is
 * allocated. On success call raft_msg_release(out) when done. */
int raft_msg_decode(const uint8_t *buf, size_t len, raft_msg *out);
void raft_msg_release(raft_msg *m);
/* The semantic checks the decoder and raft_step apply to every message. */
int raft_msg_check(const raft_msg *m);

#endif
