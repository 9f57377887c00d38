/* test_raft_async.c -- raft_config.async_persist and raft_persisted (raft.h,
 * "ASYNCHRONOUS PERSISTENCE"): a handed-out Ready is not taken as persisted;
 * acks and vote grants wait for raft_persisted, the leader counts its own
 * copy only once durable, nothing is applied beyond what is durable here,
 * and a confirmation of entries a new leader has cut confirms none of the
 * entries that replaced them. The randomized runs with delayed writes and
 * crashes are in test_raft_sim.c (half of its seeds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft.h"

/* What the Readies drained since the last call handed out. */
typedef struct out {
    raft_msg msgs[64];
    size_t n_msgs;
    uint64_t seqs[16];
    size_t n_seqs;
    uint64_t applied_last; /* highest index in rd.committed */
    size_t n_applied;
} out;

static void drain(raft_t *r, out *o)
{
    memset(o, 0, sizeof(*o));
    while (raft_has_ready(r)) {
        raft_ready_t rd;
        assert_int_equal(raft_ready(r, &rd), RAFT_OK);
        /* async: every message may leave at once */
        assert_int_equal(rd.n_early, rd.n_msgs);
        assert_true((rd.seq != 0) == rd.must_sync);
        for (size_t i = 0; i < rd.n_msgs && o->n_msgs < 64; i++) {
            o->msgs[o->n_msgs] = rd.msgs[i];
            o->msgs[o->n_msgs].entries = NULL; /* not valid after advance */
            o->msgs[o->n_msgs].n_entries = 0;
            o->n_msgs++;
        }
        if (rd.seq && o->n_seqs < 16)
            o->seqs[o->n_seqs++] = rd.seq;
        for (size_t i = 0; i < rd.n_committed; i++) {
            o->applied_last = rd.committed[i].index;
            o->n_applied++;
        }
        assert_int_equal(raft_advance(r, &rd), RAFT_OK);
    }
}

/* Confirm every write handed out by the last drain, then drain again. */
static void confirm_all(raft_t *r, out *o)
{
    for (size_t i = 0; i < o->n_seqs; i++)
        assert_int_equal(raft_persisted(r, o->seqs[i]), RAFT_OK);
    drain(r, o);
}

static const raft_msg *find(const out *o, uint8_t type, uint64_t to)
{
    for (size_t i = 0; i < o->n_msgs; i++)
        if (o->msgs[i].type == type && (!to || o->msgs[i].to == to))
            return &o->msgs[i];
    return NULL;
}

static raft_t *member(uint64_t id, size_t n_voters, bool async)
{
    uint64_t voters[3] = {1, 2, 3};
    raft_config cfg;
    raft_config_init(&cfg, id, 7 + id);
    cfg.voters = voters;
    cfg.n_voters = n_voters;
    cfg.async_persist = async;
    int err;
    raft_t *r = raft_new(&cfg, &err);
    assert_non_null(r);
    return r;
}

static raft_status status(const raft_t *r)
{
    raft_status st;
    raft_status_get(r, &st);
    return st;
}

/* A follower (id 2) whose bootstrap entry 1 is durable. */
static raft_t *follower(out *o)
{
    raft_t *r = member(2, 3, true);
    drain(r, o);
    assert_int_equal(o->n_seqs, 1);
    assert_int_equal(raft_persisted(r, o->seqs[0]), RAFT_OK);
    drain(r, o);
    return r;
}

static raft_msg append(uint64_t from, uint64_t term, uint64_t prev, uint64_t prev_term,
                       const raft_entry *ents, size_t n, uint64_t commit)
{
    raft_msg m;
    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_APPEND;
    m.from = from;
    m.to = 2;
    m.term = term;
    m.index = prev;
    m.log_term = prev_term;
    m.entries = ents;
    m.n_entries = n;
    m.commit = commit;
    return m;
}

static void test_ack_withheld_until_persisted(void **state)
{
    (void)state;
    out o;
    raft_t *r = follower(&o);
    /* Term 2 first, made durable: answers that promise nothing about the
     * disk leave at once only while the term and vote are durable. */
    raft_msg m = append(1, 2, 1, 1, NULL, 0, 1);
    assert_int_equal(raft_step(r, &m), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.n_seqs, 1);
    assert_null(find(&o, RAFT_MSG_APPEND_RESP, 1));
    assert_int_equal(raft_persisted(r, o.seqs[0]), RAFT_OK);
    drain(r, &o);
    assert_non_null(find(&o, RAFT_MSG_APPEND_RESP, 1));
    raft_entry e[2] = {{.term = 2, .index = 2, .data = (const uint8_t *)"a", .len = 1},
                       {.term = 2, .index = 3, .data = (const uint8_t *)"b", .len = 1}};
    m = append(1, 2, 1, 1, e, 2, 1);
    assert_int_equal(raft_step(r, &m), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.n_seqs, 1);
    assert_null(find(&o, RAFT_MSG_APPEND_RESP, 1)); /* held: not durable yet */
    uint64_t seq = o.seqs[0];
    /* The member keeps stepping meanwhile: a heartbeat is answered at once
     * (it promises nothing about the disk), more entries are taken. */
    raft_msg hb;
    memset(&hb, 0, sizeof(hb));
    hb.type = RAFT_MSG_HEARTBEAT;
    hb.from = 1;
    hb.to = 2;
    hb.term = 2;
    hb.commit = 1;
    hb.ctx = 5;
    assert_int_equal(raft_step(r, &hb), RAFT_OK);
    drain(r, &o);
    const raft_msg *hr = find(&o, RAFT_MSG_HEARTBEAT_RESP, 1);
    assert_non_null(hr);
    assert_int_equal(hr->ctx, 5);
    assert_null(find(&o, RAFT_MSG_APPEND_RESP, 1));
    /* The leader commits 3; the follower may not apply it before it is durable. */
    m = append(1, 2, 3, 2, NULL, 0, 3);
    assert_int_equal(raft_step(r, &m), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.n_applied, 0);
    assert_int_equal(status(r).commit, 3);
    assert_null(find(&o, RAFT_MSG_APPEND_RESP, 1));
    assert_int_equal(raft_persisted(r, seq), RAFT_OK);
    drain(r, &o);
    const raft_msg *ack = find(&o, RAFT_MSG_APPEND_RESP, 1);
    assert_non_null(ack);
    assert_int_equal(ack->index, 3);
    assert_int_equal(ack->flags & RAFT_FLAG_REJECT, 0);
    assert_int_equal(o.applied_last, 3);
    /* A repeated confirmation changes nothing. */
    assert_int_equal(raft_persisted(r, seq), RAFT_OK);
    assert_false(raft_has_ready(r));
    raft_free(r);
}

static void test_vote_grant_withheld_until_persisted(void **state)
{
    (void)state;
    out o;
    raft_t *r = follower(&o);
    raft_msg v;
    memset(&v, 0, sizeof(v));
    v.type = RAFT_MSG_VOTE;
    v.from = 3;
    v.to = 2;
    v.term = 5;
    v.index = 1;
    v.log_term = 1;
    assert_int_equal(raft_step(r, &v), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.n_seqs, 1);
    assert_null(find(&o, RAFT_MSG_VOTE_RESP, 3));
    assert_int_equal(status(r).vote, 3);
    assert_int_equal(raft_persisted(r, o.seqs[0]), RAFT_OK);
    drain(r, &o);
    const raft_msg *g = find(&o, RAFT_MSG_VOTE_RESP, 3);
    assert_non_null(g);
    assert_int_equal(g->term, 5);
    assert_int_equal(g->flags & RAFT_FLAG_REJECT, 0);
    raft_free(r);
}

/* Entries 2..3 of term 2 are in flight when a leader of term 3 cuts them
 * and writes its own entries 2..3. Confirming the first write confirms the
 * term-2 entries' write, not the term-3 entries: they are not applied (though
 * committed) until its own write is confirmed. */
static void test_stale_confirmation_ignored(void **state)
{
    (void)state;
    out o;
    raft_t *r = follower(&o);
    raft_entry e[2] = {{.term = 2, .index = 2}, {.term = 2, .index = 3}};
    raft_msg m = append(1, 2, 1, 1, e, 2, 1);
    assert_int_equal(raft_step(r, &m), RAFT_OK);
    drain(r, &o);
    uint64_t first = o.seqs[0];
    /* as long as the cut log: only the terms tell the writes apart */
    raft_entry f[2] = {{.term = 3, .index = 2, .data = (const uint8_t *)"n", .len = 1},
                       {.term = 3, .index = 3, .data = (const uint8_t *)"o", .len = 1}};
    m = append(3, 3, 1, 1, f, 2, 3);
    assert_int_equal(raft_step(r, &m), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.n_seqs, 1);
    uint64_t second = o.seqs[0];
    assert_true(second > first);
    assert_int_equal(status(r).commit, 3);
    assert_int_equal(status(r).last_index, 3);
    assert_int_equal(raft_persisted(r, first), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.n_applied, 0); /* entries 2..3 of term 3 are not durable */
    assert_null(find(&o, RAFT_MSG_APPEND_RESP, 3));
    assert_int_equal(raft_persisted(r, second), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.applied_last, 3);
    const raft_msg *ack = find(&o, RAFT_MSG_APPEND_RESP, 3);
    assert_non_null(ack);
    assert_int_equal(ack->index, 3);
    raft_free(r);
}

/* One voter: nothing commits before the leader's own copy is durable. */
static void test_leader_own_match_single_voter(void **state)
{
    (void)state;
    out o;
    raft_t *r = member(1, 1, true);
    drain(r, &o);
    confirm_all(r, &o);
    assert_int_equal(raft_campaign(r), RAFT_OK);
    drain(r, &o);
    assert_int_equal(status(r).role, RAFT_LEADER);
    uint64_t noop_seq = o.seqs[o.n_seqs - 1];
    uint64_t noop = status(r).last_index;
    assert_true(status(r).commit < noop);
    assert_int_equal(raft_persisted(r, noop_seq), RAFT_OK);
    drain(r, &o);
    assert_int_equal(status(r).commit, noop);
    uint64_t idx;
    assert_int_equal(raft_propose(r, "x", 1, &idx), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.n_seqs, 1);
    assert_true(status(r).commit < idx);
    assert_int_equal(o.n_applied, 0);
    /* The leader keeps taking proposals while the write is in flight. */
    uint64_t idx2;
    assert_int_equal(raft_propose(r, "y", 1, &idx2), RAFT_OK);
    drain(r, &o);
    uint64_t seq2 = o.seqs[0];
    assert_int_equal(raft_persisted(r, seq2 - 1), RAFT_OK);
    drain(r, &o);
    assert_int_equal(status(r).commit, idx);
    assert_int_equal(o.applied_last, idx);
    assert_int_equal(raft_persisted(r, seq2), RAFT_OK);
    drain(r, &o);
    assert_int_equal(status(r).commit, idx2);
    assert_int_equal(o.applied_last, idx2);
    raft_free(r);
}

/* Three voters: one follower's ack and the leader's undurable copy are not a
 * quorum; the leader's confirmation completes it. Its appends leave at once. */
static void test_leader_own_match_three_voters(void **state)
{
    (void)state;
    out o;
    raft_t *r = member(1, 3, true);
    drain(r, &o);
    confirm_all(r, &o);
    assert_int_equal(raft_campaign(r), RAFT_OK);
    drain(r, &o);
    /* pre-vote: grant it, then the vote */
    for (int round = 0; round < 2 && status(r).role != RAFT_LEADER; round++) {
        for (size_t i = 0; i < o.n_seqs; i++)
            assert_int_equal(raft_persisted(r, o.seqs[i]), RAFT_OK);
        out p;
        drain(r, &p);
        const raft_msg *req = find(&o, RAFT_MSG_PREVOTE, 2);
        if (!req)
            req = find(&p, RAFT_MSG_PREVOTE, 2);
        if (!req)
            req = find(&o, RAFT_MSG_VOTE, 2);
        if (!req)
            req = find(&p, RAFT_MSG_VOTE, 2);
        assert_non_null(req);
        raft_msg g;
        memset(&g, 0, sizeof(g));
        g.type = req->type == RAFT_MSG_PREVOTE ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP;
        g.from = 2;
        g.to = 1;
        g.term = req->term;
        assert_int_equal(raft_step(r, &g), RAFT_OK);
        drain(r, &o);
    }
    assert_int_equal(status(r).role, RAFT_LEADER);
    confirm_all(r, &o);
    uint64_t term = status(r).term, idx;
    raft_msg ack;
    memset(&ack, 0, sizeof(ack));
    ack.type = RAFT_MSG_APPEND_RESP;
    ack.from = 2;
    ack.to = 1;
    ack.term = term;
    ack.index = status(r).last_index; /* the no-op: follower 2 replicates */
    assert_int_equal(raft_step(r, &ack), RAFT_OK);
    drain(r, &o);
    assert_int_equal(status(r).commit, status(r).last_index);
    assert_int_equal(raft_propose(r, "x", 1, &idx), RAFT_OK);
    drain(r, &o);
    assert_int_equal(o.n_seqs, 1);
    uint64_t seq = o.seqs[0];
    const raft_msg *ap = find(&o, RAFT_MSG_APPEND, 2);
    assert_non_null(ap); /* sent before the leader's own write is durable */
    ack.type = RAFT_MSG_APPEND_RESP;
    ack.from = 2;
    ack.to = 1;
    ack.term = term;
    ack.index = idx;
    assert_int_equal(raft_step(r, &ack), RAFT_OK);
    drain(r, &o);
    assert_true(status(r).commit < idx); /* 2 of 3 only with the leader's copy */
    assert_int_equal(o.n_applied, 0);
    assert_int_equal(raft_persisted(r, seq), RAFT_OK);
    drain(r, &o);
    assert_int_equal(status(r).commit, idx);
    assert_int_equal(o.applied_last, idx);
    raft_free(r);
}

static void test_persisted_arguments(void **state)
{
    (void)state;
    raft_t *sync = member(1, 1, false);
    raft_ready_t rd;
    assert_int_equal(raft_ready(sync, &rd), RAFT_OK);
    assert_true(rd.must_sync);
    assert_int_equal(rd.seq, 0); /* seq is 0 without async_persist */
    assert_int_equal(raft_advance(sync, &rd), RAFT_OK);
    assert_int_equal(raft_persisted(sync, 1), RAFT_ERR_INVALID);
    raft_free(sync);
    assert_int_equal(raft_persisted(NULL, 1), RAFT_ERR_INVALID);
    raft_t *r = member(2, 3, true);
    assert_int_equal(raft_ready(r, &rd), RAFT_OK);
    assert_int_equal(raft_persisted(r, rd.seq), RAFT_ERR_BUSY);
    assert_int_equal(raft_advance(r, &rd), RAFT_OK);
    assert_int_equal(raft_persisted(r, 0), RAFT_ERR_INVALID);
    assert_int_equal(raft_persisted(r, rd.seq + 1), RAFT_ERR_INVALID); /* never handed out */
    assert_int_equal(raft_persisted(r, rd.seq), RAFT_OK);
    assert_int_equal(raft_persisted(r, rd.seq), RAFT_OK); /* again: ignored */
    raft_free(r);
}

/* A restarted member hands back what it persisted: all of it durable. */
static void test_restart_is_durable(void **state)
{
    (void)state;
    raft_entry e[2] = {{.term = 1, .index = 1}, {.term = 2, .index = 2}};
    uint64_t voters[1] = {1};
    raft_config cfg;
    raft_config_init(&cfg, 1, 3);
    cfg.async_persist = true;
    cfg.hard_state.term = 2;
    cfg.hard_state.vote = 1;
    cfg.hard_state.commit = 1;
    raft_snapshot snap;
    memset(&snap, 0, sizeof(snap));
    snap.index = 1;
    snap.term = 1;
    snap.voters = voters;
    snap.n_voters = 1;
    cfg.snapshot = &snap;
    cfg.entries = &e[1];
    cfg.n_entries = 1;
    int err;
    raft_t *r = raft_new(&cfg, &err);
    assert_non_null(r);
    assert_int_equal(raft_campaign(r), RAFT_OK);
    out o;
    drain(r, &o);
    assert_int_equal(status(r).role, RAFT_LEADER);
    /* entry 2 (restored) is durable; the new term's no-op is not */
    assert_true(status(r).commit < status(r).last_index);
    confirm_all(r, &o);
    assert_int_equal(status(r).commit, status(r).last_index);
    assert_int_equal(o.applied_last, status(r).last_index);
    raft_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ack_withheld_until_persisted),
        cmocka_unit_test(test_vote_grant_withheld_until_persisted),
        cmocka_unit_test(test_stale_confirmation_ignored),
        cmocka_unit_test(test_leader_own_match_single_voter),
        cmocka_unit_test(test_leader_own_match_three_voters),
        cmocka_unit_test(test_persisted_arguments),
        cmocka_unit_test(test_restart_is_durable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
