/* test_witness_node.c -- the C node's witness member (cnode/witness.c) without
 * a network: the member id matches Synod.Raft.member_id/1, junk of every
 * kind is dropped without harm, a vote request is answered with the
 * {synod_raft, Group, Id, Node, Bin} shape only after its vote is on disk,
 * the vote survives a restart from the files, and appends are acknowledged. */
#define _DEFAULT_SOURCE /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "raft.h"
#include "witness.h"
#include "witness_store.h"

#define SELF "w@127.0.0.1"
#define PEER "a@127.0.0.1"
#define PEER_ID 420969002551143256ULL /* Synod.Raft.member_id(:"a@127.0.0.1") */
#define SELF_ID 2466199152250522974ULL

typedef struct sent {
    char node[256], name[300];
    raft_msg m;
    uint8_t bin[1024];
    int n;
} sent;

static sent last;

static int capture(void *ctx, const char *node, const char *name, const ei_x_buff *x)
{
    (void)ctx;
    int idx = 0, arity = 0;
    char atom[MAXATOMLEN_UTF8];
    unsigned long long id = 0;
    long blen = 0;
    assert_int_equal(ei_decode_version(x->buff, &idx, NULL), 0);
    assert_int_equal(ei_decode_tuple_header(x->buff, &idx, &arity), 0);
    assert_int_equal(arity, 5);
    assert_int_equal(ei_decode_atom(x->buff, &idx, atom), 0);
    assert_string_equal(atom, "synod_raft");
    assert_int_equal(ei_decode_atom(x->buff, &idx, atom), 0);
    assert_string_equal(atom, "g1");
    assert_int_equal(ei_decode_ulonglong(x->buff, &idx, &id), 0);
    assert_int_equal(id, SELF_ID);
    assert_int_equal(ei_decode_atom(x->buff, &idx, atom), 0);
    assert_string_equal(atom, SELF);
    assert_int_equal(ei_decode_binary(x->buff, &idx, last.bin, &blen), 0);
    snprintf(last.node, sizeof last.node, "%s", node);
    snprintf(last.name, sizeof last.name, "%s", name);
    raft_msg m;
    assert_int_equal(raft_msg_decode(last.bin, (size_t)blen, &m), RAFT_OK);
    last.m = m;
    last.m.entries = NULL;
    last.m.mem = NULL;
    raft_msg_release(&m);
    last.n++;
    return 0;
}

static witness *open_w(const char *dir)
{
    const char *groups[] = {"g1"};
    witness_config c = {.data_dir = dir,
                        .groups = groups,
                        .n_groups = 1,
                        .self = SELF,
                        .tick_ms = 25,
                        .election_tick = 10,
                        .heartbeat_tick = 1,
                        .send = capture};
    witness *w = NULL;
    char why[256];
    int rc = witness_open(&w, &c, why, sizeof why);
    if (rc)
        print_error("%s\n", why);
    assert_int_equal(rc, WSTORE_OK);
    return w;
}

/* {synod_raft, g1, FromId, FromNode, encode(m)} */
static void deliver(witness *w, const raft_msg *m, unsigned long long from_id, const char *node)
{
    uint8_t bin[4096];
    size_t len = 0;
    assert_int_equal(raft_msg_encode(m, bin, sizeof bin, &len), RAFT_OK);
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 5);
    ei_x_encode_atom(&x, "synod_raft");
    ei_x_encode_atom(&x, "g1");
    ei_x_encode_ulonglong(&x, from_id);
    ei_x_encode_atom(&x, node);
    ei_x_encode_binary(&x, bin, (long)len);
    witness_handle(w, "Synod.Raft.Member.g1", x.buff, x.index);
    ei_x_free(&x);
}

static void test_member_id_matches_erlang(void **state)
{
    (void)state;
    uint8_t d[16];
    static const uint8_t empty[16] = {0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04,
                                      0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e};
    witness_md5((const uint8_t *)"", 0, d);
    assert_memory_equal(d, empty, 16);
    static const uint8_t abc[16] = {0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0,
                                    0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1, 0x7f, 0x72};
    witness_md5((const uint8_t *)"abc", 3, d);
    assert_memory_equal(d, abc, 16);
    static const uint8_t q[16] = {0x9e, 0x10, 0x7d, 0x9d, 0x37, 0x2b, 0xb6, 0x82,
                                  0x6b, 0xd8, 0x1d, 0x35, 0x42, 0xa4, 0x19, 0xd6};
    const char *fox = "The quick brown fox jumps over the lazy dog";
    witness_md5((const uint8_t *)fox, strlen(fox), d);
    assert_memory_equal(d, q, 16);
    assert_int_equal(witness_member_id(SELF), SELF_ID);
    assert_int_equal(witness_member_id(PEER), PEER_ID);
}

static void test_junk_is_dropped(void **state)
{
    (void)state;
    char dir[] = "/tmp/synod_witness_XXXXXX";
    assert_non_null(mkdtemp(dir));
    witness *w = open_w(dir);
    last.n = 0;
    /* not a term, a truncated term, the wrong shape, the wrong group, an id
     * that is not the node's, a binary that is not a Raft message */
    witness_handle(w, "Synod.Raft.Member.g1", "\x83", 1);
    witness_handle(w, "Synod.Raft.Member.g1", "\x83\x68\x05\x64", 4);
    witness_handle(w, "Synod.Raft.Member.g1", "junk", 4);
    ei_x_buff x;
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "synod_raft");
    ei_x_encode_long(&x, 7);
    witness_handle(w, "Synod.Raft.Member.g1", x.buff, x.index);
    ei_x_free(&x);
    raft_msg v = {.type = RAFT_MSG_VOTE, .from = PEER_ID, .to = SELF_ID, .term = 5};
    deliver(w, &v, PEER_ID + 1, PEER); /* id is not the node's */
    raft_msg other = v;
    other.to = SELF_ID + 1; /* not for us */
    deliver(w, &other, PEER_ID, PEER);
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 5);
    ei_x_encode_atom(&x, "synod_raft");
    ei_x_encode_atom(&x, "g1");
    ei_x_encode_ulonglong(&x, PEER_ID);
    ei_x_encode_atom(&x, PEER);
    ei_x_encode_binary(&x, "\x01\xff\xff", 3);
    witness_handle(w, "Synod.Raft.Member.g1", x.buff, x.index);
    ei_x_free(&x);
    assert_int_equal(last.n, 0);
    assert_false(witness_failed(w));
    assert_false(witness_wants(w, "Synod.Raft.Member.g2"));
    witness_group_info gi;
    assert_int_equal(witness_groups(w, &gi, 1), 1);
    assert_int_equal(gi.term, 0);
    witness_close(w);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_vote_durable_and_appends_acked(void **state)
{
    (void)state;
    char dir[] = "/tmp/synod_witness_XXXXXX";
    assert_non_null(mkdtemp(dir));
    witness *w = open_w(dir);
    last.n = 0;
    raft_msg v = {.type = RAFT_MSG_VOTE, .from = PEER_ID, .to = SELF_ID, .term = 3};
    deliver(w, &v, PEER_ID, PEER);
    assert_int_equal(last.n, 1);
    assert_string_equal(last.node, PEER);
    assert_string_equal(last.name, "Synod.Raft.Member.g1");
    assert_int_equal(last.m.type, RAFT_MSG_VOTE_RESP);
    assert_false(last.m.flags & RAFT_FLAG_REJECT);
    /* a second open of the same directory is refused while this one runs */
    const char *groups[] = {"g1"};
    witness_config c = {.data_dir = dir,
                        .groups = groups,
                        .n_groups = 1,
                        .self = SELF,
                        .tick_ms = 25,
                        .election_tick = 10,
                        .heartbeat_tick = 1,
                        .send = capture};
    witness *w2 = NULL;
    char why[256];
    assert_int_equal(witness_open(&w2, &c, why, sizeof why), WSTORE_ERR_LOCKED);
    witness_close(w);
    /* restart from the files: the vote of term 3 is kept, so another
     * candidate of term 3 is refused */
    w = open_w(dir);
    witness_group_info gi;
    witness_groups(w, &gi, 1);
    assert_int_equal(gi.term, 3);
    const char *b = "b@127.0.0.1";
    raft_msg v2 = {.type = RAFT_MSG_VOTE, .from = witness_member_id(b), .to = SELF_ID, .term = 3};
    deliver(w, &v2, v2.from, b);
    assert_int_equal(last.n, 2);
    assert_string_equal(last.node, b);
    assert_true(last.m.flags & RAFT_FLAG_REJECT);
    /* the leader of term 3 appends the bootstrap entry and two commands */
    uint8_t conf[64];
    raft_config rc0;
    raft_config_init(&rc0, PEER_ID, 1);
    uint64_t voters[3] = {PEER_ID, witness_member_id(b), SELF_ID};
    rc0.voters = voters;
    rc0.n_voters = 3;
    raft_t *boot = raft_new(&rc0, NULL);
    assert_non_null(boot);
    const raft_entry *e1 = raft_entry_get(boot, 1);
    assert_true(e1->len <= sizeof conf);
    memcpy(conf, e1->data, e1->len);
    raft_entry ents[3] = {
        {.term = 1, .index = 1, .type = RAFT_ENTRY_CONF, .data = conf, .len = e1->len},
        {.term = 3, .index = 2, .type = RAFT_ENTRY_NOOP},
        {.term = 3, .index = 3, .type = RAFT_ENTRY_NORMAL, .data = (const uint8_t *)"x", .len = 1},
    };
    raft_msg a = {.type = RAFT_MSG_APPEND,
                  .from = PEER_ID,
                  .to = SELF_ID,
                  .term = 3,
                  .index = 0,
                  .log_term = 0,
                  .commit = 2,
                  .entries = ents,
                  .n_entries = 3};
    deliver(w, &a, PEER_ID, PEER);
    raft_free(boot);
    assert_int_equal(last.n, 3);
    assert_int_equal(last.m.type, RAFT_MSG_APPEND_RESP);
    assert_false(last.m.flags & RAFT_FLAG_REJECT);
    assert_int_equal(last.m.index, 3);
    /* Under the leader's lease a pre-vote of b is ignored; once the
     * leader's node is seen down it is answered (granted) at once. */
    raft_msg pv = {.type = RAFT_MSG_PREVOTE,
                   .from = witness_member_id(b),
                   .to = SELF_ID,
                   .term = 4,
                   .index = 3,
                   .log_term = 3};
    deliver(w, &pv, pv.from, b);
    assert_int_equal(last.n, 3);
    witness_tick(w, 10);
    assert_int_equal(last.n, 3); /* the leader is still known: still held */
    witness_node_down(w, PEER);
    witness_tick(w, 20);
    assert_int_equal(last.n, 4);
    assert_string_equal(last.node, b);
    assert_int_equal(last.m.type, RAFT_MSG_PREVOTE_RESP);
    assert_false(last.m.flags & RAFT_FLAG_REJECT);
    witness_close(w);
    w = open_w(dir);
    witness_groups(w, &gi, 1);
    assert_int_equal(gi.last_index, 3);
    assert_int_equal(gi.commit, 2);
    for (int i = 0; i < 100; i++)
        witness_tick(w, 1000 + i * 25);
    witness_groups(w, &gi, 1);
    assert_int_equal(gi.role, RAFT_FOLLOWER); /* ticks never make it campaign */
    witness_close(w);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_id_matches_erlang),
        cmocka_unit_test(test_junk_is_dropped),
        cmocka_unit_test(test_vote_durable_and_appends_acked),
    };
    return cmocka_run_group_tests_name("witness_node", tests, NULL, NULL);
}
