/* test_raft_quiesce.c -- idle groups quiesce (raft.h, QUIESCING): the
 * leader's last heartbeat is marked, the followers stop their election
 * timers, nothing is sent until something wakes the group; a dead or
 * partitioned quiesced leader is replaced once the driver reports its
 * nodedown; a quiesced leader cut off from its quorum never confirms a read,
 * so two leaders never both serve reads. */
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

static rsim *quiet_cluster(size_t n, uint64_t seed, bool nodedown)
{
    rsim_opts o;
    rsim_opts_default(&o, n, seed);
    o.quiesce = true;
    o.nodedown = nodedown;
    rsim *s = rsim_new(&o);
    assert_non_null(s);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 100));
    return s;
}

static bool all_quiesced(rsim *s, size_t n)
{
    for (uint64_t id = 1; id <= n; id++)
        if (rsim_raft(s, id) && !node(s, id).quiesced)
            return false;
    return true;
}

static bool all_quiesced_3(rsim *s, void *ctx)
{
    (void)ctx;
    return all_quiesced(s, 3);
}

static uint64_t other_than(uint64_t a, uint64_t b, size_t n)
{
    for (uint64_t id = 1; id <= n; id++)
        if (id != a && id != b)
            return id;
    return 0;
}

/* An idle group goes quiet: every member quiesced, no message for 500
 * ticks; a proposal wakes it, commits everywhere, and it goes quiet again. */
static void test_idle_group_quiesces_and_a_proposal_wakes_it(void **state)
{
    (void)state;
    rsim *s = quiet_cluster(3, 101, false);
    uint64_t leader = rsim_leader(s);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 50));
    uint64_t term = node(s, leader).term;
    uint64_t delivered = rsim_delivered(s);
    rsim_run_ticks(s, 500);
    assert_int_equal(rsim_delivered(s), delivered);
    assert_true(all_quiesced(s, 3));
    assert_int_equal(node(s, leader).term, term);

    uint64_t index;
    assert_int_equal(rsim_propose(s, leader, "w", 1, &index), RAFT_OK);
    assert_false(node(s, leader).quiesced);
    rsim_run_ticks(s, 5);
    for (uint64_t id = 1; id <= 3; id++)
        assert_true(rsim_applied(s, id) >= index);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 50));
    assert_int_equal(rsim_leader(s), leader);
    assert_int_equal(node(s, leader).term, term);
    /* Waking and quiescing again took a handful of messages, not a stream. */
    assert_true(rsim_delivered(s) - delivered < 40);
    delivered = rsim_delivered(s);
    rsim_run_ticks(s, 200);
    assert_int_equal(rsim_delivered(s), delivered);
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* The driver's raft_wake (a node came up) on a follower wakes the leader
 * too; a read on a quiesced leader wakes it and is confirmed by a quorum. */
static void test_wake_and_read_on_a_quiesced_group(void **state)
{
    (void)state;
    rsim *s = quiet_cluster(3, 102, false);
    uint64_t leader = rsim_leader(s), f = other_than(leader, 0, 3);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 50));
    uint64_t delivered = rsim_delivered(s);
    assert_int_equal(rsim_wake(s, f), RAFT_OK);
    assert_false(node(s, f).quiesced);
    rsim_run_ticks(s, 3);
    /* f's WAKE, the leader's heartbeats and their answers, its QUIESCE
     * heartbeats: the leader woke and quiesced again */
    assert_true(rsim_delivered(s) - delivered >= 7);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 50));

    uint64_t commit = node(s, leader).commit;
    assert_int_equal(rsim_read_index(s, leader, 5), RAFT_OK);
    assert_false(node(s, leader).quiesced);
    rsim_run_ticks(s, 3);
    const raft_read_state *rs;
    assert_int_equal(rsim_reads(s, leader, &rs), 1);
    assert_int_equal(rs[0].ctx, 5);
    assert_true(rs[0].index >= commit);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 50));
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* A member that restarts (its quiesced group did not see it go: no
 * nodedown) learns the leader: its pre-vote wakes the others, and stickiness
 * keeps it from disturbing the live leader. */
static void test_restarted_member_wakes_a_quiesced_group(void **state)
{
    (void)state;
    rsim *s = quiet_cluster(3, 103, false);
    uint64_t leader = rsim_leader(s), f = other_than(leader, 0, 3);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 50));
    uint64_t term = node(s, leader).term;
    rsim_crash(s, f);
    rsim_run_ticks(s, 50);
    rsim_restart(s, f);
    assert_int_equal(node(s, f).leader, 0);
    for (int t = 0; t < 100 && node(s, f).leader != leader; t++)
        rsim_run_ticks(s, 1);
    assert_int_equal(node(s, f).leader, leader);
    assert_int_equal(rsim_leader(s), leader);
    assert_int_equal(node(s, leader).term, term);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 100));
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* A quiesced leader cut off without a nodedown is not noticed (nothing is
 * sent); once the driver reports its nodedown the others elect at once. Its
 * read requests are never confirmed while it is cut off, so at no time do
 * two leaders serve reads; woken by the read, it runs check-quorum again
 * and steps down within an election timeout. Healed, it follows. */
static void test_partitioned_quiesced_leader(void **state)
{
    (void)state;
    rsim *s = quiet_cluster(3, 104, false);
    uint64_t old = rsim_leader(s);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 50));
    uint64_t term = node(s, old).term;
    rsim_isolate(s, old);
    rsim_run_ticks(s, 200);
    assert_int_equal(rsim_leader(s), old); /* silent: nobody knows yet */
    assert_int_equal(node(s, old).term, term);

    for (uint64_t id = 1; id <= 3; id++)
        if (id != old)
            rsim_nodedown(s, id, old);
    assert_true(rsim_run_until(s, rsim_has_other_leader, &old, 30));
    uint64_t nw = rsim_leader(s);
    assert_true(node(s, nw).term > term);
    assert_int_equal(node(s, old).role, RAFT_LEADER); /* still thinks it leads */

    /* Reads on both leaders, every tick: only the new one confirms any. */
    uint64_t ctx = 0;
    const raft_read_state *rs;
    bool stepped_down = false;
    for (int t = 0; t < 40; t++) {
        if (node(s, old).role == RAFT_LEADER)
            assert_int_equal(rsim_read_index(s, old, ++ctx), RAFT_OK);
        else
            stepped_down = true;
        assert_int_equal(rsim_read_index(s, nw, ++ctx), RAFT_OK);
        rsim_run_ticks(s, 1);
        assert_int_equal(rsim_reads(s, old, &rs), 0);
    }
    assert_true(stepped_down);
    assert_true(rsim_reads(s, nw, &rs) > 30);

    rsim_heal(s);
    rsim_run_ticks(s, 30);
    assert_int_equal(node(s, old).leader, nw);
    assert_int_equal(node(s, old).term, node(s, nw).term);
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* The fast failover: a quiesced leader crashes, the driver's nodedown makes
 * the survivors forget it and one campaigns; a new leader within a few
 * ticks, not an election timeout of silence (their timers were stopped). */
static void test_crashed_quiesced_leader_fails_over_on_nodedown(void **state)
{
    (void)state;
    rsim *s = quiet_cluster(3, 105, true);
    uint64_t old = rsim_leader(s);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 50));
    rsim_crash(s, old); /* nodedown on the others (opts.nodedown) */
    uint64_t a = other_than(old, 0, 3);
    assert_int_equal(node(s, a).leader, 0);
    assert_false(node(s, a).quiesced);
    assert_int_equal(rsim_campaign(s, a), RAFT_OK);
    assert_true(rsim_run_until(s, rsim_has_other_leader, &old, 5));
    uint64_t nw = rsim_leader(s);
    uint64_t index;
    assert_int_equal(rsim_propose(s, nw, "x", 1, &index), RAFT_OK);
    /* The dead member does not keep the survivors awake (silent for more
     * than a check-quorum round). */
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 100));
    rsim_restart(s, old); /* nodeup: the others wake and the old one follows */
    rsim_run_ticks(s, 20);
    assert_int_equal(node(s, old).leader, nw);
    assert_true(rsim_run_until(s, all_quiesced_3, NULL, 100));
    assert_true(rsim_applied(s, old) >= index);
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* ---- one member by hand ------------------------------------------------- */

static raft_t *solo(uint64_t id, bool quiesce)
{
    uint64_t voters[] = {1, 2, 3};
    raft_config cfg;
    raft_config_init(&cfg, id, 9);
    cfg.quiesce = quiesce;
    cfg.voters = voters;
    cfg.n_voters = 3;
    raft_t *r = raft_new(&cfg, NULL);
    assert_non_null(r);
    rsim_solo_drain(r, &cap);
    return r;
}

/* Follower: a quiesce heartbeat while caught up stops the election timer
 * and is not answered; one while behind is answered WAKE; a vote request
 * wakes it (it asks its leader to heartbeat) but stickiness still holds. */
static void test_follower_rules(void **state)
{
    (void)state;
    raft_t *r = solo(2, true);
    /* Bootstrap entry 1 is committed; the leader says commit 1 = last. */
    raft_msg hb = {
        .type = RAFT_MSG_HEARTBEAT, .flags = RAFT_FLAG_QUIESCE, .from = 1, .to = 2, .term = 2};
    hb.commit = 1;
    step(r, hb);
    assert_true(status(r).quiesced);
    assert_int_equal(status(r).leader, 1);
    assert_int_equal(cap.n_msgs, 0);
    for (int t = 0; t < 100; t++) {
        assert_int_equal(raft_tick(r), RAFT_OK);
        rsim_solo_drain(r, &cap);
        assert_int_equal(cap.n_msgs, 0);
    }
    assert_int_equal(status(r).role, RAFT_FOLLOWER);
    /* A pre-vote from 3: woken, the leader asked to heartbeat, no vote. */
    step(r,
         (raft_msg){
             .type = RAFT_MSG_PREVOTE, .from = 3, .to = 2, .term = 3, .index = 1, .log_term = 1});
    assert_false(status(r).quiesced);
    assert_null(rsim_cap_find(&cap, RAFT_MSG_PREVOTE_RESP, 3));
    const raft_msg *m = rsim_cap_find(&cap, RAFT_MSG_HEARTBEAT_RESP, 1);
    assert_non_null(m);
    assert_true(m->flags & RAFT_FLAG_WAKE);
    /* Awake, its election timer runs again. */
    bool campaigned = false;
    for (int t = 0; t < 25 && !campaigned; t++) {
        raft_tick(r);
        rsim_solo_drain(r, &cap);
        campaigned = rsim_cap_find(&cap, RAFT_MSG_PREVOTE, 0) != NULL;
    }
    assert_true(campaigned);
    raft_free(r);

    /* Behind (the leader's commit is beyond what it holds): WAKE. */
    r = solo(2, true);
    hb.commit = 0;
    step(r, hb);
    hb.commit = 1;
    step(r, (raft_msg){.type = RAFT_MSG_APPEND,
                       .from = 1,
                       .to = 2,
                       .term = 2,
                       .index = 1,
                       .log_term = 1,
                       .entries = &(raft_entry){.term = 2, .index = 2, .type = RAFT_ENTRY_NOOP},
                       .n_entries = 1});
    step(r, hb); /* commit 1, last 2: not caught up */
    assert_false(status(r).quiesced);
    m = rsim_cap_find(&cap, RAFT_MSG_HEARTBEAT_RESP, 1);
    assert_non_null(m);
    assert_true(m->flags & RAFT_FLAG_WAKE);
    raft_free(r);

    /* Without quiesce in its own config: WAKE too, and the timer runs. */
    r = solo(2, false);
    step(r, hb);
    assert_false(status(r).quiesced);
    m = rsim_cap_find(&cap, RAFT_MSG_HEARTBEAT_RESP, 1);
    assert_non_null(m);
    assert_true(m->flags & RAFT_FLAG_WAKE);
    raft_free(r);
}

static raft_t *solo_leader(bool quiesce)
{
    raft_t *r = solo(1, quiesce);
    raft_campaign(r);
    rsim_solo_drain(r, &cap);
    step(r, (raft_msg){.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 2});
    step(r, (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2});
    assert_int_equal(status(r).role, RAFT_LEADER);
    for (uint64_t p = 2; p <= 3; p++)
        step(r,
             (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = p, .to = 1, .term = 2, .index = 2});
    assert_int_equal(status(r).commit, 2);
    return r;
}

/* Leader: at the heartbeat tick of an idle group it sends QUIESCE
 * heartbeats and then nothing, check-quorum included; a plain heartbeat
 * answer keeps it quiet, a WAKE or any other message wakes it and it
 * heartbeats at once. Not while a follower lags or a read is pending. */
static void test_leader_rules(void **state)
{
    (void)state;
    raft_t *r = solo_leader(true);
    raft_tick(r);
    rsim_solo_drain(r, &cap);
    assert_true(status(r).quiesced);
    assert_int_equal(rsim_cap_count(&cap, RAFT_MSG_HEARTBEAT), 2);
    for (size_t i = 0; i < cap.n_msgs; i++)
        assert_true(cap.msgs[i].flags & RAFT_FLAG_QUIESCE);
    for (int t = 0; t < 100; t++) { /* no heartbeat, no check-quorum */
        raft_tick(r);
        rsim_solo_drain(r, &cap);
        assert_int_equal(cap.n_msgs, 0);
    }
    assert_int_equal(status(r).role, RAFT_LEADER);
    step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = 2});
    assert_true(status(r).quiesced);
    assert_int_equal(cap.n_msgs, 0);
    step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP,
                       .flags = RAFT_FLAG_WAKE,
                       .from = 2,
                       .to = 1,
                       .term = 2});
    assert_false(status(r).quiesced);
    assert_int_equal(rsim_cap_count(&cap, RAFT_MSG_HEARTBEAT), 2);
    /* 2 answered since the wake-up (the WAKE itself): with 1, a quorum, it
     * quiesces again at the next heartbeat tick. */
    raft_tick(r);
    rsim_solo_drain(r, &cap);
    assert_true(status(r).quiesced);
    /* Woken by the driver and then silence: it stays awake (no quorum has
     * answered since) and check-quorum steps it down within an election
     * timeout. */
    assert_int_equal(raft_wake(r), RAFT_OK);
    rsim_solo_drain(r, &cap);
    for (int t = 0; t < 25 && status(r).role == RAFT_LEADER; t++) {
        raft_tick(r);
        rsim_solo_drain(r, &cap);
    }
    assert_int_equal(status(r).role, RAFT_FOLLOWER);
    raft_free(r);

    /* A lagging follower (match < last) keeps it heartbeating. */
    r = solo_leader(true);
    assert_int_equal(raft_propose(r, "p", 1, NULL), RAFT_OK);
    rsim_solo_drain(r, &cap);
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2, .index = 3});
    for (int t = 0; t < 5; t++) {
        raft_tick(r);
        rsim_solo_drain(r, &cap);
        step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = 2});
        assert_false(status(r).quiesced);
    }
    /* A pending read too. */
    step(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .from = 3, .to = 1, .term = 2, .index = 3});
    assert_int_equal(raft_read_index(r, 1), RAFT_OK);
    rsim_solo_drain(r, &cap);
    raft_tick(r);
    rsim_solo_drain(r, &cap);
    assert_false(status(r).quiesced);
    step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = 2, .ctx = 1});
    assert_int_equal(cap.n_reads, 1);
    raft_tick(r);
    rsim_solo_drain(r, &cap);
    assert_true(status(r).quiesced);
    /* raft_wake (a node went down or came up): heartbeats at once. */
    assert_int_equal(raft_wake(r), RAFT_OK);
    rsim_solo_drain(r, &cap);
    assert_false(status(r).quiesced);
    assert_int_equal(rsim_cap_count(&cap, RAFT_MSG_HEARTBEAT), 2);
    raft_free(r);

    /* Without quiesce: heartbeats forever. */
    r = solo_leader(false);
    for (int t = 0; t < 20; t++) {
        raft_tick(r);
        rsim_solo_drain(r, &cap);
        step(r, (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = 2});
        assert_false(status(r).quiesced);
    }
    raft_free(r);
}

/* The flags travel and are refused on the wrong types. */
static void test_codec_flags(void **state)
{
    (void)state;
    raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .flags = RAFT_FLAG_QUIESCE, .from = 1, .to = 2};
    m.term = 3;
    m.commit = 4;
    uint8_t buf[64];
    size_t len;
    assert_int_equal(raft_msg_encode(&m, buf, sizeof buf, &len), RAFT_OK);
    raft_msg out;
    assert_int_equal(raft_msg_decode(buf, len, &out), RAFT_OK);
    assert_int_equal(out.flags, RAFT_FLAG_QUIESCE);
    raft_msg_release(&out);
    m.type = RAFT_MSG_HEARTBEAT_RESP;
    m.commit = 0;
    assert_int_equal(raft_msg_check(&m), RAFT_ERR_INVALID);
    m.flags = RAFT_FLAG_WAKE;
    assert_int_equal(raft_msg_check(&m), RAFT_OK);
    m.type = RAFT_MSG_HEARTBEAT;
    assert_int_equal(raft_msg_check(&m), RAFT_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_group_quiesces_and_a_proposal_wakes_it),
        cmocka_unit_test(test_wake_and_read_on_a_quiesced_group),
        cmocka_unit_test(test_restarted_member_wakes_a_quiesced_group),
        cmocka_unit_test(test_partitioned_quiesced_leader),
        cmocka_unit_test(test_crashed_quiesced_leader_fails_over_on_nodedown),
        cmocka_unit_test(test_follower_rules),
        cmocka_unit_test(test_leader_rules),
        cmocka_unit_test(test_codec_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
