/* test_store_nomem.c -- a command is all-or-nothing even when malloc fails.
 *
 * This binary replaces malloc/calloc/realloc/free with thin wrappers over
 * glibc's own (__libc_*) that can be told to fail the n-th allocation. For
 * every command kind, it makes the 1st, 2nd, ... allocation fail until the
 * command goes through, and checks that each failure returned
 * STORE_ERR_NOMEM and left the snapshot bytes unchanged. It also fails every
 * allocation of a restore in turn. ASan owns malloc in the sanitized build,
 * so there the test is skipped (valgrind runs this binary instead: see
 * docs/store.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "support_store.h"

#ifndef SYNOD_SANITIZED
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

static long fail_countdown = -1; /* -1: never fail */
static long failures;
static long live; /* blocks allocated and not yet freed: a leak check */

static int should_fail(void)
{
    if (fail_countdown < 0)
        return 0;
    if (fail_countdown-- == 0) {
        failures++;
        return 1;
    }
    return 0;
}

static void *counted(void *p)
{
    if (p)
        live++;
    return p;
}

void *malloc(size_t size)
{
    return should_fail() ? NULL : counted(__libc_malloc(size));
}

void *calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : counted(__libc_calloc(n, size));
}

void *realloc(void *p, size_t size)
{
    if (should_fail())
        return NULL;
    return p ? __libc_realloc(p, size) : counted(__libc_realloc(p, size));
}

void free(void *p)
{
    if (p)
        live--;
    __libc_free(p);
}

static store_t *populated(void)
{
    store_config cfg;
    store_config_init(&cfg);
    cfg.history_max_events = 12;
    store_t *s = store_new(&cfg, NULL);
    assert_non_null(s);
    assert_int_equal(do_grant(s, 5, 1000, NULL), STORE_OK);
    /* 16 leases fill the table's first allocation: a grant must grow it */
    for (uint64_t id = 100; id < 115; id++)
        assert_int_equal(do_grant(s, id, 1000, NULL), STORE_OK);
    for (int i = 0; i < 40; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%02d", i);
        assert_int_equal(do_put(s, key, "value", i % 4 == 0 ? 5 : 0), STORE_OK);
    }
    return s;
}

static uint8_t *encoded(const store_cmd *c, size_t *len)
{
    size_t need = store_cmd_encoded_size(c);
    uint8_t *buf = malloc(need);
    assert_int_equal(store_cmd_encode(c, buf, need, len), STORE_OK);
    return buf;
}

/* Fails allocation 0, 1, 2, ... of applying `c` until it succeeds. */
static void fail_each_allocation(const store_cmd *c, int want_rc)
{
    long live_before = live;
    store_t *s = populated();
    size_t len, snap_len, now_len;
    uint8_t *cmd = encoded(c, &len);
    uint8_t *before = snapshot_of(s, &snap_len);
    long injected = 0;
    for (long k = 0;; k++) {
        store_result r;
        failures = 0;
        fail_countdown = k;
        int rc = store_apply(s, cmd, len, &r);
        fail_countdown = -1;
        if (failures == 0) {
            assert_int_equal(rc, want_rc);
            store_result_release(&r);
            break;
        }
        injected++;
        assert_int_equal(rc, STORE_ERR_NOMEM);
        assert_null(r.mem);
        uint8_t *now = snapshot_of(s, &now_len);
        assert_int_equal(now_len, snap_len);
        assert_memory_equal(now, before, snap_len);
        free(now);
    }
    assert_true(injected > 0);
    free(before);
    free(cmd);
    store_free(s);
    assert_int_equal(live, live_before);
}

static void test_every_command_is_atomic_under_nomem(void **state)
{
    (void)state;
    store_op ops[] = {put_op("k01", "new", 5, STORE_FLAG_PREV_KV), put_op("fresh", "v", 0, 0),
                      del_op("k10", "k20", STORE_FLAG_PREV_KV), range_op("k", "l", 0, 0)};
    store_cmd txn = {.type = STORE_CMD_TXN, .success = ops, .n_success = 4};
    store_cmd cmds[] = {
        {.type = STORE_CMD_PUT, .op = put_op("fresh", "v", 0, 0)},
        {.type = STORE_CMD_PUT, .op = put_op("k03", "v", 0, STORE_FLAG_PREV_KV)},
        {.type = STORE_CMD_DELETE, .op = del_op("k", "l", STORE_FLAG_PREV_KV)},
        {.type = STORE_CMD_RANGE, .op = range_op("k", "l", 5, 0)},
        txn,
        {.type = STORE_CMD_LEASE_GRANT, .lease_id = 0, .ttl_ms = 10},
        {.type = STORE_CMD_LEASE_REVOKE, .lease_id = 5},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        print_message("command %zu\n", i);
        fail_each_allocation(&cmds[i], STORE_OK);
    }
}

static void test_restore_fails_cleanly(void **state)
{
    (void)state;
    long live_before = live;
    store_t *s = populated();
    size_t len, len2;
    uint8_t *snap = snapshot_of(s, &len);
    long injected = 0;
    for (long k = 0;; k++) {
        int err = 0;
        failures = 0;
        fail_countdown = k;
        store_t *t = store_restore(snap, len, &err);
        fail_countdown = -1;
        if (failures == 0) {
            assert_non_null(t);
            uint8_t *again = snapshot_of(t, &len2);
            assert_memory_equal(again, snap, len);
            free(again);
            store_free(t);
            break;
        }
        injected++;
        assert_null(t);
        assert_int_equal(err, STORE_ERR_NOMEM);
    }
    assert_true(injected > 40); /* at least one per key */
    free(snap);
    store_free(s);
    assert_int_equal(live, live_before);
}
#else
static void test_every_command_is_atomic_under_nomem(void **state)
{
    (void)state;
    skip();
}

static void test_restore_fails_cleanly(void **state)
{
    (void)state;
    skip();
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_command_is_atomic_under_nomem),
        cmocka_unit_test(test_restore_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
