/* bench_store_memory.c -- what the store costs in memory per key and per
 * value byte, measured with glibc's mallinfo2 (heap bytes in use) around
 * building a store of N keys, against the baseline of the raw key and value
 * bytes themselves.
 *
 *   make build/bench/bench_store_memory && ./build/bench/bench_store_memory [N]
 *
 * Keys are 16 bytes (the key's number, big-endian, after 8 fixed bytes: the
 * skip list's cost does not depend on the keys' order); values 0, 100 and
 * 1024 bytes. Each store keeps
 * its default history (10,000 events, 16 MiB): the history shares the live
 * keys' records, so in steady state it costs its events' headers, not
 * copies. The snapshot size per key is printed too (what a transfer and the
 * snapshot file cost). */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define KEY_BYTES 16

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* Heap bytes of a store of n keys with values of vlen bytes; *snap gets
 * its snapshot size. */
static size_t store_bytes_for(size_t n, size_t vlen, size_t *snap)
{
    uint8_t key[KEY_BYTES];
    uint8_t *value = malloc(vlen + 1);
    memset(value, 'v', vlen + 1);
    memset(key, 'k', KEY_BYTES);
    size_t before = heap_in_use();
    store_t *s = store_new(NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < 8; j++)
            key[KEY_BYTES - 1 - j] = (uint8_t)((uint64_t)i >> (8 * j));
        store_cmd c = {
            .type = STORE_CMD_PUT,
            .op = {.type = STORE_CMD_PUT, .key = {key, KEY_BYTES}, .value = {value, vlen}}};
        store_result r;
        if (store_apply_cmd(s, &c, &r) != STORE_OK)
            abort();
        store_result_release(&r);
    }
    size_t used = heap_in_use() - before;
    *snap = store_snapshot_size(s);
    store_free(s);
    free(value);
    return used;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    size_t sizes[] = {0, 100, 1024};
    size_t used[3], snap[3];
    for (int i = 0; i < 3; i++)
        used[i] = store_bytes_for(n, sizes[i], &snap[i]);
    printf("store memory: %zu keys of %d bytes (heap bytes in use, mallinfo2)\n", n, KEY_BYTES);
    printf("%-12s %14s %14s %16s %12s\n", "value bytes", "heap/key", "raw/key", "heap/raw ratio",
           "snapshot/key");
    for (int i = 0; i < 3; i++) {
        double per = (double)used[i] / (double)n, raw = (double)(KEY_BYTES + sizes[i]);
        printf("%-12zu %14.1f %14.1f %16.2f %12.1f\n", sizes[i], per, raw, per / raw,
               (double)snap[i] / (double)n);
    }
    double per_value_byte = ((double)used[2] - (double)used[0]) / ((double)n * 1024.0);
    printf("per key (16-byte key, empty value): %.1f bytes; per value byte: %.3f bytes\n",
           (double)used[0] / (double)n, per_value_byte);
    return 0;
}
