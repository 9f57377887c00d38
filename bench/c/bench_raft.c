/* bench_raft.c -- Raft core benchmarks, each against a baseline measured in
 * the same run.
 *
 * 1. Step throughput: a 3-member group replicating 64-byte commands, every
 *    message stepped into its destination and every Ready processed
 *    (persist = nothing, apply = nothing). Messages processed per second,
 *    with and without the wire codec, against a loop that only memcpys the
 *    same encoded messages (the cost of moving the bytes at all).
 * 2. Election time after a leader crash, in ticks, in the test simulator
 *    (5 members, 1-10 unit delays, 10 units per tick, T = 10): Synod's
 *    default (pre-vote + check-quorum) against the plain randomized timeout
 *    of the paper, and the driver's nodedown path (survivors forget the
 *    leader, the lowest id campaigns at once).
 *
 * The simulator is the tests' (test/c/support_raft_sim.[ch]), which the
 * Makefile links into every bench binary. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "support_raft_sim.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- 1. step throughput ----------------------------------------------------- */

typedef struct bmsg {
    uint8_t *bytes;
    size_t len;
} bmsg;

typedef struct bqueue {
    bmsg *m;
    size_t n, cap;
} bqueue;

static void bq_push(bqueue *q, const raft_msg *m)
{
    if (q->n == q->cap) {
        q->cap = q->cap ? q->cap * 2 : 1024;
        q->m = realloc(q->m, q->cap * sizeof(*q->m));
        if (!q->m)
            abort();
    }
    size_t need = raft_msg_encoded_size(m), len;
    uint8_t *b = malloc(need);
    if (!b || raft_msg_encode(m, b, need, &len) != RAFT_OK)
        abort();
    q->m[q->n++] = (bmsg){b, len};
}

/* Drains r's Readies; messages go to `out` encoded (wire) or are stepped
 * straight into their destination (direct). Returns messages stepped. */
static uint64_t pump(raft_t **rs, uint64_t id, bool wire, bqueue *out);

static uint64_t deliver_direct(raft_t **rs, const raft_msg *m)
{
    if (raft_step(rs[m->to], m) != RAFT_OK)
        abort();
    return 1 + pump(rs, m->to, false, NULL);
}

static uint64_t pump(raft_t **rs, uint64_t id, bool wire, bqueue *out)
{
    uint64_t stepped = 0;
    raft_t *r = rs[id];
    while (raft_has_ready(r)) {
        raft_ready_t rd;
        if (raft_ready(r, &rd) != RAFT_OK)
            abort();
        /* Copy the messages out: stepping others cannot touch r, but r's
         * Ready must be advanced before r is stepped again. */
        size_t n = rd.n_msgs;
        bqueue local = {0};
        for (size_t i = 0; i < n; i++)
            bq_push(wire ? out : &local, &rd.msgs[i]);
        raft_advance(r, &rd);
        for (size_t i = 0; i < local.n; i++) {
            raft_msg m;
            if (raft_msg_decode(local.m[i].bytes, local.m[i].len, &m) != RAFT_OK)
                abort();
            stepped += deliver_direct(rs, &m);
            raft_msg_release(&m);
            free(local.m[i].bytes);
        }
        free(local.m);
    }
    return stepped;
}

static raft_t **group(void)
{
    static raft_t *rs[4];
    uint64_t voters[] = {1, 2, 3};
    for (uint64_t id = 1; id <= 3; id++) {
        raft_config cfg;
        raft_config_init(&cfg, id, id);
        cfg.voters = voters;
        cfg.n_voters = 3;
        rs[id] = raft_new(&cfg, NULL);
        pump(rs, id, false, NULL);
    }
    raft_campaign(rs[1]);
    pump(rs, 1, false, NULL);
    return rs;
}

/* Wire path: every message is encoded, queued, decoded and stepped. */
static double bench_wire(uint64_t proposals, uint64_t *msgs_out, bqueue *trace)
{
    raft_t **rs = group();
    uint8_t cmd[64] = {0};
    uint64_t msgs = 0;
    bqueue q = {0};
    double t0 = now_s();
    for (uint64_t p = 0; p < proposals; p++) {
        memcpy(cmd, &p, sizeof(p));
        if (raft_propose(rs[1], cmd, sizeof(cmd), NULL) != RAFT_OK)
            abort();
        if (p % 64 == 63)
            raft_tick(rs[1]);
        pump(rs, 1, true, &q);
        for (size_t i = 0; i < q.n; i++) {
            raft_msg m;
            if (raft_msg_decode(q.m[i].bytes, q.m[i].len, &m) != RAFT_OK)
                abort();
            if (raft_step(rs[m.to], &m) != RAFT_OK)
                abort();
            msgs++;
            if (trace && trace->n < 200000)
                bq_push(trace, &m);
            uint64_t to = m.to;
            raft_msg_release(&m);
            free(q.m[i].bytes);
            pump(rs, to, true, &q);
        }
        q.n = 0;
        /* Keep the log bounded, like a driver that snapshots. */
        if (p % 4096 == 4095)
            for (uint64_t id = 1; id <= 3; id++) {
                raft_status st;
                raft_status_get(rs[id], &st);
                if (st.applied > st.first_index)
                    raft_compact(rs[id], st.applied, 1, 7);
            }
    }
    double dt = now_s() - t0;
    free(q.m);
    for (uint64_t id = 1; id <= 3; id++)
        raft_free(rs[id]);
    *msgs_out = msgs;
    return dt;
}

/* Baseline: copy each of the same encoded messages once, and nothing else. */
static double bench_memcpy(const bqueue *trace, int rounds, uint64_t *msgs_out)
{
    uint8_t *dst = malloc(1 << 16);
    volatile uint8_t sink = 0;
    double t0 = now_s();
    uint64_t n = 0;
    for (int r = 0; r < rounds; r++)
        for (size_t i = 0; i < trace->n; i++) {
            bmsg copy = trace->m[i];
            memcpy(dst, copy.bytes, copy.len);
            sink ^= dst[copy.len - 1];
            n++;
        }
    double dt = now_s() - t0;
    (void)sink;
    free(dst);
    *msgs_out = n;
    return dt;
}

/* ---- 2. election time ---------------------------------------------------------- */

static bool bench_has_leader(rsim *s, void *ctx)
{
    uint64_t l = rsim_leader(s);
    return l && l != *(uint64_t *)ctx;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef enum { EL_SYNOD, EL_PLAIN, EL_NODEDOWN } el_mode;

static void election_times(el_mode mode, int rounds, double *med, double *p99)
{
    rsim_opts o;
    rsim_opts_default(&o, 5, 4242 + (uint64_t)mode);
    o.pre_vote = o.check_quorum = mode != EL_PLAIN;
    rsim *s = rsim_new(&o);
    uint64_t none = 0;
    rsim_run_until(s, bench_has_leader, &none, 200);
    double *t = malloc((size_t)rounds * sizeof(double));
    int k = 0;
    while (k < rounds) {
        uint64_t dead = rsim_leader(s);
        rsim_run_units(s, 1 + rsim_rand(s) % RSIM_UNITS); /* crash at a random phase */
        rsim_crash(s, dead);
        uint64_t t0 = rsim_now(s);
        if (mode == EL_NODEDOWN) {
            /* nodedown: the connection is gone, nothing in flight arrives */
            rsim_isolate(s, dead);
            uint64_t first = 0;
            for (uint64_t id = 1; id <= 5; id++) {
                if (id == dead)
                    continue;
                raft_forget_leader(rsim_raft(s, id));
                rsim_drain(s, id);
                if (!first)
                    first = id;
            }
            rsim_campaign(s, first);
        }
        if (!rsim_run_until(s, bench_has_leader, &dead, 500) || rsim_error(s)) {
            fprintf(stderr, "election did not finish: %s\n", rsim_error(s) ? rsim_error(s) : "");
            exit(1);
        }
        t[k++] = (double)(rsim_now(s) - t0) / RSIM_UNITS;
        rsim_heal(s);
        rsim_restart(s, dead);
        rsim_run_ticks(s, 20);
    }
    qsort(t, (size_t)rounds, sizeof(double), cmp_double);
    *med = t[rounds / 2];
    *p99 = t[(int)ceil(rounds * 0.99) - 1];
    free(t);
    rsim_free(s);
}

int main(void)
{
    uint64_t proposals = 200000, msgs = 0, base_msgs = 0;
    bqueue trace = {0};
    bench_wire(20000, &msgs, NULL); /* warm up */
    double best = 1e9;
    for (int i = 0; i < 3; i++) {
        double dt = bench_wire(proposals, &msgs, i == 0 ? &trace : NULL);
        best = dt < best ? dt : best;
    }
    double wire_rate = (double)msgs / best;
    double copy_dt = 1e9;
    for (int i = 0; i < 3; i++) {
        double dt = bench_memcpy(&trace, 20, &base_msgs);
        copy_dt = dt < copy_dt ? dt : copy_dt;
    }
    double copy_rate = (double)base_msgs / copy_dt;
    printf("step throughput (3 members, 64-byte commands, encode+decode+step+ready):\n");
    printf("  raft:     %.2f M msgs/s  (%.0f ns/msg, %llu msgs)\n", wire_rate / 1e6,
           1e9 / wire_rate, (unsigned long long)msgs);
    printf("  baseline: %.2f M msgs/s  (memcpy of the same encoded messages)\n", copy_rate / 1e6);
    printf("  ratio raft/baseline: %.3f\n", wire_rate / copy_rate);
    for (size_t i = 0; i < trace.n; i++)
        free(trace.m[i].bytes);
    free(trace.m);

    int rounds = 2000;
    double sm, sp, pm, pp, nm, np;
    election_times(EL_SYNOD, rounds, &sm, &sp);
    election_times(EL_PLAIN, rounds, &pm, &pp);
    election_times(EL_NODEDOWN, rounds, &nm, &np);
    printf("election time after a leader crash (5 members, T=10 ticks, %d rounds, ticks):\n",
           rounds);
    printf("  pre-vote + check-quorum: median %.1f  p99 %.1f\n", sm, sp);
    printf("  plain timeout (baseline): median %.1f  p99 %.1f\n", pm, pp);
    printf("  nodedown -> campaign:    median %.1f  p99 %.1f\n", nm, np);
    printf("  ratio synod/plain median: %.2f; nodedown/plain median: %.2f\n", sm / pm, nm / pm);
    return 0;
}
