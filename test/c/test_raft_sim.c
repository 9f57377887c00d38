/* test_raft_sim.c -- Raft under a simulated network: seeded random runs with
 * drops, duplicates, reordering, delays, partitions, crashes and restarts,
 * membership changes, transfers and reads, plus named partition scenarios.
 * The simulator (support_raft_sim.c) checks the safety properties after
 * every Ready; these tests add liveness once the network heals.
 *
 *   SYNOD_SIM_RUNS=n    number of random runs (default 3000; `make sim-long`
 *                       runs 20000 optimised)
 *   SYNOD_SIM_BASE=s    first seed (default 1)
 *   SYNOD_SIM_SEED=s    replay exactly one seed and report it */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support_raft_sim.h"

/* About 2 s at -O2 and 7 s under ASan on a 2-core VM; half the runs also
 * crash members part way through their Readies. `make sim-long` runs 20,000. */
#define DEFAULT_RUNS 3000

static void test_random_runs(void **state)
{
    (void)state;
    assert_int_equal(
        rsim_run_seeds(rsim_run_random, "SYNOD_SIM", DEFAULT_RUNS, "build/test/test_raft_sim"), 0);
}

/* ---- named scenarios ------------------------------------------------------ */

static rsim *cluster(size_t n, uint64_t seed)
{
    rsim_opts o;
    rsim_opts_default(&o, n, seed);
    rsim *s = rsim_new(&o);
    assert_non_null(s);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 100));
    return s;
}

static uint64_t commit_of(rsim *s, uint64_t id)
{
    raft_status st;
    raft_status_get(rsim_raft(s, id), &st);
    return st.commit;
}

static void propose_some(rsim *s, uint64_t leader, int n)
{
    for (int i = 0; i < n; i++) {
        (void)rsim_propose(s, leader, "v", 1, NULL);
        rsim_run_ticks(s, 1);
    }
}

typedef struct {
    size_t n;
    uint64_t index;
} all_applied;

static bool everyone_applied(rsim *s, void *ctx)
{
    all_applied *a = ctx;
    for (uint64_t id = 1; id <= a->n; id++)
        if (rsim_applied(s, id) < a->index)
            return false;
    return true;
}

/* Converge: after healing, a new entry reaches every member. */
static void assert_converges(rsim *s, size_t n)
{
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 200));
    uint64_t idx = 0;
    for (int i = 0; i < 20 && rsim_propose(s, rsim_leader(s), "z", 1, &idx) != RAFT_OK; i++)
        rsim_run_ticks(s, 5);
    assert_true(idx > 0);
    all_applied a = {n, idx};
    assert_true(rsim_run_until(s, everyone_applied, &a, 300));
    assert_null(rsim_error(s));
}

static void test_partition_isolate_leader(void **state)
{
    (void)state;
    for (size_t n = 3; n <= 7; n += 2) {
        rsim *s = cluster(n, 100 + n);
        uint64_t old = rsim_leader(s);
        rsim_isolate(s, old);
        uint64_t ln = old;
        assert_true(rsim_run_until(s, rsim_has_other_leader, &ln, 100));
        uint64_t fresh = rsim_leader(s);
        uint64_t before = commit_of(s, fresh);
        propose_some(s, fresh, 5);
        rsim_run_ticks(s, 5);
        assert_true(commit_of(s, fresh) >= before + 5);
        /* Check-quorum: the isolated leader has stepped down by now. */
        raft_status st;
        raft_status_get(rsim_raft(s, old), &st);
        assert_int_not_equal(st.role, RAFT_LEADER);
        rsim_heal(s);
        assert_converges(s, n);
        rsim_free(s);
    }
}

static void test_partition_split_halves(void **state)
{
    (void)state;
    for (size_t n = 4; n <= 7; n++) {
        rsim *s = cluster(n, 200 + n);
        uint64_t minority[RSIM_MAX_NODES], k = 0;
        uint64_t leader = rsim_leader(s);
        minority[k++] = leader; /* the leader ends up on the small side */
        for (uint64_t id = 1; k < (n - 1) / 2 && id <= n; id++)
            if (id != leader)
                minority[k++] = id;
        rsim_split(s, minority, k);
        uint64_t ln = leader;
        assert_true(rsim_run_until(s, rsim_has_other_leader, &ln, 100));
        uint64_t fresh = rsim_leader(s);
        uint64_t min_commit = commit_of(s, leader);
        propose_some(s, fresh, 5);
        /* Proposals on the minority side can never commit. */
        (void)rsim_propose(s, leader, "lost", 4, NULL);
        rsim_run_ticks(s, 10);
        assert_int_equal(commit_of(s, leader), min_commit);
        assert_true(commit_of(s, fresh) > min_commit);
        rsim_heal(s);
        assert_converges(s, n);
        rsim_free(s);
    }
}

static void test_partition_majority_ring(void **state)
{
    (void)state;
    for (size_t n = 5; n <= 7; n += 2) {
        rsim *s = cluster(n, 300 + n);
        rsim_ring(s);
        for (int i = 0; i < 100; i++) {
            uint64_t l = rsim_leader(s);
            if (l)
                (void)rsim_propose(s, l, "r", 1, NULL);
            rsim_run_ticks(s, 1);
        }
        assert_null(rsim_error(s));
        rsim_heal(s);
        assert_converges(s, n);
        rsim_free(s);
    }
}

static void test_crash_restart_from_storage(void **state)
{
    (void)state;
    rsim *s = cluster(5, 400);
    propose_some(s, rsim_leader(s), 10);
    rsim_run_ticks(s, 5);
    uint64_t committed = rsim_max_committed(s);
    for (uint64_t id = 1; id <= 5; id++)
        rsim_crash(s, id);
    for (uint64_t id = 1; id <= 5; id++)
        rsim_restart(s, id);
    /* Nothing committed is lost: restarted members re-apply it. */
    assert_converges(s, 5);
    for (uint64_t id = 1; id <= 5; id++)
        assert_true(rsim_applied(s, id) > committed);
    rsim_free(s);
}

static void test_lossy_network_makes_progress(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 5, 500);
    o.drop_pm = 200;
    o.dup_pm = 100;
    o.min_delay = 1;
    o.max_delay = 30; /* up to three ticks: heavy reordering */
    o.compact_every = 8;
    rsim *s = rsim_new(&o);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 300));
    for (int i = 0; i < 200; i++) {
        uint64_t l = rsim_leader(s);
        if (l)
            (void)rsim_propose(s, l, "p", 1, NULL);
        rsim_run_ticks(s, 1);
    }
    assert_true(rsim_max_committed(s) > 50);
    rsim_set_faults(s, 0, 0);
    assert_converges(s, 5);
    rsim_free(s);
}

/* The checker can fail: a forged append from a member that is not the leader
 * of the term puts a second entry at the same (index, term). */
static void test_checker_detects_forgery(void **state)
{
    (void)state;
    rsim *s = cluster(3, 600);
    uint64_t l = rsim_leader(s);
    propose_some(s, l, 2);
    rsim_run_ticks(s, 3);
    raft_status st;
    raft_status_get(rsim_raft(s, l), &st);
    uint64_t victim = l % 3 + 1, forger = victim % 3 + 1;
    if (forger == l)
        forger = forger % 3 + 1;
    const raft_entry *prev = raft_entry_get(rsim_raft(s, l), st.last_index);
    raft_entry bad = {.index = st.last_index + 1,
                      .term = st.term,
                      .type = RAFT_ENTRY_NORMAL,
                      .data = (const uint8_t *)"evil",
                      .len = 4};
    raft_msg m = {.type = RAFT_MSG_APPEND,
                  .from = forger,
                  .to = victim,
                  .term = st.term,
                  .index = st.last_index,
                  .log_term = prev->term,
                  .entries = &bad,
                  .n_entries = 1};
    assert_int_equal(rsim_inject(s, &m), RAFT_OK);
    propose_some(s, l, 1);
    rsim_run_ticks(s, 5);
    assert_non_null(rsim_error(s));
    rsim_free(s);
}

/* ---- election timing ------------------------------------------------------ */

typedef struct {
    bool open;           /* a round is in progress */
    uint64_t first_tick; /* tick of the round's first timeout */
    int at_first;        /* members that timed out in that tick */
    int rounds, together;
} timeouts;

static void on_event(void *ctx, uint64_t id, const raft_event *ev, uint64_t now)
{
    (void)id;
    timeouts *t = ctx;
    if (!t->open)
        return;
    if (ev->cause == RAFT_CAUSE_ELECTION_TIMEOUT) {
        uint64_t tick = now / RSIM_UNITS;
        if (t->at_first == 0) {
            t->first_tick = tick;
            t->at_first = 1;
        } else if (tick == t->first_tick) {
            t->at_first++;
        }
    } else if (ev->type == RAFT_EVENT_BECOME_LEADER) {
        t->rounds++;
        t->together += t->at_first >= 2;
        t->open = false;
    }
}

/* With 5 members, rounds in which two or more members time out in the same
 * tick are at most 30%. All members tick in lockstep (the worst case). */
/* ---- snapshots in chunks -------------------------------------------------- */

typedef struct {
    uint64_t to;
    uint64_t chunks; /* chunk messages to `to` that left */
} chunk_count;

static bool count_chunks(void *ctx, raft_msg *m)
{
    chunk_count *c = ctx;
    if (m->type == RAFT_MSG_SNAPSHOT && m->to == c->to)
        c->chunks++;
    return true;
}

/* 3 members, snapshots of RSIM_SNAP_LEN bytes in chunks of 5 (13 chunks),
 * compaction every 5 entries; member 3 is down while the others move on. */
static rsim *snap_cluster(uint64_t seed, uint32_t window, chunk_count *cc)
{
    rsim_opts o;
    rsim_opts_default(&o, 3, seed);
    o.compact_every = 5;
    o.snapshot_chunk = 5;
    o.snapshot_window = window;
    rsim *s = rsim_new(&o);
    assert_non_null(s);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 100));
    uint64_t leader = rsim_leader(s);
    uint64_t victim = leader == 3 ? 2 : 3;
    rsim_crash(s, victim);
    propose_some(s, leader, 30);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 100));
    cc->to = victim;
    cc->chunks = 0;
    rsim_set_filter(s, count_chunks, cc);
    return s;
}

static void converge(rsim *s)
{
    uint64_t leader = rsim_leader(s);
    assert_true(leader != 0);
    uint64_t index = 0;
    assert_int_equal(rsim_propose(s, leader, "end", 3, &index), RAFT_OK);
    all_applied a = {3, index};
    assert_true(rsim_run_until(s, everyone_applied, &a, 2000));
    assert_null(rsim_error(s));
}

/* Chunks lost, duplicated, reordered (delays of 1..30 units) and damaged in
 * transit, and installs that fail their check: the transfer still ends,
 * with more chunk messages than one pass needs. */
static void test_snapshot_chunks_under_faults(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        chunk_count cc;
        rsim *s = snap_cluster(seed, 1 + seed % 4, &cc);
        rsim_set_faults(s, 200, 150);
        rsim_restart(s, cc.to);
        assert_true(rsim_run_until(s, rsim_has_leader, NULL, 200));
        converge(s);
        rsim_snap_stats st;
        rsim_snap_stats_get(s, &st);
        assert_true(st.installed >= 1);
        assert_true(cc.chunks >= RSIM_SNAP_LEN / 5 + 1);
        rsim_free(s);
    }
}

/* Damaged chunks (the codec's CRC) and failed install checks: retried
 * from the start, never installed damaged (the simulator fails a member
 * that installs bytes it has not checked). */
static void test_snapshot_damage_and_failed_installs(void **state)
{
    (void)state;
    uint64_t corrupted = 0, failed = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        rsim_opts o;
        rsim_opts_default(&o, 3, seed);
        o.compact_every = 5;
        o.snapshot_chunk = 7;
        o.snapshot_window = 2;
        o.corrupt_chunk_pm = 150;
        o.bad_install_pm = 500;
        rsim *s = rsim_new(&o);
        assert_non_null(s);
        assert_true(rsim_run_until(s, rsim_has_leader, NULL, 100));
        uint64_t leader = rsim_leader(s);
        uint64_t victim = leader == 3 ? 2 : 3;
        rsim_crash(s, victim);
        propose_some(s, leader, 30);
        rsim_restart(s, victim);
        converge(s);
        rsim_snap_stats st;
        rsim_snap_stats_get(s, &st);
        assert_true(st.installed >= 1);
        corrupted += st.chunks_corrupted;
        failed += st.failed_installs;
        rsim_free(s);
    }
    /* The faults really happened. */
    assert_true(corrupted > 0);
    assert_true(failed > 0);
}

/* The leader dies after a few chunks: the new leader sends its own
 * snapshot (from offset 0, or resuming where the follower is if it is the
 * same snapshot) and the follower installs it. */
static void test_snapshot_leader_change_mid_transfer(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 10; seed++) {
        chunk_count cc;
        rsim *s = snap_cluster(seed, 2, &cc);
        uint64_t leader = rsim_leader(s);
        rsim_restart(s, cc.to);
        for (int t = 0; t < 200 && cc.chunks < 4; t++)
            rsim_run_units(s, 1);
        assert_true(cc.chunks >= 4);
        rsim_snap_stats before;
        rsim_snap_stats_get(s, &before);
        rsim_crash(s, leader);
        uint64_t ln = leader;
        assert_true(rsim_run_until(s, rsim_has_other_leader, &ln, 300));
        rsim_restart(s, leader);
        converge(s);
        rsim_snap_stats st;
        rsim_snap_stats_get(s, &st);
        assert_true(st.installed >= 1);
        rsim_free(s);
    }
}

/* The follower restarts after a few chunks: what it received was never
 * synced and is gone; the leader learns so (a reject at offset 0) and
 * sends from the start. */
static void test_snapshot_follower_restart_mid_transfer(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 10; seed++) {
        chunk_count cc;
        rsim *s = snap_cluster(seed, 2, &cc);
        rsim_restart(s, cc.to);
        for (int t = 0; t < 200 && cc.chunks < 5; t++)
            rsim_run_units(s, 1);
        assert_true(cc.chunks >= 5);
        uint64_t sent_before = cc.chunks;
        rsim_crash(s, cc.to);
        rsim_run_ticks(s, 3);
        rsim_restart(s, cc.to);
        converge(s);
        /* A full pass after the restart: at least every chunk once more. */
        assert_true(cc.chunks - sent_before >= RSIM_SNAP_LEN / 5 + 1);
        rsim_free(s);
    }
}

/* A follower that lost its files while it was up to date (nothing new is
 * proposed afterwards) is found out by the leader's next heartbeat and
 * catches up through a snapshot. */
static void test_snapshot_wiped_follower(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 10; seed++) {
        rsim_opts o;
        rsim_opts_default(&o, 3, seed);
        o.compact_every = 5;
        o.snapshot_chunk = 9;
        rsim *s = rsim_new(&o);
        assert_non_null(s);
        assert_true(rsim_run_until(s, rsim_has_leader, NULL, 100));
        uint64_t leader = rsim_leader(s);
        uint64_t victim = leader == 3 ? 2 : 3;
        uint64_t index = 0;
        propose_some(s, leader, 20);
        assert_int_equal(rsim_propose(s, leader, "x", 1, &index), RAFT_OK);
        all_applied a = {3, index};
        assert_true(rsim_run_until(s, everyone_applied, &a, 500));
        rsim_wipe(s, victim);
        assert_true(rsim_applied(s, victim) < index);
        assert_true(rsim_run_until(s, everyone_applied, &a, 500));
        rsim_snap_stats st;
        rsim_snap_stats_get(s, &st);
        assert_true(st.installed >= 1);
        assert_null(rsim_error(s));
        rsim_free(s);
    }
}

static void test_timeouts_rarely_coincide(void **state)
{
    (void)state;
    rsim_opts o;
    rsim_opts_default(&o, 5, 700);
    o.lockstep = true;
    rsim *s = rsim_new(&o);
    timeouts t = {0};
    rsim_set_event_hook(s, on_event, &t);
    assert_true(rsim_run_until(s, rsim_has_leader, NULL, 100));
    while (t.rounds < 400) {
        uint64_t l = rsim_leader(s);
        rsim_crash(s, l);
        t.open = true;
        t.at_first = 0;
        assert_true(rsim_run_until(s, rsim_has_leader, NULL, 200));
        rsim_restart(s, l);
        rsim_run_ticks(s, 15);
    }
    assert_null(rsim_error(s));
    double frac = (double)t.together / t.rounds;
    print_message("timeouts coincided in %d of %d election rounds (%.1f%%)\n", t.together, t.rounds,
                  100 * frac);
    assert_true(frac <= 0.30);
    rsim_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partition_isolate_leader),
        cmocka_unit_test(test_partition_split_halves),
        cmocka_unit_test(test_partition_majority_ring),
        cmocka_unit_test(test_crash_restart_from_storage),
        cmocka_unit_test(test_lossy_network_makes_progress),
        cmocka_unit_test(test_checker_detects_forgery),
        cmocka_unit_test(test_timeouts_rarely_coincide),
        cmocka_unit_test(test_snapshot_chunks_under_faults),
        cmocka_unit_test(test_snapshot_damage_and_failed_installs),
        cmocka_unit_test(test_snapshot_leader_change_mid_transfer),
        cmocka_unit_test(test_snapshot_follower_restart_mid_transfer),
        cmocka_unit_test(test_snapshot_wiped_follower),
        cmocka_unit_test(test_random_runs),
    };
    return cmocka_run_group_tests_name("raft_sim", tests, NULL, NULL);
}
