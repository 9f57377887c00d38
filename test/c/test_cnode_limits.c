/*
 * test_cnode_limits.c — cmocka tests for what the C node refuses before
 * decoding (cnode/request.c) and for the budget of its log lines about
 * dropped input (cnode/log.c).
 *
 * A refused call is still answered when its head, {'$gen_call', {Pid, Tag},,
 * can be read: request_parse_head reads only that head, bounded by the
 * buffer, and never the body that was refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <ei.h>

#include "etf.h"
#include "log.h"
#include "proto.h"
#include "request.h"

static void call_head(ei_x_buff *x)
{
    erlang_pid pid;
    erlang_ref ref;
    memset(&pid, 0, sizeof pid);
    memset(&ref, 0, sizeof ref);
    strcpy(pid.node, "t@127.0.0.1");
    strcpy(ref.node, "t@127.0.0.1");
    pid.num = 42;
    ref.len = 3;
    ref.n[0] = 7;
    assert_int_equal(ei_x_new_with_version(x), 0);
    assert_int_equal(proto_encode_call_begin(x, &pid, &ref), 0);
}

/* {'$gen_call', From, [[[...[]...]]]} nested `depth` lists deep. */
static void deep_call(ei_x_buff *x, int depth)
{
    call_head(x);
    for (int i = 0; i < depth; i++)
        ei_x_encode_list_header(x, 1);
    ei_x_encode_empty_list(x);
    for (int i = 0; i < depth; i++)
        ei_x_encode_empty_list(x);
}

static void assert_head_read(const ei_x_buff *x)
{
    request req;
    assert_int_equal(request_parse_head(x->buff, x->index, &req), 0);
    assert_string_equal(req.from.node, "t@127.0.0.1");
    assert_int_equal(req.from.num, 42);
    assert_int_equal(req.tag_start + req.tag_len, req.body_at);
    assert_true(req.tag_len > 0);
}

static void test_an_oversized_call_is_too_large_with_its_head_readable(void **state)
{
    (void)state;
    ei_x_buff x;
    size_t n = (size_t)REQUEST_MAX_BYTES + REQUEST_MAX_BYTES / 10;
    char *big = calloc(n, 1);
    assert_non_null(big);
    call_head(&x);
    ei_x_encode_binary(&x, big, (long)n);
    free(big);
    const char *why;
    assert_int_equal(request_validate(x.buff, x.index, REQUEST_MAX_BYTES, &why), REFUSED_TOO_LARGE);
    assert_string_equal(request_refusal_atom(REFUSED_TOO_LARGE), "too_large");
    assert_head_read(&x);
    ei_x_free(&x);
}

static void test_a_deep_call_is_too_deep_with_its_head_readable(void **state)
{
    (void)state;
    ei_x_buff x;
    deep_call(&x, ETF_DEFAULT_MAX_DEPTH + 36);
    const char *why;
    assert_int_equal(request_validate(x.buff, x.index, REQUEST_MAX_BYTES, &why), REFUSED_TOO_DEEP);
    assert_string_equal(request_refusal_atom(REFUSED_TOO_DEEP), "too_deep");
    assert_head_read(&x);
    ei_x_free(&x);

    deep_call(&x, ETF_DEFAULT_MAX_DEPTH - 4); /* within the limit */
    assert_int_equal(request_validate(x.buff, x.index, REQUEST_MAX_BYTES, &why), REFUSED_NONE);
    ei_x_free(&x);
}

static void test_a_malformed_body_is_bad_term(void **state)
{
    (void)state;
    ei_x_buff x;
    call_head(&x);
    ei_x_encode_atom(&x, "ping");
    x.buff[x.index - 6] = (char)255; /* the body's tag */
    const char *why;
    assert_int_equal(request_validate(x.buff, x.index, REQUEST_MAX_BYTES, &why), REFUSED_MALFORMED);
    assert_string_equal(request_refusal_atom(REFUSED_MALFORMED), "bad_term");
    assert_head_read(&x);
    ei_x_free(&x);
}

static void test_no_head_no_reply_address(void **state)
{
    (void)state;
    ei_x_buff x;
    request req;

    /* not a call */
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "not_a_call");
    ei_x_encode_atom(&x, "x");
    ei_x_encode_atom(&x, "y");
    assert_int_equal(request_parse_head(x.buff, x.index, &req), -1);
    ei_x_free(&x);

    /* every truncation of a call's head */
    call_head(&x);
    int head = x.index;
    for (int len = 0; len < head; len++)
        assert_int_equal(request_parse_head(x.buff, len, &req), -1);
    assert_int_equal(request_parse_head(x.buff, head, &req), 0);
    ei_x_free(&x);

    /* a From that is itself too deep to be a reply address */
    ei_x_new_with_version(&x);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "$gen_call");
    ei_x_encode_tuple_header(&x, 2);
    for (int i = 0; i < 10; i++)
        ei_x_encode_list_header(&x, 1);
    ei_x_encode_empty_list(&x);
    assert_int_equal(request_parse_head(x.buff, x.index, &req), -1);
    ei_x_free(&x);
}

static void test_log_budget_per_window(void **state)
{
    (void)state;
    log_limit l = {0};
    unsigned long ended, admitted = 0;
    long long t = 5000;
    for (int i = 0; i < 10000; i++) {
        admitted += (unsigned long)log_limit_admit(&l, t, &ended);
        assert_int_equal(ended, 0);
    }
    assert_int_equal(admitted, LOG_BURST);
    assert_int_equal(log_limit_expire(&l, t + LOG_WINDOW_MS - 1), 0); /* still open */
    assert_int_equal(log_limit_expire(&l, t + LOG_WINDOW_MS), 10000 - LOG_BURST);
    assert_int_equal(log_limit_expire(&l, t + 3 * LOG_WINDOW_MS), 0); /* reported once */

    /* a new window admits a burst again and reports the one before it */
    for (int i = 0; i < LOG_BURST + 3; i++)
        log_limit_admit(&l, t + 5 * LOG_WINDOW_MS, &ended);
    assert_int_equal(log_limit_admit(&l, t + 7 * LOG_WINDOW_MS, &ended), 1);
    assert_int_equal(ended, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_an_oversized_call_is_too_large_with_its_head_readable),
        cmocka_unit_test(test_a_deep_call_is_too_deep_with_its_head_readable),
        cmocka_unit_test(test_a_malformed_body_is_bad_term),
        cmocka_unit_test(test_no_head_no_reply_address),
        cmocka_unit_test(test_log_budget_per_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
