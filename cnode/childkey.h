/*
 * childkey.h — the ring key of a child id, byte for byte as the hub computes
 * it (Synod.Hub.Spec.ring_key/1):
 *
 *   binary   its bytes
 *   atom     its name as UTF-8
 *   other    term_to_binary(Id, [deterministic, {minor_version, 2}])
 *
 * The C node never re-encodes an id: it takes the bytes the sender put on the
 * wire. Those equal deterministic term_to_binary output only when the sender
 * used the canonical encoding of every part (what a BEAM node always sends),
 * so childkey_of first checks that, and refuses what it cannot place exactly:
 *
 *   - maps (the C node does not sort keys in Erlang term order),
 *   - funs and ports,
 *   - non-canonical forms: Latin-1 atoms, FLOAT_EXT, an integer in a wider
 *     form than needed, a byte list not sent as STRING_EXT, a list whose tail
 *     is a list, a tuple or big in its large form when the small fits, a bit
 *     string with 8 bits or with its unused bits set, pre-OTP-23 pids and
 *     references.
 *
 * Canonical ids also compare equal exactly when their bytes are equal, which
 * is how the C node matches answers to requests and finds duplicate ids.
 *
 * Pure: no I/O, no allocation; it reads the bytes itself (ei.h only for the
 * tag names). The input must have passed etf_check_term.
 */
#ifndef SYNOD_CNODE_CHILDKEY_H
#define SYNOD_CNODE_CHILDKEY_H

#include <stddef.h>
#include <stdint.h>

/* The largest encoded child id accepted (and so the largest key, plus the
 * version byte). */
#define CHILDKEY_MAX_ID 16384
#define CHILDKEY_MAX_KEY (CHILDKEY_MAX_ID + 1)

/* Checks that buf[0..len) is one canonically encoded term (no version byte).
 * Returns 0, or -1 with *why set to a short reason (an atom name). */
int childkey_check(const uint8_t *buf, size_t len, const char **why);

/* Writes the ring key of the child id buf[0..len) (one term, no version
 * byte) to out (CHILDKEY_MAX_KEY bytes) and its length to *key_len. Returns
 * 0, or -1 with *why. */
int childkey_of(const uint8_t *buf, size_t len, uint8_t out[CHILDKEY_MAX_KEY], size_t *key_len,
                const char **why);

#endif
