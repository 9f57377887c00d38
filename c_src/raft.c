/* raft.c -- the Raft state machine. See raft.h for the contract.
 *
 * Pure: no I/O, no clock, no sleep, no global state; malloc/free only.
 *
 * Why it is built this way
 *
 *   The shape is etcd's raft: every input is a call (tick, step, propose),
 *   every output is queued in the instance and handed out by raft_ready, so a
 *   driver (the Elixir gen_server through the NIF, the C node, or the test
 *   simulator) decides when to persist, send and apply. Nothing in here can
 *   block or fail because of the outside world, which is what lets the tests
 *   drive thousands of seeded clusters through partitions and crashes.
 *
 *   Roles: follower, pre-candidate, candidate, leader. Role and known-leader
 *   changes go through one function, raft_set_role, which is also the only
 *   place that emits leader watch events: the event is built from the state
 *   before the assignment and the arguments after it, so old and new can never
 *   be swapped and no change can go unreported.
 *
 *   The leader tracks each member in a raft_progress: PROBE (one append in
 *   flight until answered), REPLICATE (pipelined appends within a window of
 *   max_inflight entries) and SNAPSHOT (waiting for a snapshot to land).
 *
 *   Membership lives in the log: a conf entry takes effect on append and is
 *   undone on truncation (raft_conf_rebuild), so the configuration is always
 *   a function of (snapshot membership, log).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

typedef enum raft_pr_state {
    RAFT_PR_PROBE = 0,
    RAFT_PR_REPLICATE = 1,
    RAFT_PR_SNAPSHOT = 2,
} raft_pr_state;

/* What the leader knows about one member (self included). */
typedef struct raft_progress {
    uint64_t id;
    uint64_t match;            /* highest index known replicated there */
    uint64_t next;             /* next index to send; match < next */
    uint64_t pending_snapshot; /* SNAPSHOT: index of the snapshot sent */
    uint64_t snap_sent;        /* SNAPSHOT: bytes sent (next chunk's offset) */
    uint64_t snap_acked;       /* SNAPSHOT: bytes the follower acknowledged */
    uint64_t read_ack;         /* highest read round acknowledged */
    uint64_t commit_sent;      /* highest commit index sent there */
    uint32_t snap_elapsed;     /* SNAPSHOT: ticks without ack progress */
    bool snap_all_sent;        /* SNAPSHOT: the last chunk went out */
    uint8_t state;             /* raft_pr_state */
    bool voter;
    bool paused; /* PROBE: an append is in flight */
    bool active; /* heard from since the last check-quorum round */
    bool recent; /* active in the round before that */
    int8_t vote; /* election tally: 0 none, 1 granted, -1 refused */
} raft_progress;

typedef struct raft_read_req {
    uint64_t ctx;
    uint64_t index; /* commit when requested */
    uint64_t seq;   /* read round; a heartbeat ack >= seq confirms it */
} raft_read_req;

struct raft_t {
    /* configuration */
    uint64_t id;
    uint32_t election_tick, heartbeat_tick, max_msg_entries, max_inflight;
    uint32_t snapshot_chunk, snapshot_window;
    size_t max_msg_bytes;
    bool pre_vote, check_quorum, quiesce;
    bool witness;       /* votes and acks, never campaigns, keeps no entry bytes */
    bool async_persist; /* raft.h, "ASYNCHRONOUS PERSISTENCE" */
    uint64_t rng;

    /* persistent state: term, vote and log */
    uint64_t term, vote;
    raft_log log;

    /* volatile state */
    uint64_t commit;  /* highest index known committed */
    uint64_t applied; /* highest index handed out in an advanced Ready */
    raft_role role;
    uint64_t leader; /* 0 = unknown */
    uint32_t election_elapsed, heartbeat_elapsed;
    uint32_t timeout; /* randomized election timeout in [T, 2T) */
    bool quiesced;    /* idle: ticks ignored until woken (raft.h, QUIESCING) */

    /* membership: conf is in effect; it is snap_conf with every conf entry
     * of the log applied, the last one being at conf_index */
    raft_members conf, snap_conf;
    uint64_t conf_index;
    size_t n_peers;
    raft_progress peers[RAFT_MAX_MEMBERS];

    /* leader only */
    uint64_t term_start; /* index of this term's no-op */
    uint64_t transferee;
    raft_read_req *reqs;
    size_t n_reqs, cap_reqs;
    uint64_t read_seq;

    /* latest snapshot; snap.index == log.snap_index, always */
    raft_snapshot snap;
    bool snap_pending; /* received: must go out in the next Ready */

    /* follower: the snapshot being received in chunks */
    struct {
        bool active;   /* a transfer is in progress */
        bool awaiting; /* every chunk handed out; waiting for
                          raft_snapshot_received */
        uint64_t from; /* leader that sent the latest chunk */
        uint64_t index, term, size, checksum;
        uint64_t offset; /* bytes received, contiguous from 0 */
        raft_members conf;
    } rx;
    raft_chunk *chunks; /* received this Ready; data malloc'ed */
    size_t n_chunks, cap_chunks;

    /* outputs, valid until raft_advance */
    raft_msg *msgs;
    size_t n_msgs, cap_msgs;
    raft_event *events;
    size_t n_events, cap_events;
    raft_read_state *reads;
    size_t n_reads, cap_reads;
    uint64_t unstable;        /* first index not handed out yet */
    raft_hard_state hs_given; /* hard state of the last Ready */
    uint64_t ready_last;      /* last index when raft_ready ran */
    uint64_t ready_applied;   /* applied after that Ready */

    /* async_persist only (raft.h, "ASYNCHRONOUS PERSISTENCE"). persisted:
     * the current log (snapshot and entries) is durable up to this index.
     * hs_durable: the term and vote known durable. writes[]: the Readies
     * handed out with must_sync and not yet confirmed, oldest first, each
     * with the last index and term of the log when it was handed out.
     * held[]: late messages waiting for the confirmation of write seq. */
    uint64_t persisted;
    raft_hard_state hs_durable;
    uint64_t write_seq; /* seq of the last Ready with must_sync */
    struct raft_write {
        uint64_t seq, last_index, last_term, term, vote;
    } * writes;
    size_t n_writes, cap_writes;
    struct raft_held {
        uint64_t seq;
        raft_msg m;
    } * held;
    size_t n_held, cap_held;
    size_t n_released;   /* msgs[0 .. n_released): held ones, now sendable */
    size_t ready_n_sent; /* msgs handed out in the Ready (async) */
    bool in_ready;
    bool nomem;
};

/* ---- small things -------------------------------------------------------- */

const char *raft_strerror(int err)
{
    switch (err) {
    case RAFT_OK:
        return "ok";
    case RAFT_ERR_NOMEM:
        return "out of memory";
    case RAFT_ERR_INVALID:
        return "invalid argument or message";
    case RAFT_ERR_NOT_LEADER:
        return "not the leader";
    case RAFT_ERR_BUSY:
        return "between ready and advance";
    case RAFT_ERR_TRANSFERRING:
        return "leadership transfer in progress";
    case RAFT_ERR_CONF_PENDING:
        return "membership change pending";
    case RAFT_ERR_NOT_CAUGHT_UP:
        return "learner not caught up";
    case RAFT_ERR_NOT_MEMBER:
        return "not a member (or already one)";
    case RAFT_ERR_COMPACTED:
        return "index compacted";
    case RAFT_ERR_UNAVAILABLE:
        return "index unavailable";
    case RAFT_ERR_TOO_LARGE:
        return "over a size cap";
    case RAFT_ERR_TRUNCATED:
        return "truncated input";
    case RAFT_ERR_VERSION:
        return "unknown wire version";
    case RAFT_ERR_TRAILING:
        return "trailing bytes";
    case RAFT_ERR_CHECKSUM:
        return "snapshot chunk fails its checksum";
    }
    return "unknown error";
}

const char *raft_err_name(int err)
{
    switch (err) {
    case RAFT_OK:
        return "ok";
    case RAFT_ERR_NOMEM:
        return "nomem";
    case RAFT_ERR_INVALID:
        return "invalid";
    case RAFT_ERR_NOT_LEADER:
        return "not_leader";
    case RAFT_ERR_BUSY:
        return "busy";
    case RAFT_ERR_TRANSFERRING:
        return "transferring";
    case RAFT_ERR_CONF_PENDING:
        return "conf_pending";
    case RAFT_ERR_NOT_CAUGHT_UP:
        return "not_caught_up";
    case RAFT_ERR_NOT_MEMBER:
        return "not_member";
    case RAFT_ERR_COMPACTED:
        return "compacted";
    case RAFT_ERR_UNAVAILABLE:
        return "unavailable";
    case RAFT_ERR_TOO_LARGE:
        return "too_large";
    case RAFT_ERR_TRUNCATED:
        return "truncated";
    case RAFT_ERR_VERSION:
        return "version";
    case RAFT_ERR_TRAILING:
        return "trailing";
    case RAFT_ERR_CHECKSUM:
        return "bad_checksum";
    }
    return "unknown";
}

const char *raft_event_name(int type)
{
    switch (type) {
    case RAFT_EVENT_BECOME_FOLLOWER:
        return "become_follower";
    case RAFT_EVENT_BECOME_CANDIDATE:
        return "become_candidate";
    case RAFT_EVENT_BECOME_LEADER:
        return "become_leader";
    }
    return "?";
}

const char *raft_role_name(raft_role role)
{
    static const char *names[] = {"follower", "pre_candidate", "candidate", "leader"};
    return (unsigned)role < 4 ? names[role] : "?";
}

const char *raft_msg_type_name(int type)
{
    static const char *names[] = {
        "?",           "prevote",   "prevote_resp",   "vote",     "vote_resp",   "append",
        "append_resp", "heartbeat", "heartbeat_resp", "snapshot", "timeout_now", "snapshot_resp"};
    return type >= 1 && type <= RAFT_MSG_TYPE_MAX ? names[type] : "?";
}

const char *raft_cause_name(int cause)
{
    static const char *names[] = {"?",
                                  "election_timeout",
                                  "campaign",
                                  "pre_vote_won",
                                  "election_won",
                                  "election_lost",
                                  "leader_found",
                                  "higher_term",
                                  "check_quorum",
                                  "transfer",
                                  "removed",
                                  "leader_lost"};
    return cause >= 1 && cause <= RAFT_CAUSE_LEADER_LOST ? names[cause] : "?";
}

/* splitmix64: tiny, fast, and good enough to spread election timeouts. */
static uint64_t raft_rand(raft_t *r)
{
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void raft_reset_timeout(raft_t *r)
{
    r->timeout = r->election_tick + (uint32_t)(raft_rand(r) % r->election_tick);
}

static uint64_t raft_last_index(const raft_t *r)
{
    return raft_log_last_index(&r->log);
}

static uint64_t raft_last_term(const raft_t *r)
{
    return raft_log_last_term(&r->log);
}

/* The leader's own copy counts towards a commit only once it is durable. */
static uint64_t raft_self_match(const raft_t *r)
{
    uint64_t last = raft_last_index(r);
    return r->async_persist ? raft_min_u64(r->persisted, last) : last;
}

/* What the driver may apply: committed and, in async mode, durable here. */
static uint64_t raft_applicable(const raft_t *r)
{
    return r->async_persist ? raft_min_u64(r->commit, r->persisted) : r->commit;
}

static size_t raft_quorum(const raft_t *r)
{
    return r->conf.n_voters / 2 + 1;
}

static bool raft_promotable(const raft_t *r)
{
    return raft_members_is_voter(&r->conf, r->id);
}

static raft_progress *raft_peer(raft_t *r, uint64_t id)
{
    for (size_t i = 0; i < r->n_peers; i++)
        if (r->peers[i].id == id)
            return &r->peers[i];
    return NULL;
}

static void *raft_grow(void *arr, size_t *cap, size_t need, size_t size, bool *nomem)
{
    if (need <= *cap)
        return arr;
    size_t cap2 = *cap ? *cap : 8;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(arr, cap2 * size);
    if (!p) {
        *nomem = true;
        return NULL;
    }
    *cap = cap2;
    return p;
}

/* Internal invariants that hold between public calls. O(members). */
static void raft_check(const raft_t *r)
{
#ifndef NDEBUG
    if (r->nomem)
        return;
    assert(r->commit <= raft_last_index(r));
    assert(r->applied <= r->commit);
    assert(r->snap.index == r->log.snap_index && r->snap.term == r->log.snap_term);
    assert(r->log.snap_index <= r->commit);
    assert(r->snap_pending || r->log.snap_index <= r->applied);
    assert(r->unstable >= r->log.snap_index + 1 && r->unstable <= raft_last_index(r) + 1);
    assert((r->role == RAFT_LEADER) == (r->leader == r->id));
    assert(r->role != RAFT_CANDIDATE || r->vote == r->id);
    assert(!r->witness || r->role == RAFT_FOLLOWER); /* a witness never campaigns */
    /* Only a leader or a follower quiesces, and a quiesced leader owes
     * nothing: no read waits, no transfer runs. */
    assert(!r->quiesced || r->role == RAFT_FOLLOWER ||
           (r->role == RAFT_LEADER && r->n_reqs == 0 && r->transferee == 0));
    assert(raft_last_term(r) <= r->term);
    assert(r->n_peers == (size_t)r->conf.n_voters + r->conf.n_learners);
    if (r->role == RAFT_LEADER) {
        const raft_progress *self = raft_peer((raft_t *)r, r->id);
        assert(!self || self->match == raft_self_match(r));
        assert(r->term_start >= 1 && r->term_start <= raft_last_index(r));
        for (size_t i = 0; i < r->n_peers; i++)
            assert(r->peers[i].match < r->peers[i].next &&
                   r->peers[i].next <= raft_last_index(r) + 1);
    }
#else
    (void)r;
#endif
}

/* ---- outputs -------------------------------------------------------------- */

static raft_msg *raft_msg_new(raft_t *r, uint8_t type, uint64_t to)
{
    raft_msg *msgs = raft_grow(r->msgs, &r->cap_msgs, r->n_msgs + 1, sizeof(*msgs), &r->nomem);
    if (!msgs)
        return NULL;
    r->msgs = msgs;
    raft_msg *m = &msgs[r->n_msgs++];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

/* Every role and leader change passes here; see the file comment. */
static void raft_set_role(raft_t *r, raft_role role, uint64_t leader, raft_cause cause)
{
    assert((role == RAFT_LEADER) == (leader == r->id));
    if (role == r->role && leader == r->leader)
        return;
    raft_event *ev = raft_grow(r->events, &r->cap_events, r->n_events + 1, sizeof(*ev), &r->nomem);
    if (ev) {
        r->events = ev;
        ev = &ev[r->n_events++];
        ev->type = role == RAFT_LEADER     ? RAFT_EVENT_BECOME_LEADER
                   : role == RAFT_FOLLOWER ? RAFT_EVENT_BECOME_FOLLOWER
                                           : RAFT_EVENT_BECOME_CANDIDATE;
        ev->cause = (uint8_t)cause;
        ev->term = r->term;
        ev->old_leader = r->leader;
        ev->new_leader = leader;
        ev->old_role = (uint8_t)r->role;
        ev->new_role = (uint8_t)role;
    }
    r->role = role;
    r->leader = leader;
    r->quiesced = false; /* a new role or leader is not idle */
}

/* ---- membership ------------------------------------------------------------ */

/* Make peers[] match conf, keeping the progress of members that stay. */
static void raft_sync_peers(raft_t *r)
{
    raft_progress old[RAFT_MAX_MEMBERS];
    size_t n_old = r->n_peers;
    memcpy(old, r->peers, n_old * sizeof(*old));
    r->n_peers = 0;
    for (uint32_t i = 0; i < r->conf.n_voters + r->conf.n_learners; i++) {
        bool voter = i < r->conf.n_voters;
        uint64_t id = voter ? r->conf.voters[i] : r->conf.learners[i - r->conf.n_voters];
        raft_progress *pr = &r->peers[r->n_peers++];
        size_t j = 0;
        while (j < n_old && old[j].id != id)
            j++;
        if (j < n_old) {
            *pr = old[j];
        } else {
            memset(pr, 0, sizeof(*pr));
            pr->id = id;
            pr->next = raft_last_index(r) + 1;
            if (id == r->id && r->role == RAFT_LEADER)
                pr->match = raft_self_match(r);
        }
        pr->voter = voter;
    }
    if (r->transferee && !raft_members_is_voter(&r->conf, r->transferee))
        r->transferee = 0;
}

/* Recompute conf from the snapshot membership and the log (after a
 * truncation removed a conf entry, or after a snapshot was installed). */
static void raft_conf_rebuild(raft_t *r)
{
    r->conf = r->snap_conf;
    r->conf_index = r->log.snap_index;
    for (size_t i = 0; i < r->log.n; i++) {
        const raft_entry *e = &r->log.ents[i];
        if (e->type == RAFT_ENTRY_CONF && raft_members_apply(&r->conf, e->data, e->len) == RAFT_OK)
            r->conf_index = e->index;
    }
    raft_sync_peers(r);
}

/* Membership in effect just after `index` (snap_index <= index <= last). */
static void raft_conf_at(const raft_t *r, uint64_t index, raft_members *out)
{
    *out = r->snap_conf;
    for (uint64_t i = r->log.snap_index + 1; i <= index; i++) {
        const raft_entry *e = raft_log_get(&r->log, i);
        if (e->type == RAFT_ENTRY_CONF)
            (void)raft_members_apply(out, e->data, e->len);
    }
}

/* Appends one entry to the log; a conf entry takes effect at once. */
static bool raft_append_one(raft_t *r, uint64_t term, uint8_t type, const uint8_t *data, size_t len)
{
    if (r->witness && type == RAFT_ENTRY_NORMAL) {
        data = NULL; /* a witness never sends or applies entries: it keeps */
        len = 0;     /* only (index, term, type); conf entries stay whole */
    }
    if (raft_log_append(&r->log, term, type, data, len) != RAFT_OK) {
        r->nomem = true;
        return false;
    }
    if (type == RAFT_ENTRY_CONF) {
        raft_members c = r->conf;
        if (raft_members_apply(&c, data, len) == RAFT_OK) {
            r->conf = c;
            r->conf_index = raft_last_index(r);
            raft_sync_peers(r);
        }
    }
    return true;
}

static void raft_truncate(raft_t *r, uint64_t from)
{
    /* Committed entries are never truncated: that is State Machine Safety. */
    assert(from > r->commit);
    raft_log_truncate(&r->log, from);
    if (r->unstable > from)
        r->unstable = from;
    if (r->persisted >= from)
        r->persisted = from - 1; /* the entries from `from` on are new */
    if (r->conf_index >= from)
        raft_conf_rebuild(r);
}

/* ---- role changes ------------------------------------------------------------ */

static void raft_reset(raft_t *r, uint64_t term)
{
    if (r->term != term) {
        assert(term > r->term); /* terms only grow */
        r->term = term;
        r->vote = 0;
    }
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->quiesced = false;
    raft_reset_timeout(r);
    r->transferee = 0;
    r->n_reqs = 0; /* read requests die with the leadership that took them */
    uint64_t last = raft_last_index(r);
    for (size_t i = 0; i < r->n_peers; i++) {
        raft_progress *pr = &r->peers[i];
        bool voter = pr->voter;
        uint64_t id = pr->id;
        memset(pr, 0, sizeof(*pr));
        pr->id = id;
        pr->voter = voter;
        pr->next = last + 1;
    }
}

static void raft_become_follower(raft_t *r, uint64_t term, uint64_t leader, raft_cause cause)
{
    raft_reset(r, term);
    raft_set_role(r, RAFT_FOLLOWER, leader, cause);
}

static void raft_become_pre_candidate(raft_t *r, raft_cause cause)
{
    /* A pre-candidate keeps its term and vote: pre-vote changes nothing that
     * must be persisted, which is the point of it. */
    for (size_t i = 0; i < r->n_peers; i++)
        r->peers[i].vote = 0;
    raft_set_role(r, RAFT_PRE_CANDIDATE, 0, cause);
}

static void raft_become_candidate(raft_t *r, raft_cause cause)
{
    raft_reset(r, r->term + 1);
    r->vote = r->id;
    raft_set_role(r, RAFT_CANDIDATE, 0, cause);
}

static bool raft_maybe_commit(raft_t *r);

/* Leader appends an entry of its own term and replicates it. */
static bool raft_leader_append(raft_t *r, uint8_t type, const uint8_t *data, size_t len)
{
    assert(r->role == RAFT_LEADER);
    if (!raft_append_one(r, r->term, type, data, len))
        return false;
    raft_progress *self = raft_peer(r, r->id);
    if (self) {
        self->match = raft_self_match(r);
        self->next = raft_last_index(r) + 1;
    }
    /* A group with one voter commits at once. The appends to the followers
     * are not built here but when the Ready is (raft_flush_sends): every
     * entry proposed until then leaves in one append per follower. */
    raft_maybe_commit(r);
    return true;
}

static void raft_become_leader(raft_t *r)
{
    assert(r->role == RAFT_CANDIDATE);
    raft_reset(r, r->term);
    raft_set_role(r, RAFT_LEADER, r->id, RAFT_CAUSE_ELECTION_WON);
    raft_progress *self = raft_peer(r, r->id);
    if (self) {
        self->match = raft_self_match(r);
        self->active = true;
    }
    /* The no-op lets this leader commit, by counting replicas of an entry of
     * its own term, everything earlier leaders may have committed (§5.4.2,
     * §8). Reads and conf changes wait for it. */
    r->term_start = raft_last_index(r) + 1;
    raft_leader_append(r, RAFT_ENTRY_NOOP, NULL, 0);
}

/* ---- elections --------------------------------------------------------------- */

enum { RAFT_VOTE_PENDING, RAFT_VOTE_WON, RAFT_VOTE_LOST };

static int raft_poll(const raft_t *r)
{
    size_t granted = 0, refused = 0;
    for (size_t i = 0; i < r->n_peers; i++) {
        if (!r->peers[i].voter)
            continue;
        granted += r->peers[i].vote > 0;
        refused += r->peers[i].vote < 0;
    }
    if (granted >= raft_quorum(r))
        return RAFT_VOTE_WON;
    if (refused > r->conf.n_voters - raft_quorum(r))
        return RAFT_VOTE_LOST;
    return RAFT_VOTE_PENDING;
}

static void raft_record_vote(raft_t *r, uint64_t id, bool granted)
{
    raft_progress *pr = raft_peer(r, id);
    if (pr && pr->vote == 0)
        pr->vote = granted ? 1 : -1;
}

static void raft_campaign_round(raft_t *r, bool pre, raft_cause cause, bool transfer)
{
    uint64_t vote_term;
    if (pre) {
        raft_become_pre_candidate(r, cause);
        vote_term = r->term + 1;
    } else {
        raft_become_candidate(r, cause);
        vote_term = r->term;
    }
    raft_record_vote(r, r->id, true);
    if (raft_poll(r) == RAFT_VOTE_WON) {
        if (pre)
            raft_campaign_round(r, false, RAFT_CAUSE_PRE_VOTE_WON, false);
        else
            raft_become_leader(r);
        return;
    }
    for (size_t i = 0; i < r->n_peers; i++) {
        const raft_progress *pr = &r->peers[i];
        if (!pr->voter || pr->id == r->id)
            continue;
        raft_msg *m = raft_msg_new(r, pre ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE, pr->id);
        if (!m)
            return;
        m->term = vote_term;
        m->index = raft_last_index(r);
        m->log_term = raft_last_term(r);
        if (transfer)
            m->flags |= RAFT_FLAG_TRANSFER;
    }
}

static void raft_hup(raft_t *r, raft_cause cause, bool transfer)
{
    /* A witness never campaigns (not on a timeout, raft_campaign or a
     * transfer's timeout-now), so it is never a candidate and never leads. */
    if (r->role == RAFT_LEADER || !raft_promotable(r) || r->witness)
        return;
    r->election_elapsed = 0;
    raft_reset_timeout(r);
    raft_campaign_round(r, r->pre_vote && !transfer, cause, transfer);
}

/* §5.4.1: grant only to a candidate whose log is at least as up-to-date. */
static bool raft_up_to_date(const raft_t *r, uint64_t index, uint64_t term)
{
    uint64_t lt = raft_last_term(r);
    return term > lt || (term == lt && index >= raft_last_index(r));
}

static void raft_handle_vote(raft_t *r, const raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    /* One vote per term (election safety), unless it repeats a vote already
     * given; a pre-vote for a later term promises nothing. */
    bool can_vote =
        r->vote == m->from || (r->vote == 0 && r->leader == 0) || (pre && m->term > r->term);
    raft_msg *resp = raft_msg_new(r, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, m->from);
    if (!resp)
        return;
    if (can_vote && raft_up_to_date(r, m->index, m->log_term)) {
        resp->term = m->term;
        if (!pre) {
            r->election_elapsed = 0;
            r->vote = m->from;
        }
    } else {
        resp->term = r->term;
        resp->flags = RAFT_FLAG_REJECT;
    }
}

static void raft_handle_vote_resp(raft_t *r, const raft_msg *m)
{
    raft_record_vote(r, m->from, !(m->flags & RAFT_FLAG_REJECT));
    switch (raft_poll(r)) {
    case RAFT_VOTE_WON:
        if (r->role == RAFT_PRE_CANDIDATE)
            raft_campaign_round(r, false, RAFT_CAUSE_PRE_VOTE_WON, false);
        else
            raft_become_leader(r);
        break;
    case RAFT_VOTE_LOST:
        raft_become_follower(r, r->term, 0, RAFT_CAUSE_ELECTION_LOST);
        break;
    default:
        break;
    }
}

/* ---- replication: leader side ------------------------------------------------ */

/* Largest index <= index whose term is <= term, with that term; the search
 * that turns a rejection into one round trip per term, not per entry. */
static uint64_t raft_find_conflict_by_term(const raft_t *r, uint64_t index, uint64_t term,
                                           uint64_t *found_term)
{
    uint64_t t;
    while (raft_log_term(&r->log, index, &t)) {
        if (t <= term) {
            *found_term = t;
            return index;
        }
        index--;
    }
    *found_term = 0;
    return index;
}

static void raft_pr_become_probe(raft_progress *pr)
{
    pr->state = RAFT_PR_PROBE;
    pr->paused = false;
    pr->next = pr->match + 1;
    pr->pending_snapshot = 0;
}

static void raft_pr_become_replicate(raft_progress *pr)
{
    pr->state = RAFT_PR_REPLICATE;
    pr->paused = false;
    pr->next = pr->match + 1;
    pr->pending_snapshot = 0;
}

/* Queues the next chunks of the snapshot transfer to pr while its window
 * has room. The chunk messages carry no bytes: the driver reads them from
 * its snapshot file (raft.h). */
static void raft_snap_fill(raft_t *r, raft_progress *pr)
{
    const raft_snapshot *s = &r->snap;
    uint64_t window = (uint64_t)r->snapshot_chunk * r->snapshot_window;
    while (!pr->snap_all_sent && pr->snap_sent - pr->snap_acked < window) {
        size_t ids = (s->n_voters + s->n_learners) * sizeof(uint64_t);
        uint64_t *idv = malloc(ids ? ids : 1);
        if (!idv) {
            r->nomem = true;
            return;
        }
        raft_msg *m = raft_msg_new(r, RAFT_MSG_SNAPSHOT, pr->id);
        if (!m) {
            free(idv);
            return;
        }
        m->mem = idv;
        m->snapshot = *s;
        memcpy(idv, s->voters, s->n_voters * sizeof(uint64_t));
        memcpy(idv + s->n_voters, s->learners, s->n_learners * sizeof(uint64_t));
        m->snapshot.voters = idv;
        m->snapshot.learners = idv + s->n_voters;
        m->offset = pr->snap_sent;
        m->len = (size_t)raft_min_u64(r->snapshot_chunk, s->size - pr->snap_sent);
        pr->snap_sent += m->len;
        pr->snap_all_sent = pr->snap_sent == s->size;
    }
}

/* Start of the last chunk (where a transfer whose bytes were all acked but
 * that never completed is resumed). */
static uint64_t raft_snap_last_chunk(const raft_t *r)
{
    uint64_t size = r->snap.size;
    return size ? (size - 1) / r->snapshot_chunk * r->snapshot_chunk : 0;
}

/* Starts (or restarts from offset 0) the transfer of the current snapshot. */
static void raft_send_snapshot(raft_t *r, raft_progress *pr)
{
    assert(r->snap.index > 0);
    pr->state = RAFT_PR_SNAPSHOT;
    pr->pending_snapshot = r->snap.index;
    pr->snap_elapsed = 0;
    pr->snap_sent = pr->snap_acked = 0;
    pr->snap_all_sent = false;
    raft_snap_fill(r, pr);
}

static void raft_handle_snapshot_resp(raft_t *r, const raft_msg *m)
{
    raft_progress *pr = raft_peer(r, m->from);
    if (!pr)
        return;
    pr->active = true;
    if (pr->state != RAFT_PR_SNAPSHOT || m->index != pr->pending_snapshot ||
        m->index != r->snap.index || m->log_term != r->snap.term)
        return; /* about another transfer */
    uint64_t at = raft_min_u64(m->hint, r->snap.size);
    if (m->flags & RAFT_FLAG_REJECT) {
        /* A gap, a restarted follower, a failed install: resend from `at`. */
        pr->snap_acked = pr->snap_sent = at;
        pr->snap_all_sent = false;
        pr->snap_elapsed = 0;
    } else if (at > pr->snap_acked) {
        pr->snap_acked = at;
        if (at > pr->snap_sent) {
            /* The follower already held these bytes (from an earlier
             * leader's transfer of the same snapshot): skip them. */
            pr->snap_sent = at;
            pr->snap_all_sent = at == r->snap.size && r->snap.size > 0;
        }
        pr->snap_elapsed = 0;
    }
    raft_snap_fill(r, pr);
}

/* Sends the next append to pr if its flow state allows. With allow_empty an
 * append without entries goes out even when there is nothing new (to carry
 * the commit index, or to find out whether in-flight appends were lost).
 * Returns whether a message was queued. */
static bool raft_send_append(raft_t *r, raft_progress *pr, bool allow_empty)
{
    if (pr->id == r->id || pr->state == RAFT_PR_SNAPSHOT ||
        (pr->state == RAFT_PR_PROBE && pr->paused))
        return false;
    uint64_t prev = pr->next - 1, prev_term;
    if (!raft_log_term(&r->log, prev, &prev_term)) {
        /* Invariant: next <= last + 1, so a missing term means compacted. */
        assert(prev < r->log.snap_index);
        raft_send_snapshot(r, pr);
        return true;
    }
    uint64_t last = raft_last_index(r);
    size_t n = 0, bytes = 0;
    uint64_t room = pr->state == RAFT_PR_REPLICATE ? r->max_inflight - (pr->next - 1 - pr->match)
                                                   : r->max_msg_entries;
    /* Invariant: the window is never overfilled. */
    assert(pr->next - 1 - pr->match <= r->max_inflight || pr->state != RAFT_PR_REPLICATE);
    while (prev + n < last && n < r->max_msg_entries && n < room) {
        const raft_entry *e = raft_log_get(&r->log, prev + n + 1);
        if (n > 0 && bytes + e->len > r->max_msg_bytes)
            break;
        bytes += e->len;
        n++;
    }
    if (n == 0 && !allow_empty)
        return false;
    uint8_t *mem = NULL;
    if (n) {
        mem = malloc(n * sizeof(raft_entry) + bytes + 1);
        if (!mem) {
            r->nomem = true;
            return false;
        }
    }
    raft_msg *m = raft_msg_new(r, RAFT_MSG_APPEND, pr->id);
    if (!m) {
        free(mem);
        return false;
    }
    m->index = prev;
    m->log_term = prev_term;
    m->commit = r->commit;
    pr->commit_sent = r->commit;
    if (n) {
        /* Deep copy: the log may be truncated before the message is sent. */
        raft_entry *ents = (raft_entry *)(void *)mem;
        uint8_t *data = mem + n * sizeof(raft_entry);
        for (size_t i = 0; i < n; i++) {
            ents[i] = *raft_log_get(&r->log, prev + i + 1);
            if (ents[i].len) {
                memcpy(data, ents[i].data, ents[i].len);
                ents[i].data = data;
                data += ents[i].len;
            }
        }
        m->mem = mem;
        m->entries = ents;
        m->n_entries = n;
    }
    if (pr->state == RAFT_PR_REPLICATE)
        pr->next = prev + n + 1; /* optimistic: pipeline the next batch */
    else
        pr->paused = true; /* PROBE: one message until it is answered */
    return true;
}

/* Whether the leader owes pr an append: entries it has not been sent and
 * room for them, or a commit index it has not been told that it can use
 * (at most the last index sent to it). */
static bool raft_wants_send(const raft_t *r, const raft_progress *pr)
{
    if (pr->id == r->id || pr->state == RAFT_PR_SNAPSHOT ||
        (pr->state == RAFT_PR_PROBE && pr->paused))
        return false;
    bool room = pr->state != RAFT_PR_REPLICATE || pr->next - 1 - pr->match < r->max_inflight;
    if (pr->next <= raft_last_index(r) && room)
        return true;
    return raft_min_u64(r->commit, pr->next - 1) > pr->commit_sent;
}

/* Builds the leader's appends when a Ready is built, not on each proposal
 * or answer: every entry proposed and every commit learned since the last
 * Ready leave in as few appends per follower as the window and
 * max_msg_entries / max_msg_bytes allow, each carrying the latest commit
 * index, and a follower that gets no new entries gets the commit index in
 * one empty append. */
static void raft_flush_sends(raft_t *r)
{
    if (r->role != RAFT_LEADER)
        return;
    for (size_t i = 0; i < r->n_peers && !r->nomem; i++) {
        raft_progress *pr = &r->peers[i];
        if (!raft_wants_send(r, pr))
            continue;
        bool sent = false;
        while (!r->nomem && raft_send_append(r, pr, false))
            sent = true;
        if (!sent && !r->nomem && raft_wants_send(r, pr))
            raft_send_append(r, pr, true);
    }
}

static bool raft_leader_owes_sends(const raft_t *r)
{
    if (r->role != RAFT_LEADER)
        return false;
    for (size_t i = 0; i < r->n_peers; i++)
        if (raft_wants_send(r, &r->peers[i]))
            return true;
    return false;
}

static void raft_bcast_heartbeat_flags(raft_t *r, uint8_t flags)
{
    for (size_t i = 0; i < r->n_peers; i++) {
        raft_progress *pr = &r->peers[i];
        if (pr->id == r->id)
            continue;
        raft_msg *m = raft_msg_new(r, RAFT_MSG_HEARTBEAT, pr->id);
        if (!m)
            return;
        /* QUIESCE only to a member known to hold the whole log: one that
         * lags (its node was down) gets a plain heartbeat, and its answer,
         * if it is back, wakes the leader (raft_wake_on_step). */
        m->flags = pr->match == raft_last_index(r) ? flags : 0;
        /* Never tell a follower to commit beyond what it is known to hold. */
        m->commit = raft_min_u64(pr->match, r->commit);
        m->ctx = r->read_seq;
        pr->commit_sent = raft_max_u64(pr->commit_sent, m->commit);
    }
}

static void raft_bcast_heartbeat(raft_t *r)
{
    raft_bcast_heartbeat_flags(r, 0);
}

/* ---- quiescing (raft.h, QUIESCING) ------------------------------------------ */

/* Whether the leader's group is idle: nothing to send, nothing to wait for,
 * every other member heard from lately holding the whole log and about to
 * learn it is all committed (the quiesce heartbeat carries commit = last),
 * and a quorum of voters heard from in the current check-quorum window. */
static bool raft_can_quiesce(const raft_t *r)
{
    uint64_t last = raft_last_index(r);
    if (!r->quiesce || r->role != RAFT_LEADER || r->transferee || r->n_reqs || r->commit != last ||
        r->commit < r->term_start || r->applied != r->commit || r->unstable <= last ||
        r->conf_index > r->commit)
        return false;
    size_t active = 0;
    for (size_t i = 0; i < r->n_peers; i++) {
        const raft_progress *pr = &r->peers[i];
        if (pr->voter && (pr->active || pr->id == r->id))
            active++;
        if (pr->id == r->id)
            continue;
        /* A member silent for a whole check-quorum round and more (its node
         * is down) does not keep the group awake: when it is back, its
         * answer to the wake-up heartbeat (the driver's raft_wake on nodeup)
         * or its pre-vote wakes the leader, which then catches it up. */
        bool caught_up =
            pr->state == RAFT_PR_REPLICATE && pr->match == last && pr->next == last + 1;
        if (!caught_up && (pr->active || pr->recent))
            return false;
    }
    /* Check-quorum would pass now: a quorum answered in this window (after
     * a wake-up, answered the wake-up's heartbeats). */
    return active >= raft_quorum(r);
}

/* Wakes a quiesced member: timers restart from 0. A leader heartbeats at
 * once (unless the caller sends something itself) and starts a fresh
 * check-quorum window; a follower woken by anyone but its leader tells the
 * leader to heartbeat again. */
static void raft_unquiesce(raft_t *r, bool heartbeat, bool ping_leader)
{
    if (!r->quiesced)
        return;
    r->quiesced = false;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    if (r->role == RAFT_LEADER) {
        for (size_t i = 0; i < r->n_peers; i++)
            r->peers[i].active = r->peers[i].id == r->id;
        if (heartbeat)
            raft_bcast_heartbeat(r);
    } else if (ping_leader && r->leader && r->leader != r->id) {
        raft_msg *m = raft_msg_new(r, RAFT_MSG_HEARTBEAT_RESP, r->leader);
        if (m)
            m->flags = RAFT_FLAG_WAKE;
    }
}

/* A message wakes a quiesced member, except the leader's quiesce heartbeat
 * (on a follower) and a plain answer to a heartbeat from a member that
 * holds the whole log (on the leader: the answers to the heartbeats before
 * it quiesced). */
static void raft_wake_on_step(raft_t *r, const raft_msg *m)
{
    if (!r->quiesced)
        return;
    bool same_term = m->term == r->term;
    if (r->role == RAFT_LEADER) {
        const raft_progress *pr = raft_peer(r, m->from);
        if (same_term && m->type == RAFT_MSG_HEARTBEAT_RESP && !(m->flags & RAFT_FLAG_WAKE) && pr &&
            pr->match == raft_last_index(r))
            return;
        raft_unquiesce(r, true, false);
        return;
    }
    bool from_leader = same_term && m->from == r->leader &&
                       (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
                        m->type == RAFT_MSG_SNAPSHOT || m->type == RAFT_MSG_TIMEOUT_NOW);
    if (from_leader && m->type == RAFT_MSG_HEARTBEAT && (m->flags & RAFT_FLAG_QUIESCE))
        return;
    raft_unquiesce(r, false, !from_leader);
}

static void raft_release_reads(raft_t *r)
{
    /* A read index is only meaningful once this term's no-op is committed:
     * before that the leader does not know the latest commit index. */
    if (r->role != RAFT_LEADER || r->commit < r->term_start)
        return;
    size_t done = 0;
    while (done < r->n_reqs) {
        const raft_read_req *q = &r->reqs[done];
        size_t acks = 0;
        for (size_t i = 0; i < r->n_peers; i++) {
            const raft_progress *pr = &r->peers[i];
            if (pr->voter && (pr->id == r->id || pr->read_ack >= q->seq))
                acks++;
        }
        if (acks < raft_quorum(r))
            break;
        raft_read_state *rs =
            raft_grow(r->reads, &r->cap_reads, r->n_reads + 1, sizeof(*rs), &r->nomem);
        if (!rs)
            return;
        r->reads = rs;
        rs[r->n_reads].ctx = q->ctx;
        rs[r->n_reads].index = raft_max_u64(q->index, r->term_start);
        r->n_reads++;
        done++;
    }
    if (done) {
        memmove(r->reqs, r->reqs + done, (r->n_reqs - done) * sizeof(*r->reqs));
        r->n_reqs -= done;
    }
}

/* §5.3/§5.4.2: the highest index replicated on a quorum of voters becomes
 * committed, but only if it is of the current term; earlier entries then
 * commit with it by the Log Matching property. */
static bool raft_maybe_commit(raft_t *r)
{
    uint64_t m[RAFT_MAX_MEMBERS];
    size_t n = 0;
    for (size_t i = 0; i < r->n_peers; i++)
        if (r->peers[i].voter)
            m[n++] = r->peers[i].match;
    if (n == 0)
        return false;
    for (size_t i = 1; i < n; i++) { /* insertion sort, descending */
        uint64_t v = m[i];
        size_t j = i;
        for (; j > 0 && m[j - 1] < v; j--)
            m[j] = m[j - 1];
        m[j] = v;
    }
    uint64_t idx = m[raft_quorum(r) - 1], t;
    if (idx <= r->commit || !raft_log_term(&r->log, idx, &t) || t != r->term)
        return false;
    r->commit = idx;
    raft_release_reads(r);
    /* A leader removed from the voters leads until its removal commits,
     * then steps down (dissertation §4.2.2). */
    if (!raft_promotable(r) && r->commit >= r->conf_index)
        raft_become_follower(r, r->term, 0, RAFT_CAUSE_REMOVED);
    return true;
}

static void raft_send_timeout_now(raft_t *r, uint64_t to)
{
    (void)raft_msg_new(r, RAFT_MSG_TIMEOUT_NOW, to);
}

static void raft_handle_append_resp(raft_t *r, const raft_msg *m)
{
    raft_progress *pr = raft_peer(r, m->from);
    if (!pr || m->index > raft_last_index(r))
        return; /* not a member, or an answer about a log we do not have */
    pr->active = true;
    if ((m->flags & RAFT_FLAG_LOST) && pr->state != RAFT_PR_SNAPSHOT && m->hint < pr->match) {
        /* The follower lost entries it had acknowledged: start over from
         * its last index (a snapshot if that is compacted here). Lowering
         * match undoes nothing committed; it only resends. */
        pr->match = m->hint;
        raft_pr_become_probe(pr);
        raft_send_append(r, pr, true);
        return;
    }
    if (m->flags & RAFT_FLAG_REJECT) {
        /* m->index is the prev index we sent; a rejection is stale if we
         * have since moved on. */
        if (pr->state == RAFT_PR_REPLICATE) {
            if (m->index <= pr->match)
                return;
            raft_pr_become_probe(pr);
        } else if (pr->state == RAFT_PR_PROBE) {
            if (pr->next - 1 != m->index)
                return;
            uint64_t hint = m->hint, ht;
            if (m->log_term > 0)
                hint = raft_find_conflict_by_term(r, m->hint, m->log_term, &ht);
            pr->next = raft_max_u64(raft_min_u64(m->index, hint + 1), pr->match + 1);
            pr->paused = false;
        } else {
            return;
        }
        raft_send_append(r, pr, true);
        return;
    }
    if (m->index > pr->match) {
        pr->match = m->index;
        pr->paused = false;
    } else if (pr->state != RAFT_PR_PROBE || m->index + 1 != pr->next) {
        return; /* duplicate or stale */
    }
    if (pr->next < m->index + 1)
        pr->next = m->index + 1;
    if (pr->state == RAFT_PR_PROBE ||
        (pr->state == RAFT_PR_SNAPSHOT && pr->match + 1 >= r->log.snap_index + 1))
        raft_pr_become_replicate(pr);
    /* The new commit index and the next entries for this follower go out
     * when the Ready is built (raft_flush_sends): one append per follower
     * for all the answers stepped before it, not one per answer. */
    if (raft_maybe_commit(r) && r->role != RAFT_LEADER)
        return;
    if (m->from == r->transferee && pr->match == raft_last_index(r))
        raft_send_timeout_now(r, m->from);
}

static void raft_handle_heartbeat_resp(raft_t *r, const raft_msg *m)
{
    raft_progress *pr = raft_peer(r, m->from);
    if (!pr)
        return;
    pr->active = true;
    pr->paused = false;
    if (m->ctx > pr->read_ack && m->ctx <= r->read_seq)
        pr->read_ack = m->ctx;
    if (pr->match < raft_last_index(r))
        raft_send_append(r, pr, true);
    raft_release_reads(r);
}

/* ---- replication: follower side ------------------------------------------------ */

static raft_msg *raft_append_resp(raft_t *r, uint64_t to, uint64_t index)
{
    raft_msg *m = raft_msg_new(r, RAFT_MSG_APPEND_RESP, to);
    if (m)
        m->index = index;
    return m;
}

static void raft_commit_to(raft_t *r, uint64_t index)
{
    if (index > r->commit) {
        assert(index <= raft_last_index(r));
        r->commit = index;
    }
}

static void raft_handle_append(raft_t *r, const raft_msg *m)
{
    if (m->index < r->commit) {
        raft_append_resp(r, m->from, r->commit);
        return;
    }
    uint64_t t;
    if (!raft_log_term(&r->log, m->index, &t) || t != m->log_term) {
        /* Figure 2, AppendEntries 2: no entry at prev index with prev term.
         * The hint names the last index whose term is <= the leader's prev
         * term, so the leader skips a whole term per round trip. */
        uint64_t hint_term;
        uint64_t hint = raft_find_conflict_by_term(r, raft_min_u64(m->index, raft_last_index(r)),
                                                   m->log_term, &hint_term);
        raft_msg *resp = raft_append_resp(r, m->from, m->index);
        if (resp) {
            resp->flags = RAFT_FLAG_REJECT;
            resp->hint = hint;
            resp->log_term = hint_term;
        }
        return;
    }
    /* Figure 2, AppendEntries 3-4: skip what matches, cut at the first
     * conflict, append the rest. */
    size_t i = 0;
    for (; i < m->n_entries; i++) {
        const raft_entry *e = &m->entries[i];
        if (!raft_log_term(&r->log, e->index, &t))
            break;
        if (t != e->term) {
            raft_truncate(r, e->index);
            break;
        }
    }
    for (; i < m->n_entries; i++) {
        const raft_entry *e = &m->entries[i];
        if (!raft_append_one(r, e->term, e->type, e->data, e->len))
            return;
    }
    /* AppendEntries 5: commit no further than the last entry this message
     * vouches for. */
    uint64_t last_new = m->index + m->n_entries;
    raft_commit_to(r, raft_min_u64(m->commit, last_new));
    raft_append_resp(r, m->from, last_new);
}

static void raft_handle_heartbeat(raft_t *r, const raft_msg *m)
{
    uint64_t last = raft_last_index(r);
    if (m->commit > last) {
        /* The leader sends a commit index only up to what it knows we
         * acknowledged, and acknowledged entries are durable: we lost our
         * files (the member restarted with an empty data dir). Say so, or
         * the leader would believe we hold them forever. */
        raft_msg *lost = raft_msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
        if (lost) {
            lost->flags = RAFT_FLAG_REJECT | RAFT_FLAG_LOST;
            lost->index = m->commit;
            lost->hint = last;
            lost->log_term = raft_last_term(r);
        }
    }
    raft_commit_to(r, raft_min_u64(m->commit, last));
    if (m->flags & RAFT_FLAG_QUIESCE) {
        /* Caught up: nothing can come from this leader until it wakes, so
         * stop the election timer (and say nothing: an answer would wake
         * it). Otherwise ask it to keep heartbeating. */
        if (r->quiesce && m->commit == last && r->commit == last) {
            r->quiesced = true;
            return;
        }
        raft_msg *wake = raft_msg_new(r, RAFT_MSG_HEARTBEAT_RESP, m->from);
        if (wake) {
            wake->ctx = m->ctx;
            wake->flags = RAFT_FLAG_WAKE;
        }
        return;
    }
    raft_msg *resp = raft_msg_new(r, RAFT_MSG_HEARTBEAT_RESP, m->from);
    if (resp)
        resp->ctx = m->ctx;
}

static bool raft_install_snapshot(raft_t *r, const raft_snapshot *s)
{
    raft_members c;
    if (raft_members_set(&c, s->voters, s->n_voters, s->learners, s->n_learners) != RAFT_OK)
        return false;
    r->snap_conf = c;
    r->snap.index = s->index;
    r->snap.term = s->term;
    r->snap.voters = r->snap_conf.voters;
    r->snap.n_voters = c.n_voters;
    r->snap.learners = r->snap_conf.learners;
    r->snap.n_learners = c.n_learners;
    r->snap.size = s->size;
    r->snap.checksum = s->checksum;
    return true;
}

static int raft_enter(const raft_t *r);
static int raft_leave(raft_t *r, int rc);

static void raft_snapshot_resp(raft_t *r, uint64_t to, uint64_t index, uint64_t term,
                               uint64_t offset, bool reject)
{
    raft_msg *m = raft_msg_new(r, RAFT_MSG_SNAPSHOT_RESP, to);
    if (!m)
        return;
    m->index = index;
    m->log_term = term;
    m->hint = offset;
    m->flags = reject ? RAFT_FLAG_REJECT : 0;
}

/* Copies a received chunk into the next Ready (rd.chunks). */
static bool raft_chunk_out(raft_t *r, const raft_msg *m)
{
    raft_chunk *cs = raft_grow(r->chunks, &r->cap_chunks, r->n_chunks + 1, sizeof(*cs), &r->nomem);
    if (!cs)
        return false;
    r->chunks = cs;
    uint8_t *data = malloc(m->len ? m->len : 1);
    if (!data) {
        r->nomem = true;
        return false;
    }
    if (m->len)
        memcpy(data, m->data, m->len);
    raft_chunk *c = &cs[r->n_chunks++];
    const raft_snapshot *s = &m->snapshot;
    c->index = s->index;
    c->term = s->term;
    c->size = s->size;
    c->checksum = s->checksum;
    c->offset = m->offset;
    c->data = data;
    c->len = m->len;
    c->last = m->offset + m->len == s->size;
    return true;
}

static void raft_handle_snapshot(raft_t *r, const raft_msg *m)
{
    const raft_snapshot *s = &m->snapshot;
    uint64_t t;
    if (r->rx.active && r->rx.index <= r->commit && !r->rx.awaiting)
        r->rx.active = false; /* overtaken by the log */
    if (s->index <= r->commit) {
        raft_append_resp(r, m->from, r->commit);
        return;
    }
    if (raft_log_term(&r->log, s->index, &t) && t == s->term) {
        /* We already hold the snapshot's log prefix: just commit it. */
        raft_commit_to(r, s->index);
        raft_append_resp(r, m->from, r->commit);
        return;
    }
    raft_members c;
    if (raft_members_set(&c, s->voters, s->n_voters, s->learners, s->n_learners) != RAFT_OK)
        return;
    bool same = r->rx.active && r->rx.index == s->index && r->rx.term == s->term &&
                r->rx.size == s->size && r->rx.checksum == s->checksum;
    if (!same) {
        if (m->offset != 0) {
            /* Not the start of a transfer we know (we restarted, or a
             * newer snapshot replaced it): ask for offset 0. */
            raft_snapshot_resp(r, m->from, s->index, s->term, 0, true);
            return;
        }
        if (r->rx.awaiting)
            return; /* the driver is checking another one; the leader retries */
        r->rx.active = true;
        r->rx.awaiting = false;
        r->rx.index = s->index;
        r->rx.term = s->term;
        r->rx.size = s->size;
        r->rx.checksum = s->checksum;
        r->rx.offset = 0;
        r->rx.conf = c;
    }
    r->rx.from = m->from;
    if (r->rx.awaiting)
        return; /* installing; the ack follows raft_snapshot_received */
    if (m->offset < r->rx.offset) {
        raft_snapshot_resp(r, m->from, s->index, s->term, r->rx.offset, false); /* duplicate */
        return;
    }
    if (m->offset > r->rx.offset) {
        raft_snapshot_resp(r, m->from, s->index, s->term, r->rx.offset, true); /* gap */
        return;
    }
    if (!raft_chunk_out(r, m))
        return;
    r->rx.offset += m->len;
    if (r->rx.offset == s->size)
        r->rx.awaiting = true; /* no ack: raft.h, SNAPSHOTS IN CHUNKS */
    else
        raft_snapshot_resp(r, m->from, s->index, s->term, r->rx.offset, false);
}

int raft_snapshot_received(raft_t *r, uint64_t index, uint64_t term, bool ok)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    if (!r->rx.active || !r->rx.awaiting || r->rx.index != index || r->rx.term != term)
        return RAFT_ERR_INVALID;
    r->rx.active = r->rx.awaiting = false;
    uint64_t to = r->leader ? r->leader : r->rx.from;
    if (!ok) {
        raft_snapshot_resp(r, to, index, term, 0, true);
        return raft_leave(r, RAFT_OK);
    }
    if (index <= r->commit) {
        /* The log overtook it meanwhile: nothing to install. */
        raft_append_resp(r, to, r->commit);
        return raft_leave(r, RAFT_OK);
    }
    raft_snapshot s;
    memset(&s, 0, sizeof(s));
    s.index = index;
    s.term = term;
    s.voters = r->rx.conf.voters;
    s.n_voters = r->rx.conf.n_voters;
    s.learners = r->rx.conf.learners;
    s.n_learners = r->rx.conf.n_learners;
    s.size = r->rx.size;
    s.checksum = r->rx.checksum;
    if (!raft_install_snapshot(r, &s))
        return raft_leave(r, RAFT_ERR_INVALID);
    /* The old durable log may disagree with the snapshot beyond what was
     * committed; the snapshot itself is durable once its Ready is. */
    r->persisted = raft_min_u64(r->persisted, r->commit);
    raft_log_reset(&r->log, index, term);
    r->commit = index;
    r->unstable = index + 1;
    r->snap_pending = true;
    raft_conf_rebuild(r);
    raft_append_resp(r, to, index);
    return raft_leave(r, RAFT_OK);
}

/* ---- step ---------------------------------------------------------------------- */

static void raft_follow(raft_t *r, const raft_msg *m)
{
    r->election_elapsed = 0;
    if (r->role != RAFT_FOLLOWER)
        raft_become_follower(r, m->term, m->from, RAFT_CAUSE_LEADER_FOUND);
    else
        raft_set_role(r, RAFT_FOLLOWER, m->from, RAFT_CAUSE_LEADER_FOUND);
    switch (m->type) {
    case RAFT_MSG_APPEND:
        raft_handle_append(r, m);
        break;
    case RAFT_MSG_HEARTBEAT:
        raft_handle_heartbeat(r, m);
        break;
    case RAFT_MSG_SNAPSHOT:
        raft_handle_snapshot(r, m);
        break;
    default:
        break;
    }
}

static void raft_step_msg(raft_t *r, const raft_msg *m)
{
    bool from_leader =
        m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT || m->type == RAFT_MSG_SNAPSHOT;
    if (m->term > r->term) {
        if (m->type == RAFT_MSG_PREVOTE || m->type == RAFT_MSG_VOTE) {
            /* Leader stickiness: while we hear from a live leader, a vote
             * request is a disruption (a partitioned or removed member), not
             * an election; ignore it without even taking its term. */
            bool force = m->type == RAFT_MSG_VOTE && (m->flags & RAFT_FLAG_TRANSFER);
            bool in_lease =
                r->check_quorum && r->leader != 0 && r->election_elapsed < r->election_tick;
            if (in_lease && !force)
                return;
        }
        if (m->type == RAFT_MSG_PREVOTE ||
            (m->type == RAFT_MSG_PREVOTE_RESP && !(m->flags & RAFT_FLAG_REJECT))) {
            /* Pre-vote traffic carries the term it asks about; it never
             * moves our term (a granted response has the term we asked). */
        } else if (from_leader) {
            raft_become_follower(r, m->term, m->from, RAFT_CAUSE_LEADER_FOUND);
        } else {
            /* Figure 2, all servers: a higher term makes us a follower. But
             * only a leader or a granted vote resets the election timer: if
             * a refused candidate's term reset it, stale candidates bumping
             * terms could keep the up-to-date members from ever campaigning
             * (found by the simulator, seed 2772). */
            uint32_t elapsed = r->election_elapsed;
            bool keep_timer = m->type == RAFT_MSG_VOTE && r->role != RAFT_LEADER;
            raft_become_follower(r, m->term, 0, RAFT_CAUSE_HIGHER_TERM);
            if (keep_timer)
                r->election_elapsed = elapsed;
        }
    } else if (m->term < r->term) {
        if ((r->check_quorum || r->pre_vote) &&
            (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)) {
            /* A stale leader (e.g. healed from a partition) learns our term
             * and steps down; without this, pre-vote could leave it leading
             * forever in its own term. */
            (void)raft_msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
        } else if (m->type == RAFT_MSG_PREVOTE) {
            raft_msg *resp = raft_msg_new(r, RAFT_MSG_PREVOTE_RESP, m->from);
            if (resp)
                resp->flags = RAFT_FLAG_REJECT;
        }
        return; /* Figure 2: reply false / ignore if term < currentTerm */
    }

    if (m->type == RAFT_MSG_PREVOTE || m->type == RAFT_MSG_VOTE) {
        raft_handle_vote(r, m);
        return;
    }
    switch (r->role) {
    case RAFT_FOLLOWER:
        if (from_leader)
            raft_follow(r, m);
        else if (m->type == RAFT_MSG_TIMEOUT_NOW)
            raft_hup(r, RAFT_CAUSE_TRANSFER, true);
        break;
    case RAFT_PRE_CANDIDATE:
    case RAFT_CANDIDATE:
        if (from_leader)
            raft_follow(r, m);
        else if ((r->role == RAFT_PRE_CANDIDATE && m->type == RAFT_MSG_PREVOTE_RESP) ||
                 (r->role == RAFT_CANDIDATE && m->type == RAFT_MSG_VOTE_RESP))
            raft_handle_vote_resp(r, m);
        break;
    case RAFT_LEADER:
        if (m->type == RAFT_MSG_APPEND_RESP)
            raft_handle_append_resp(r, m);
        else if (m->type == RAFT_MSG_HEARTBEAT_RESP)
            raft_handle_heartbeat_resp(r, m);
        else if (m->type == RAFT_MSG_SNAPSHOT_RESP)
            raft_handle_snapshot_resp(r, m);
        break;
    }
}

/* ---- public API ------------------------------------------------------------------ */

/* Common entry check of every call that changes the instance. */
static int raft_enter(const raft_t *r)
{
    if (!r)
        return RAFT_ERR_INVALID;
    if (r->nomem)
        return RAFT_ERR_NOMEM;
    if (r->in_ready)
        return RAFT_ERR_BUSY;
    return RAFT_OK;
}

static int raft_leave(raft_t *r, int rc)
{
    if (r->nomem)
        return RAFT_ERR_NOMEM;
    raft_check(r);
    return rc;
}

int raft_step(raft_t *r, const raft_msg *m)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    rc = raft_msg_check(m);
    if (rc != RAFT_OK)
        return rc;
    if (m->to != r->id)
        return RAFT_ERR_INVALID;
    raft_wake_on_step(r, m);
    raft_step_msg(r, m);
    return raft_leave(r, RAFT_OK);
}

static void raft_tick_leader(raft_t *r)
{
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    for (size_t i = 0; i < r->n_peers; i++) {
        raft_progress *pr = &r->peers[i];
        /* A transfer without ack progress for an election timeout (lost
         * chunks or acks) resends from the last acked offset; one whose
         * bytes were all acked but that never completed resends its last
         * chunk (a follower that restarted then asks for offset 0). */
        if (pr->state == RAFT_PR_SNAPSHOT && ++pr->snap_elapsed >= r->election_tick) {
            pr->snap_elapsed = 0;
            if (pr->pending_snapshot != r->snap.index) {
                raft_send_snapshot(r, pr);
                continue;
            }
            if (pr->snap_all_sent && pr->snap_acked >= r->snap.size)
                pr->snap_acked = raft_snap_last_chunk(r);
            pr->snap_sent = pr->snap_acked;
            pr->snap_all_sent = false;
            raft_snap_fill(r, pr);
        }
    }
    if (r->election_elapsed >= r->election_tick) {
        r->election_elapsed = 0;
        if (r->check_quorum) {
            size_t active = 0;
            for (size_t i = 0; i < r->n_peers; i++) {
                raft_progress *pr = &r->peers[i];
                if (pr->voter && (pr->active || pr->id == r->id))
                    active++;
                pr->recent = pr->active;
                pr->active = false;
            }
            if (active < raft_quorum(r)) {
                raft_become_follower(r, r->term, 0, RAFT_CAUSE_CHECK_QUORUM);
                return;
            }
        }
        r->transferee = 0; /* a transfer gets one election timeout */
    }
    if (r->heartbeat_elapsed >= r->heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        if (raft_can_quiesce(r)) {
            raft_bcast_heartbeat_flags(r, RAFT_FLAG_QUIESCE);
            r->quiesced = true;
        } else {
            raft_bcast_heartbeat(r);
        }
    }
}

int raft_tick(raft_t *r)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    if (r->quiesced)
        return RAFT_OK; /* idle: no heartbeat, no election timer */
    if (r->role == RAFT_LEADER) {
        raft_tick_leader(r);
    } else {
        r->election_elapsed++;
        if (raft_promotable(r) && r->election_elapsed >= r->timeout)
            raft_hup(r, RAFT_CAUSE_ELECTION_TIMEOUT, false);
    }
    return raft_leave(r, RAFT_OK);
}

int raft_propose(raft_t *r, const void *data, size_t len, uint64_t *index)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    if (len && !data)
        return RAFT_ERR_INVALID;
    if (len > RAFT_ENTRY_MAX_DATA)
        return RAFT_ERR_TOO_LARGE;
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    if (r->transferee)
        return RAFT_ERR_TRANSFERRING;
    raft_unquiesce(r, false, false); /* the append wakes the followers */
    raft_leader_append(r, RAFT_ENTRY_NORMAL, data, len);
    if (index)
        *index = raft_last_index(r);
    return raft_leave(r, RAFT_OK);
}

int raft_propose_conf_change(raft_t *r, raft_conf_op op, uint64_t id, uint64_t *index)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    if (op < RAFT_CONF_ADD_LEARNER || op > RAFT_CONF_REMOVE || id == 0 || id >= RAFT_INDEX_MAX)
        return RAFT_ERR_INVALID;
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    if (r->transferee)
        return RAFT_ERR_TRANSFERRING;
    /* Single-server changes are safe only one at a time, and only once this
     * leader has committed an entry of its term (the fix to the one-at-a-time
     * rule from the Raft mailing list, 2015). */
    if (r->conf_index > r->commit || r->commit < r->term_start)
        return RAFT_ERR_CONF_PENDING;
    uint8_t buf[RAFT_CONF_MAX_LEN];
    size_t len = raft_conf_encode_op(buf, (uint8_t)op, id);
    raft_members c = r->conf;
    rc = raft_members_apply(&c, buf, len);
    if (rc != RAFT_OK)
        return rc;
    if (op == RAFT_CONF_ADD_VOTER && raft_peer(r, id)->match < r->commit)
        return RAFT_ERR_NOT_CAUGHT_UP;
    raft_unquiesce(r, false, false);
    raft_leader_append(r, RAFT_ENTRY_CONF, buf, len);
    if (index)
        *index = r->conf_index;
    return raft_leave(r, RAFT_OK);
}

int raft_read_index(raft_t *r, uint64_t ctx)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    /* A quiesced leader confirms its leadership like any other: the read
     * waits for a quorum's answers to the heartbeat sent below. */
    raft_unquiesce(r, false, false); /* raft_bcast_heartbeat below */
    raft_read_req *q = raft_grow(r->reqs, &r->cap_reqs, r->n_reqs + 1, sizeof(*q), &r->nomem);
    if (!q)
        return RAFT_ERR_NOMEM;
    r->reqs = q;
    q[r->n_reqs].ctx = ctx;
    q[r->n_reqs].index = r->commit;
    q[r->n_reqs].seq = ++r->read_seq;
    r->n_reqs++;
    if (raft_quorum(r) > 1)
        raft_bcast_heartbeat(r);
    raft_release_reads(r);
    return raft_leave(r, RAFT_OK);
}

int raft_transfer_leader(raft_t *r, uint64_t target)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    if (r->role != RAFT_LEADER)
        return RAFT_ERR_NOT_LEADER;
    if (target == r->id)
        return RAFT_OK;
    raft_progress *pr = raft_peer(r, target);
    if (!pr || !pr->voter)
        return RAFT_ERR_NOT_MEMBER;
    if (r->transferee == target)
        return RAFT_OK;
    raft_unquiesce(r, false, false);
    r->transferee = target;
    r->election_elapsed = 0;
    if (pr->match == raft_last_index(r))
        raft_send_timeout_now(r, target);
    else
        raft_send_append(r, pr, false);
    return raft_leave(r, RAFT_OK);
}

int raft_campaign(raft_t *r)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    raft_unquiesce(r, false, false);
    raft_hup(r, RAFT_CAUSE_CAMPAIGN, false);
    return raft_leave(r, RAFT_OK);
}

int raft_forget_leader(raft_t *r)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    /* A leader steps down in its term: its driver cannot persist (a full
     * disk), so it must stop counting its own copy towards commits. */
    raft_unquiesce(r, false, false);
    if (r->role == RAFT_LEADER)
        raft_become_follower(r, r->term, 0, RAFT_CAUSE_LEADER_LOST);
    else if (r->role == RAFT_FOLLOWER)
        raft_set_role(r, RAFT_FOLLOWER, 0, RAFT_CAUSE_LEADER_LOST);
    return raft_leave(r, RAFT_OK);
}

int raft_wake(raft_t *r)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    raft_unquiesce(r, true, true);
    return raft_leave(r, RAFT_OK);
}

int raft_compact(raft_t *r, uint64_t index, uint64_t size, uint64_t checksum)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    if (size >= RAFT_INDEX_MAX)
        return RAFT_ERR_TOO_LARGE;
    if (index <= r->log.snap_index)
        return RAFT_ERR_COMPACTED;
    if (index > r->applied)
        return RAFT_ERR_UNAVAILABLE;
    raft_snapshot s;
    raft_members c;
    raft_conf_at(r, index, &c);
    memset(&s, 0, sizeof(s));
    s.index = index;
    (void)raft_log_term(&r->log, index, &s.term);
    s.voters = c.voters;
    s.n_voters = c.n_voters;
    s.learners = c.learners;
    s.n_learners = c.n_learners;
    s.size = size;
    s.checksum = checksum;
    if (!raft_install_snapshot(r, &s))
        return raft_leave(r, RAFT_ERR_NOMEM);
    /* Invariant: only persisted (handed out and advanced) entries are
     * compacted, since index <= applied < unstable. */
    assert(index < r->unstable);
    raft_log_compact(&r->log, index);
    /* Transfers of the older snapshot restart with this one (the driver may
     * now delete the older file). */
    if (r->role == RAFT_LEADER)
        for (size_t i = 0; i < r->n_peers; i++)
            if (r->peers[i].state == RAFT_PR_SNAPSHOT && r->peers[i].id != r->id)
                raft_send_snapshot(r, &r->peers[i]);
    return raft_leave(r, RAFT_OK);
}

const raft_snapshot *raft_snapshot_get(const raft_t *r)
{
    return &r->snap;
}

/* ---- ready / advance ----------------------------------------------------------- */

/* The leader's messages (appends, heartbeats, snapshots, timeout-now) promise
 * nothing about the sender's disk: a follower acts on the entries it writes
 * itself, and the leader counts its own copy towards a commit only when it
 * steps a follower's answer, which cannot happen before raft_advance, which
 * the driver calls after its fsync (Raft thesis §10.2.1). Every answer and
 * every vote request promises the sender's term, vote or entries are durable. */
static bool raft_msg_is_early(const raft_msg *m)
{
    return m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
           m->type == RAFT_MSG_SNAPSHOT || m->type == RAFT_MSG_TIMEOUT_NOW;
}

/* Moves the early messages to the front, keeping the order within each part
 * (appends to one follower stay in index order). Returns how many. */
static size_t raft_partition_early(raft_msg *msgs, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!raft_msg_is_early(&msgs[i]))
            continue;
        if (i != k) {
            raft_msg m = msgs[i];
            memmove(&msgs[k + 1], &msgs[k], (i - k) * sizeof(*msgs));
            msgs[k] = m;
        }
        k++;
    }
    return k;
}

/* Async mode (raft.h, "ASYNCHRONOUS PERSISTENCE"): messages that promise
 * nothing about the sender's disk beyond its term. A pre-vote changes
 * nothing persistent; a rejection, a heartbeat answer and a non-final chunk
 * ack claim no durable entry or vote. */
static bool raft_msg_is_async_early(const raft_msg *m)
{
    if (raft_msg_is_early(m))
        return true;
    switch (m->type) {
    case RAFT_MSG_PREVOTE:
    case RAFT_MSG_PREVOTE_RESP:
    case RAFT_MSG_HEARTBEAT_RESP:
    case RAFT_MSG_SNAPSHOT_RESP:
        return true;
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_APPEND_RESP:
        /* A LOST rejection claims nothing durable either: it says what is
         * missing. */
        return (m->flags & RAFT_FLAG_REJECT) != 0;
    default:
        return false;
    }
}

/* Async mode, in raft_ready: records this Ready's write (if it must be
 * synced) and moves every message that waits for a write still in flight
 * into held[]; what is left in msgs[] may all be sent at once. */
static bool raft_async_hold(raft_t *r, raft_ready_t *rd, bool term_vote_durable)
{
    if (rd->must_sync) {
        struct raft_write *w =
            raft_grow(r->writes, &r->cap_writes, r->n_writes + 1, sizeof(*w), &r->nomem);
        if (!w)
            return false;
        r->writes = w;
        w = &r->writes[r->n_writes++];
        w->seq = ++r->write_seq;
        w->last_index = raft_last_index(r);
        w->last_term = raft_last_term(r);
        w->term = r->term;
        w->vote = r->vote;
        rd->seq = w->seq;
    }
    /* A late message waits for the newest write not yet confirmed (this
     * Ready's, or an earlier one's: it may depend on anything handed out
     * before it); with none in flight it may leave now. Early messages also
     * wait when the term or vote they carry is not durable yet. */
    uint64_t wait = r->n_writes ? r->writes[r->n_writes - 1].seq : 0;
    bool hs_durable =
        term_vote_durable && r->term == r->hs_durable.term && r->vote == r->hs_durable.vote;
    size_t k = r->n_released;
    for (size_t i = r->n_released; i < r->n_msgs; i++) {
        raft_msg *m = &r->msgs[i];
        bool now = wait == 0 || (hs_durable && raft_msg_is_async_early(m));
        if (now) {
            r->msgs[k++] = *m;
            continue;
        }
        struct raft_held *h =
            raft_grow(r->held, &r->cap_held, r->n_held + 1, sizeof(*h), &r->nomem);
        if (!h)
            return false;
        r->held = h;
        r->held[r->n_held].seq = wait;
        r->held[r->n_held].m = *m;
        r->n_held++;
    }
    r->n_msgs = k;
    rd->n_msgs = k;
    rd->n_early = k;
    r->ready_n_sent = k;
    return true;
}

static uint64_t raft_apply_from(const raft_t *r)
{
    return (r->snap_pending ? r->snap.index : r->applied) + 1;
}

bool raft_has_ready(const raft_t *r)
{
    if (r->nomem)
        return true;
    if (r->in_ready)
        return false;
    return r->snap_pending || r->unstable <= raft_last_index(r) || r->n_msgs ||
           raft_leader_owes_sends(r) || r->n_events || r->n_chunks || r->n_reads ||
           raft_applicable(r) >= raft_apply_from(r) || r->term != r->hs_given.term ||
           r->vote != r->hs_given.vote || r->commit != r->hs_given.commit;
}

int raft_ready(raft_t *r, raft_ready_t *rd)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    raft_flush_sends(r);
    if (r->nomem)
        return RAFT_ERR_NOMEM;
    memset(rd, 0, sizeof(*rd));
    uint64_t last = raft_last_index(r);
    if (r->snap_pending)
        rd->snapshot = &r->snap;
    if (r->unstable <= last) {
        rd->entries = raft_log_get(&r->log, r->unstable);
        rd->n_entries = (size_t)(last - r->unstable + 1);
    }
    rd->hard_state.term = r->term;
    rd->hard_state.vote = r->vote;
    rd->hard_state.commit = r->commit;
    rd->hard_state_changed = memcmp(&rd->hard_state, &r->hs_given, sizeof(rd->hard_state)) != 0;
    /* The persistence rule (raft.h): term, vote, entries and snapshots are
     * promises; the commit index alone is not (a restart relearns it). */
    bool term_vote_durable = r->term == r->hs_given.term && r->vote == r->hs_given.vote;
    rd->must_sync = rd->snapshot || rd->n_entries || !term_vote_durable;
    rd->msgs = r->msgs;
    rd->n_msgs = r->n_msgs;
    if (r->async_persist) {
        if (!raft_async_hold(r, rd, term_vote_durable))
            return RAFT_ERR_NOMEM;
    } else {
        rd->n_early = term_vote_durable ? raft_partition_early(r->msgs, r->n_msgs) : 0;
    }
    uint64_t from = raft_apply_from(r), upto = raft_applicable(r);
    if (upto >= from) {
        rd->committed = raft_log_get(&r->log, from);
        rd->n_committed = (size_t)(upto - from + 1);
    }
    rd->chunks = r->chunks;
    rd->n_chunks = r->n_chunks;
    rd->events = r->events;
    rd->n_events = r->n_events;
    rd->reads = r->reads;
    rd->n_reads = r->n_reads;
    r->ready_last = last;
    r->ready_applied = raft_max_u64(from - 1, upto);
    r->in_ready = true;
    return RAFT_OK;
}

int raft_advance(raft_t *r, const raft_ready_t *rd)
{
    if (!r || !rd)
        return RAFT_ERR_INVALID;
    if (!r->in_ready)
        return RAFT_ERR_INVALID;
    /* Nothing may change between ready and advance (raft_enter refuses), so
     * the Ready still describes the instance exactly. */
    assert(r->ready_last == raft_last_index(r) && rd->n_msgs == r->n_msgs);
    assert(!r->async_persist || r->ready_n_sent == r->n_msgs);
    r->unstable = r->ready_last + 1;
    r->hs_given = rd->hard_state;
    r->applied = r->ready_applied;
    r->snap_pending = false;
    for (size_t i = 0; i < r->n_msgs; i++)
        free(r->msgs[i].mem);
    r->n_msgs = 0;
    r->n_released = 0;
    for (size_t i = 0; i < r->n_chunks; i++)
        free((void *)r->chunks[i].data);
    r->n_chunks = 0;
    r->n_events = 0;
    r->n_reads = 0;
    r->in_ready = false;
    raft_check(r);
    return RAFT_OK;
}

int raft_persisted(raft_t *r, uint64_t seq)
{
    int rc = raft_enter(r);
    if (rc != RAFT_OK)
        return rc;
    if (!r->async_persist || seq == 0 || seq > r->write_seq)
        return RAFT_ERR_INVALID;
    /* Every write up to seq is durable, the later ones are not (the driver
     * writes in order). A write's entries count only if the log still holds
     * its last entry: by Log Matching the durable log then agrees with the
     * current one up to there. A write whose entries were since cut by a
     * new leader's conflicting append confirms nothing of the new ones. */
    size_t done = 0;
    while (done < r->n_writes && r->writes[done].seq <= seq) {
        const struct raft_write *w = &r->writes[done++];
        uint64_t t;
        if (w->last_index > r->persisted && w->last_index <= raft_last_index(r) &&
            raft_log_term(&r->log, w->last_index, &t) && t == w->last_term)
            r->persisted = w->last_index;
        r->hs_durable.term = w->term;
        r->hs_durable.vote = w->vote;
    }
    if (done == 0)
        return RAFT_OK; /* a stale or repeated confirmation */
    memmove(r->writes, r->writes + done, (r->n_writes - done) * sizeof(*r->writes));
    r->n_writes -= done;
    /* Release the messages that waited for these writes, in order, ahead of
     * anything stepped since. */
    size_t rel = 0;
    while (rel < r->n_held && r->held[rel].seq <= seq)
        rel++;
    if (rel) {
        raft_msg *msgs =
            raft_grow(r->msgs, &r->cap_msgs, r->n_msgs + rel, sizeof(*msgs), &r->nomem);
        if (!msgs)
            return RAFT_ERR_NOMEM;
        r->msgs = msgs;
        memmove(msgs + r->n_released + rel, msgs + r->n_released,
                (r->n_msgs - r->n_released) * sizeof(*msgs));
        for (size_t i = 0; i < rel; i++)
            msgs[r->n_released + i] = r->held[i].m;
        r->n_msgs += rel;
        r->n_released += rel;
        memmove(r->held, r->held + rel, (r->n_held - rel) * sizeof(*r->held));
        r->n_held -= rel;
    }
    if (r->role == RAFT_LEADER) {
        raft_progress *self = raft_peer(r, r->id);
        if (self && self->match < raft_self_match(r)) {
            self->match = raft_self_match(r);
            raft_maybe_commit(r);
        }
    }
    return raft_leave(r, RAFT_OK);
}

/* ---- construction ----------------------------------------------------------------- */

void raft_config_init(raft_config *cfg, uint64_t id, uint64_t seed)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->id = id;
    cfg->seed = seed;
    cfg->election_tick = 10;
    cfg->heartbeat_tick = 1;
    cfg->pre_vote = true;
    cfg->check_quorum = true;
    cfg->max_msg_entries = 64;
    cfg->max_msg_bytes = 1u << 20;
    cfg->max_inflight = 1024;
    cfg->snapshot_chunk = 1u << 20;
    cfg->snapshot_window = 4;
}

static int raft_restore(raft_t *r, const raft_config *cfg)
{
    const raft_snapshot *s = cfg->snapshot;
    if (s && s->index > 0) {
        if (s->index >= RAFT_INDEX_MAX || s->term == 0 || s->term >= RAFT_INDEX_MAX ||
            s->size >= RAFT_INDEX_MAX)
            return RAFT_ERR_INVALID;
        if (!raft_install_snapshot(r, s))
            return r->nomem ? RAFT_ERR_NOMEM : RAFT_ERR_INVALID;
        raft_log_init(&r->log, s->index, s->term);
    }
    if (cfg->n_entries && !cfg->entries)
        return RAFT_ERR_INVALID;
    for (size_t i = 0; i < cfg->n_entries; i++) {
        const raft_entry *e = &cfg->entries[i];
        raft_conf_change cc;
        if (e->index != raft_last_index(r) + 1 || e->term < raft_last_term(r) || e->term == 0 ||
            e->term >= RAFT_INDEX_MAX || e->type > RAFT_ENTRY_CONF ||
            e->len > RAFT_ENTRY_MAX_DATA || (e->len && !e->data) ||
            (e->type == RAFT_ENTRY_CONF && raft_conf_change_decode(e->data, e->len, &cc)))
            return RAFT_ERR_INVALID;
        if (raft_log_append(&r->log, e->term, e->type, e->data, e->len) != RAFT_OK)
            return RAFT_ERR_NOMEM;
    }
    const raft_hard_state *hs = &cfg->hard_state;
    if (hs->term < raft_last_term(r) || hs->term >= RAFT_INDEX_MAX ||
        hs->commit > raft_last_index(r) || hs->vote >= RAFT_INDEX_MAX)
        return RAFT_ERR_INVALID;
    /* The commit index is written without an fsync (raft.h), so a durable
     * state machine may have applied beyond it: what it applied was
     * committed, so the commit index is at least that. */
    r->applied = raft_max_u64(cfg->applied, r->log.snap_index);
    if (r->applied > raft_last_index(r))
        return RAFT_ERR_INVALID;
    r->term = hs->term;
    r->vote = hs->vote;
    r->commit = raft_max_u64(raft_max_u64(hs->commit, r->log.snap_index), r->applied);
    r->hs_given = *hs;
    r->hs_durable = *hs;
    r->unstable = raft_last_index(r) + 1;
    r->persisted = raft_last_index(r); /* given back: durable */
    return RAFT_OK;
}

static int raft_bootstrap(raft_t *r, const raft_config *cfg)
{
    raft_members c;
    int rc = raft_members_set(&c, cfg->voters, cfg->n_voters, NULL, 0);
    if (rc != RAFT_OK)
        return rc;
    uint8_t buf[RAFT_CONF_MAX_LEN];
    size_t len = raft_conf_encode_bootstrap(buf, &c);
    /* Every bootstrap member writes the same entry 1 at term 1, so their
     * logs match from the start, and it is committed by construction. */
    if (raft_log_append(&r->log, 1, RAFT_ENTRY_CONF, buf, len) != RAFT_OK)
        return RAFT_ERR_NOMEM;
    r->term = 1;
    r->commit = 1;
    r->unstable = 1;
    return RAFT_OK;
}

raft_t *raft_new(const raft_config *cfg, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = RAFT_ERR_INVALID;
    if (!cfg || cfg->id == 0 || cfg->id >= RAFT_INDEX_MAX || cfg->election_tick < 1 ||
        cfg->heartbeat_tick < 1 || cfg->heartbeat_tick >= cfg->election_tick ||
        cfg->election_tick > (1u << 20) || (cfg->n_voters && !cfg->voters))
        return NULL;
    raft_t *r = calloc(1, sizeof(*r));
    if (!r) {
        *err = RAFT_ERR_NOMEM;
        return NULL;
    }
    r->id = cfg->id;
    r->rng = cfg->seed;
    r->election_tick = cfg->election_tick;
    r->heartbeat_tick = cfg->heartbeat_tick;
    r->pre_vote = cfg->pre_vote;
    r->check_quorum = cfg->check_quorum;
    r->quiesce = cfg->quiesce;
    r->witness = cfg->witness;
    r->async_persist = cfg->async_persist;
    r->max_msg_entries = cfg->max_msg_entries ? cfg->max_msg_entries : 64;
    if (r->max_msg_entries > RAFT_MSG_MAX_ENTRIES)
        r->max_msg_entries = RAFT_MSG_MAX_ENTRIES;
    r->max_msg_bytes = cfg->max_msg_bytes ? cfg->max_msg_bytes : (1u << 20);
    if (r->max_msg_bytes > RAFT_MSG_MAX_BYTES / 2)
        r->max_msg_bytes = RAFT_MSG_MAX_BYTES / 2;
    r->max_inflight = cfg->max_inflight ? cfg->max_inflight : 1024;
    r->snapshot_chunk = cfg->snapshot_chunk ? cfg->snapshot_chunk : (1u << 20);
    if (r->snapshot_chunk > RAFT_SNAPSHOT_MAX_CHUNK)
        r->snapshot_chunk = RAFT_SNAPSHOT_MAX_CHUNK;
    r->snapshot_window = cfg->snapshot_window ? cfg->snapshot_window : 4;
    r->role = RAFT_FOLLOWER;
    raft_log_init(&r->log, 0, 0);
    raft_members_set(&r->snap_conf, NULL, 0, NULL, 0);

    bool fresh = (!cfg->snapshot || cfg->snapshot->index == 0) && cfg->n_entries == 0 &&
                 cfg->hard_state.term == 0;
    int rc = fresh && cfg->n_voters ? raft_bootstrap(r, cfg) : raft_restore(r, cfg);
    if (rc != RAFT_OK) {
        *err = rc;
        raft_free(r);
        return NULL;
    }
    r->snap.voters = r->snap_conf.voters;
    r->snap.learners = r->snap_conf.learners;
    r->snap.n_voters = r->snap_conf.n_voters;
    r->snap.n_learners = r->snap_conf.n_learners;
    raft_conf_rebuild(r);
    raft_reset_timeout(r);
    raft_log_check(&r->log);
    raft_check(r);
    *err = RAFT_OK;
    return r;
}

void raft_free(raft_t *r)
{
    if (!r)
        return;
    raft_log_free(&r->log);
    for (size_t i = 0; i < r->n_msgs; i++)
        free(r->msgs[i].mem);
    free(r->msgs);
    for (size_t i = 0; i < r->n_held; i++)
        free(r->held[i].m.mem);
    free(r->held);
    free(r->writes);
    free(r->events);
    free(r->reads);
    free(r->reqs);
    for (size_t i = 0; i < r->n_chunks; i++)
        free((void *)r->chunks[i].data);
    free(r->chunks);
    free(r);
}

/* ---- introspection ------------------------------------------------------------------ */

void raft_status_get(const raft_t *r, raft_status *st)
{
    memset(st, 0, sizeof(*st));
    st->id = r->id;
    st->term = r->term;
    st->vote = r->vote;
    st->leader = r->leader;
    st->role = (uint8_t)r->role;
    st->is_voter = raft_promotable(r);
    st->commit = r->commit;
    st->applied = r->applied;
    st->first_index = r->log.snap_index + 1;
    st->last_index = raft_last_index(r);
    st->last_term = raft_last_term(r);
    st->transferee = r->transferee;
    st->n_voters = r->conf.n_voters;
    st->n_learners = r->conf.n_learners;
    st->quiesced = r->quiesced;
}

const raft_entry *raft_entry_get(const raft_t *r, uint64_t index)
{
    return raft_log_get(&r->log, index);
}

size_t raft_voters(const raft_t *r, uint64_t *ids, size_t cap)
{
    for (size_t i = 0; i < cap && i < r->conf.n_voters; i++)
        ids[i] = r->conf.voters[i];
    return r->conf.n_voters;
}

size_t raft_learners(const raft_t *r, uint64_t *ids, size_t cap)
{
    for (size_t i = 0; i < cap && i < r->conf.n_learners; i++)
        ids[i] = r->conf.learners[i];
    return r->conf.n_learners;
}
