/* test_witness_store.c -- the witness's durable state (cnode/witness_store.c)
 * on real files: round trip, torn tails (cut short, a bad last record,
 * zero-filled), mid-file corruption refused and left untouched, the lock
 * file, snapshots, compaction and the rewrite that shrinks the file. */
#define _DEFAULT_SOURCE /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "witness_store.h"

static char why[256];

static char *tmpdir(void)
{
    char *d = strdup("/tmp/synod_wstore_XXXXXX");
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

static void rm_rf(char *d)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    free(d);
}

static wstore *open_ok(const char *dir)
{
    wstore *ws = NULL;
    int rc = wstore_open(dir, "g1", &ws, why, sizeof why);
    if (rc != WSTORE_OK)
        print_error("open: %s\n", why);
    assert_int_equal(rc, WSTORE_OK);
    return ws;
}

static const uint8_t conf_bytes[] = {4, 3, 1, 2, 3, 0}; /* opaque to the store */

/* A Ready with entries [first, first + n) of `term` (the first a conf entry
 * if first == 1) and a hard state. */
static void write_batch(wstore *ws, uint64_t first, size_t n, uint64_t term, uint64_t commit)
{
    raft_entry e[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++) {
        e[i] = (raft_entry){.term = term,
                            .index = first + i,
                            .type = RAFT_ENTRY_NORMAL,
                            .data = (const uint8_t *)"payload",
                            .len = 7};
        if (first + i == 1) {
            e[i].type = RAFT_ENTRY_CONF;
            e[i].data = conf_bytes;
            e[i].len = sizeof conf_bytes;
        }
    }
    raft_ready_t rd;
    memset(&rd, 0, sizeof rd);
    rd.entries = e;
    rd.n_entries = n;
    rd.hard_state_changed = true;
    rd.hard_state = (raft_hard_state){.term = term, .vote = 1, .commit = commit};
    rd.must_sync = true;
    assert_int_equal(wstore_write_ready(ws, &rd), WSTORE_OK);
    assert_int_equal(wstore_sync(ws), WSTORE_OK);
}

static void expect_state(wstore *ws, uint64_t snap, uint64_t last, uint64_t term, uint64_t commit)
{
    raft_hard_state hs;
    raft_snapshot s;
    const raft_entry *e;
    size_t n;
    wstore_state(ws, &hs, &s, &e, &n);
    assert_int_equal(s.index, snap);
    assert_int_equal(snap + n, last);
    assert_int_equal(hs.term, term);
    assert_int_equal(hs.commit, commit);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(e[i].index, snap + 1 + i);
        if (e[i].type == RAFT_ENTRY_CONF) {
            assert_int_equal(e[i].len, sizeof conf_bytes);
            assert_memory_equal(e[i].data, conf_bytes, sizeof conf_bytes);
        } else {
            assert_int_equal(e[i].len, 0); /* no bytes of normal entries */
        }
    }
}

static char *wal_path(const char *dir)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/g1.wal", dir);
    return p;
}

static long file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (long)st.st_size;
}

static void test_round_trip(void **state)
{
    (void)state;
    char *d = tmpdir();
    wstore *ws = open_ok(d);
    expect_state(ws, 0, 0, 0, 0);
    write_batch(ws, 1, 3, 1, 1);
    write_batch(ws, 4, 2, 2, 3);
    write_batch(ws, 3, 2, 3, 3); /* replaces 3..5 by 3..4 of term 3 */
    expect_state(ws, 0, 4, 3, 3);
    wstore_close(ws);
    ws = open_ok(d);
    assert_int_equal(wstore_torn(ws), 0);
    expect_state(ws, 0, 4, 3, 3);
    raft_hard_state hs;
    raft_snapshot s;
    const raft_entry *e;
    size_t n;
    wstore_state(ws, &hs, &s, &e, &n);
    assert_int_equal(e[2].term, 3);
    assert_int_equal(e[1].term, 1);
    assert_int_equal(hs.vote, 1);
    wstore_close(ws);
    rm_rf(d);
}

static void test_torn_tail_truncated(void **state)
{
    (void)state;
    for (int cut = 1; cut <= 11; cut++) {
        char *d = tmpdir();
        wstore *ws = open_ok(d);
        write_batch(ws, 1, 3, 1, 1);
        long good = file_size(wal_path(d));
        write_batch(ws, 4, 5, 2, 2);
        wstore_close(ws);
        long full = file_size(wal_path(d));
        /* cut a few bytes, or keep the length but damage the last byte */
        if (cut <= 9) {
            assert_int_equal(truncate(wal_path(d), full - cut * 3), 0);
        } else {
            FILE *f = fopen(wal_path(d), "r+b");
            assert_non_null(f);
            fseek(f, full - 1, SEEK_SET);
            fputc(0x5a ^ cut, f);
            fclose(f);
        }
        ws = open_ok(d);
        assert_true(wstore_torn(ws) > 0);
        /* the second batch's entries record (written last) is gone; its
         * hard state (written first) stays, its commit clamped to the log */
        long now = file_size(wal_path(d));
        assert_true(now > good && now < full);
        assert_int_equal(now, (cut <= 9 ? full - cut * 3 : full) - (long)wstore_torn(ws));
        expect_state(ws, 0, 3, 2, 2);
        write_batch(ws, 4, 1, 2, 4); /* writing goes on after the cut */
        wstore_close(ws);
        ws = open_ok(d);
        assert_int_equal(wstore_torn(ws), 0);
        expect_state(ws, 0, 4, 2, 4);
        wstore_close(ws);
        rm_rf(d);
    }
}

static void test_zero_filled_tail_is_torn(void **state)
{
    (void)state;
    char *d = tmpdir();
    wstore *ws = open_ok(d);
    write_batch(ws, 1, 2, 1, 1);
    long good = file_size(wal_path(d));
    wstore_close(ws);
    FILE *f = fopen(wal_path(d), "ab");
    assert_non_null(f);
    for (int i = 0; i < 4096; i++)
        fputc(0, f);
    fclose(f);
    ws = open_ok(d);
    assert_int_equal(wstore_torn(ws), 4096);
    assert_int_equal(file_size(wal_path(d)), good);
    expect_state(ws, 0, 2, 1, 1);
    wstore_close(ws);
    rm_rf(d);
}

static void test_mid_file_corruption_refused(void **state)
{
    (void)state;
    /* Damage each byte of the first record in turn: every one is refused
     * (or, for the length field, read as an impossible record) and the file
     * is left as it was. */
    char *d = tmpdir();
    wstore *ws = open_ok(d);
    write_batch(ws, 1, 3, 1, 1);
    long first_end = file_size(wal_path(d));
    write_batch(ws, 4, 3, 2, 2);
    wstore_close(ws);
    long full = file_size(wal_path(d));
    FILE *f = fopen(wal_path(d), "r+b");
    assert_non_null(f);
    for (long off = 8; off < first_end; off++) {
        fseek(f, off, SEEK_SET);
        int c = fgetc(f);
        fseek(f, off, SEEK_SET);
        fputc(c ^ 0x01, f);
        fflush(f);
        wstore *bad = NULL;
        int rc = wstore_open(d, "g1", &bad, why, sizeof why);
        if (rc != WSTORE_ERR_CORRUPT)
            print_error("byte %ld: rc %d (%s)\n", off, rc, why);
        assert_int_equal(rc, WSTORE_ERR_CORRUPT);
        assert_null(bad);
        assert_int_equal(file_size(wal_path(d)), full);
        fseek(f, off, SEEK_SET);
        fputc(c, f);
        fflush(f);
    }
    fclose(f);
    ws = open_ok(d); /* repaired: opens again */
    expect_state(ws, 0, 6, 2, 2);
    wstore_close(ws);
    rm_rf(d);
}

static void test_bad_magic_refused(void **state)
{
    (void)state;
    char *d = tmpdir();
    FILE *f = fopen(wal_path(d), "wb");
    assert_non_null(f);
    fputs("NOTAWITNESSLOG", f);
    fclose(f);
    wstore *ws = NULL;
    assert_int_equal(wstore_open(d, "g1", &ws, why, sizeof why), WSTORE_ERR_CORRUPT);
    assert_non_null(strstr(why, "magic"));
    assert_int_equal(file_size(wal_path(d)), 14);
    rm_rf(d);
}

static void test_lock_refuses_second_holder(void **state)
{
    (void)state;
    char *d = tmpdir();
    char sub[512];
    snprintf(sub, sizeof sub, "%s/data", d); /* created by the lock */
    int fd1 = -1, fd2 = -1;
    assert_int_equal(wstore_lock_dir(sub, &fd1, why, sizeof why), WSTORE_OK);
    assert_true(fd1 >= 0);
    assert_int_equal(wstore_lock_dir(sub, &fd2, why, sizeof why), WSTORE_ERR_LOCKED);
    assert_int_equal(fd2, -1);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(why, pid));
    /* another process is refused too */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        int fd = -1;
        char w[256];
        _exit(wstore_lock_dir(sub, &fd, w, sizeof w) == WSTORE_ERR_LOCKED ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    wstore_unlock_dir(fd1);
    assert_int_equal(wstore_lock_dir(sub, &fd2, why, sizeof why), WSTORE_OK);
    wstore_unlock_dir(fd2);
    rm_rf(d);
}

static void test_snapshot_compaction_and_rewrite(void **state)
{
    (void)state;
    char *d = tmpdir();
    wstore *ws = open_ok(d);
    uint64_t voters[3] = {1, 2, 3};
    /* a snapshot from the leader replaces the whole log */
    raft_snapshot s = {.index = 10, .term = 2, .voters = voters, .n_voters = 3};
    raft_ready_t rd;
    memset(&rd, 0, sizeof rd);
    rd.snapshot = &s;
    rd.hard_state_changed = true;
    rd.hard_state = (raft_hard_state){.term = 2, .vote = 0, .commit = 10};
    write_batch(ws, 1, 3, 1, 1);
    assert_int_equal(wstore_write_ready(ws, &rd), WSTORE_OK);
    assert_int_equal(wstore_sync(ws), WSTORE_OK);
    expect_state(ws, 10, 10, 2, 10);
    /* many batches and compactions: the file is rewritten and stays small */
    uint64_t last = 10;
    long peak = 0;
    for (int round = 0; round < 400; round++) {
        write_batch(ws, last + 1, 50, 3, last + 50);
        last += 50;
        raft_snapshot c = {.index = last - 5, .term = 3, .voters = voters, .n_voters = 3};
        assert_int_equal(wstore_compact(ws, &c), WSTORE_OK);
        long sz = file_size(wal_path(d));
        if (sz > peak)
            peak = sz;
    }
    assert_true(peak < 200 * 1024); /* 400 x 50 entries would be ~300 KiB unrewritten */
    expect_state(ws, last - 5, last, 3, last);
    wstore_close(ws);
    ws = open_ok(d);
    assert_int_equal(wstore_torn(ws), 0);
    expect_state(ws, last - 5, last, 3, last);
    raft_hard_state hs;
    raft_snapshot got;
    const raft_entry *e;
    size_t n;
    wstore_state(ws, &hs, &got, &e, &n);
    assert_int_equal(got.term, 3);
    assert_int_equal(got.n_voters, 3);
    assert_int_equal(got.voters[2], 3);
    /* compaction off the log is refused */
    raft_snapshot off = {.index = last + 7, .term = 3};
    assert_int_equal(wstore_compact(ws, &off), WSTORE_ERR_INVALID);
    wstore_close(ws);
    rm_rf(d);
}

static void test_group_names(void **state)
{
    (void)state;
    char *d = tmpdir();
    wstore *ws = NULL;
    assert_int_equal(wstore_open(d, "../x/y", &ws, why, sizeof why), WSTORE_OK);
    wstore_close(ws);
    char p[512];
    snprintf(p, sizeof p, "%s/%%2E.%%2Fx%%2Fy.wal", d);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(wstore_open(d, "", &ws, why, sizeof why), WSTORE_ERR_INVALID);
    rm_rf(d);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_torn_tail_truncated),
        cmocka_unit_test(test_zero_filled_tail_is_torn),
        cmocka_unit_test(test_mid_file_corruption_refused),
        cmocka_unit_test(test_bad_magic_refused),
        cmocka_unit_test(test_lock_refuses_second_holder),
        cmocka_unit_test(test_snapshot_compaction_and_rewrite),
        cmocka_unit_test(test_group_names),
    };
    return cmocka_run_group_tests_name("witness_store", tests, NULL, NULL);
}
