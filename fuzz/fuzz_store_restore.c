/* fuzz_store_restore.c -- libFuzzer harness for the store's snapshot reader.
 *
 * Each input is tried twice: as it is (almost always refused by the
 * checksum), and with a correct checksum appended, so the structural and
 * invariant checks behind the checksum see hostile bytes too. Properties:
 * nothing crashes or leaks (ASan); an accepted snapshot snapshots again to
 * exactly the same bytes (the format is canonical); and the restored store
 * takes commands (revoke every lease, put, delete everything) without
 * tripping ASan or UBSan. Crashers go to fuzz/regressions/fuzz_store_restore/
 * and are replayed by every test run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void apply(store_t *s, const store_cmd *c)
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
        apply(s, &(store_cmd){.type = STORE_CMD_LEASE_REVOKE, .lease_id = ids[1 + i]});
    store_op put = {.type = STORE_CMD_PUT,
                    .key = {(const uint8_t *)"k", 1},
                    .value = {(const uint8_t *)"v", 1}};
    apply(s, &(store_cmd){.type = STORE_CMD_PUT, .op = put});
    store_op all = {.type = STORE_CMD_DELETE,
                    .flags = STORE_FLAG_PREV_KV,
                    .key = {(const uint8_t *)"", 1},
                    .range_end = {(const uint8_t *)"", 1}};
    apply(s, &(store_cmd){.type = STORE_CMD_DELETE, .op = all});
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
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
    return 0;
}
