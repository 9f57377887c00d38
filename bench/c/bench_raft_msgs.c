/* bench_raft_msgs.c -- what one command costs the Raft core in messages,
 * Readies and syncs, counted (not timed) on a 3-voter group driven the way
 * Synod.Raft.Member drives it with group commit: each member steps every
 * message in its mailbox, then drains its Readies (each Ready's messages go
 * to the destinations' mailboxes), round after round until the group is
 * quiet. No ticks, so no heartbeats: only what the commands cause.
 *
 * Three loads, 20,000 commands each:
 *   sequential  one command, then the group runs until quiet
 *   batch 64    64 commands proposed together, then until quiet
 *   pipelined   64 commands proposed before every round (a client that
 *               keeps proposing while the group works), then until quiet
 *
 * Printed per command: messages leader -> followers and followers ->
 * leader, Readies and must_sync Readies (fsyncs) per member. The baseline is
 * the same loop's floor for plain Raft with one append per follower per
 * command: 2 messages out and 2 back per command, 1 sync per member. To
 * compare two builds of the core, build this file against each (see
 * docs/raft.md, "Messages per command"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"

#define N 3

typedef struct bmsg {
    uint8_t *bytes;
    size_t len;
} bmsg;

typedef struct mailbox {
    bmsg *m;
    size_t n, cap;
} mailbox;

typedef struct counts {
    uint64_t out, back, readies[N + 1], syncs[N + 1];
} counts;

static raft_t *rs[N + 1];
static mailbox box[N + 1];

static void push(const raft_msg *m)
{
    mailbox *b = &box[m->to];
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->m = realloc(b->m, b->cap * sizeof(*b->m));
        if (!b->m)
            abort();
    }
    size_t need = raft_msg_encoded_size(m), len;
    uint8_t *bytes = malloc(need);
    if (!bytes || raft_msg_encode(m, bytes, need, &len) != RAFT_OK)
        abort();
    b->m[b->n++] = (bmsg){bytes, len};
}

static uint64_t leader_id(void)
{
    for (uint64_t id = 1; id <= N; id++) {
        raft_status st;
        raft_status_get(rs[id], &st);
        if (st.role == RAFT_LEADER)
            return id;
    }
    return 0;
}

static void drain(uint64_t id, counts *c, uint64_t leader)
{
    while (raft_has_ready(rs[id])) {
        raft_ready_t rd;
        if (raft_ready(rs[id], &rd) != RAFT_OK)
            abort();
        if (c) {
            c->readies[id]++;
            c->syncs[id] += rd.must_sync;
            for (size_t i = 0; i < rd.n_msgs; i++) {
                if (id == leader)
                    c->out++;
                else if (rd.msgs[i].to == leader)
                    c->back++;
            }
        }
        for (size_t i = 0; i < rd.n_msgs; i++)
            push(&rd.msgs[i]);
        if (raft_advance(rs[id], &rd) != RAFT_OK)
            abort();
    }
}

/* One round: every member steps its mailbox, then drains. True if anything
 * happened. */
static bool round_once(counts *c, uint64_t leader)
{
    bool any = false;
    for (uint64_t id = 1; id <= N; id++) {
        mailbox in = box[id];
        box[id] = (mailbox){0};
        for (size_t i = 0; i < in.n; i++) {
            raft_msg m;
            if (raft_msg_decode(in.m[i].bytes, in.m[i].len, &m) != RAFT_OK)
                abort();
            if (raft_step(rs[id], &m) != RAFT_OK)
                abort();
            raft_msg_release(&m);
            free(in.m[i].bytes);
            any = true;
        }
        free(in.m);
        if (raft_has_ready(rs[id]))
            any = true;
        drain(id, c, leader);
    }
    return any;
}

static void settle(counts *c, uint64_t leader)
{
    while (round_once(c, leader))
        ;
}

static void propose(uint64_t leader, uint64_t k, uint64_t *seq)
{
    uint8_t cmd[64] = {0};
    for (uint64_t i = 0; i < k; i++) {
        (*seq)++;
        memcpy(cmd, seq, sizeof(*seq));
        if (raft_propose(rs[leader], cmd, sizeof(cmd), NULL) != RAFT_OK)
            abort();
    }
}

static void run(const char *label, uint64_t commands, uint64_t batch, bool pipelined)
{
    uint64_t voters[N] = {1, 2, 3};
    for (uint64_t id = 1; id <= N; id++) {
        raft_config cfg;
        raft_config_init(&cfg, id, id);
        cfg.voters = voters;
        cfg.n_voters = N;
        rs[id] = raft_new(&cfg, NULL);
        if (!rs[id])
            abort();
    }
    settle(NULL, 0);
    raft_campaign(rs[1]);
    settle(NULL, 0);
    uint64_t leader = leader_id();
    if (!leader)
        abort();
    counts c = {0};
    uint64_t seq = 0;
    while (seq < commands) {
        propose(leader, batch, &seq);
        if (pipelined)
            round_once(&c, leader);
        else
            settle(&c, leader);
        /* Keep the log bounded, like a driver that snapshots. */
        if (seq % 4096 < batch)
            for (uint64_t id = 1; id <= N; id++) {
                raft_status st;
                raft_status_get(rs[id], &st);
                if (st.applied > st.first_index)
                    raft_compact(rs[id], st.applied, 1, 7);
            }
    }
    settle(&c, leader);
    raft_status st;
    raft_status_get(rs[leader], &st);
    double n = (double)commands;
    printf("%-11s out %.3f back %.3f msgs/command (plain Raft: 2 and 2, %.2fx); Readies "
           "leader %.3f followers",
           label, c.out / n, c.back / n, 4.0 / ((c.out + c.back) / n), c.readies[leader] / n);
    for (uint64_t id = 1; id <= N; id++)
        if (id != leader)
            printf(" %.3f", c.readies[id] / n);
    printf("; syncs leader %.3f followers", c.syncs[leader] / n);
    for (uint64_t id = 1; id <= N; id++)
        if (id != leader)
            printf(" %.3f", c.syncs[id] / n);
    printf("; commit %llu\n", (unsigned long long)st.commit);
    for (uint64_t id = 1; id <= N; id++)
        raft_free(rs[id]);
}

int main(int argc, char **argv)
{
    uint64_t commands = argc > 1 ? strtoull(argv[1], NULL, 10) : 20000;
    printf("Raft core, 3 voters, per command (%llu commands per load):\n",
           (unsigned long long)commands);
    run("sequential", commands, 1, false);
    run("batch 64", commands, 64, false);
    run("pipelined", commands, 64, true);
    return 0;
}
