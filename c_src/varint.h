/* varint.h -- unsigned LEB128 varints (little-endian base-128) in canonical
 * form: the integers of the Raft wire format (raft_codec.c), of conf entries
 * (raft_log.c) and of the store's command codec (store.c).
 *
 * A value takes 1 to 10 bytes, 7 bits per byte, low bits first, the high bit
 * of every byte but the last set. Canonical means shortest: the decoder
 * refuses an overlong form (a last byte of zero after the first) and
 * anything above 64 bits, so every value has exactly one encoding and
 * encodings can be compared byte for byte.
 *
 * Pure: no I/O, no allocation, no global state. */
#ifndef SYNOD_VARINT_H
#define SYNOD_VARINT_H

#include <stddef.h>
#include <stdint.h>

#define VARINT_MAX_LEN 10

/* Bytes varint_put writes for v (1..VARINT_MAX_LEN). */
size_t varint_len(uint64_t v);
/* Writes v at p (room for varint_len(v) bytes); returns the bytes written. */
size_t varint_put(uint8_t *p, uint64_t v);
/* Reads one canonical varint from at most `avail` bytes at p into *v;
 * returns the bytes used, or 0 if the input is cut short, overlong or over
 * 64 bits (then *v is untouched). */
size_t varint_get(const uint8_t *p, size_t avail, uint64_t *v);

#endif
