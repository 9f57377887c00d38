/* test_store.c -- the store's commands one by one: revision and version
 * bookkeeping, deletes and ranges, every txn compare, leases, history and
 * compaction, the decoder's rejections, snapshots (round trip and corrupt
 * input). The randomized model test is test_store_model.c; allocation
 * failures are test_store_nomem.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "support_store.h"

static store_t *fresh(void)
{
    store_t *s = store_new(NULL, NULL);
    assert_non_null(s);
    return s;
}

static void assert_kv(const store_kv *kv, const char *key, const char *value, uint64_t create,
                      uint64_t mod, uint64_t version)
{
    assert_int_equal(kv->key_len, strlen(key));
    assert_memory_equal(kv->key, key, kv->key_len);
    if (value) {
        assert_int_equal(kv->value_len, strlen(value));
        assert_memory_equal(kv->value, value, kv->value_len);
    }
    assert_int_equal(kv->create_revision, create);
    assert_int_equal(kv->mod_revision, mod);
    assert_int_equal(kv->version, version);
}

static void test_put_bumps_revision_and_version(void **state)
{
    (void)state;
    store_t *s = fresh();
    assert_int_equal(store_revision(s), 0);
    assert_false(get_key(s, "a").found);
    assert_int_equal(do_put(s, "a", "1", 0), STORE_OK);
    got_kv g = get_key(s, "a");
    assert_true(g.found);
    assert_string_equal(g.value, "1");
    assert_int_equal(g.create_revision, 1);
    assert_int_equal(g.mod_revision, 1);
    assert_int_equal(g.version, 1);

    assert_int_equal(do_put(s, "b", "x", 0), STORE_OK);
    store_cmd c = {.type = STORE_CMD_PUT, .op = put_op("a", "2", 0, STORE_FLAG_PREV_KV)};
    store_result r;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_int_equal(r.type, STORE_CMD_PUT);
    assert_int_equal(r.revision, 3);
    assert_int_equal(r.n_ops, 1);
    assert_int_equal(r.ops[0].n_kvs, 1);
    assert_kv(&r.ops[0].kvs[0], "a", "1", 1, 1, 1);
    store_result_release(&r);
    g = get_key(s, "a");
    assert_string_equal(g.value, "2");
    assert_int_equal(g.create_revision, 1);
    assert_int_equal(g.mod_revision, 3);
    assert_int_equal(g.version, 2);

    /* the same value again is still a change */
    assert_int_equal(do_put(s, "a", "2", 0), STORE_OK);
    assert_int_equal(get_key(s, "a").version, 3);
    assert_int_equal(store_revision(s), 4);
    store_free(s);
}

static void test_delete_single_and_range(void **state)
{
    (void)state;
    store_t *s = fresh();
    const char *keys[] = {"a", "b", "ba", "bb", "c"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(do_put(s, keys[i], keys[i], 0), STORE_OK);
    uint64_t deleted = 99;
    /* nothing to delete: no revision */
    assert_int_equal(do_delete(s, "zz", NULL, &deleted), STORE_OK);
    assert_int_equal(deleted, 0);
    assert_int_equal(store_revision(s), 5);

    store_cmd c = {.type = STORE_CMD_DELETE, .op = del_op("b", "c", STORE_FLAG_PREV_KV)};
    store_result r;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_int_equal(r.revision, 6);
    assert_int_equal(r.ops[0].count, 3);
    assert_int_equal(r.ops[0].n_kvs, 3);
    assert_kv(&r.ops[0].kvs[0], "b", "b", 2, 2, 1);
    assert_kv(&r.ops[0].kvs[2], "bb", "bb", 4, 4, 1);
    store_result_release(&r);
    assert_false(get_key(s, "ba").found);
    assert_true(get_key(s, "c").found);

    assert_int_equal(do_delete(s, "a", NULL, &deleted), STORE_OK);
    assert_int_equal(deleted, 1);
    assert_int_equal(store_revision(s), 7);
    /* a key created again starts over */
    assert_int_equal(do_put(s, "a", "new", 0), STORE_OK);
    got_kv g = get_key(s, "a");
    assert_int_equal(g.create_revision, 8);
    assert_int_equal(g.version, 1);
    /* range end "\0" (one zero byte): every key from the start key on */
    store_cmd all = {.type = STORE_CMD_DELETE,
                     .op = {.type = STORE_CMD_DELETE, .key = sb("a"), .range_end = sbn("", 1)}};
    assert_int_equal(apply_cmd(s, &all, &r), STORE_OK);
    assert_int_equal(r.ops[0].count, 2); /* "a" and "c" */
    assert_int_equal(r.revision, 9);
    store_result_release(&r);
    store_stats st;
    store_stats_get(s, &st);
    assert_int_equal(st.keys, 0);
    store_free(s);
}

typedef struct collected {
    char keys[16][8];
    size_t n;
} collected;

static int collect(void *ctx, const store_kv *kv)
{
    collected *c = ctx;
    if (c->n < 16) {
        memcpy(c->keys[c->n], kv->key, kv->key_len < 7 ? kv->key_len : 7);
        c->keys[c->n][kv->key_len < 7 ? kv->key_len : 7] = '\0';
    }
    c->n++;
    return 0;
}

static void test_range_prefix_limit_count(void **state)
{
    (void)state;
    store_t *s = fresh();
    const char *keys[] = {"foo/3", "foo/1", "fop", "fo", "foo/2", "foo"};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(do_put(s, keys[i], "v", 0), STORE_OK);
    uint8_t end[8];
    size_t end_len = store_prefix_end((const uint8_t *)"foo/", 4, end);
    store_op op = {.type = STORE_CMD_RANGE, .key = sb("foo/"), .range_end = sbn(end, end_len)};
    collected got = {0};
    uint64_t count;
    bool more;
    assert_int_equal(store_range(s, &op, collect, &got, &count, &more), STORE_OK);
    assert_int_equal(count, 3);
    assert_false(more);
    assert_int_equal(got.n, 3);
    assert_string_equal(got.keys[0], "foo/1");
    assert_string_equal(got.keys[2], "foo/3");

    op.limit = 2;
    memset(&got, 0, sizeof got);
    assert_int_equal(store_range(s, &op, collect, &got, &count, &more), STORE_OK);
    assert_int_equal(count, 3);
    assert_true(more);
    assert_int_equal(got.n, 2);

    op.flags = STORE_FLAG_COUNT_ONLY;
    memset(&got, 0, sizeof got);
    assert_int_equal(store_range(s, &op, collect, &got, &count, &more), STORE_OK);
    assert_int_equal(got.n, 0);
    assert_int_equal(count, 3);
    assert_false(more);

    /* [fo, fop): fo, foo, foo/1..3 in key order */
    store_op half = range_op("fo", "fop", 0, 0);
    memset(&got, 0, sizeof got);
    assert_int_equal(store_range(s, &half, collect, &got, &count, &more), STORE_OK);
    assert_int_equal(count, 5);
    assert_string_equal(got.keys[0], "fo");
    assert_string_equal(got.keys[1], "foo");
    assert_string_equal(got.keys[4], "foo/3");
    /* an end at or before the key is an empty range */
    store_op empty = range_op("fop", "fo", 0, 0);
    assert_int_equal(store_range(s, &empty, collect, &got, &count, &more), STORE_OK);
    assert_int_equal(count, 0);

    /* a range through the log: keys only, no revision */
    store_cmd c = {.type = STORE_CMD_RANGE,
                   .op = {.type = STORE_CMD_RANGE,
                          .flags = STORE_FLAG_KEYS_ONLY,
                          .key = sb("f"),
                          .range_end = sbn("", 1)}};
    store_result r;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_int_equal(r.revision, 6);
    assert_int_equal(r.ops[0].count, 6);
    assert_int_equal(r.ops[0].n_kvs, 6);
    assert_int_equal(r.ops[0].kvs[0].value_len, 0);
    assert_int_equal(r.ops[0].kvs[5].key_len, 3); /* "fop" sorts last */
    store_result_release(&r);
    assert_int_equal(store_revision(s), 6);
    store_free(s);
}

static void test_prefix_end(void **state)
{
    (void)state;
    uint8_t out[4];
    assert_int_equal(store_prefix_end((const uint8_t *)"ab", 2, out), 2);
    assert_memory_equal(out, "ac", 2);
    assert_int_equal(store_prefix_end((const uint8_t *)"a\xff", 2, out), 1);
    assert_memory_equal(out, "b", 1);
    assert_int_equal(store_prefix_end((const uint8_t *)"\xff\xff", 2, out), 1);
    assert_int_equal(out[0], 0);
    assert_int_equal(store_prefix_end((const uint8_t *)"", 0, out), 1);
    assert_int_equal(out[0], 0);
}

/* Runs a one-compare txn whose branches put "ok" / "no" into "out". */
static bool txn_holds(store_t *s, store_compare cmp)
{
    store_op yes = put_op("out", "yes", 0, 0), no = put_op("out", "no", 0, 0);
    store_cmd c = {.type = STORE_CMD_TXN,
                   .compares = &cmp,
                   .n_compares = 1,
                   .success = &yes,
                   .n_success = 1,
                   .failure = &no,
                   .n_failure = 1};
    store_result r;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    bool ok = r.succeeded;
    assert_string_equal(get_key(s, "out").value, ok ? "yes" : "no");
    store_result_release(&r);
    return ok;
}

static void test_txn_compares(void **state)
{
    (void)state;
    store_t *s = fresh();
    assert_int_equal(do_grant(s, 7, 1000, NULL), STORE_OK);
    assert_int_equal(do_put(s, "k", "m", 7), STORE_OK); /* rev 1 */
    assert_int_equal(do_put(s, "x", "x", 0), STORE_OK); /* rev 2 */
    assert_int_equal(do_put(s, "k", "m", 7), STORE_OK); /* rev 3: version 2, create 1, mod 3 */
    enum {
        EQ = STORE_CMP_EQUAL,
        GT = STORE_CMP_GREATER,
        LT = STORE_CMP_LESS,
        NE = STORE_CMP_NOT_EQUAL
    };
    struct {
        uint8_t target;
        uint64_t actual;
    } nums[] = {
        {STORE_CMP_VERSION, 2}, {STORE_CMP_CREATE, 1}, {STORE_CMP_MOD, 3}, {STORE_CMP_LEASE, 7}};
    for (size_t i = 0; i < 4; i++) {
        /* the txns themselves rewrite "out", never "k" */
        uint64_t v = nums[i].actual;
        uint8_t t = nums[i].target;
        assert_true(txn_holds(s, cmp_num(t, "k", EQ, v)));
        assert_false(txn_holds(s, cmp_num(t, "k", EQ, v + 1)));
        assert_true(txn_holds(s, cmp_num(t, "k", NE, v + 1)));
        assert_false(txn_holds(s, cmp_num(t, "k", NE, v)));
        assert_true(txn_holds(s, cmp_num(t, "k", GT, v - 1)));
        assert_false(txn_holds(s, cmp_num(t, "k", GT, v)));
        assert_true(txn_holds(s, cmp_num(t, "k", LT, v + 1)));
        assert_false(txn_holds(s, cmp_num(t, "k", LT, v)));
        /* an absent key has 0 in every numeric field */
        assert_true(txn_holds(s, cmp_num(t, "nope", EQ, 0)));
        assert_false(txn_holds(s, cmp_num(t, "nope", GT, 0)));
    }
    assert_true(txn_holds(s, cmp_value("k", EQ, "m")));
    assert_false(txn_holds(s, cmp_value("k", EQ, "mm")));
    assert_true(txn_holds(s, cmp_value("k", LT, "mm")));
    assert_true(txn_holds(s, cmp_value("k", GT, "l")));
    assert_true(txn_holds(s, cmp_value("k", NE, "n")));
    /* a value compare on an absent key is false whatever the operator */
    assert_false(txn_holds(s, cmp_value("nope", NE, "m")));
    assert_false(txn_holds(s, cmp_value("nope", EQ, "")));
    assert_true(txn_holds(s, cmp_num(STORE_CMP_EXISTS, "k", EQ, 0)));
    assert_false(txn_holds(s, cmp_num(STORE_CMP_EXISTS, "k", NE, 0)));
    assert_true(txn_holds(s, cmp_num(STORE_CMP_EXISTS, "nope", NE, 0)));
    assert_false(txn_holds(s, cmp_num(STORE_CMP_EXISTS, "nope", EQ, 0)));
    store_free(s);
}

/* A COUNT compare over a range, and its refusals. */
static store_compare cmp_count(const char *key, const char *range_end, uint8_t result,
                               uint64_t number)
{
    store_compare c = cmp_num(STORE_CMP_COUNT, key, result, number);
    c.range_end = range_end ? sbn(range_end, range_end[0] ? strlen(range_end) : 1) : sb("");
    return c;
}

static void test_txn_count_compare(void **state)
{
    (void)state;
    store_t *s = fresh();
    assert_int_equal(do_put(s, "q/1", "a", 0), STORE_OK);
    assert_int_equal(do_put(s, "q/2", "b", 0), STORE_OK);
    assert_int_equal(do_put(s, "q/3", "c", 0), STORE_OK);
    assert_int_equal(do_put(s, "r/1", "d", 0), STORE_OK);
    enum {
        EQ = STORE_CMP_EQUAL,
        GT = STORE_CMP_GREATER,
        LT = STORE_CMP_LESS,
        NE = STORE_CMP_NOT_EQUAL
    };
    /* [q/, q0) holds 3 keys */
    assert_true(txn_holds(s, cmp_count("q/", "q0", EQ, 3)));
    assert_false(txn_holds(s, cmp_count("q/", "q0", EQ, 2)));
    assert_false(txn_holds(s, cmp_count("q/", "q0", EQ, 0)));
    assert_true(txn_holds(s, cmp_count("q/", "q0", GT, 2)));
    assert_false(txn_holds(s, cmp_count("q/", "q0", GT, 3)));
    assert_true(txn_holds(s, cmp_count("q/", "q0", LT, 4)));
    assert_false(txn_holds(s, cmp_count("q/", "q0", LT, 3)));
    assert_true(txn_holds(s, cmp_count("q/", "q0", NE, 1)));
    assert_false(txn_holds(s, cmp_count("q/", "q0", NE, 3)));
    /* an empty range; one key; every key from a key on ("\0") */
    assert_true(txn_holds(s, cmp_count("p/", "p0", EQ, 0)));
    assert_true(txn_holds(s, cmp_count("q/2", NULL, EQ, 1)));
    assert_true(txn_holds(s, cmp_count("q/9", NULL, EQ, 0)));
    assert_true(txn_holds(s, cmp_count("q/2", "\0", EQ, 3))); /* q/2 q/3 r/1 ("out" sorts before) */
    store_free(s);

    /* refusals: range_end on another target; a range end over the limit */
    store_cmd d;
    const uint8_t count_ok[] = {
        1, STORE_CMD_TXN, 1, STORE_CMP_COUNT, STORE_CMP_EQUAL, 1, 'k', 1, 'l', 0, 0, 0};
    assert_int_equal(store_cmd_decode(count_ok, sizeof count_ok, &d), STORE_OK);
    assert_int_equal(d.compares[0].range_end.len, 1);
    store_cmd_release(&d);
    const uint8_t unknown_target[] = {
        1, STORE_CMD_TXN, 1, STORE_CMP_COUNT + 1, STORE_CMP_EQUAL, 1, 'k', 0, 0, 0};
    assert_int_equal(store_cmd_decode(unknown_target, sizeof unknown_target, &d),
                     STORE_ERR_INVALID);
    store_compare bad = cmp_num(STORE_CMP_MOD, "k", STORE_CMP_EQUAL, 1);
    bad.range_end = sb("l");
    store_cmd c = {.type = STORE_CMD_TXN, .compares = &bad, .n_compares = 1};
    assert_int_equal(store_cmd_check(&c), STORE_ERR_INVALID);
    static uint8_t big[STORE_MAX_KEY + 1];
    memset(big, 'x', sizeof big);
    bad = cmp_count("k", NULL, STORE_CMP_EQUAL, 0);
    bad.range_end = sbn(big, sizeof big);
    assert_int_equal(store_cmd_check(&c), STORE_ERR_TOO_LARGE);
}

/* DELETE with FIRST takes the first key of its range (with PREV_KV, its
 * value) and nothing else; an empty range deletes nothing and leaves the
 * revision where it was. */
static void test_delete_first(void **state)
{
    (void)state;
    store_t *s = fresh();
    assert_int_equal(do_put(s, "q/2", "b", 0), STORE_OK);
    assert_int_equal(do_put(s, "q/1", "a", 0), STORE_OK);
    assert_int_equal(do_put(s, "r/1", "x", 0), STORE_OK); /* rev 3 */
    store_compare none = cmp_count("c/", "c0", STORE_CMP_EQUAL, 0);
    store_op take = del_op("q/", "q0", STORE_FLAG_FIRST | STORE_FLAG_PREV_KV);
    store_cmd c = {.type = STORE_CMD_TXN,
                   .compares = &none,
                   .n_compares = 1,
                   .success = &take,
                   .n_success = 1};
    store_result r;
    const char *order[] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
        assert_true(r.succeeded);
        assert_int_equal(r.revision, 4 + i);
        assert_int_equal(r.ops[0].count, 1);
        assert_int_equal(r.ops[0].n_kvs, 1);
        assert_kv(&r.ops[0].kvs[0], i ? "q/2" : "q/1", order[i], 2 - i, 2 - i, 1);
        store_result_release(&r);
    }
    /* empty now: nothing deleted, no new revision, r/1 untouched */
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_true(r.succeeded);
    assert_int_equal(r.revision, 5);
    assert_int_equal(r.ops[0].count, 0);
    assert_int_equal(r.ops[0].n_kvs, 0);
    store_result_release(&r);
    assert_true(get_key(s, "r/1").found);
    /* a claim under c/ makes the compare fail: the failure branch runs */
    assert_int_equal(do_put(s, "q/3", "c", 0), STORE_OK);
    assert_int_equal(do_put(s, "c/3", "", 0), STORE_OK);
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_false(r.succeeded);
    store_result_release(&r);
    assert_true(get_key(s, "q/3").found);
    /* one-op DELETE command with FIRST, without PREV_KV */
    store_cmd one = {.type = STORE_CMD_DELETE, .op = del_op("c/", "c0", STORE_FLAG_FIRST)};
    assert_int_equal(apply_cmd(s, &one, &r), STORE_OK);
    uint64_t deleted = r.ops[0].count;
    assert_int_equal(r.ops[0].n_kvs, 0);
    store_result_release(&r);
    assert_int_equal(deleted, 1);
    assert_false(get_key(s, "c/3").found);
    assert_true(get_key(s, "q/3").found);
    /* one event per taken key in the history */
    store_stats st;
    store_stats_get(s, &st);
    assert_int_equal(st.keys, 2);
    /* FIRST is a delete flag only */
    store_cmd bad = {.type = STORE_CMD_PUT, .op = put_op("k", "v", 0, STORE_FLAG_FIRST)};
    assert_int_equal(store_cmd_check(&bad), STORE_ERR_INVALID);
    bad = (store_cmd){.type = STORE_CMD_RANGE, .op = range_op("k", NULL, 0, STORE_FLAG_FIRST)};
    assert_int_equal(store_cmd_check(&bad), STORE_ERR_INVALID);
    /* and a put into the range it covers is still a duplicate */
    store_op two[] = {del_op("q/", "q0", STORE_FLAG_FIRST), put_op("q/9", "z", 0, 0)};
    bad = (store_cmd){.type = STORE_CMD_TXN, .success = two, .n_success = 2};
    assert_int_equal(store_cmd_check(&bad), STORE_ERR_DUPLICATE_KEY);
    store_free(s);
}

static void test_txn_is_one_revision_and_ops_see_earlier_writes(void **state)
{
    (void)state;
    store_t *s = fresh();
    assert_int_equal(do_put(s, "a", "0", 0), STORE_OK);
    assert_int_equal(do_put(s, "gone", "0", 0), STORE_OK);
    store_compare cmps[] = {cmp_num(STORE_CMP_VERSION, "a", STORE_CMP_EQUAL, 1),
                            cmp_num(STORE_CMP_EXISTS, "b", STORE_CMP_NOT_EQUAL, 0)};
    store_op ops[] = {put_op("a", "1", 0, STORE_FLAG_PREV_KV), put_op("b", "2", 0, 0),
                      del_op("gone", NULL, STORE_FLAG_PREV_KV), range_op("a", "c", 0, 0)};
    store_cmd c = {
        .type = STORE_CMD_TXN, .compares = cmps, .n_compares = 2, .success = ops, .n_success = 4};
    store_result r;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_true(r.succeeded);
    assert_int_equal(r.revision, 3);
    assert_int_equal(r.n_ops, 4);
    assert_int_equal(r.ops[0].type, STORE_CMD_PUT);
    assert_kv(&r.ops[0].kvs[0], "a", "0", 1, 1, 1);
    assert_int_equal(r.ops[1].n_kvs, 0);
    assert_int_equal(r.ops[2].count, 1);
    assert_kv(&r.ops[2].kvs[0], "gone", "0", 2, 2, 1);
    assert_int_equal(r.ops[3].count, 2);
    assert_kv(&r.ops[3].kvs[0], "a", "1", 1, 3, 2);
    assert_kv(&r.ops[3].kvs[1], "b", "2", 3, 3, 1);
    store_result_release(&r);

    /* the same txn again: compares fail, the empty failure branch changes nothing */
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_false(r.succeeded);
    assert_int_equal(r.n_ops, 0);
    assert_int_equal(r.revision, 3);
    store_result_release(&r);

    /* one revision, one event per write */
    store_stats st;
    store_stats_get(s, &st);
    assert_int_equal(st.events, 5);
    store_free(s);
}

static void test_txn_refusals_change_nothing(void **state)
{
    (void)state;
    store_t *s = fresh();
    assert_int_equal(do_put(s, "a", "0", 0), STORE_OK);
    size_t len0;
    uint8_t *before = snapshot_of(s, &len0);

    store_op dup[] = {put_op("x", "1", 0, 0), put_op("x", "2", 0, 0)};
    store_cmd c = {.type = STORE_CMD_TXN, .success = dup, .n_success = 2};
    store_result r;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_ERR_DUPLICATE_KEY);
    store_result_release(&r);
    /* a put inside a range the same branch deletes; the failure branch counts too */
    store_op covered[] = {del_op("a", "z", 0), put_op("m", "1", 0, 0)};
    c = (store_cmd){.type = STORE_CMD_TXN, .failure = covered, .n_failure = 2};
    assert_int_equal(apply_cmd(s, &c, &r), STORE_ERR_DUPLICATE_KEY);
    store_result_release(&r);
    /* puts of distinct keys and a delete elsewhere are fine */
    store_op fine[] = {del_op("a", NULL, 0), put_op("b", "1", 0, 0), put_op("c", "1", 0, 0)};
    c = (store_cmd){.type = STORE_CMD_TXN, .failure = fine, .n_failure = 3};
    assert_int_equal(store_cmd_check(&c), STORE_OK);

    /* an unknown lease in the branch that runs: nothing of it applies */
    store_op leased[] = {put_op("y", "1", 0, 0), put_op("z", "1", 42, 0)};
    c = (store_cmd){.type = STORE_CMD_TXN, .success = leased, .n_success = 2};
    assert_int_equal(apply_cmd(s, &c, &r), STORE_ERR_LEASE_NOT_FOUND);
    assert_int_equal(r.revision, 1);
    store_result_release(&r);
    assert_false(get_key(s, "y").found);

    size_t len1;
    uint8_t *after = snapshot_of(s, &len1);
    assert_int_equal(len0, len1);
    assert_memory_equal(before, after, len0);
    free(before);
    free(after);
    store_free(s);
}

typedef struct lease_seen {
    uint64_t ids[8], ttls[8];
    size_t keys[8];
    char first_key[8][8];
    size_t n;
} lease_seen;

static int see_lease(void *ctx, uint64_t id, uint64_t ttl, const store_kv *keys, size_t n)
{
    lease_seen *l = ctx;
    l->ids[l->n] = id;
    l->ttls[l->n] = ttl;
    l->keys[l->n] = n;
    if (n) {
        memcpy(l->first_key[l->n], keys[0].key, keys[0].key_len);
        l->first_key[l->n][keys[0].key_len] = '\0';
        for (size_t i = 1; i < n; i++) /* key order */
            assert_true(memcmp(keys[i - 1].key, keys[i].key, 1) <= 0);
    }
    l->n++;
    return 0;
}

typedef struct event_log {
    uint8_t types[64];
    uint64_t revs[64];
    char keys[64][8];
    bool has_prev[64];
    size_t n;
} event_log;

static int log_event(void *ctx, const store_event *ev)
{
    event_log *l = ctx;
    if (l->n < 64) {
        l->types[l->n] = ev->type;
        l->revs[l->n] = ev->revision;
        size_t k = ev->kv.key_len < 7 ? ev->kv.key_len : 7;
        memcpy(l->keys[l->n], ev->kv.key, k);
        l->keys[l->n][k] = '\0';
        l->has_prev[l->n] = ev->has_prev;
    }
    l->n++;
    return 0;
}

static void test_leases(void **state)
{
    (void)state;
    store_t *s = fresh();
    uint64_t id;
    assert_int_equal(do_grant(s, 0, 5000, &id), STORE_OK);
    assert_int_equal(id, 1);
    assert_int_equal(do_grant(s, 2, 9000, &id), STORE_OK);
    assert_int_equal(do_grant(s, 0, 100, &id), STORE_OK);
    assert_int_equal(id, 3); /* 2 is taken */
    assert_int_equal(do_grant(s, 2, 1, NULL), STORE_ERR_LEASE_EXISTS);
    assert_int_equal(store_revision(s), 0); /* leases are not key changes */

    assert_int_equal(do_put(s, "c", "1", 1), STORE_OK);
    assert_int_equal(do_put(s, "a", "1", 1), STORE_OK);
    assert_int_equal(do_put(s, "b", "1", 1), STORE_OK);
    assert_int_equal(do_put(s, "d", "1", 2), STORE_OK);
    /* moving "d" to lease 1, then off it again */
    assert_int_equal(do_put(s, "d", "2", 1), STORE_OK);
    assert_int_equal(do_put(s, "d", "3", 0), STORE_OK);
    assert_int_equal(do_put(s, "e", "1", 2), STORE_OK); /* rev 7 */

    lease_seen seen = {0};
    assert_int_equal(store_leases(s, see_lease, &seen), STORE_OK);
    assert_int_equal(seen.n, 3);
    assert_int_equal(seen.ids[0], 1);
    assert_int_equal(seen.ttls[0], 5000);
    assert_int_equal(seen.keys[0], 3);
    assert_string_equal(seen.first_key[0], "a");
    assert_int_equal(seen.keys[1], 1);
    assert_int_equal(seen.ttls[2], 100);
    assert_int_equal(seen.keys[2], 0);
    uint64_t ttl;
    size_t nk;
    assert_true(store_lease_get(s, 2, &ttl, &nk));
    assert_int_equal(ttl, 9000);
    assert_int_equal(nk, 1);
    assert_false(store_lease_get(s, 4, &ttl, &nk));

    store_cmd c = {.type = STORE_CMD_LEASE_REVOKE, .lease_id = 1};
    store_result r;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_int_equal(r.deleted, 3);
    assert_int_equal(r.revision, 8); /* one revision for the three keys */
    store_result_release(&r);
    assert_false(get_key(s, "a").found);
    assert_true(get_key(s, "d").found);
    event_log log = {0};
    uint64_t next;
    assert_int_equal(store_events_since(s, 8, 0, log_event, &log, &next), STORE_OK);
    assert_int_equal(log.n, 3);
    assert_string_equal(log.keys[0], "a");
    assert_string_equal(log.keys[1], "b");
    assert_string_equal(log.keys[2], "c");
    assert_int_equal(log.types[0], STORE_EVENT_DELETE);
    assert_int_equal(log.revs[2], 8);
    assert_int_equal(next, 9);

    /* a lease without keys goes without a revision */
    assert_int_equal(do_revoke(s, 3), STORE_OK);
    assert_int_equal(store_revision(s), 8);
    assert_int_equal(do_revoke(s, 3), STORE_ERR_LEASE_NOT_FOUND);
    assert_int_equal(do_put(s, "z", "1", 1), STORE_ERR_LEASE_NOT_FOUND);
    /* a key deleted by hand leaves its lease */
    assert_int_equal(do_delete(s, "e", NULL, NULL), STORE_OK);
    assert_true(store_lease_get(s, 2, &ttl, &nk));
    assert_int_equal(nk, 0);
    store_free(s);
}

static void test_history_resume_and_compaction(void **state)
{
    (void)state;
    store_config cfg;
    store_config_init(&cfg);
    cfg.history_max_events = 6;
    store_t *s = store_new(&cfg, NULL);
    assert_non_null(s);
    event_log log = {0};
    uint64_t next;
    assert_int_equal(store_events_since(s, 1, 0, log_event, &log, &next), STORE_OK);
    assert_int_equal(log.n, 0);
    assert_int_equal(next, 1);
    assert_int_equal(store_events_since(s, 0, 0, log_event, &log, &next), STORE_ERR_INVALID);

    assert_int_equal(do_put(s, "a", "1", 0), STORE_OK);       /* 1 */
    assert_int_equal(do_put(s, "b", "1", 0), STORE_OK);       /* 2 */
    assert_int_equal(do_delete(s, "a", "c", NULL), STORE_OK); /* 3: two events */
    assert_int_equal(do_put(s, "c", "1", 0), STORE_OK);       /* 4 */
    /* limit 2 from 1: revisions 1 and 2; revision 3 would cut */
    assert_int_equal(store_events_since(s, 1, 2, log_event, &log, &next), STORE_OK);
    assert_int_equal(log.n, 2);
    assert_int_equal(next, 3);
    /* limit 1 from 3: revision 3 comes whole (two events) */
    memset(&log, 0, sizeof log);
    assert_int_equal(store_events_since(s, next, 1, log_event, &log, &next), STORE_OK);
    assert_int_equal(log.n, 2);
    assert_int_equal(log.types[0], STORE_EVENT_DELETE);
    assert_true(log.has_prev[0]);
    assert_int_equal(next, 4);
    memset(&log, 0, sizeof log);
    assert_int_equal(store_events_since(s, next, 0, log_event, &log, &next), STORE_OK);
    assert_int_equal(log.n, 1);
    assert_int_equal(next, 5);
    assert_int_equal(store_events_since(s, 99, 0, log_event, &log, &next), STORE_OK);
    assert_int_equal(next, 99);

    /* 5 events; three more puts make 8 > 6: revisions 1 and 2 go */
    for (int i = 0; i < 3; i++)
        assert_int_equal(do_put(s, "d", "1", 0), STORE_OK); /* 5, 6, 7 */
    assert_int_equal(store_compact_revision(s), 2);
    assert_int_equal(store_events_since(s, 2, 0, log_event, &log, &next), STORE_ERR_COMPACTED);
    memset(&log, 0, sizeof log);
    assert_int_equal(store_events_since(s, 3, 0, log_event, &log, &next), STORE_OK);
    assert_int_equal(log.n, 6); /* revision 3 holds two */

    /* explicit compaction */
    store_cmd c = {.type = STORE_CMD_COMPACT, .revision = 9};
    store_result r;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_ERR_FUTURE_REV);
    store_result_release(&r);
    c.revision = 2;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_ERR_COMPACTED);
    assert_int_equal(r.compact_revision, 2);
    store_result_release(&r);
    c.revision = 5;
    assert_int_equal(apply_cmd(s, &c, &r), STORE_OK);
    assert_int_equal(r.compact_revision, 5);
    assert_int_equal(r.revision, 7);
    store_result_release(&r);
    memset(&log, 0, sizeof log);
    assert_int_equal(store_events_since(s, 6, 0, log_event, &log, &next), STORE_OK);
    assert_int_equal(log.n, 2);
    assert_int_equal(store_events_since(s, 5, 0, log_event, &log, &next), STORE_ERR_COMPACTED);
    store_free(s);

    /* no history at all: every revision is compacted at once */
    cfg.history_max_events = 0;
    cfg.history_prev_kv = false;
    s = store_new(&cfg, NULL);
    assert_int_equal(do_put(s, "a", "1", 0), STORE_OK);
    assert_int_equal(store_compact_revision(s), 1);
    assert_int_equal(store_events_since(s, 2, 0, log_event, &log, &next), STORE_OK);
    store_free(s);
}

static void test_history_byte_bound(void **state)
{
    (void)state;
    store_config cfg;
    store_config_init(&cfg);
    cfg.history_max_bytes = 3 * (64 + 2) + 1; /* three events of a 1-byte key and value */
    cfg.history_prev_kv = false;
    store_t *s = store_new(&cfg, NULL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(do_put(s, "k", "v", 0), STORE_OK);
    store_stats st;
    store_stats_get(s, &st);
    assert_int_equal(st.events, 3);
    assert_int_equal(st.history_bytes, 3 * 66);
    assert_int_equal(st.compact_revision, 2);
    store_free(s);
}

/* ---- the decoder ---- */

static size_t encode(const store_cmd *c, uint8_t *buf, size_t cap)
{
    size_t len = 0;
    assert_int_equal(store_cmd_encode(c, buf, cap, &len), STORE_OK);
    return len;
}

static void test_decoder_roundtrip_and_truncation(void **state)
{
    (void)state;
    store_compare cmps[] = {cmp_num(STORE_CMP_MOD, "k", STORE_CMP_LESS, 300),
                            cmp_value("k", STORE_CMP_EQUAL, "v"),
                            cmp_num(STORE_CMP_EXISTS, "e", STORE_CMP_NOT_EQUAL, 0),
                            cmp_count("c/", "c0", STORE_CMP_GREATER, 2)};
    store_op ops[] = {put_op("a", "b", 5, STORE_FLAG_PREV_KV),
                      del_op("x", "y", STORE_FLAG_FIRST | STORE_FLAG_PREV_KV),
                      range_op("r", "\0", 10, STORE_FLAG_KEYS_ONLY)};
    store_cmd cmds[] = {
        {.type = STORE_CMD_PUT, .op = put_op("key", "value", 0, 0)},
        {.type = STORE_CMD_DELETE, .op = del_op("a", "b", STORE_FLAG_PREV_KV)},
        {.type = STORE_CMD_RANGE, .op = range_op("a", NULL, 3, STORE_FLAG_COUNT_ONLY)},
        {.type = STORE_CMD_TXN,
         .compares = cmps,
         .n_compares = 4,
         .success = ops,
         .n_success = 3,
         .failure = ops + 1,
         .n_failure = 1},
        {.type = STORE_CMD_LEASE_GRANT, .lease_id = 300, .ttl_ms = 70000},
        {.type = STORE_CMD_LEASE_REVOKE, .lease_id = 1},
        {.type = STORE_CMD_COMPACT, .revision = 1u << 20},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        uint8_t buf[512], again[512];
        size_t len = encode(&cmds[i], buf, sizeof buf);
        assert_int_equal(len, store_cmd_encoded_size(&cmds[i]));
        store_cmd d;
        assert_int_equal(store_cmd_decode(buf, len, &d), STORE_OK);
        assert_int_equal(d.type, cmds[i].type);
        assert_int_equal(encode(&d, again, sizeof again), len);
        assert_memory_equal(buf, again, len);
        store_cmd_release(&d);
        /* every proper prefix fails, leaving nothing allocated */
        for (size_t cut = 0; cut < len; cut++) {
            int rc = store_cmd_decode(buf, cut, &d);
            assert_int_not_equal(rc, STORE_OK);
            assert_null(d.mem);
        }
        /* a trailing byte */
        buf[len] = 0;
        assert_int_equal(store_cmd_decode(buf, len + 1, &d), STORE_ERR_TRAILING);
        /* another version */
        buf[0] = 2;
        assert_int_equal(store_cmd_decode(buf, len, &d), STORE_ERR_VERSION);
    }
}

static void test_decoder_rejections(void **state)
{
    (void)state;
    store_cmd d;
    /* unknown command type */
    assert_int_equal(store_cmd_decode((const uint8_t *)"\x01\x09", 2, &d), STORE_ERR_INVALID);
    /* put: flags 0, key len 0 */
    const uint8_t empty_key[] = {1, STORE_CMD_PUT, 0, 0, 0, 0};
    assert_int_equal(store_cmd_decode(empty_key, sizeof empty_key, &d), STORE_ERR_INVALID);
    /* put with a range flag */
    const uint8_t bad_flag[] = {1, STORE_CMD_PUT, STORE_FLAG_KEYS_ONLY, 1, 'k', 0, 0};
    assert_int_equal(store_cmd_decode(bad_flag, sizeof bad_flag, &d), STORE_ERR_INVALID);
    /* a non-canonical varint (lease 0 as 0x80 0x00) */
    const uint8_t overlong[] = {1, STORE_CMD_PUT, 0, 1, 'k', 0, 0x80, 0x00};
    assert_int_equal(store_cmd_decode(overlong, sizeof overlong, &d), STORE_ERR_INVALID);
    /* grant with ttl 0, revoke of id 0, compact to 0 */
    const uint8_t ttl0[] = {1, STORE_CMD_LEASE_GRANT, 1, 0};
    assert_int_equal(store_cmd_decode(ttl0, sizeof ttl0, &d), STORE_ERR_INVALID);
    const uint8_t rev0[] = {1, STORE_CMD_LEASE_REVOKE, 0};
    assert_int_equal(store_cmd_decode(rev0, sizeof rev0, &d), STORE_ERR_INVALID);
    const uint8_t cmp0[] = {1, STORE_CMD_COMPACT, 0};
    assert_int_equal(store_cmd_decode(cmp0, sizeof cmp0, &d), STORE_ERR_INVALID);
    /* an EXISTS compare with GREATER */
    const uint8_t exists_gt[] = {
        1, STORE_CMD_TXN, 1, STORE_CMP_EXISTS, STORE_CMP_GREATER, 1, 'k', 0, 0};
    assert_int_equal(store_cmd_decode(exists_gt, sizeof exists_gt, &d), STORE_ERR_INVALID);
    /* a count larger than the bytes behind it */
    const uint8_t many[] = {1, STORE_CMD_TXN, 100, 0};
    assert_int_equal(store_cmd_decode(many, sizeof many, &d), STORE_ERR_TRUNCATED);
    /* more ops than a branch may hold */
    const uint8_t too_many[] = {1, STORE_CMD_TXN, 0, 0x81, 0x01};
    assert_int_equal(store_cmd_decode(too_many, sizeof too_many, &d), STORE_ERR_TOO_LARGE);

    /* a key one byte over the limit; a value one byte over */
    static uint8_t big[STORE_MAX_VALUE + 64];
    memset(big, 'x', sizeof big);
    store_cmd c = {.type = STORE_CMD_PUT,
                   .op = {.type = STORE_CMD_PUT, .key = sbn(big, STORE_MAX_KEY + 1)}};
    assert_int_equal(store_cmd_check(&c), STORE_ERR_TOO_LARGE);
    c.op.key.len = STORE_MAX_KEY;
    c.op.value = sbn(big, STORE_MAX_VALUE + 1);
    assert_int_equal(store_cmd_check(&c), STORE_ERR_TOO_LARGE);
    c.op.value.len = STORE_MAX_VALUE;
    static uint8_t enc[STORE_MAX_COMMAND];
    size_t len;
    assert_int_equal(store_cmd_encode(&c, enc, sizeof enc, &len), STORE_OK);
    assert_int_equal(store_cmd_decode(enc, len, &d), STORE_OK);
    assert_int_equal(d.op.value.len, STORE_MAX_VALUE);
    store_cmd_release(&d);
    /* the same bytes with the value length raised by one (and one byte more) */
    assert_int_equal(store_cmd_encode(&c, enc, sizeof enc, &len), STORE_OK);
    assert_int_equal(store_cmd_decode(enc, STORE_MAX_COMMAND + 1, &d), STORE_ERR_TOO_LARGE);

    /* a store rejects what the decoder rejects, changing nothing */
    store_t *s = fresh();
    store_result r;
    assert_int_equal(store_apply(s, empty_key, sizeof empty_key, &r), STORE_ERR_INVALID);
    store_result_release(&r);
    assert_int_equal(store_revision(s), 0);
    store_free(s);
    assert_string_equal(store_strerror(STORE_ERR_COMPACTED), "compacted");
    assert_string_equal(store_strerror(-1000), "unknown error");
    /* every code has its own name for the NIF to hand out */
    assert_string_equal(store_err_name(STORE_ERR_LEASE_NOT_FOUND), "lease_not_found");
    assert_string_equal(store_err_name(-1000), "unknown");
    for (int a = STORE_OK; a >= STORE_ERR_CORRUPT; a--) {
        assert_string_not_equal(store_err_name(a), "unknown");
        for (int b = a - 1; b >= STORE_ERR_CORRUPT; b--)
            assert_string_not_equal(store_err_name(a), store_err_name(b));
    }
}

/* ---- snapshots ---- */

static store_t *sample_store(void)
{
    store_config cfg;
    store_config_init(&cfg);
    cfg.history_max_events = 20;
    store_t *s = store_new(&cfg, NULL);
    assert_int_equal(do_grant(s, 0, 3000, NULL), STORE_OK);
    assert_int_equal(do_grant(s, 10, 500, NULL), STORE_OK);
    for (int i = 0; i < 30; i++) {
        char key[16], value[16];
        snprintf(key, sizeof key, "key/%02d", i % 12);
        snprintf(value, sizeof value, "v%d", i);
        assert_int_equal(do_put(s, key, value, i % 3 == 0 ? 1 : (i % 5 == 0 ? 10 : 0)), STORE_OK);
    }
    assert_int_equal(do_delete(s, "key/03", "key/05", NULL), STORE_OK);
    return s;
}

static void test_snapshot_roundtrip(void **state)
{
    (void)state;
    store_t *s = sample_store();
    size_t len;
    uint8_t *snap = snapshot_of(s, &len);
    int err = 1;
    store_t *t = store_restore(snap, len, &err);
    assert_non_null(t);
    assert_int_equal(err, STORE_OK);
    size_t len2;
    uint8_t *snap2 = snapshot_of(t, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(snap, snap2, len);
    store_stats a, b;
    store_stats_get(s, &a);
    store_stats_get(t, &b);
    assert_int_equal(a.revision, b.revision);
    assert_int_equal(a.compact_revision, b.compact_revision);
    assert_int_equal(a.keys, b.keys);
    assert_int_equal(a.events, b.events);
    assert_int_equal(a.history_bytes, b.history_bytes);
    assert_int_equal(a.next_lease_id, b.next_lease_id);
    /* the same commands afterwards leave both in the same state */
    for (store_t *x = s; x; x = x == s ? t : NULL) {
        assert_int_equal(do_revoke(x, 1), STORE_OK);
        assert_int_equal(do_put(x, "key/99", "z", 10), STORE_OK);
        assert_int_equal(do_grant(x, 0, 1, NULL), STORE_OK);
    }
    free(snap);
    free(snap2);
    snap = snapshot_of(s, &len);
    snap2 = snapshot_of(t, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(snap, snap2, len);
    free(snap);
    free(snap2);
    store_free(s);
    store_free(t);
}

static void reseal(uint8_t *snap, size_t len)
{
    crypto_generichash(snap + len - 16, 16, snap, len - 16, NULL, 0);
}

static void test_snapshot_corrupt_refused(void **state)
{
    (void)state;
    store_t *s = sample_store();
    size_t len;
    uint8_t *snap = snapshot_of(s, &len);
    int err;
    /* every truncation */
    for (size_t cut = 0; cut < len; cut++) {
        assert_null(store_restore(snap, cut, &err));
        assert_int_not_equal(err, STORE_OK);
    }
    /* every single bit flip (one per byte) */
    for (size_t i = 0; i < len; i++) {
        snap[i] ^= (uint8_t)(1u << (i % 8));
        assert_null(store_restore(snap, len, &err));
        snap[i] ^= (uint8_t)(1u << (i % 8));
    }
    snap[4] = 9;
    assert_null(store_restore(snap, len, &err));
    assert_int_equal(err, STORE_ERR_VERSION);
    snap[4] = STORE_SNAPSHOT_VERSION;
    /* a correctly sealed snapshot whose content breaks an invariant: the
     * revision (after the config) lowered below the keys' revisions */
    uint8_t *bad = malloc(len);
    memcpy(bad, snap, len);
    size_t at = 5;
    while (bad[at] & 0x80) /* max events */
        at++;
    at++;
    while (bad[at] & 0x80) /* max bytes */
        at++;
    at += 2; /* prev_kv flag; now the revision (a one-byte varint here) */
    assert_true(bad[at] < 0x80 && bad[at] > 2);
    bad[at] = 2;
    reseal(bad, len);
    assert_null(store_restore(bad, len, &err));
    assert_int_equal(err, STORE_ERR_CORRUPT);
    /* sealed again untouched, it is accepted */
    memcpy(bad, snap, len);
    reseal(bad, len);
    store_t *t = store_restore(bad, len, &err);
    assert_non_null(t);
    store_free(t);
    free(bad);
    free(snap);
    store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_bumps_revision_and_version),
        cmocka_unit_test(test_delete_single_and_range),
        cmocka_unit_test(test_range_prefix_limit_count),
        cmocka_unit_test(test_prefix_end),
        cmocka_unit_test(test_txn_compares),
        cmocka_unit_test(test_txn_count_compare),
        cmocka_unit_test(test_delete_first),
        cmocka_unit_test(test_txn_is_one_revision_and_ops_see_earlier_writes),
        cmocka_unit_test(test_txn_refusals_change_nothing),
        cmocka_unit_test(test_leases),
        cmocka_unit_test(test_history_resume_and_compaction),
        cmocka_unit_test(test_history_byte_bound),
        cmocka_unit_test(test_decoder_roundtrip_and_truncation),
        cmocka_unit_test(test_decoder_rejections),
        cmocka_unit_test(test_snapshot_roundtrip),
        cmocka_unit_test(test_snapshot_corrupt_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
