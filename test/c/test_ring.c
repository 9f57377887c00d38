/*
 * test_ring.c — cmocka tests for the hash ring core (c_src/ring.[ch]).
 *
 * The shared vectors in test/vectors/ring.txt come from an independent Python
 * implementation (scripts/gen_ring_vectors.py); the Elixir tests check the
 * same file through the NIF, so both answer alike.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"
#include "support_hex.h"

#define VECTORS "test/vectors/ring.txt"
#define MAX_MEMBERS 16
#define MAX_BYTES 512

static const uint8_t *default_seed(void)
{
    return (const uint8_t *)RING_DEFAULT_SEED;
}

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = support_unhex(hex, out, cap);
    assert_true(n != SIZE_MAX);
    return n;
}

typedef struct vector_ring {
    uint32_t vnodes;
    uint8_t seed[RING_SEED_BYTES];
    size_t count;
    uint8_t names[MAX_MEMBERS][MAX_BYTES];
    size_t name_len[MAX_MEMBERS];
    uint32_t weight[MAX_MEMBERS];
} vector_ring;

static ring_t *build_vector_ring(const vector_ring *v, int reversed)
{
    ring_member_spec specs[MAX_MEMBERS];
    for (size_t i = 0; i < v->count; i++) {
        size_t from = reversed ? v->count - 1 - i : i;
        specs[i] = (ring_member_spec){v->names[from], v->name_len[from], v->weight[from], 0};
    }
    ring_t *r = NULL;
    assert_int_equal(ring_build(&r, specs, v->count, v->vnodes, v->seed, NULL), RING_OK);
    return r;
}

static void assert_member_is(const ring_t *r, uint32_t index, const uint8_t *name, size_t len)
{
    size_t got_len;
    const uint8_t *got = ring_member_name(r, index, &got_len);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, name, len);
}

/* Checks one `key` line against both rings (given order and reversed order). */
static void check_key_line(ring_t *const rings[2], size_t members, char *line)
{
    char *key_hex = strtok(line, " \n");
    char *owner_hex = strtok(NULL, " \n");
    char *prefs_hex = strtok(NULL, " \n");
    assert_non_null(prefs_hex);
    uint8_t key[MAX_BYTES], owner[MAX_BYTES], pref[MAX_MEMBERS][MAX_BYTES];
    size_t key_len = unhex(key_hex, key, sizeof key);
    size_t owner_len = unhex(owner_hex, owner, sizeof owner);
    size_t pref_len[MAX_MEMBERS], npref = 0;
    for (char *p = strtok(prefs_hex, ","); p; p = strtok(NULL, ","))
        pref_len[npref] = unhex(p, pref[npref], MAX_BYTES), npref++;
    assert_int_equal(npref, members);

    for (int k = 0; k < 2; k++) {
        assert_member_is(rings[k], ring_lookup(rings[k], key, key_len), owner, owner_len);
        uint32_t got[MAX_MEMBERS + 2];
        /* every prefix length, and more than there are members */
        for (size_t n = 1; n <= members + 2; n++) {
            size_t wrote = ring_owners(rings[k], key, key_len, got, n);
            assert_int_equal(wrote, n < members ? n : members);
            for (size_t i = 0; i < wrote; i++)
                assert_member_is(rings[k], got[i], pref[i], pref_len[i]);
        }
    }
}

static void test_shared_vectors(void **state)
{
    (void)state;
    FILE *f = fopen(VECTORS, "r");
    assert_non_null(f);
    static vector_ring v;
    ring_t *rings[2] = {NULL, NULL};
    char line[8192];
    size_t rings_seen = 0, keys_seen = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        if (strncmp(line, "ring ", 5) == 0) {
            memset(&v, 0, sizeof v);
            char seed_hex[64];
            assert_int_equal(sscanf(line, "ring %u %63s", &v.vnodes, seed_hex), 2);
            assert_int_equal(unhex(seed_hex, v.seed, sizeof v.seed), RING_SEED_BYTES);
        } else if (strncmp(line, "member ", 7) == 0) {
            char name_hex[2 * MAX_BYTES + 1];
            assert_true(v.count < MAX_MEMBERS);
            assert_int_equal(sscanf(line, "member %1024s %u", name_hex, &v.weight[v.count]), 2);
            v.name_len[v.count] = unhex(name_hex, v.names[v.count], MAX_BYTES);
            v.count++;
        } else if (strncmp(line, "key ", 4) == 0) {
            if (rings[0] == NULL) {
                rings[0] = build_vector_ring(&v, 0);
                rings[1] = build_vector_ring(&v, 1);
            }
            check_key_line(rings, v.count, line + 4);
            keys_seen++;
        } else if (strncmp(line, "end", 3) == 0) {
            ring_free(rings[0]);
            ring_free(rings[1]);
            rings[0] = rings[1] = NULL;
            rings_seen++;
        } else {
            fail_msg("unparsable vector line: %s", line);
        }
    }
    fclose(f);
    assert_int_equal(rings_seen, 6);
    assert_true(keys_seen >= 6 * 90);
}

/* SipHash-2-4 reference vector from the paper: key 00..0f, message 00..0e. */
static void test_hash_is_siphash24(void **state)
{
    (void)state;
    uint8_t seed[RING_SEED_BYTES], msg[15];
    for (int i = 0; i < 16; i++)
        seed[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        msg[i] = (uint8_t)i;
    ring_member_spec m = {(const uint8_t *)"x", 1, 1, 0};
    ring_t *r = NULL;
    assert_int_equal(ring_build(&r, &m, 1, 1, seed, NULL), RING_OK);
    assert_int_equal(ring_hash(r, msg, sizeof msg), 0xa129ca6149be45e5ull);
    ring_free(r);
}

static ring_t *node_ring(unsigned first, unsigned count, uint32_t vnodes)
{
    static char names[64][32];
    ring_member_spec specs[64];
    for (unsigned i = 0; i < count; i++) {
        int n = snprintf(names[i], sizeof names[i], "node%u@127.0.0.1", first + i);
        specs[i] = (ring_member_spec){(const uint8_t *)names[i], (size_t)n, 1, i};
    }
    ring_t *r = NULL;
    assert_int_equal(ring_build(&r, specs, count, vnodes, default_seed(), NULL), RING_OK);
    return r;
}

static void test_rejects_bad_members(void **state)
{
    (void)state;
    ring_t *r = NULL;
    size_t bad = 99;
    const uint8_t *seed = default_seed();
    ring_member_spec ok = {(const uint8_t *)"a", 1, 1, 0};
    assert_int_equal(ring_build(&r, &ok, 0, 8, seed, &bad), RING_ENOMEMBERS);
    assert_int_equal(ring_build(&r, &ok, 1, 0, seed, &bad), RING_EVNODES);
    assert_int_equal(ring_build(&r, &ok, 1, RING_MAX_VNODES + 1, seed, &bad), RING_EVNODES);

    ring_member_spec zero[] = {{(const uint8_t *)"a", 1, 1, 0}, {(const uint8_t *)"b", 1, 0, 1}};
    assert_int_equal(ring_build(&r, zero, 2, 8, seed, &bad), RING_EWEIGHT);
    assert_int_equal(bad, 1);

    ring_member_spec dup[] = {{(const uint8_t *)"b", 1, 1, 0},
                              {(const uint8_t *)"a", 1, 1, 1},
                              {(const uint8_t *)"b", 1, 2, 2}};
    assert_int_equal(ring_build(&r, dup, 3, 8, seed, &bad), RING_EDUPLICATE);
    assert_int_equal(bad, 2);

    uint8_t long_name[RING_MAX_NAME + 1];
    memset(long_name, 'n', sizeof long_name);
    ring_member_spec too_long = {long_name, sizeof long_name, 1, 0};
    assert_int_equal(ring_build(&r, &too_long, 1, 8, seed, &bad), RING_ENAME);
    ring_member_spec empty = {(const uint8_t *)"", 0, 1, 0};
    assert_int_equal(ring_build(&r, &empty, 1, 8, seed, &bad), RING_ENAME);

    ring_member_spec heavy = {(const uint8_t *)"h", 1, RING_MAX_WEIGHT, 0};
    assert_int_equal(ring_build(&r, &heavy, 1, RING_MAX_VNODES, seed, &bad), RING_EPOINTS);
    assert_null(r);
    assert_string_equal(ring_strerror(RING_EDUPLICATE), "duplicate member");
}

static void test_members_sorted_and_tagged(void **state)
{
    (void)state;
    ring_member_spec specs[] = {{(const uint8_t *)"cc", 2, 3, 7},
                                {(const uint8_t *)"a", 1, 1, 8},
                                {(const uint8_t *)"c", 1, 2, 9}};
    ring_t *r = NULL;
    assert_int_equal(ring_build(&r, specs, 3, 10, default_seed(), NULL), RING_OK);
    assert_int_equal(ring_member_count(r), 3);
    assert_int_equal(ring_point_count(r), 60);
    assert_member_is(r, 0, (const uint8_t *)"a", 1);
    assert_member_is(r, 1, (const uint8_t *)"c", 1);
    assert_member_is(r, 2, (const uint8_t *)"cc", 2);
    assert_int_equal(ring_member_tag(r, 0), 8);
    assert_int_equal(ring_member_weight(r, 2), 3);
    assert_int_equal(ring_find_member(r, (const uint8_t *)"c", 1), 1);
    assert_int_equal(ring_find_member(r, (const uint8_t *)"b", 1), -1);
    ring_free(r);
}

static void test_owners_distinct_and_start_with_owner(void **state)
{
    (void)state;
    ring_t *r = node_ring(1, 7, 64);
    uint32_t out[8];
    for (uint32_t k = 0; k < 5000; k++) {
        size_t n = ring_owners(r, &k, sizeof k, out, 8);
        assert_int_equal(n, 7);
        assert_int_equal(out[0], ring_lookup(r, &k, sizeof k));
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                assert_int_not_equal(out[i], out[j]);
    }
    assert_int_equal(ring_owners(r, "k", 1, out, 0), 0);
    ring_free(r);
}

/* A large preference list takes the bitmap path; it must agree with the
 * linear path on its first entries. */
static void test_owners_bitmap_path_agrees(void **state)
{
    (void)state;
    ring_t *r = node_ring(1, 40, 16);
    uint32_t small[16], big[40];
    for (uint32_t k = 0; k < 2000; k++) {
        assert_int_equal(ring_owners(r, &k, sizeof k, small, 16), 16);
        assert_int_equal(ring_owners(r, &k, sizeof k, big, 40), 40);
        assert_memory_equal(small, big, sizeof small);
    }
    ring_free(r);
}

static void test_shares_sum_to_one(void **state)
{
    (void)state;
    ring_t *r = node_ring(1, 16, 32);
    double shares[16], sum = 0;
    ring_shares(r, shares);
    for (int i = 0; i < 16; i++) {
        assert_true(shares[i] > 0);
        sum += shares[i];
    }
    assert_true(sum > 0.999999 && sum < 1.000001);
    ring_free(r);
}

/* With the default settings, 16 members: peak/mean share <= 1.06. */
static void test_default_balance(void **state)
{
    (void)state;
    ring_t *r = node_ring(1, 16, RING_DEFAULT_VNODES);
    double shares[16], peak = 0;
    ring_shares(r, shares);
    for (int i = 0; i < 16; i++)
        peak = shares[i] > peak ? shares[i] : peak;
    double ratio = peak * 16;
    print_message("balance, 16 members, %d vnodes: peak/mean %.4f\n", RING_DEFAULT_VNODES, ratio);
    assert_true(ratio <= 1.06);
    ring_free(r);
}

/* Consistency: adding a member moves keys only to it, removing one moves only
 * its keys, and about 1/17 of keys move when a 17th member joins. */
static void test_minimal_movement(void **state)
{
    (void)state;
    ring_t *before = node_ring(1, 16, RING_DEFAULT_VNODES);
    ring_t *after = node_ring(1, 17, RING_DEFAULT_VNODES);
    int32_t newcomer = ring_find_member(after, (const uint8_t *)"node17@127.0.0.1", 16);
    assert_true(newcomer >= 0);
    const uint32_t keys = 200000;
    uint32_t moved = 0;
    for (uint32_t k = 0; k < keys; k++) {
        size_t l1, l2;
        const uint8_t *a = ring_member_name(before, ring_lookup(before, &k, sizeof k), &l1);
        uint32_t owner_after = ring_lookup(after, &k, sizeof k);
        const uint8_t *b = ring_member_name(after, owner_after, &l2);
        if (l1 != l2 || memcmp(a, b, l1) != 0) {
            moved++;
            assert_int_equal(owner_after, (uint32_t)newcomer);
        }
    }
    double fraction = (double)moved / keys;
    print_message("keys moved by a 17th member: %.4f (1/17 = %.4f)\n", fraction, 1.0 / 17);
    assert_true(fraction <= 1.1 / 17);
    assert_true(fraction >= 0.9 / 17);
    ring_free(before);
    ring_free(after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_vectors),
        cmocka_unit_test(test_hash_is_siphash24),
        cmocka_unit_test(test_rejects_bad_members),
        cmocka_unit_test(test_members_sorted_and_tagged),
        cmocka_unit_test(test_owners_distinct_and_start_with_owner),
        cmocka_unit_test(test_owners_bitmap_path_agrees),
        cmocka_unit_test(test_shares_sum_to_one),
        cmocka_unit_test(test_default_balance),
        cmocka_unit_test(test_minimal_movement),
    };
    return cmocka_run_group_tests_name("ring", tests, NULL, NULL);
}
