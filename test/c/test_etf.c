/*
 * test_etf.c — cmocka tests for the external term format validator
 * (c_src/etf.[ch]). test/vectors/etf.txt holds real term_to_binary output
 * (scripts/gen_etf_vectors.escript) for every kind of term.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etf.h"
#include "support_hex.h"

#define VECTORS "test/vectors/etf.txt"
#define MAX_TERM 8192

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = support_unhex(hex, out, cap);
    assert_true(n != SIZE_MAX);
    return n;
}

/* Every real term passes; every strict prefix of it fails (never reads past
 * the end: the ASan build of this test would catch it); a byte appended is
 * trailing garbage. */
static void test_real_terms_and_their_truncations(void **state)
{
    (void)state;
    FILE *f = fopen(VECTORS, "r");
    assert_non_null(f);
    static char line[2 * MAX_TERM + 128];
    static uint8_t term[MAX_TERM + 1];
    int seen = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#')
            continue;
        char label[64], hex[2 * MAX_TERM + 1];
        assert_int_equal(sscanf(line, "%63s %16384s", label, hex), 2);
        size_t len = unhex(hex, term, MAX_TERM);
        if (etf_check_message(term, len, ETF_DEFAULT_MAX_DEPTH) != ETF_OK)
            fail_msg("real term %s rejected", label);
        for (size_t cut = 0; cut < len; cut++) {
            /* a private copy of exactly `cut` bytes, so ASan sees any overread */
            uint8_t *prefix = malloc(cut ? cut : 1);
            memcpy(prefix, term, cut);
            etf_error e = etf_check_message(prefix, cut, ETF_DEFAULT_MAX_DEPTH);
            free(prefix);
            if (e == ETF_OK)
                fail_msg("%s cut to %zu of %zu bytes was accepted", label, cut, len);
        }
        term[len] = 0;
        assert_int_equal(etf_check_message(term, len + 1, ETF_DEFAULT_MAX_DEPTH), ETF_ETRAILING);
        seen++;
    }
    fclose(f);
    assert_true(seen >= 28);
}

static void test_specific_errors(void **state)
{
    (void)state;
    const uint8_t wrong_version[] = {130, 97, 1};
    assert_int_equal(etf_check_message(wrong_version, sizeof wrong_version, 8), ETF_EVERSION);
    const uint8_t unknown_tag[] = {131, 200};
    assert_int_equal(etf_check_message(unknown_tag, sizeof unknown_tag, 8), ETF_EBADTAG);
    const uint8_t compressed[] = {131, 80, 0, 0, 0, 1, 0};
    assert_int_equal(etf_check_message(compressed, sizeof compressed, 8), ETF_EBADTAG);
    /* a binary claiming 4 GiB in a 10-byte buffer */
    const uint8_t huge_binary[] = {131, 109, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4};
    assert_int_equal(etf_check_message(huge_binary, sizeof huge_binary, 8), ETF_ETRUNCATED);
    /* a tuple of 2^32-1 elements: fails fast as truncated */
    const uint8_t huge_tuple[] = {131, 105, 0xff, 0xff, 0xff, 0xff, 106, 106};
    assert_int_equal(etf_check_message(huge_tuple, sizeof huge_tuple, 8), ETF_ETRUNCATED);
    /* a pid whose node is not an atom */
    const uint8_t bad_pid[] = {131, 88, 97, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(etf_check_message(bad_pid, sizeof bad_pid, 8), ETF_EBADTAG);
    /* a reference with 9 id words */
    const uint8_t bad_ref[] = {131, 90, 0, 9, 119, 1, 'a', 0, 0, 0, 0};
    assert_int_equal(etf_check_message(bad_ref, sizeof bad_ref, 8), ETF_EBADVALUE);
    /* a big with sign byte 7 */
    const uint8_t bad_sign[] = {131, 110, 1, 7, 1};
    assert_int_equal(etf_check_message(bad_sign, sizeof bad_sign, 8), ETF_EBADVALUE);
    /* a fun whose size is smaller than its own size field */
    const uint8_t bad_fun[] = {131, 112, 0, 0, 0, 2};
    assert_int_equal(etf_check_message(bad_fun, sizeof bad_fun, 8), ETF_EBADVALUE);
    /* A fun whose size fits the buffer but whose module atom claims more
     * bytes than the fun holds: ei_skip_term would read past the end (the
     * C node's fuzzer found it), so the walk must refuse it. */
    static const uint8_t fun_field_overrun[] = {131, 112, 0,  0, 0, 32, 0, /* size 32, arity 0 */
                                                0,   0,   0,  0, 0, 0,  0, 0,
                                                0,   0,   0,  0, 0, 0,  0, 0, /* uniq */
                                                0,   0,   0,  0,              /* index */
                                                0,   0,   0,  0,              /* no free vars */
                                                100, 0,   200}; /* ATOM_EXT, 200 bytes */
    assert_int_not_equal(etf_check_message(fun_field_overrun, sizeof fun_field_overrun, 8), ETF_OK);
    assert_int_equal(etf_check_message(NULL, 0, 8), ETF_ETRUNCATED);
    assert_string_equal(etf_strerror(ETF_ETRAILING), "bytes after the term");
}

static void test_depth_limit(void **state)
{
    (void)state;
    /* {{{...{a}...}}} nested 100 deep */
    uint8_t buf[1 + 2 * 100 + 3];
    size_t n = 0;
    buf[n++] = 131;
    for (int i = 0; i < 100; i++) {
        buf[n++] = 104;
        buf[n++] = 1;
    }
    buf[n++] = 119;
    buf[n++] = 1;
    buf[n++] = 'a';
    assert_int_equal(etf_check_message(buf, n, 64), ETF_EDEPTH);
    assert_int_equal(etf_check_message(buf, n, 101), ETF_OK);
}

static void test_check_term_moves_the_index(void **state)
{
    (void)state;
    /* two terms back to back: 7, then [] */
    const uint8_t two[] = {97, 7, 106};
    size_t at = 0;
    assert_int_equal(etf_check_term(two, sizeof two, &at, 8), ETF_OK);
    assert_int_equal(at, 2);
    assert_int_equal(etf_check_term(two, sizeof two, &at, 8), ETF_OK);
    assert_int_equal(at, 3);
    assert_int_equal(etf_check_term(two, sizeof two, &at, 8), ETF_ETRUNCATED);
    at = 99;
    assert_int_equal(etf_check_term(two, sizeof two, &at, 8), ETF_ETRUNCATED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_terms_and_their_truncations),
        cmocka_unit_test(test_specific_errors),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_check_term_moves_the_index),
    };
    return cmocka_run_group_tests_name("etf", tests, NULL, NULL);
}
