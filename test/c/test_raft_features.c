/* test_raft_features.c -- what Synod adds to the Raft of Figure 2: pre-vote,
 * check-quorum, leader stickiness, leadership transfer, snapshots and
 * compaction, membership changes with learners, read-index, leader watch
 * events, fast backtracking, restart, and the API contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support_raft_sim.h"

static rsim_cap cap;

static raft_status status(const raft_t *r)
{
    raft_status st;
    raft_status_get(r, &st);
    return st;
}

static raft_status node(rsim *s, uint64_t id)
{
    return status(rsim_raft(s, id));
}

static void step(raft_t *r, raft_msg m)
{
    assert_int_equal(raft_step(r, &m), RAFT_OK);
    rsim_solo_drain(r, &cap);
}

static rsim *cluster_opts(rsim_opts *o)
{
    rsim *s = rsim_new(o);
    assert_non_null(s);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 100));
    return s;
}

static rsim *cluster(size_t n, uint64_t seed)
{
    rsim_opts o;
    rsim_opts_default(&o, n, seed);
    return cluster_opts(&o);
}

static uint64_t other_than(uint64_t a, uint64_t b, size_t n)
{
    for (uint64_t id = 1; id <= n; id++)
        if (id != a && id != b)
            return id;
    return 0;
}

static void propose_n(rsim *s, uint64_t id, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(rsim_propose(s, id, "e", 1, NULL), RAFT_OK);
}

/* ---- pre-vote ------------------------------------------------------------- */

static void isolated_member_run(bool pre_vote, uint64_t *isolated_term, bool *disrupted)
{
    rsim_opts o;
    rsim_opts_default(&o, 3, 21);
    o.pre_vote = pre_vote;
    o.check_quorum = pre_vote;
    rsim *s = cluster_opts(&o);
    uint64_t leader = rsim_leader(s), f = other_than(leader, 0, 3);
    uint64_t term = node(s, leader).term;
    rsim_isolate(s, f);
    rsim_run_ticks(s, 100);
    *isolated_term = node(s, f).term - term;
    rsim_heal(s);
    rsim_run_ticks(s, 50);
    *disrupted = node(s, leader).term != term;
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* A partitioned member cannot win a pre-vote, so its term stays put and it
 * does not depose the leader when it comes back; without pre-vote it does. */
static void test_prevote_prevents_disruption(void **state)
{
    (void)state;
    uint64_t grew;
    bool disrupted;
    isolated_member_run(true, &grew, &disrupted);
    assert_int_equal(grew, 0);
    assert_false(disrupted);
    isolated_member_run(false, &grew, &disrupted);
    assert_true(grew >= 3);
    assert_true(disrupted);
}

/* Pre-vote changes nothing persistent on either side. */
static void test_prevote_changes_no_hard_state(void **state)
{
    (void)state;
    raft_t *r = rsim_solo_new(1, 3, 5, true, true);
    assert_int_equal(raft_campaign(r), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_false(cap.hs_changed);
    assert_int_equal(status(r).role, RAFT_PRE_CANDIDATE);
    assert_int_equal(status(r).term, 1);
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_PREVOTE, 2);
    assert_non_null(m);
    assert_int_equal(m->term, 2);
    step(r, (raft_msg){.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 2});
    assert_int_equal(status(r).role, RAFT_CANDIDATE);
    assert_int_equal(status(r).term, 2);
    raft_free(r);

    raft_t *v = rsim_solo_new(2, 3, 6, true, true);
    step(v,
         (raft_msg){
             .type = RAFT_MSG_PREVOTE, .from = 1, .to = 2, .term = 2, .index = 1, .log_term = 1});
    m = rsim_cap_find(&cap, RAFT_MSG_PREVOTE_RESP, 1);
    assert_non_null(m);
    assert_false(m->flags & RAFT_FLAG_REJECT);
    assert_int_equal(m->term, 2);
    assert_false(cap.hs_changed);
    assert_int_equal(status(v).term, 1);
    assert_int_equal(status(v).vote, 0);
    raft_free(v);
}

/* ---- the persistence rule and pipelining ------------------------------------ */

static bool cap_early(const rsim_cap *c, uint8_t type, uint64_t to)
{
    for (size_t i = 0; i < c->n_msgs; i++)
        if (c->msgs[i].type == type && c->msgs[i].to == to)
            return c->early[i];
    fail_msg("no %s to %llu", raft_msg_type_name(type), (unsigned long long)to);
    return false;
}

/* raft.h: promises (entries, term, vote) ask for an fsync, the commit index
 * alone does not; only the leader's own messages leave before the fsync. */
static void test_persistence_rule(void **state)
{
    (void)state;
    raft_t *r = rsim_solo_new(1, 3, 5, false, false);
    assert_int_equal(raft_campaign(r), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_true(cap.must_sync); /* new term and vote */
    assert_false(cap_early(&cap, RAFT_MSG_VOTE, 2));
    step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2});
    assert_int_equal(status(r).role, RAFT_LEADER);
    assert_true(cap.must_sync); /* the no-op entry */
    assert_int_equal(cap.n_entries, 1);
    assert_true(cap_early(&cap, RAFT_MSG_APPEND, 2));
    assert_true(cap_early(&cap, RAFT_MSG_APPEND, 3));
    /* A follower's answer commits the no-op: only the commit index changed,
     * so no fsync is asked for. */
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2, .index = 2});
    assert_int_equal(status(r).commit, 2);
    assert_true(cap.hs_changed);
    assert_int_equal(cap.hs.commit, 2);
    assert_false(cap.must_sync);
    assert_int_equal(cap.n_committed, 1);
    assert_int_equal(raft_propose(r, "x", 1, NULL), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_true(cap.must_sync);
    assert_true(cap_early(&cap, RAFT_MSG_APPEND, 2));
    raft_free(r);

    /* A follower: the append's answer waits for the fsync; the commit index
     * brought by a heartbeat needs none. */
    raft_t *f = rsim_solo_new(2, 3, 6, false, false);
    raft_entry e = {
        .index = 2, .term = 2, .type = RAFT_ENTRY_NORMAL, .data = (const uint8_t *)"a", .len = 1};
    step(f, (raft_msg){.type = RAFT_MSG_APPEND,
                       .from = 1,
                       .to = 2,
                       .term = 2,
                       .index = 1,
                       .log_term = 1,
                       .commit = 1,
                       .entries = &e,
                       .n_entries = 1});
    assert_true(cap.must_sync);
    assert_false(cap_early(&cap, RAFT_MSG_APPEND_RESP, 1));
    step(f, (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 2, .commit = 2});
    assert_true(cap.hs_changed);
    assert_int_equal(cap.hs.commit, 2);
    assert_false(cap.must_sync);
    assert_int_equal(cap.n_committed, 1);
    assert_false(cap_early(&cap, RAFT_MSG_HEARTBEAT_RESP, 1));
    raft_free(f);
}

static size_t appends_with_entries_to(const rsim_cap *c, uint64_t to)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_msgs; i++)
        n += c->msgs[i].type == RAFT_MSG_APPEND && c->msgs[i].to == to && c->msgs[i].n_entries;
    return n;
}

/* The leader keeps several appends in flight to a follower that answers
 * (REPLICATE), up to max_inflight entries beyond its match, and sends more
 * as answers free the window. */
static void test_pipelining_window(void **state)
{
    (void)state;
    uint64_t voters[] = {1, 2, 3};
    raft_config cfg;
    raft_config_init(&cfg, 1, 9);
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    cfg.voters = voters;
    cfg.n_voters = 3;
    cfg.max_inflight = 3;
    cfg.max_msg_entries = 1;
    raft_t *r = raft_new(&cfg, NULL);
    assert_non_null(r);
    rsim_solo_drain(r, &cap);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2});
    /* Follower 2 acknowledges the no-op (index 2): it is now pipelined. */
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2, .index = 2});
    size_t in_flight = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(raft_propose(r, "c", 1, NULL), RAFT_OK);
        rsim_solo_drain(r, &cap);
        in_flight += appends_with_entries_to(&cap, 2);
    }
    assert_int_equal(in_flight, 3); /* indexes 3, 4, 5 in flight, unanswered */
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2, .index = 4});
    assert_int_equal(appends_with_entries_to(&cap, 2), 2); /* 6 and 7 */
    raft_free(r);
}

static raft_t *solo_leader(uint64_t id, size_t n, bool cq);

static size_t msgs_of(const rsim_cap *c, uint8_t type, uint64_t to)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_msgs; i++)
        n += c->msgs[i].type == type && c->msgs[i].to == to;
    return n;
}

/* The leader builds its appends when the Ready is built: everything
 * proposed since the last Ready leaves in one append per follower, and a
 * commit learned from any number of answers costs one empty append per
 * follower per Ready (none if an append with entries goes out anyway). */
static void test_appends_coalesced_per_ready(void **state)
{
    (void)state;
    raft_t *r = solo_leader(1, 3, false);
    for (uint64_t p = 2; p <= 3; p++) /* both acknowledge the no-op: REPLICATE */
        step(r,
             (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = p, .to = 1, .term = 2, .index = 2});
    assert_int_equal(status(r).commit, 2);
    for (int i = 0; i < 10; i++)
        assert_int_equal(raft_propose(r, "c", 1, NULL), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_int_equal(cap.n_readies, 1);
    assert_true(cap.must_sync);
    for (uint64_t p = 2; p <= 3; p++) {
        assert_int_equal(msgs_of(&cap, RAFT_MSG_APPEND, p), 1);
        const raft_msg *a = rsim_cap_find(&cap, RAFT_MSG_APPEND, p);
        assert_int_equal(a->n_entries, 10);
        assert_int_equal(a->index, 2);
        assert_int_equal(a->commit, 2);
    }
    /* Both answers stepped before one Ready: the commit moves to 12 and
     * each follower is told in one empty append, whatever the number of
     * answers. */
    for (uint64_t p = 2; p <= 3; p++) {
        raft_msg m = {.type = RAFT_MSG_APPEND_RESP, .from = p, .to = 1, .term = 2, .index = 12};
        assert_int_equal(raft_step(r, &m), RAFT_OK);
    }
    rsim_solo_drain(r, &cap);
    assert_int_equal(status(r).commit, 12);
    assert_int_equal(cap.committed_last, 12);
    assert_false(cap.must_sync);
    assert_int_equal(cap.n_msgs, 2);
    for (uint64_t p = 2; p <= 3; p++) {
        assert_int_equal(msgs_of(&cap, RAFT_MSG_APPEND, p), 1);
        const raft_msg *a = rsim_cap_find(&cap, RAFT_MSG_APPEND, p);
        assert_int_equal(a->n_entries, 0);
        assert_int_equal(a->index, 12);
        assert_int_equal(a->commit, 12);
    }
    /* Nothing new: no further Ready, no repeat. */
    assert_false(raft_has_ready(r));
    /* The next proposal's append carries the commit index too. */
    assert_int_equal(raft_propose(r, "d", 1, NULL), RAFT_OK);
    rsim_solo_drain(r, &cap);
    for (uint64_t p = 2; p <= 3; p++) {
        assert_int_equal(msgs_of(&cap, RAFT_MSG_APPEND, p), 1);
        const raft_msg *a = rsim_cap_find(&cap, RAFT_MSG_APPEND, p);
        assert_int_equal(a->n_entries, 1);
        assert_int_equal(a->index, 12);
        assert_int_equal(a->commit, 12);
    }
    raft_free(r);

    /* A follower commits what an append vouches for in the Ready that
     * persists it: one Ready, one sync, one answer. */
    raft_t *f = rsim_solo_new(2, 3, 5, false, false);
    raft_entry ents[3];
    for (int i = 0; i < 3; i++)
        ents[i] = (raft_entry){.index = 2 + (uint64_t)i,
                               .term = 2,
                               .type = RAFT_ENTRY_NORMAL,
                               .data = (const uint8_t *)"x",
                               .len = 1};
    raft_msg a = {.type = RAFT_MSG_APPEND,
                  .from = 1,
                  .to = 2,
                  .term = 2,
                  .index = 1,
                  .log_term = 1,
                  .commit = 3,
                  .entries = ents,
                  .n_entries = 3};
    step(f, a);
    assert_int_equal(cap.n_readies, 1);
    assert_true(cap.must_sync);
    assert_int_equal(cap.n_msgs, 1);
    assert_int_equal(cap.msgs[0].type, RAFT_MSG_APPEND_RESP);
    assert_int_equal(cap.msgs[0].index, 4);
    assert_int_equal(cap.committed_last, 3);
    raft_free(f);
}

/* ---- check-quorum and stickiness ----------------------------------------- */

static raft_t *solo_leader(uint64_t id, size_t n, bool cq)
{
    raft_t *r = rsim_solo_new(id, n, 77, false, cq);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    for (uint64_t p = 1; p <= n && status(r).role != RAFT_LEADER; p++)
        if (p != id)
            step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = p, .to = id, .term = 2});
    assert_int_equal(status(r).role, RAFT_LEADER);
    return r;
}

static void test_check_quorum_steps_down(void **state)
{
    (void)state;
    /* Hearing from one peer of two keeps a quorum. */
    raft_t *r = solo_leader(1, 3, true);
    for (int t = 0; t < 50; t++) {
        raft_tick(r);
        step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = 2});
    }
    assert_int_equal(status(r).role, RAFT_LEADER);
    /* Silence for an election timeout: step down. */
    bool saw = false;
    for (int t = 0; t < 25 && status(r).role == RAFT_LEADER; t++) {
        raft_tick(r);
        rsim_solo_drain(r, &cap);
    }
    assert_int_equal(status(r).role, RAFT_FOLLOWER);
    for (size_t i = 0; i < cap.n_events; i++)
        saw |=
            cap.events[i].cause == RAFT_CAUSE_CHECK_QUORUM && cap.events[i].old_role == RAFT_LEADER;
    assert_true(saw);
    raft_free(r);
    /* Without check-quorum a silent leader stays. */
    r = solo_leader(1, 3, false);
    for (int t = 0; t < 100; t++)
        raft_tick(r);
    assert_int_equal(status(r).role, RAFT_LEADER);
    raft_free(r);
}

static void test_stickiness_ignores_votes_near_live_leader(void **state)
{
    (void)state;
    raft_t *r = rsim_solo_new(2, 3, 8, true, true);
    step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 2});
    raft_msg v = {.type = RAFT_MSG_VOTE, .from = 3, .to = 2, .term = 3, .index = 9, .log_term = 2};
    step(r, v);
    assert_null(rsim_cap_find(&cap, RAFT_MSG_VOTE_RESP, 3));
    assert_int_equal(status(r).term, 2);
    assert_int_equal(status(r).leader, 1);
    /* A transfer's campaign overrides stickiness. */
    v.flags = RAFT_FLAG_TRANSFER;
    step(r, v);
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_VOTE_RESP, 3);
    assert_non_null(m);
    assert_false(m->flags & RAFT_FLAG_REJECT);
    raft_free(r);
    /* Once the leader has been silent for an election timeout, vote. */
    r = rsim_solo_new(2, 3, 8, true, true);
    step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 2});
    for (int t = 0; t < 10; t++)
        raft_tick(r);
    v.flags = 0;
    step(r, v);
    m = rsim_cap_find(&cap, RAFT_MSG_VOTE_RESP, 3);
    assert_non_null(m);
    assert_false(m->flags & RAFT_FLAG_REJECT);
    raft_free(r);
}

/* The driver saw the leader's node go down: forget it and vote at once. */
static void test_forget_leader_lifts_stickiness(void **state)
{
    (void)state;
    raft_t *r = rsim_solo_new(2, 3, 8, true, true);
    step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 2});
    assert_int_equal(raft_forget_leader(r), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_int_equal(cap.n_events, 1);
    assert_int_equal(cap.events[0].cause, RAFT_CAUSE_LEADER_LOST);
    assert_int_equal(cap.events[0].old_leader, 1);
    assert_int_equal(cap.events[0].new_leader, 0);
    step(r,
         (raft_msg){
             .type = RAFT_MSG_PREVOTE, .from = 3, .to = 2, .term = 3, .index = 1, .log_term = 1});
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_PREVOTE_RESP, 3);
    assert_non_null(m);
    assert_false(m->flags & RAFT_FLAG_REJECT);
    raft_free(r);
}

/* A leader whose driver cannot persist steps down in its term. */
static void test_forget_leader_steps_a_leader_down(void **state)
{
    (void)state;
    raft_t *r = solo_leader(1, 3, true);
    uint64_t term = status(r).term;
    rsim_solo_drain(r, &cap);
    assert_int_equal(raft_forget_leader(r), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_int_equal(status(r).role, RAFT_FOLLOWER);
    assert_int_equal(status(r).leader, 0);
    assert_int_equal(status(r).term, term);
    assert_int_equal(cap.n_events, 1);
    assert_int_equal(cap.events[0].cause, RAFT_CAUSE_LEADER_LOST);
    assert_int_equal(cap.events[0].old_role, RAFT_LEADER);
    assert_int_equal(cap.events[0].old_leader, 1);
    assert_int_equal(cap.events[0].new_leader, 0);
    uint64_t index;
    assert_int_equal(raft_propose(r, "x", 1, &index), RAFT_ERR_NOT_LEADER);
    raft_free(r);
}

/* ---- leadership transfer ---------------------------------------------------- */

typedef struct {
    uint64_t id;
} is_leader_ctx;

static bool leader_is(rsim *s, void *ctx)
{
    return rsim_leader(s) == ((is_leader_ctx *)ctx)->id;
}

static void test_transfer_to_caught_up_member(void **state)
{
    (void)state;
    rsim *s = cluster(3, 31);
    uint64_t from = rsim_leader(s), to = other_than(from, 0, 3);
    rsim_run_ticks(s, 5);
    assert_int_equal(rsim_transfer(s, from, to), RAFT_OK);
    is_leader_ctx c = {to};
    assert_true(rsim_run_until(s, leader_is, &c, 10));
    assert_int_equal(node(s, from).role, RAFT_FOLLOWER);
    assert_null(rsim_error(s));
    rsim_free(s);
}

static void test_transfer_to_lagging_member(void **state)
{
    (void)state;
    rsim *s = cluster(3, 32);
    uint64_t from = rsim_leader(s), to = other_than(from, 0, 3);
    rsim_isolate(s, to);
    propose_n(s, from, 20);
    rsim_run_ticks(s, 3);
    rsim_heal(s);
    assert_int_equal(rsim_transfer(s, from, to), RAFT_OK);
    /* No proposals while the transfer is under way. */
    assert_int_equal(rsim_propose(s, from, "x", 1, NULL), RAFT_ERR_TRANSFERRING);
    is_leader_ctx c = {to};
    assert_true(rsim_run_until(s, leader_is, &c, 20));
    assert_true(node(s, to).last_index >= 22);
    assert_null(rsim_error(s));
    rsim_free(s);
}

static void test_transfer_times_out(void **state)
{
    (void)state;
    rsim *s = cluster(5, 33);
    uint64_t from = rsim_leader(s), to = other_than(from, 0, 5);
    rsim_crash(s, to);
    assert_int_equal(rsim_transfer(s, from, to), RAFT_OK);
    assert_int_equal(node(s, from).transferee, to);
    rsim_run_ticks(s, 12);
    assert_int_equal(rsim_leader(s), from);
    assert_int_equal(node(s, from).transferee, 0);
    assert_int_equal(rsim_propose(s, from, "x", 1, NULL), RAFT_OK);
    assert_int_equal(rsim_transfer(s, from, 99), RAFT_ERR_NOT_MEMBER);
    rsim_free(s);
}

/* ---- snapshots ---------------------------------------------------------------- */

static void test_snapshot_brings_lagging_member_up(void **state)
{
    (void)state;
    rsim *s = cluster(3, 41);
    uint64_t leader = rsim_leader(s), lag = other_than(leader, 0, 3);
    rsim_crash(s, lag);
    propose_n(s, leader, 30);
    rsim_run_ticks(s, 5);
    assert_int_equal(rsim_compact(s, leader), RAFT_OK);
    raft_status st = node(s, leader);
    assert_int_equal(st.first_index, st.applied + 1);
    assert_int_equal(raft_snapshot_get(rsim_raft(s, leader))->index, st.applied);
    rsim_restart(s, lag);
    rsim_run_ticks(s, 20);
    raft_status ls = node(s, lag);
    assert_true(ls.first_index > 1); /* it installed the snapshot */
    assert_int_equal(ls.commit, node(s, leader).commit);
    assert_int_equal(rsim_applied(s, lag), rsim_applied(s, leader));
    /* Its state came from the snapshot and matches (checked by rsim). */
    assert_null(rsim_error(s));
    rsim_free(s);
}

static void test_restart_from_snapshot_and_log(void **state)
{
    (void)state;
    rsim *s = cluster(3, 42);
    uint64_t leader = rsim_leader(s);
    propose_n(s, leader, 10);
    rsim_run_ticks(s, 5);
    uint64_t f = other_than(leader, 0, 3);
    assert_int_equal(rsim_compact(s, f), RAFT_OK);
    propose_n(s, leader, 5);
    rsim_run_ticks(s, 5);
    raft_status before = node(s, f);
    rsim_crash(s, f);
    rsim_restart(s, f);
    raft_status after = node(s, f);
    assert_int_equal(after.first_index, before.first_index);
    assert_int_equal(after.last_index, before.last_index);
    assert_int_equal(after.term, before.term);
    /* The commit index is written without an fsync (raft.h): a restart may
     * recover an older one, never below the snapshot, and relearns the
     * rest from the leader's next heartbeat. */
    assert_true(after.commit >= before.first_index - 1 && after.commit <= before.commit);
    rsim_run_ticks(s, 3);
    assert_int_equal(node(s, f).commit, before.commit);
    assert_int_equal(rsim_applied(s, f), before.commit); /* re-applied after the snapshot */
    assert_null(rsim_error(s));
    rsim_free(s);
}

static void test_compact_rules(void **state)
{
    (void)state;
    rsim *s = cluster(3, 43);
    uint64_t leader = rsim_leader(s);
    raft_t *r = rsim_raft(s, leader);
    raft_status st = status(r);
    assert_int_equal(raft_compact(r, st.applied + 1, 1, 7), RAFT_ERR_UNAVAILABLE);
    assert_int_equal(raft_compact(r, st.applied, 1, 7), RAFT_OK);
    assert_int_equal(raft_compact(r, st.applied, 1, 7), RAFT_ERR_COMPACTED);
    assert_null(raft_entry_get(r, st.applied));
    rsim_free(s);
}

/* ---- membership ------------------------------------------------------------------ */

static size_t voters_of(rsim *s, uint64_t id)
{
    uint64_t ids[RAFT_MAX_MEMBERS];
    return raft_voters(rsim_raft(s, id), ids, RAFT_MAX_MEMBERS);
}

static void test_membership_learner_promote_remove(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 4, 51);
    o.n_voters = 3; /* member 4 starts empty and joins */
    rsim *s = cluster_opts(&o);
    uint64_t leader = rsim_leader(s);
    propose_n(s, leader, 5);
    rsim_run_ticks(s, 3);
    assert_false(node(s, 4).is_voter);
    /* A learner-first rule: no direct voter. */
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_ADD_VOTER, 4), RAFT_ERR_NOT_MEMBER);
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_ADD_LEARNER, 4), RAFT_OK);
    /* One change at a time. */
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_REMOVE, 4), RAFT_ERR_CONF_PENDING);
    rsim_run_ticks(s, 10);
    assert_int_equal(node(s, 4).n_learners, 1);
    assert_false(node(s, 4).is_voter);
    assert_int_equal(rsim_applied(s, 4), rsim_applied(s, leader)); /* caught up */
    /* A learner never campaigns. */
    rsim_isolate(s, 4);
    rsim_run_ticks(s, 50);
    assert_int_equal(node(s, 4).role, RAFT_FOLLOWER);
    rsim_heal(s);
    rsim_run_ticks(s, 5);
    leader = rsim_leader(s);
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_ADD_VOTER, 4), RAFT_OK);
    rsim_run_ticks(s, 10);
    for (uint64_t id = 1; id <= 4; id++)
        assert_int_equal(voters_of(s, id), 4);
    assert_true(node(s, 4).is_voter);
    uint64_t gone = other_than(leader, 4, 4);
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_REMOVE, gone), RAFT_OK);
    rsim_run_ticks(s, 10);
    assert_int_equal(voters_of(s, leader), 3);
    /* (The removed member may never hear of its removal: the driver stops
     * it once the change is applied elsewhere.) */
    /* The group of three goes on without it. */
    rsim_crash(s, gone);
    propose_n(s, leader, 3);
    rsim_run_ticks(s, 5);
    assert_int_equal(rsim_applied(s, 4), rsim_applied(s, leader));
    assert_null(rsim_error(s));
    rsim_free(s);
}

static void test_membership_promotion_needs_catch_up(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 4, 52);
    o.n_voters = 3;
    rsim *s = cluster_opts(&o);
    uint64_t leader = rsim_leader(s);
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_ADD_LEARNER, 4),
                     RAFT_ERR_CONF_PENDING); /* this term's no-op is not committed yet */
    rsim_run_ticks(s, 3);
    rsim_crash(s, 4);
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_ADD_LEARNER, 4), RAFT_OK);
    rsim_run_ticks(s, 5);
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_ADD_VOTER, 4), RAFT_ERR_NOT_CAUGHT_UP);
    rsim_restart(s, 4);
    rsim_run_ticks(s, 10);
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_ADD_VOTER, 4), RAFT_OK);
    rsim_free(s);
}

static void test_membership_removed_leader_steps_down(void **state)
{
    (void)state;
    rsim *s = cluster(3, 53);
    uint64_t leader = rsim_leader(s);
    rsim_run_ticks(s, 3);
    assert_int_equal(rsim_conf_change(s, leader, RAFT_CONF_REMOVE, leader), RAFT_OK);
    rsim_run_ticks(s, 5);
    assert_int_not_equal(node(s, leader).role, RAFT_LEADER);
    assert_false(node(s, leader).is_voter);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 60));
    assert_int_not_equal(rsim_leader(s), leader);
    assert_int_equal(voters_of(s, rsim_leader(s)), 2);
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* ---- read index ------------------------------------------------------------------ */

static void test_read_index(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 3, 61);
    o.check_quorum = false; /* keep the isolated leader leading below */
    rsim *s = cluster_opts(&o);
    uint64_t leader = rsim_leader(s), f = other_than(leader, 0, 3);
    propose_n(s, leader, 3);
    rsim_run_ticks(s, 3);
    uint64_t commit = node(s, leader).commit;
    assert_int_equal(rsim_read_index(s, leader, 7), RAFT_OK);
    assert_int_equal(rsim_read_index(s, f, 8), RAFT_ERR_NOT_LEADER);
    rsim_run_ticks(s, 3);
    const raft_read_state *rs;
    assert_int_equal(rsim_reads(s, leader, &rs), 1);
    assert_int_equal(rs[0].ctx, 7);
    assert_true(rs[0].index >= commit);
    /* A leader cut off from the quorum cannot confirm a read. */
    rsim_isolate(s, leader);
    assert_int_equal(rsim_read_index(s, leader, 9), RAFT_OK);
    rsim_run_ticks(s, 10);
    assert_int_equal(rsim_reads(s, leader, &rs), 1);
    assert_null(rsim_error(s));
    rsim_free(s);
}

static void test_read_index_single_member(void **state)
{
    (void)state;
    raft_t *r = rsim_solo_new(1, 1, 3, true, true);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    assert_int_equal(status(r).role, RAFT_LEADER);
    assert_int_equal(raft_read_index(r, 42), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_int_equal(cap.n_reads, 1);
    assert_int_equal(cap.reads[0].ctx, 42);
    assert_int_equal(cap.reads[0].index, 2);
    raft_free(r);
}

/* ---- leader watch events ---------------------------------------------------------- */

typedef struct {
    raft_event ev[64];
    uint64_t id[64];
    size_t n;
} evlog;

static void record(void *ctx, uint64_t id, const raft_event *ev, uint64_t now)
{
    (void)now;
    evlog *l = ctx;
    if (l->n < 64) {
        l->id[l->n] = id;
        l->ev[l->n++] = *ev;
    }
}

static void test_events_of_an_election(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 3, 71);
    o.manual = true;
    rsim *s = rsim_new(&o);
    evlog l = {0};
    rsim_set_event_hook(s, record, &l);
    rsim_campaign(s, 1);
    rsim_deliver_all(s);
    /* On member 1: follower -> pre-candidate -> candidate -> leader. */
    struct {
        uint8_t type, old_role, new_role, cause;
        uint64_t old_leader, new_leader, term;
    } want1[] = {
        {RAFT_EVENT_BECOME_CANDIDATE, RAFT_FOLLOWER, RAFT_PRE_CANDIDATE, RAFT_CAUSE_CAMPAIGN, 0, 0,
         1},
        {RAFT_EVENT_BECOME_CANDIDATE, RAFT_PRE_CANDIDATE, RAFT_CANDIDATE, RAFT_CAUSE_PRE_VOTE_WON,
         0, 0, 2},
        {RAFT_EVENT_BECOME_LEADER, RAFT_CANDIDATE, RAFT_LEADER, RAFT_CAUSE_ELECTION_WON, 0, 1, 2},
    };
    size_t k = 0, followers = 0;
    for (size_t i = 0; i < l.n; i++) {
        const raft_event *e = &l.ev[i];
        if (l.id[i] == 1) {
            assert_true(k < 3);
            assert_int_equal(e->type, want1[k].type);
            assert_int_equal(e->old_role, want1[k].old_role);
            assert_int_equal(e->new_role, want1[k].new_role);
            assert_int_equal(e->cause, want1[k].cause);
            assert_int_equal(e->old_leader, want1[k].old_leader);
            assert_int_equal(e->new_leader, want1[k].new_leader);
            assert_int_equal(e->term, want1[k].term);
            k++;
        } else {
            /* Members 2 and 3 follow the new leader. */
            assert_int_equal(e->type, RAFT_EVENT_BECOME_FOLLOWER);
            assert_int_equal(e->old_leader, 0);
            assert_int_equal(e->new_leader, 1);
            assert_int_equal(e->cause, RAFT_CAUSE_LEADER_FOUND);
            followers++;
        }
    }
    assert_int_equal(k, 3);
    assert_int_equal(followers, 2);
    /* Leadership moves to 2: 1 steps down (old before new), 3 follows 2. */
    l.n = 0;
    rsim_transfer(s, 1, 2);
    rsim_deliver_all(s);
    bool one_down = false, three_follows = false, two_leads = false;
    for (size_t i = 0; i < l.n; i++) {
        const raft_event *e = &l.ev[i];
        if (l.id[i] == 1 && e->old_role == RAFT_LEADER) {
            assert_int_equal(e->type, RAFT_EVENT_BECOME_FOLLOWER);
            assert_int_equal(e->old_leader, 1);
            one_down = true;
        }
        if (l.id[i] == 3 && e->new_leader == 2)
            three_follows = e->old_leader == 1 || e->old_leader == 0;
        if (l.id[i] == 2 && e->type == RAFT_EVENT_BECOME_LEADER)
            two_leads = true;
        if (l.id[i] == 2 && e->new_role == RAFT_CANDIDATE)
            assert_int_equal(e->cause, RAFT_CAUSE_TRANSFER);
    }
    assert_true(one_down && three_follows && two_leads);
    assert_null(rsim_error(s)); /* rsim checked each old against the last new */
    rsim_free(s);
}

/* ---- fast backtracking ----------------------------------------------------------- */

static bool count_rejects(void *ctx, raft_msg *m)
{
    if (m->type == RAFT_MSG_APPEND_RESP && (m->flags & RAFT_FLAG_REJECT))
        (*(int *)ctx)++;
    return true;
}

static void test_fast_backtracking(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 5, 81);
    o.manual = true;
    o.check_quorum = false;
    rsim *s = rsim_new(&o);
    rsim_campaign(s, 1);
    rsim_deliver_all(s);
    rsim_isolate(s, 1);
    propose_n(s, 1, 100); /* indexes 3..102 of term 2 that only member 1 has */
    rsim_deliver_all(s);
    rsim_campaign(s, 2); /* term 3: indexes 3..53 */
    rsim_deliver_all(s);
    propose_n(s, 2, 50);
    rsim_deliver_all(s);
    rsim_isolate(s, 2);
    rsim_campaign(s, 3); /* term 4: no-op at 54 */
    rsim_deliver_all(s);
    assert_int_equal(node(s, 3).role, RAFT_LEADER);
    int rejects = 0;
    rsim_set_filter(s, count_rejects, &rejects);
    rsim_heal(s);
    rsim_isolate(s, 2);
    for (int i = 0; i < 3; i++) {
        rsim_tick(s, 3);
        rsim_deliver_all(s);
    }
    assert_int_equal(node(s, 1).last_index, node(s, 3).last_index);
    assert_int_equal(node(s, 1).commit, node(s, 3).commit);
    assert_int_equal(raft_entry_get(rsim_raft(s, 1), 3)->term, 3);
    /* The conflict spans 51 indexes; one rejection skips the whole term. */
    assert_true(rejects >= 1 && rejects <= 2);
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* ---- restart and the API contract -------------------------------------------------- */

static void test_restart_keeps_vote(void **state)
{
    (void)state;
    const uint8_t boot[] = {RAFT_CONF_BOOTSTRAP, 3, 1, 2, 3, 0};
    raft_entry log[] = {
        {.index = 1, .term = 1, .type = RAFT_ENTRY_CONF, .data = boot, .len = sizeof(boot)}};
    raft_config cfg;
    raft_config_init(&cfg, 1, 1);
    cfg.entries = log;
    cfg.n_entries = 1;
    cfg.hard_state = (raft_hard_state){.term = 5, .vote = 2, .commit = 1};
    raft_t *r = raft_new(&cfg, NULL);
    assert_non_null(r);
    assert_int_equal(status(r).term, 5);
    assert_int_equal(status(r).vote, 2);
    step(r, (raft_msg){
                .type = RAFT_MSG_VOTE, .from = 3, .to = 1, .term = 5, .index = 1, .log_term = 1});
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_VOTE_RESP, 3);
    assert_non_null(m);
    assert_true(m->flags & RAFT_FLAG_REJECT);
    raft_free(r);
}

static void test_api_contract(void **state)
{
    (void)state;
    /* every code has its own name for the NIF to hand out */
    assert_string_equal(raft_err_name(RAFT_ERR_NOT_LEADER), "not_leader");
    assert_string_equal(raft_err_name(-1000), "unknown");
    for (int a = RAFT_OK; a >= RAFT_ERR_CHECKSUM; a--) {
        assert_string_not_equal(raft_err_name(a), "unknown");
        for (int b = a - 1; b >= RAFT_ERR_CHECKSUM; b--)
            assert_string_not_equal(raft_err_name(a), raft_err_name(b));
    }
    raft_t *r = rsim_solo_new(1, 3, 1, true, true);
    raft_tick(r);
    raft_campaign(r);
    raft_ready_t rd;
    assert_true(raft_has_ready(r));
    assert_int_equal(raft_ready(r, &rd), RAFT_OK);
    assert_int_equal(raft_tick(r), RAFT_ERR_BUSY);
    assert_int_equal(raft_ready(r, &rd), RAFT_ERR_BUSY);
    raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = 2, .to = 1, .term = 9};
    assert_int_equal(raft_step(r, &m), RAFT_ERR_BUSY);
    assert_int_equal(raft_advance(r, &rd), RAFT_OK);
    assert_int_equal(raft_advance(r, &rd), RAFT_ERR_INVALID);
    assert_int_equal(raft_propose(r, "x", 1, NULL), RAFT_ERR_NOT_LEADER);
    assert_int_equal(raft_read_index(r, 1), RAFT_ERR_NOT_LEADER);
    assert_int_equal(raft_transfer_leader(r, 2), RAFT_ERR_NOT_LEADER);
    assert_int_equal(raft_propose_conf_change(r, RAFT_CONF_REMOVE, 2, NULL), RAFT_ERR_NOT_LEADER);
    m.to = 5; /* not us */
    assert_int_equal(raft_step(r, &m), RAFT_ERR_INVALID);
    m.to = 1;
    m.from = 0;
    assert_int_equal(raft_step(r, &m), RAFT_ERR_INVALID);
    raft_free(r);

    int err = 0;
    raft_config cfg;
    raft_config_init(&cfg, 0, 1);
    assert_null(raft_new(&cfg, &err));
    assert_int_equal(err, RAFT_ERR_INVALID);
    raft_config_init(&cfg, 1, 1);
    cfg.heartbeat_tick = cfg.election_tick;
    assert_null(raft_new(&cfg, &err));
    raft_config_init(&cfg, 1, 1);
    raft_entry gap[] = {{.index = 2, .term = 1, .type = RAFT_ENTRY_NOOP}};
    cfg.entries = gap;
    cfg.n_entries = 1;
    cfg.hard_state.term = 1;
    assert_null(raft_new(&cfg, &err));
    assert_int_equal(err, RAFT_ERR_INVALID);
    raft_config_init(&cfg, 1, 1);
    uint64_t dup[] = {1, 1};
    cfg.voters = dup;
    cfg.n_voters = 2;
    assert_null(raft_new(&cfg, &err));
}

/* The first Ready of a bootstrap member persists entry 1 (the membership),
 * committed, and a joining member starts empty and never campaigns. */
static void test_bootstrap_and_join(void **state)
{
    (void)state;
    uint64_t voters[] = {3, 1, 2};
    raft_config cfg;
    raft_config_init(&cfg, 2, 9);
    cfg.voters = voters;
    cfg.n_voters = 3;
    raft_t *r = raft_new(&cfg, NULL);
    assert_non_null(r);
    rsim_solo_drain(r, &cap);
    assert_int_equal(cap.n_entries, 1);
    assert_int_equal(cap.entries_from, 1);
    assert_int_equal(cap.committed_last, 1);
    assert_int_equal(cap.hs.term, 1);
    assert_int_equal(cap.hs.commit, 1);
    const raft_entry *e = raft_entry_get(r, 1);
    raft_conf_change cc;
    assert_int_equal(raft_conf_change_decode(e->data, e->len, &cc), RAFT_OK);
    assert_int_equal(cc.op, RAFT_CONF_BOOTSTRAP);
    raft_free(r);
    raft_config_init(&cfg, 7, 9);
    r = raft_new(&cfg, NULL);
    assert_non_null(r);
    for (int t = 0; t < 100; t++)
        raft_tick(r);
    assert_false(raft_has_ready(r));
    assert_int_equal(status(r).role, RAFT_FOLLOWER);
    assert_false(status(r).is_voter);
    raft_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prevote_prevents_disruption),
        cmocka_unit_test(test_prevote_changes_no_hard_state),
        cmocka_unit_test(test_persistence_rule),
        cmocka_unit_test(test_pipelining_window),
        cmocka_unit_test(test_appends_coalesced_per_ready),
        cmocka_unit_test(test_check_quorum_steps_down),
        cmocka_unit_test(test_stickiness_ignores_votes_near_live_leader),
        cmocka_unit_test(test_forget_leader_lifts_stickiness),
        cmocka_unit_test(test_forget_leader_steps_a_leader_down),
        cmocka_unit_test(test_transfer_to_caught_up_member),
        cmocka_unit_test(test_transfer_to_lagging_member),
        cmocka_unit_test(test_transfer_times_out),
        cmocka_unit_test(test_snapshot_brings_lagging_member_up),
        cmocka_unit_test(test_restart_from_snapshot_and_log),
        cmocka_unit_test(test_compact_rules),
        cmocka_unit_test(test_membership_learner_promote_remove),
        cmocka_unit_test(test_membership_promotion_needs_catch_up),
        cmocka_unit_test(test_membership_removed_leader_steps_down),
        cmocka_unit_test(test_read_index),
        cmocka_unit_test(test_read_index_single_member),
        cmocka_unit_test(test_events_of_an_election),
        cmocka_unit_test(test_fast_backtracking),
        cmocka_unit_test(test_restart_keeps_vote),
        cmocka_unit_test(test_api_contract),
        cmocka_unit_test(test_bootstrap_and_join),
    };
    return cmocka_run_group_tests_name("raft_features", tests, NULL, NULL);
}
