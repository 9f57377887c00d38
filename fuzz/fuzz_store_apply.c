/* fuzz_store_apply.c -- libFuzzer harness for the store's command decoder
 * and state machine.
 *
 * Input: one config byte, then commands, each as a 2-byte little-endian
 * length and that many bytes. Every command goes through store_apply on one
 * store. Properties: nothing crashes or leaks (ASan); a command the decoder
 * accepts re-encodes to exactly its bytes (the encoding is canonical); a
 * refused command leaves the revision alone; reads (ranges, watches, leases)
 * work on whatever state results; and the final state's snapshot restores
 * to a store whose snapshot is byte-identical. Crashers go to
 * fuzz/regressions/fuzz_store_apply/ and are replayed by every test run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
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
    return 0;
}
