/* fuzz_store_machine.c -- libFuzzer harness for the store's state machine:
 * its command decoder + apply, and its snapshot reader. One harness (the
 * first byte picks the mode) so the test run fuzzes both in one time slot.
 *
 * Mode 0 (first byte even): the rest is one config byte, then commands, each
 * a 2-byte little-endian length and that many bytes, applied in turn to one
 * store. Properties: nothing crashes or leaks (ASan); a command the decoder
 * accepts re-encodes to exactly its bytes (the encoding is canonical); a
 * refused command leaves the revision alone; reads (ranges, watches, leases)
 * agree with the stats; the final state's snapshot restores to a store whose
 * snapshot is byte-identical.
 *
 * Mode 1 (first byte odd): the rest is a snapshot, tried as it is (almost
 * always refused by the checksum) and with a correct checksum appended, so
 * the structural and invariant checks behind the checksum see hostile bytes.
 * Properties: no crash or leak; an accepted snapshot snapshots again to the
 * same bytes; the restored store takes commands (revoke every lease, put,
 * delete everything) without tripping ASan or UBSan.
 *
 * Crashers go to fuzz/regressions/fuzz_store_machine/ and are replayed by
 * every test run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int count_kv(void *ctx, const store_kv *kv)
{
    (void)kv;
    (*(size_t *)ctx)++;
    return 0;
}

static int count_event(void *ctx, const store_event *ev)
{
    if (ev->type != STORE_EVENT_PUT && ev->type != STORE_EVENT_DELETE)
        abort();
    (*(size_t *)ctx)++;
    return 0;
}

static int count_lease(void *ctx, uint64_t id, uint64_t ttl, const store_kv *keys, size_t n)
{
    (void)keys;
    if (!id || !ttl)
        abort();
    *(size_t *)ctx += n;
    return 0;
}

static void check_canonical(const uint8_t *cmd, size_t len)
{
    store_cmd c;
    if (store_cmd_decode(cmd, len, &c) != STORE_OK) {
        if (c.mem || c.type)
            abort(); /* a failed decode leaves nothing behind */
        return;
    }
    size_t need = store_cmd_encoded_size(&c), got = 0;
    uint8_t *again = malloc(need ? need : 1);
    if (!again || store_cmd_encode(&c, again, need, &got) != STORE_OK || got != len ||
        memcmp(again, cmd, len) != 0)
        abort();
    free(again);
    store_cmd_release(&c);
}

static void check_reads(const store_t *s)
{
    store_op all = {.type = STORE_CMD_RANGE,
                    .key = {(const uint8_t *)"", 1},
                    .range_end = {(const uint8_t *)"", 1}};
    size_t n = 0, events = 0, leased = 0;
    uint64_t count, next;
    bool more;
    store_stats st;
    store_stats_get(s, &st);
    if (store_range(s, &all, count_kv, &n, &count, &more) != STORE_OK || n != count ||
        count != st.keys || more)
        abort();
    uint64_t from = st.compact_revision + 1;
    if (store_events_since(s, from, 0, count_event, &events, &next) != STORE_OK ||
        events != st.events || next != st.revision + 1)
        abort();
    if (from > 1 &&
        store_events_since(s, from - 1, 0, count_event, &events, &next) != STORE_ERR_COMPACTED)
        abort();
    if (store_leases(s, count_lease, &leased) != STORE_OK || leased > st.keys)
        abort();
}

static void check_snapshot(const store_t *s)
{
    size_t need = store_snapshot_size(s), len = 0, len2 = 0;
    uint8_t *snap = malloc(need);
    if (!snap || store_snapshot_write(s, snap, need, &len) != STORE_OK || len != need)
        abort();
    int err;
    store_t *t = store_restore(snap, len, &err);
    if (!t)
        abort();
    uint8_t *again = malloc(need);
    if (!again || store_snapshot_write(t, again, need, &len2) != STORE_OK || len2 != len ||
        memcmp(snap, again, len) != 0)
        abort();
    free(again);
    free(snap);
    store_free(t);
}

static void apply_input(const uint8_t *data, size_t size)
{
    if (size < 1)
        return;
    store_config cfg;
    store_config_init(&cfg);
    cfg.history_max_events = (uint32_t)(data[0] & 0x0f) * 3; /* 0..45: evictions happen */
    cfg.history_max_bytes = data[0] & 0x10 ? 400 : 1u << 20;
    cfg.history_prev_kv = data[0] & 0x20;
    store_t *s = store_new(&cfg, NULL);
    if (!s)
        abort();
    size_t at = 1;
    while (at + 2 <= size) {
        size_t len = (size_t)data[at] | ((size_t)data[at + 1] << 8);
        at += 2;
        if (len > size - at)
            len = size - at;
        check_canonical(data + at, len);
        uint64_t before = store_revision(s);
        store_result r;
        int rc = store_apply(s, data + at, len, &r);
        if (rc != STORE_OK && (store_revision(s) != before || r.revision != before))
            abort();
        store_result_release(&r);
        at += len;
    }
    check_reads(s);
    check_snapshot(s);
    store_free(s);
}

static void apply_one(store_t *s, const store_cmd *c)
{
    size_t need = store_cmd_encoded_size(c), len;
    uint8_t buf[64];
    if (need > sizeof buf || store_cmd_encode(c, buf, sizeof buf, &len) != STORE_OK)
        abort();
    store_result r;
    store_apply(s, buf, len, &r);
    store_result_release(&r);
}

static int collect_lease(void *ctx, uint64_t id, uint64_t ttl, const store_kv *keys, size_t n)
{
    (void)ttl;
    (void)keys;
    (void)n;
    uint64_t *ids = ctx;
    if (ids[0] < 64)
        ids[1 + ids[0]++] = id;
    return 0;
}

static void exercise(store_t *s)
{
    uint64_t ids[65] = {0};
    if (store_leases(s, collect_lease, ids) != STORE_OK)
        abort();
    for (uint64_t i = 0; i < ids[0]; i++)
        apply_one(s, &(store_cmd){.type = STORE_CMD_LEASE_REVOKE, .lease_id = ids[1 + i]});
    store_op put = {.type = STORE_CMD_PUT,
                    .key = {(const uint8_t *)"k", 1},
                    .value = {(const uint8_t *)"v", 1}};
    apply_one(s, &(store_cmd){.type = STORE_CMD_PUT, .op = put});
    store_op all = {.type = STORE_CMD_DELETE,
                    .flags = STORE_FLAG_PREV_KV,
                    .key = {(const uint8_t *)"", 1},
                    .range_end = {(const uint8_t *)"", 1}};
    apply_one(s, &(store_cmd){.type = STORE_CMD_DELETE, .op = all});
    store_stats st;
    store_stats_get(s, &st);
    if (st.keys != 0)
        abort();
}

static void try_restore(const uint8_t *buf, size_t len)
{
    int err = 0;
    store_t *s = store_restore(buf, len, &err);
    if (!s) {
        if (err == STORE_OK)
            abort();
        return;
    }
    size_t need = store_snapshot_size(s), got = 0;
    uint8_t *again = malloc(need);
    if (!again || store_snapshot_write(s, again, need, &got) != STORE_OK || got != len ||
        memcmp(again, buf, len) != 0)
        abort();
    free(again);
    exercise(s);
    store_free(s);
}

static void restore_input(const uint8_t *data, size_t size)
{
    try_restore(data, size);
    uint8_t *sealed = malloc(size + 16);
    if (!sealed)
        abort();
    if (size)
        memcpy(sealed, data, size);
    crypto_generichash(sealed + size, 16, sealed, size, NULL, 0);
    try_restore(sealed, size + 16);
    free(sealed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        restore_input(data + 1, size - 1);
    else
        apply_input(data + 1, size - 1);
    return 0;
}
