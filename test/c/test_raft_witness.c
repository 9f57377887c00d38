/* test_raft_witness.c -- the witness rules of the Raft core (raft_config.witness,
 * docs/raft.md "Witness"): a witness votes and acknowledges appends, never
 * campaigns and so never leads, keeps no entry bytes of normal entries and
 * no snapshot data; 2 voters + 1 witness survive any single failure of a
 * quiet group; never two leaders in one term (the simulator checks it after
 * every Ready, and that no witness ever leaves the follower role).
 *
 *   SYNOD_WITNESS_RUNS=n   seeded chaos runs with witnesses (default 10000)
 *   SYNOD_WITNESS_SEED=s   replay exactly one seed */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support_raft_sim.h"

#define DEFAULT_RUNS 10000

static raft_t *witness_new(uint64_t id, size_t n_voters, uint64_t seed)
{
    uint64_t voters[RAFT_MAX_MEMBERS];
    for (size_t i = 0; i < n_voters; i++)
        voters[i] = i + 1;
    raft_config cfg;
    raft_config_init(&cfg, id, seed);
    cfg.voters = voters;
    cfg.n_voters = n_voters;
    cfg.witness = true;
    raft_t *r = raft_new(&cfg, NULL);
    assert_non_null(r);
    rsim_cap cap;
    rsim_solo_drain(r, &cap);
    return r;
}

/* Elections: no timeout, no raft_campaign, no timeout-now makes it campaign. */
static void test_witness_never_campaigns(void **state)
{
    (void)state;
    static rsim_cap cap;
    for (size_t n = 1; n <= 3; n += 2) {
        raft_t *w = witness_new(n, n, 7); /* n = 1: the only voter is the witness */
        for (int i = 0; i < 200; i++)
            assert_int_equal(raft_tick(w), RAFT_OK);
        assert_int_equal(raft_campaign(w), RAFT_OK);
        rsim_solo_drain(w, &cap);
        assert_int_equal(cap.n_msgs, 0);
        assert_int_equal(cap.n_events, 0);
        raft_msg tn = {.type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = n, .term = 1};
        if (n > 1) {
            assert_int_equal(raft_step(w, &tn), RAFT_OK);
            for (int i = 0; i < 50; i++)
                assert_int_equal(raft_tick(w), RAFT_OK);
            rsim_solo_drain(w, &cap);
            assert_int_equal(cap.n_msgs, 0);
        }
        raft_status st;
        raft_status_get(w, &st);
        assert_int_equal(st.role, RAFT_FOLLOWER);
        assert_int_equal(st.term, 1);
        assert_true(st.is_voter);
        raft_free(w);
    }
}

/* It still votes (one vote per term, up-to-date check) like any voter. */
static void test_witness_votes(void **state)
{
    (void)state;
    static rsim_cap cap;
    raft_t *w = witness_new(3, 3, 9);
    raft_msg v = {.type = RAFT_MSG_VOTE, .from = 1, .to = 3, .term = 2, .index = 1, .log_term = 1};
    assert_int_equal(raft_step(w, &v), RAFT_OK);
    rsim_solo_drain(w, &cap);
    const raft_msg *resp = rsim_cap_find(&cap, RAFT_MSG_VOTE_RESP, 1);
    assert_non_null(resp);
    assert_false(resp->flags & RAFT_FLAG_REJECT);
    assert_true(cap.must_sync);
    assert_int_equal(cap.hs.vote, 1);
    /* a second candidate in the same term is refused */
    v.from = 2;
    assert_int_equal(raft_step(w, &v), RAFT_OK);
    rsim_solo_drain(w, &cap);
    resp = rsim_cap_find(&cap, RAFT_MSG_VOTE_RESP, 2);
    assert_non_null(resp);
    assert_true(resp->flags & RAFT_FLAG_REJECT);
    raft_free(w);
}

/* Appends are acknowledged with the entries' index and term; normal entries
 * lose their bytes, conf entries keep theirs; snapshots keep only metadata. */
static void test_witness_keeps_no_bytes(void **state)
{
    (void)state;
    static rsim_cap cap;
    raft_t *w = witness_new(3, 3, 11);
    raft_entry ents[3] = {
        {.term = 2, .index = 2, .type = RAFT_ENTRY_NOOP},
        {.term = 2,
         .index = 3,
         .type = RAFT_ENTRY_NORMAL,
         .data = (const uint8_t *)"hello",
         .len = 5},
        {.term = 2,
         .index = 4,
         .type = RAFT_ENTRY_NORMAL,
         .data = (const uint8_t *)"world",
         .len = 5},
    };
    raft_msg a = {.type = RAFT_MSG_APPEND,
                  .from = 1,
                  .to = 3,
                  .term = 2,
                  .index = 1,
                  .log_term = 1,
                  .commit = 3,
                  .entries = ents,
                  .n_entries = 3};
    assert_int_equal(raft_step(w, &a), RAFT_OK);
    rsim_solo_drain(w, &cap);
    const raft_msg *resp = rsim_cap_find(&cap, RAFT_MSG_APPEND_RESP, 1);
    assert_non_null(resp);
    assert_false(resp->flags & RAFT_FLAG_REJECT);
    assert_int_equal(resp->index, 4);
    assert_int_equal(cap.n_entries, 3);
    assert_true(cap.must_sync);
    for (uint64_t i = 2; i <= 4; i++) {
        const raft_entry *e = raft_entry_get(w, i);
        assert_non_null(e);
        assert_int_equal(e->term, 2);
        assert_int_equal(e->len, 0);
    }
    const raft_entry *boot = raft_entry_get(w, 1);
    assert_int_equal(boot->type, RAFT_ENTRY_CONF);
    assert_true(boot->len > 0);

    /* a snapshot in one chunk: the witness's driver checks the file (here:
     * told it is good) and the core keeps only the metadata */
    uint64_t voters[3] = {1, 2, 3};
    uint8_t data[64] = {1, 2, 3};
    raft_msg sn = {.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 3, .term = 2};
    sn.snapshot.index = 10;
    sn.snapshot.term = 2;
    sn.snapshot.voters = voters;
    sn.snapshot.n_voters = 3;
    sn.snapshot.size = sizeof(data);
    sn.snapshot.checksum = 77;
    sn.offset = 0;
    sn.data = data;
    sn.len = sizeof(data);
    assert_int_equal(raft_step(w, &sn), RAFT_OK);
    rsim_solo_drain(w, &cap);
    assert_int_equal(cap.snapshot_index, 0); /* not before the driver's check */
    assert_int_equal(raft_snapshot_received(w, 10, 2, true), RAFT_OK);
    rsim_solo_drain(w, &cap);
    assert_int_equal(cap.snapshot_index, 10);
    const raft_snapshot *s = raft_snapshot_get(w);
    assert_int_equal(s->index, 10);
    assert_int_equal(s->term, 2);
    assert_int_equal(s->n_voters, 3);
    assert_int_equal(s->size, sizeof(data));
    assert_int_equal(s->checksum, 77);
    resp = rsim_cap_find(&cap, RAFT_MSG_APPEND_RESP, 1);
    assert_non_null(resp);
    assert_int_equal(resp->index, 10);
    /* the snapshot covers index 10: nothing left to compact there */
    assert_int_equal(raft_compact(w, 10, 1, 0), RAFT_ERR_COMPACTED);
    raft_free(w);
}

/* ---- simulated groups ----------------------------------------------------- */

typedef struct {
    uint64_t index;
    uint64_t skip; /* a member that is down */
} all_applied;

static bool everyone_applied(rsim *s, void *ctx)
{
    all_applied *a = ctx;
    for (uint64_t id = 1; id <= 3; id++)
        if (id != a->skip && rsim_applied(s, id) < a->index)
            return false;
    return true;
}

static rsim *group_2_plus_1(uint64_t seed)
{
    rsim_opts o;
    rsim_opts_default(&o, 3, seed);
    o.witness_mask = 1u << 3;
    rsim *s = rsim_new(&o);
    assert_non_null(s);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 200));
    assert_int_not_equal(rsim_leader(s), 3);
    return s;
}

/* Proposes until one commits everywhere but `skip`; returns its index. */
static uint64_t commit_one(rsim *s, uint64_t skip)
{
    uint64_t idx = 0;
    for (int i = 0; i < 40 && idx == 0; i++) {
        uint64_t l = rsim_leader(s);
        if (!l || rsim_propose(s, l, "c", 1, &idx) != RAFT_OK) {
            idx = 0;
            rsim_run_ticks(s, 5);
        }
    }
    assert_true(idx > 0);
    all_applied a = {idx, skip};
    assert_true(rsim_run_until(s, everyone_applied, &a, 300));
    return idx;
}

/* Any single member of a quiet 2 + 1 group crashes or is cut off: the rest
 * elect (or keep) a BEAM-side leader and commit; after it returns, it
 * catches up. The witness is never leader. */
static void test_single_failure_survived(void **state)
{
    (void)state;
    for (uint64_t victim = 1; victim <= 3; victim++) {
        for (int mode = 0; mode < 2; mode++) {
            rsim *s = group_2_plus_1(40 + victim * 2 + (uint64_t)mode);
            (void)commit_one(s, 0); /* quiet: everyone holds everything */
            rsim_run_ticks(s, 5);
            uint64_t before = rsim_leader(s);
            if (mode == 0)
                rsim_crash(s, victim);
            else
                rsim_isolate(s, victim);
            if (victim == before) {
                uint64_t ln = victim;
                assert_true(rsim_run_until(s, rsim_has_other_leader, &ln, 300));
            }
            uint64_t l = rsim_leader(s);
            assert_true(l == 1 || l == 2);
            assert_int_not_equal(l, victim);
            uint64_t idx = commit_one(s, victim);
            if (mode == 0)
                rsim_restart(s, victim);
            else
                rsim_heal(s);
            all_applied a = {idx, 0};
            assert_true(rsim_run_until(s, everyone_applied, &a, 300));
            (void)commit_one(s, 0);
            assert_int_not_equal(rsim_leader(s), 3);
            assert_null(rsim_error(s));
            rsim_free(s);
        }
    }
}

/* Drops appends to member `blocked`, so it falls behind. */
static bool block_appends_to(void *ctx, raft_msg *m)
{
    uint64_t blocked = *(uint64_t *)ctx;
    return !(m->to == blocked && (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT));
}

/* The documented liveness limit (docs/raft.md, "Witness"): the leader A
 * commits with the witness while B lags, then A dies. B's log is behind the
 * witness's, so the witness refuses it (B may lack committed entries) and the
 * witness cannot lead: no leader, nothing lost. When A returns, A leads and
 * B catches up. */
static void test_voter_behind_witness_waits_for_the_other(void **state)
{
    (void)state;
    rsim *s = group_2_plus_1(77);
    (void)commit_one(s, 0);
    uint64_t a = rsim_leader(s), b = a == 1 ? 2 : 1;
    uint64_t blocked = b;
    rsim_set_filter(s, block_appends_to, &blocked);
    uint64_t idx = 0;
    assert_int_equal(rsim_propose(s, a, "only-on-a-and-w", 15, &idx), RAFT_OK);
    rsim_run_ticks(s, 5);
    raft_status st;
    raft_status_get(rsim_raft(s, a), &st);
    assert_true(st.commit >= idx); /* committed by A + witness */
    raft_status_get(rsim_raft(s, b), &st);
    assert_true(st.last_index < idx);
    rsim_crash(s, a);
    rsim_set_filter(s, NULL, NULL);
    rsim_run_ticks(s, 200);
    assert_int_equal(rsim_leader(s), 0); /* B is refused, the witness never runs */
    raft_status_get(rsim_raft(s, 3), &st);
    assert_int_equal(st.role, RAFT_FOLLOWER);
    rsim_restart(s, a);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 300));
    all_applied aa = {idx, 0};
    assert_true(rsim_run_until(s, everyone_applied, &aa, 300));
    (void)commit_one(s, 0);
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* Leadership transfer to a witness is never taken up: the leader keeps
 * leading and proposals work again after one election timeout. */
static void test_transfer_to_witness_is_not_taken(void **state)
{
    (void)state;
    rsim *s = group_2_plus_1(91);
    uint64_t l = rsim_leader(s);
    assert_int_equal(rsim_transfer(s, l, 3), RAFT_OK);
    rsim_run_ticks(s, 40);
    assert_int_not_equal(rsim_leader(s), 3);
    (void)commit_one(s, 0);
    assert_null(rsim_error(s));
    rsim_free(s);
}

/* Seeded chaos (drops, duplicates, partitions, crashes part way through a
 * Ready, transfers, reads, compaction) with witnesses; the simulator checks
 * election safety, log matching, leader completeness, state machine safety
 * and that no witness ever campaigns after every step, and each run must
 * converge once healed. */
static void test_witness_random_runs(void **state)
{
    (void)state;
    assert_int_equal(rsim_run_seeds(rsim_run_random_witness, "SYNOD_WITNESS", DEFAULT_RUNS,
                                    "build/test/test_raft_witness"),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_witness_never_campaigns),
        cmocka_unit_test(test_witness_votes),
        cmocka_unit_test(test_witness_keeps_no_bytes),
        cmocka_unit_test(test_single_failure_survived),
        cmocka_unit_test(test_voter_behind_witness_waits_for_the_other),
        cmocka_unit_test(test_transfer_to_witness_is_not_taken),
        cmocka_unit_test(test_witness_random_runs),
    };
    return cmocka_run_group_tests_name("raft_witness", tests, NULL, NULL);
}
