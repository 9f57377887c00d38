/* store_codec.h -- the store's command codec (the log entries' format,
 * docs/store.md) and the byte cursor and writer it shares with the snapshot
 * format (store_snapshot.c). Internal to the store; drivers use store.h's
 * store_cmd_decode / store_cmd_encode / store_cmd_check.
 * Pure: no I/O, no clock, no globals.
 *
 * INVARIANTS
 *
 *   - One encoding per command: integers are canonical varints (varint.h),
 *     flags and types single bytes, byte strings a varint length then the
 *     bytes; encode(decode(b)) == b for every accepted b, and the decoder
 *     refuses trailing bytes.
 *   - A cursor never reads past `end`: the first failure records its error
 *     (the first one wins) and moves p to end, so every later read fails
 *     too and the caller checks c->err once.
 *   - A count read from the input is bounded by its cap and by the bytes
 *     left divided by the smallest encoding of one element, so a forged
 *     count can never make the decoder allocate more than the input implies.
 *   - A writer with buf == NULL only counts: sizes and bytes come from the
 *     same function, so they cannot disagree. */
#ifndef SYNOD_STORE_CODEC_H
#define SYNOD_STORE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct store_cursor {
    const uint8_t *p, *end;
    int err;
} store_cursor;

/* A writer that only counts when buf is NULL, so sizes and bytes come from
 * one function. */
typedef struct store_writer {
    uint8_t *buf;
    size_t n;
} store_writer;

/* Cursor reads; each returns 0 / empty after a failure (see c->err). */
void store_cur_fail(store_cursor *c, int err);
uint8_t store_cur_u8(store_cursor *c);
uint64_t store_cur_varint(store_cursor *c);
/* A length-prefixed byte string of at most max bytes (TOO_LARGE above). */
store_bytes store_cur_bytes(store_cursor *c, size_t max);
/* An element count, at most cap and at most (bytes left / min_bytes). */
size_t store_cur_count(store_cursor *c, size_t cap, size_t min_bytes);

void store_put_u8(store_writer *w, uint8_t v);
void store_put_varint(store_writer *w, uint64_t v);
void store_put_bytes(store_writer *w, const uint8_t *p, size_t len);

/* An integer the formats accept (revisions, lease ids, limits). */
bool store_num_ok(uint64_t v);
/* The checks of one op (also used by store_range on reads). */
int store_check_op(const store_op *op);

#endif
