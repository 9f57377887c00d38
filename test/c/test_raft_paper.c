/* test_raft_paper.c -- one test per rule of Figure 2 of the Raft paper
 * ("In Search of an Understandable Consensus Algorithm", Ongaro & Ousterhout)
 * and per safety property of §5 (Figure 3). These use the plain algorithm
 * (no pre-vote, no check-quorum) unless a test says otherwise; the extensions
 * have their own tests in test_raft_features.c.
 *
 * Terms here start at 1: a bootstrapped group writes its configuration as
 * entry 1 in term 1, so the first election is for term 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support_raft_sim.h"

static rsim_cap cap;

static raft_t *plain(uint64_t id, size_t n)
{
    raft_t *r = rsim_solo_new(id, n, 1000 + id, false, false);
    assert_non_null(r);
    return r;
}

static void step(raft_t *r, raft_msg m)
{
    assert_int_equal(raft_step(r, &m), RAFT_OK);
    rsim_solo_drain(r, &cap);
}

static raft_status status(const raft_t *r)
{
    raft_status st;
    raft_status_get(r, &st);
    return st;
}

/* Makes member `id` of 1..n leader of term 2 by granted votes. */
static raft_t *plain_leader(uint64_t id, size_t n)
{
    raft_t *r = plain(id, n);
    assert_int_equal(raft_campaign(r), RAFT_OK);
    rsim_solo_drain(r, &cap);
    for (uint64_t p = 1; p <= n && status(r).role != RAFT_LEADER; p++)
        if (p != id)
            step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = p, .to = id, .term = 2});
    assert_int_equal(status(r).role, RAFT_LEADER);
    assert_int_equal(status(r).term, 2);
    return r;
}

static raft_entry ent(uint64_t index, uint64_t term, const char *data)
{
    return (raft_entry){.index = index,
                        .term = term,
                        .type = RAFT_ENTRY_NORMAL,
                        .data = (const uint8_t *)data,
                        .len = data ? strlen(data) : 0};
}

static raft_msg append(uint64_t from, uint64_t to, uint64_t term, uint64_t prev, uint64_t prev_term,
                       uint64_t commit, const raft_entry *e, size_t n)
{
    return (raft_msg){.type = RAFT_MSG_APPEND,
                      .from = from,
                      .to = to,
                      .term = term,
                      .index = prev,
                      .log_term = prev_term,
                      .commit = commit,
                      .entries = e,
                      .n_entries = n};
}

/* Follower 2 of 1..3 whose log is [1:t1 conf][2:t2 "a"][3:t2 "b"]. */
static raft_t *follower_with_log(void)
{
    raft_t *r = plain(2, 3);
    raft_entry e[] = {ent(2, 2, "a"), ent(3, 2, "b")};
    step(r, append(1, 2, 2, 1, 1, 1, e, 2));
    assert_int_equal(status(r).last_index, 3);
    return r;
}

/* ---- all servers ------------------------------------------------------- */

/* "If commitIndex > lastApplied: increment lastApplied, apply
 * log[lastApplied] to state machine." */
static void test_all_apply_committed_in_order(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 3, 1);
    o.manual = true;
    rsim *s = rsim_new(&o);
    assert_int_equal(rsim_campaign(s, 1), RAFT_OK);
    rsim_deliver_all(s);
    assert_int_equal(rsim_leader(s), 1);
    for (int i = 0; i < 5; i++) {
        char d[8] = {'c', (char)('0' + i)};
        assert_int_equal(rsim_propose(s, 1, d, 2, NULL), RAFT_OK);
    }
    rsim_deliver_all(s);
    rsim_tick(s, 1); /* heartbeat carries the final commit index */
    rsim_deliver_all(s);
    for (uint64_t id = 1; id <= 3; id++) {
        raft_status st;
        raft_status_get(rsim_raft(s, id), &st);
        assert_int_equal(st.commit, 7); /* conf, no-op, five commands */
        assert_int_equal(st.applied, 7);
        assert_int_equal(rsim_applied(s, id), 7);
    }
    /* The simulator checked that each member applied 1, 2, ... in order
     * and the same entries. */
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* "If RPC request or response contains term T > currentTerm: set
 * currentTerm = T, convert to follower." */
static void test_all_higher_term_makes_follower(void **state)
{
    (void)state;
    for (int role = 0; role < 3; role++) {
        raft_t *r = role == 2 ? plain_leader(1, 3) : plain(1, 3);
        if (role == 1) {
            raft_campaign(r);
            rsim_solo_drain(r, &cap);
            assert_int_equal(status(r).role, RAFT_CANDIDATE);
        }
        step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 3, .to = 1, .term = 9});
        raft_status st = status(r);
        assert_int_equal(st.term, 9);
        assert_int_equal(st.role, RAFT_FOLLOWER);
        assert_int_equal(st.leader, 0);
        assert_int_equal(cap.hs.term, 9);
        if (role > 0) {
            assert_int_equal(cap.n_events, 1);
            assert_int_equal(cap.events[0].type, RAFT_EVENT_BECOME_FOLLOWER);
            assert_int_equal(cap.events[0].cause, RAFT_CAUSE_HIGHER_TERM);
        }
        raft_free(r);
    }
}

/* ---- followers --------------------------------------------------------- */

/* "Respond to RPCs from candidates and leaders." */
static void test_follower_responds_to_rpcs(void **state)
{
    (void)state;
    raft_t *r = plain(2, 3);
    step(r, append(1, 2, 2, 1, 1, 1, NULL, 0));
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_APPEND_RESP, 1);
    assert_non_null(m);
    assert_false(m->flags & RAFT_FLAG_REJECT);
    step(r, (raft_msg){
                .type = RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 3, .index = 1, .log_term = 1});
    m = rsim_cap_find(&cap, RAFT_MSG_VOTE_RESP, 3);
    assert_non_null(m);
    assert_false(m->flags & RAFT_FLAG_REJECT);
    raft_free(r);
}

/* "If election timeout elapses without receiving AppendEntries from current
 * leader or granting vote to candidate: convert to candidate." The timeout
 * is drawn in [T, 2T). */
static void test_follower_timeout_starts_election(void **state)
{
    (void)state;
    uint32_t seen_min = 1000, seen_max = 0;
    for (uint64_t seed = 0; seed < 200; seed++) {
        raft_t *r = rsim_solo_new(1, 3, seed, false, false);
        uint32_t t = 0;
        while (status(r).role == RAFT_FOLLOWER && t < 100) {
            raft_tick(r);
            t++;
        }
        rsim_solo_drain(r, &cap);
        assert_true(t >= 10 && t < 20);
        seen_min = t < seen_min ? t : seen_min;
        seen_max = t > seen_max ? t : seen_max;
        assert_int_equal(status(r).role, RAFT_CANDIDATE);
        raft_free(r);
    }
    /* Randomized: the whole range is used. */
    assert_int_equal(seen_min, 10);
    assert_int_equal(seen_max, 19);
}

static void test_follower_timer_reset_by_leader_and_vote(void **state)
{
    (void)state;
    raft_t *r = plain(2, 3);
    for (int i = 0; i < 100; i++) {
        if (i % 9 == 0)
            step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 2});
        raft_tick(r);
        assert_int_equal(status(r).role, RAFT_FOLLOWER);
    }
    raft_free(r);
    r = plain(2, 3);
    for (int i = 0; i < 100; i++) {
        if (i % 9 == 0) /* a vote granted in each new term resets the timer */
            step(r, (raft_msg){.type = RAFT_MSG_VOTE,
                               .from = 3,
                               .to = 2,
                               .term = 2 + (uint64_t)i,
                               .index = 1,
                               .log_term = 1});
        raft_tick(r);
        assert_int_equal(status(r).role, RAFT_FOLLOWER);
    }
    raft_free(r);
}

/* ---- candidates -------------------------------------------------------- */

/* "On conversion to candidate: increment currentTerm, vote for self, reset
 * election timer, send RequestVote RPCs to all other servers." Term and vote
 * are in the same Ready as the requests (persisted before they are sent). */
static void test_candidate_on_conversion(void **state)
{
    (void)state;
    raft_t *r = plain(1, 5);
    assert_int_equal(raft_campaign(r), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_int_equal(cap.n_readies, 1);
    assert_true(cap.hs_changed);
    assert_int_equal(cap.hs.term, 2);
    assert_int_equal(cap.hs.vote, 1);
    assert_int_equal(rsim_cap_count(&cap, RAFT_MSG_VOTE), 4);
    for (uint64_t p = 2; p <= 5; p++) {
        const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_VOTE, p);
        assert_non_null(m);
        assert_int_equal(m->term, 2);
        assert_int_equal(m->index, 1);
        assert_int_equal(m->log_term, 1);
    }
    raft_free(r);
}

/* "If votes received from majority of servers: become leader." */
static void test_candidate_wins_with_majority(void **state)
{
    (void)state;
    raft_t *r = plain(1, 5);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2});
    step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2}); /* dup */
    assert_int_equal(status(r).role, RAFT_CANDIDATE);
    step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 3, .to = 1, .term = 2});
    assert_int_equal(status(r).role, RAFT_LEADER);
    raft_free(r);
    /* A majority of refusals ends the candidacy. */
    r = plain(1, 3);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    step(r,
         (raft_msg){
             .type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2, .flags = RAFT_FLAG_REJECT});
    step(r,
         (raft_msg){
             .type = RAFT_MSG_VOTE_RESP, .from = 3, .to = 1, .term = 2, .flags = RAFT_FLAG_REJECT});
    assert_int_equal(status(r).role, RAFT_FOLLOWER);
    assert_int_equal(cap.events[0].cause, RAFT_CAUSE_ELECTION_LOST);
    raft_free(r);
}

/* "If AppendEntries RPC received from new leader: convert to follower." */
static void test_candidate_steps_down_for_leader(void **state)
{
    (void)state;
    raft_t *r = plain(1, 3);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    step(r, append(3, 1, 2, 1, 1, 1, NULL, 0));
    assert_int_equal(status(r).role, RAFT_FOLLOWER);
    assert_int_equal(status(r).leader, 3);
    assert_int_equal(status(r).term, 2);
    assert_int_equal(cap.events[0].old_role, RAFT_CANDIDATE);
    assert_int_equal(cap.events[0].new_leader, 3);
    assert_int_equal(cap.events[0].cause, RAFT_CAUSE_LEADER_FOUND);
    raft_free(r);
}

/* "If election timeout elapses: start new election." */
static void test_candidate_restarts_election(void **state)
{
    (void)state;
    raft_t *r = plain(1, 3);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    for (int i = 0; i < 20; i++)
        raft_tick(r);
    rsim_solo_drain(r, &cap);
    assert_int_equal(status(r).role, RAFT_CANDIDATE);
    assert_int_equal(status(r).term, 3);
    assert_int_equal(rsim_cap_count(&cap, RAFT_MSG_VOTE), 2);
    raft_free(r);
}

/* ---- leaders ----------------------------------------------------------- */

/* "Upon election: send initial empty AppendEntries RPCs (heartbeat) to each
 * server; repeat during idle periods." Ours carries the term's no-op. */
static void test_leader_announces_and_heartbeats(void **state)
{
    (void)state;
    raft_t *r = plain(1, 3);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2});
    assert_int_equal(rsim_cap_count(&cap, RAFT_MSG_APPEND), 2);
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_APPEND, 3);
    assert_non_null(m);
    assert_int_equal(m->n_entries, 1); /* the no-op */
    const raft_entry *noop = raft_entry_get(r, 2);
    assert_non_null(noop);
    assert_int_equal(noop->type, RAFT_ENTRY_NOOP);
    assert_int_equal(noop->term, 2);
    for (int t = 0; t < 3; t++) {
        raft_tick(r);
        rsim_solo_drain(r, &cap);
        assert_int_equal(rsim_cap_count(&cap, RAFT_MSG_HEARTBEAT), 2);
    }
    raft_free(r);
}

/* "If command received from client: append entry to local log, respond
 * after entry applied to state machine." */
static void test_leader_appends_and_applies_command(void **state)
{
    (void)state;
    raft_t *r = plain_leader(1, 3);
    uint64_t idx = 0;
    assert_int_equal(raft_propose(r, "set x", 5, &idx), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_int_equal(idx, 3);
    assert_int_equal(cap.n_entries, 1);
    assert_int_equal(cap.entries_from, 3);
    assert_int_equal(cap.n_committed, 0);
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2, .index = 3});
    assert_int_equal(status(r).commit, 3);
    assert_int_equal(cap.committed_last, 3);
    raft_free(r);
}

/* "If last log index >= nextIndex for a follower: send AppendEntries with log
 * entries starting at nextIndex. If it fails because of log inconsistency:
 * decrement nextIndex and retry." */
static void test_leader_retries_on_inconsistency(void **state)
{
    (void)state;
    raft_t *r = plain_leader(1, 3);
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP,
                       .from = 3,
                       .to = 1,
                       .term = 2,
                       .index = 1,
                       .hint = 0,
                       .log_term = 0,
                       .flags = RAFT_FLAG_REJECT});
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_APPEND, 3);
    assert_non_null(m);
    assert_int_equal(m->index, 0);
    assert_int_equal(m->n_entries, 2);
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 3, .to = 1, .term = 2, .index = 2});
    assert_int_equal(status(r).commit, 2);
    raft_free(r);
}

/* "If there exists an N such that N > commitIndex, a majority of
 * matchIndex[i] >= N, and log[N].term == currentTerm: set commitIndex = N."
 * An entry of an earlier term is not committed by counting replicas
 * (Figure 8); it commits with the first entry of the current term. */
static void test_leader_commits_only_current_term_by_counting(void **state)
{
    (void)state;
    const uint8_t boot[] = {RAFT_CONF_BOOTSTRAP, 3, 1, 2, 3, 0};
    raft_entry log[] = {
        {.index = 1, .term = 1, .type = RAFT_ENTRY_CONF, .data = boot, .len = sizeof(boot)},
        ent(2, 2, "old")};
    raft_config cfg;
    raft_config_init(&cfg, 1, 5);
    cfg.pre_vote = cfg.check_quorum = false;
    cfg.entries = log;
    cfg.n_entries = 2;
    cfg.hard_state = (raft_hard_state){.term = 3, .vote = 0, .commit = 1};
    raft_t *r = raft_new(&cfg, NULL);
    assert_non_null(r);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 4});
    assert_int_equal(status(r).role, RAFT_LEADER);
    /* Member 2 holds index 2 (term 2): a majority, but not of this term. */
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 4, .index = 2});
    assert_int_equal(status(r).commit, 1);
    assert_int_equal(cap.n_committed, 0);
    /* Member 3 acknowledges the no-op of term 4: both commit. */
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 3, .to = 1, .term = 4, .index = 3});
    assert_int_equal(status(r).commit, 3);
    assert_int_equal(cap.n_committed, 2);
    raft_free(r);
}

/* ---- AppendEntries receiver ---------------------------------------------- */

/* 1. "Reply false if term < currentTerm." */
static void test_append_rejects_stale_term(void **state)
{
    (void)state;
    for (int cq = 0; cq < 2; cq++) {
        raft_t *r = rsim_solo_new(2, 3, 3, false, cq);
        step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 3});
        raft_entry e[] = {ent(2, 2, "stale")};
        step(r, append(3, 2, 2, 1, 1, 1, e, 1));
        assert_int_equal(status(r).last_index, 1);
        assert_int_equal(status(r).leader, 1);
        const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_APPEND_RESP, 3);
        if (cq) { /* the stale leader learns the newer term */
            assert_non_null(m);
            assert_int_equal(m->term, 3);
        } else {
            assert_null(m);
        }
        raft_free(r);
    }
}

/* 2. "Reply false if log doesn't contain an entry at prevLogIndex whose term
 * matches prevLogTerm." */
static void test_append_rejects_missing_prev(void **state)
{
    (void)state;
    raft_t *r = follower_with_log();
    raft_entry e[] = {ent(6, 3, "x")};
    step(r, append(1, 2, 3, 5, 3, 1, e, 1)); /* beyond the log */
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_APPEND_RESP, 1);
    assert_non_null(m);
    assert_true(m->flags & RAFT_FLAG_REJECT);
    assert_int_equal(m->index, 5);
    assert_int_equal(m->hint, 3); /* our last index, with its term */
    assert_int_equal(m->log_term, 2);
    raft_entry e4[] = {ent(4, 3, "x")};
    step(r, append(1, 2, 3, 3, 3, 1, e4, 1)); /* present with another term */
    m = rsim_cap_find(&cap, RAFT_MSG_APPEND_RESP, 1);
    assert_true(m->flags & RAFT_FLAG_REJECT);
    assert_int_equal(status(r).last_index, 3);
    raft_free(r);
}

/* 3. "If an existing entry conflicts with a new one (same index but different
 * terms), delete the existing entry and all that follow it." */
static void test_append_truncates_conflicts(void **state)
{
    (void)state;
    raft_t *r = follower_with_log();
    raft_entry e[] = {ent(2, 3, "new")};
    step(r, append(1, 2, 3, 1, 1, 1, e, 1));
    assert_int_equal(status(r).last_index, 2);
    assert_int_equal(raft_entry_get(r, 2)->term, 3);
    assert_null(raft_entry_get(r, 3));
    /* The driver is told to overwrite from index 2. */
    assert_int_equal(cap.entries_from, 2);
    assert_int_equal(cap.n_entries, 1);
    raft_free(r);
}

/* 4. "Append any new entries not already in the log." */
static void test_append_is_idempotent(void **state)
{
    (void)state;
    raft_t *r = follower_with_log();
    raft_entry e[] = {ent(2, 2, "a"), ent(3, 2, "b"), ent(4, 2, "c")};
    step(r, append(1, 2, 2, 1, 1, 1, e, 2)); /* all present */
    assert_int_equal(cap.n_entries, 0);
    step(r, append(1, 2, 2, 1, 1, 1, e, 3)); /* one new */
    assert_int_equal(cap.n_entries, 1);
    assert_int_equal(cap.entries_from, 4);
    step(r, append(1, 2, 2, 1, 1, 1, e, 1)); /* a stale, shorter copy */
    assert_int_equal(status(r).last_index, 4);
    raft_free(r);
}

/* 5. "If leaderCommit > commitIndex, set commitIndex = min(leaderCommit,
 * index of last new entry)." */
static void test_append_commit_bounded_by_last_new(void **state)
{
    (void)state;
    raft_t *r = follower_with_log();
    step(r, append(1, 2, 2, 2, 2, 50, NULL, 0));
    assert_int_equal(status(r).commit, 2); /* vouched for up to index 2 only */
    step(r, append(1, 2, 2, 3, 2, 50, NULL, 0));
    assert_int_equal(status(r).commit, 3);
    assert_int_equal(cap.committed_last, 3);
    raft_free(r);
}

/* ---- RequestVote receiver ------------------------------------------------- */

static const raft_msg *vote(raft_t *r, uint64_t from, uint64_t term, uint64_t last_index,
                            uint64_t last_term)
{
    step(r, (raft_msg){.type = RAFT_MSG_VOTE,
                       .from = from,
                       .to = status(r).id,
                       .term = term,
                       .index = last_index,
                       .log_term = last_term});
    return rsim_cap_find(&cap, RAFT_MSG_VOTE_RESP, from);
}

/* 1. "Reply false if term < currentTerm." */
static void test_vote_rejects_stale_term(void **state)
{
    (void)state;
    raft_t *r = plain(2, 3);
    step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 5});
    const raft_msg *m = vote(r, 3, 4, 100, 4);
    assert_true(!m || (m->flags & RAFT_FLAG_REJECT));
    assert_int_equal(status(r).vote, 0);
    raft_free(r);
}

/* 2. "If votedFor is null or candidateId, and candidate's log is at least as
 * up-to-date as receiver's log, grant vote." */
static void test_vote_once_per_term(void **state)
{
    (void)state;
    raft_t *r = plain(1, 3);
    const raft_msg *m = vote(r, 2, 2, 1, 1);
    assert_false(m->flags & RAFT_FLAG_REJECT);
    assert_int_equal(cap.hs.vote, 2); /* persisted with the response */
    m = vote(r, 3, 2, 1, 1);
    assert_true(m->flags & RAFT_FLAG_REJECT);
    m = vote(r, 2, 2, 1, 1); /* a retry from the same candidate */
    assert_false(m->flags & RAFT_FLAG_REJECT);
    assert_int_equal(status(r).vote, 2);
    raft_free(r);
}

static void test_vote_requires_up_to_date_log(void **state)
{
    (void)state;
    struct {
        uint64_t index, term;
        bool granted;
    } cases[] = {{10, 1, false}, {2, 2, false}, {3, 2, true}, {9, 2, true}, {1, 3, true}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        raft_t *r = follower_with_log(); /* last index 3, last term 2 */
        const raft_msg *m = vote(r, 3, 7, cases[i].index, cases[i].term);
        assert_non_null(m);
        assert_int_equal(!(m->flags & RAFT_FLAG_REJECT), cases[i].granted);
        raft_free(r);
    }
}

/* "Persistent state on all servers (updated on stable storage before
 * responding to RPCs)": the Ready that carries a response also carries what
 * it promises, and the driver persists first. */
static void test_persist_before_respond(void **state)
{
    (void)state;
    raft_t *r = plain(2, 3);
    const raft_msg *m = vote(r, 1, 2, 1, 1);
    assert_non_null(m);
    assert_int_equal(cap.n_readies, 1);
    assert_true(cap.hs_changed);
    assert_int_equal(cap.hs.term, 2);
    assert_int_equal(cap.hs.vote, 1);
    raft_entry e[] = {ent(2, 2, "a")};
    step(r, append(1, 2, 2, 1, 1, 1, e, 1));
    assert_int_equal(cap.n_readies, 1);
    assert_int_equal(cap.n_entries, 1);
    assert_non_null(rsim_cap_find(&cap, RAFT_MSG_APPEND_RESP, 1));
    raft_free(r);
}

/* ---- safety properties (Figure 3) ------------------------------------------ */

static size_t leaders_of_term(rsim *s, size_t n, uint64_t term)
{
    size_t k = 0;
    for (uint64_t id = 1; id <= n; id++) {
        raft_status st;
        if (!rsim_raft(s, id))
            continue;
        raft_status_get(rsim_raft(s, id), &st);
        k += st.role == RAFT_LEADER && st.term == term;
    }
    return k;
}

/* Election Safety: at most one leader can be elected in a given term. */
static void test_safety_election(void **state)
{
    (void)state;
    for (size_t n = 3; n <= 7; n += 2) {
        rsim_opts o;
        rsim_opts_default(&o, n, n);
        o.manual = true;
        o.pre_vote = o.check_quorum = false;
        rsim *s = rsim_new(&o);
        /* Every member campaigns for term 2 at once. */
        for (uint64_t id = 1; id <= n; id++)
            assert_int_equal(raft_campaign(rsim_raft(s, id)), RAFT_OK);
        for (uint64_t id = 1; id <= n; id++)
            rsim_drain(s, id);
        rsim_deliver_all(s);
        assert_int_equal(leaders_of_term(s, n, 2), 0); /* all voted for themselves */
        for (uint64_t id = 1; id <= n; id++) {
            rsim_tick_n(s, id, 20); /* retry, now one after another */
            rsim_deliver_all(s);
        }
        for (uint64_t t = 2; t < 10; t++)
            assert_true(leaders_of_term(s, n, t) <= 1);
        assert_non_null(rsim_raft(s, rsim_leader(s)));
        assert_null(rsim_error(s));
        rsim_free(s);
    }
}

/* Leader Append-Only: a leader never overwrites or deletes its entries. */
static void test_safety_leader_append_only(void **state)
{
    (void)state;
    raft_t *r = plain_leader(1, 3);
    raft_propose(r, "mine", 4, NULL);
    rsim_solo_drain(r, &cap);
    raft_entry e[] = {ent(2, 2, "forged")};
    /* A (forged) append of the leader's own term is ignored. */
    step(r, append(2, 1, 2, 1, 1, 1, e, 1));
    assert_int_equal(status(r).role, RAFT_LEADER);
    assert_int_equal(status(r).last_index, 3);
    assert_int_equal(raft_entry_get(r, 2)->type, RAFT_ENTRY_NOOP);
    assert_int_equal(cap.n_entries, 0);
    raft_free(r);
}

static void assert_logs_identical(rsim *s, size_t n)
{
    raft_status a;
    raft_status_get(rsim_raft(s, 1), &a);
    for (uint64_t id = 2; id <= n; id++) {
        raft_status b;
        raft_status_get(rsim_raft(s, id), &b);
        assert_int_equal(a.last_index, b.last_index);
        for (uint64_t i = 1; i <= a.last_index; i++) {
            const raft_entry *x = raft_entry_get(rsim_raft(s, 1), i);
            const raft_entry *y = raft_entry_get(rsim_raft(s, id), i);
            assert_non_null(x);
            assert_non_null(y);
            assert_int_equal(x->term, y->term);
            assert_int_equal(x->len, y->len);
            if (x->len)
                assert_memory_equal(x->data, y->data, x->len);
        }
    }
}

/* Log Matching: logs that contain an entry with the same index and term are
 * identical in all entries up through that index. A deposed leader's
 * uncommitted suffix is replaced by the new leader's log. */
static void test_safety_log_matching(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 5, 9);
    o.manual = true;
    o.check_quorum = false; /* no stickiness: no clock runs in this test */
    rsim *s = rsim_new(&o);
    rsim_campaign(s, 1);
    rsim_deliver_all(s);
    rsim_isolate(s, 1);
    for (int i = 0; i < 4; i++)
        rsim_propose(s, 1, "lost", 4, NULL); /* never reach anyone */
    rsim_deliver_all(s);
    rsim_campaign(s, 2);
    rsim_deliver_all(s);
    assert_int_equal(rsim_leader(s), 2);
    for (int i = 0; i < 3; i++)
        rsim_propose(s, 2, "kept", 4, NULL);
    rsim_deliver_all(s);
    rsim_heal(s);
    rsim_tick(s, 2);
    rsim_deliver_all(s);
    rsim_tick(s, 2);
    rsim_deliver_all(s);
    assert_logs_identical(s, 5);
    assert_int_equal(raft_entry_get(rsim_raft(s, 1), 4)->data[0], 'k');
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* Leader Completeness: a member missing committed entries cannot be elected
 * (voters refuse a less up-to-date log). */
static void test_safety_leader_completeness(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 5, 11);
    o.manual = true;
    o.pre_vote = o.check_quorum = false;
    rsim *s = rsim_new(&o);
    rsim_isolate(s, 5);
    rsim_campaign(s, 1);
    rsim_deliver_all(s);
    for (int i = 0; i < 3; i++)
        rsim_propose(s, 1, "c", 1, NULL);
    rsim_deliver_all(s);
    raft_status st;
    raft_status_get(rsim_raft(s, 1), &st);
    assert_int_equal(st.commit, 5);
    rsim_heal(s);
    rsim_crash(s, 1);
    assert_int_equal(rsim_campaign(s, 5), RAFT_OK); /* term 3, log ends at 1 */
    rsim_deliver_all(s);
    raft_status_get(rsim_raft(s, 5), &st);
    assert_int_not_equal(st.role, RAFT_LEADER);
    rsim_campaign(s, 3);
    rsim_deliver_all(s);
    assert_int_equal(rsim_leader(s), 3);
    raft_status_get(rsim_raft(s, 3), &st);
    assert_true(st.last_index >= 5);
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* State Machine Safety, Figure 8 of the paper, played out: an entry of an
 * old term replicated on a majority but not committed may be overwritten;
 * no member ever applies it first. */
typedef struct fig8 {
    uint64_t mute; /* drop every append from this member */
    uint64_t trim; /* to this member, cut appends ... */
    uint64_t upto; /* ... after this index */
} fig8;

static bool fig8_filter(void *ctx, raft_msg *m)
{
    const fig8 *f = ctx;
    if (m->type != RAFT_MSG_APPEND)
        return true;
    if (m->from == f->mute)
        return false;
    if (m->to == f->trim && m->index + m->n_entries > f->upto)
        m->n_entries = m->index < f->upto ? (size_t)(f->upto - m->index) : 0;
    return true;
}

static void campaign_to_win(rsim *s, uint64_t id)
{
    for (int i = 0; i < 3; i++) {
        raft_status st;
        raft_status_get(rsim_raft(s, id), &st);
        if (st.role == RAFT_LEADER)
            return;
        rsim_campaign(s, id);
        rsim_deliver_all(s);
    }
}

static void test_safety_state_machine_figure8(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 5, 8);
    o.manual = true;
    o.pre_vote = o.check_quorum = false;
    o.max_msg_entries = 1;
    rsim *s = rsim_new(&o);
    fig8 f = {0, 0, 0};
    rsim_set_filter(s, fig8_filter, &f);
    raft_status st;
    /* (a) S1 leads term 2; index 3 ("x", term 2) reaches S2 only. */
    campaign_to_win(s, 1);
    rsim_cut(s, 1, 3);
    rsim_cut(s, 1, 4);
    rsim_cut(s, 1, 5);
    rsim_propose(s, 1, "x", 1, NULL);
    rsim_deliver_all(s);
    assert_int_equal(raft_entry_get(rsim_raft(s, 2), 3)->term, 2);
    /* (b) S1 crashes; S5 wins term 3 with S3 and S4 but its entries (the
     * no-op and "y" at 3, 4) reach nobody. */
    rsim_crash(s, 1);
    rsim_heal(s);
    f.mute = 5;
    campaign_to_win(s, 5);
    rsim_propose(s, 5, "y", 1, NULL);
    rsim_deliver_all(s);
    raft_status_get(rsim_raft(s, 5), &st);
    assert_int_equal(st.role, RAFT_LEADER);
    assert_int_equal(st.term, 3);
    /* (c) S5 crashes; S1 restarts and wins term 4 with S2 and S3. Index 3
     * (term 2) reaches S3 -- a majority: S1, S2, S3 -- but S1's own no-op
     * (index 4, term 4) reaches only S2. Counting replicas would commit
     * index 3; the rule of §5.4.2 must not. */
    rsim_crash(s, 5);
    f.mute = 0;
    f.trim = 3;
    f.upto = 3;
    rsim_restart(s, 1);
    rsim_isolate(s, 4);
    campaign_to_win(s, 1);
    rsim_tick(s, 1);
    rsim_deliver_all(s);
    raft_status_get(rsim_raft(s, 1), &st);
    assert_int_equal(st.role, RAFT_LEADER);
    assert_int_equal(st.term, 4);
    assert_int_equal(raft_entry_get(rsim_raft(s, 3), 3)->term, 2);
    assert_int_equal(st.commit, 2);
    /* (d) S1 crashes; S5 restarts and wins with S3 and S4 (its last term,
     * 3, is newer than theirs), then overwrites index 3 everywhere. */
    rsim_crash(s, 1);
    f.trim = 0;
    rsim_heal(s);
    rsim_restart(s, 5);
    campaign_to_win(s, 5);
    raft_status_get(rsim_raft(s, 5), &st);
    assert_int_equal(st.role, RAFT_LEADER);
    rsim_tick(s, 5);
    rsim_deliver_all(s);
    rsim_restart(s, 1);
    rsim_tick(s, 5);
    rsim_deliver_all(s);
    for (uint64_t id = 1; id <= 5; id++)
        assert_int_equal(raft_entry_get(rsim_raft(s, id), 3)->term, 3);
    /* The simulator saw every member apply the same sequence: "x" never. */
    assert_true(rsim_applied(s, 1) >= 4);
    assert_null(rsim_error(s));
    rsim_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_apply_committed_in_order),
        cmocka_unit_test(test_all_higher_term_makes_follower),
        cmocka_unit_test(test_follower_responds_to_rpcs),
        cmocka_unit_test(test_follower_timeout_starts_election),
        cmocka_unit_test(test_follower_timer_reset_by_leader_and_vote),
        cmocka_unit_test(test_candidate_on_conversion),
        cmocka_unit_test(test_candidate_wins_with_majority),
        cmocka_unit_test(test_candidate_steps_down_for_leader),
        cmocka_unit_test(test_candidate_restarts_election),
        cmocka_unit_test(test_leader_announces_and_heartbeats),
        cmocka_unit_test(test_leader_appends_and_applies_command),
        cmocka_unit_test(test_leader_retries_on_inconsistency),
        cmocka_unit_test(test_leader_commits_only_current_term_by_counting),
        cmocka_unit_test(test_append_rejects_stale_term),
        cmocka_unit_test(test_append_rejects_missing_prev),
        cmocka_unit_test(test_append_truncates_conflicts),
        cmocka_unit_test(test_append_is_idempotent),
        cmocka_unit_test(test_append_commit_bounded_by_last_new),
        cmocka_unit_test(test_vote_rejects_stale_term),
        cmocka_unit_test(test_vote_once_per_term),
        cmocka_unit_test(test_vote_requires_up_to_date_log),
        cmocka_unit_test(test_persist_before_respond),
        cmocka_unit_test(test_safety_election),
        cmocka_unit_test(test_safety_leader_append_only),
        cmocka_unit_test(test_safety_log_matching),
        cmocka_unit_test(test_safety_leader_completeness),
        cmocka_unit_test(test_safety_state_machine_figure8),
    };
    return cmocka_run_group_tests_name("raft_paper", tests, NULL, NULL);
}
