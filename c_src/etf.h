/*
 * etf.h — bounds-checked validation of Erlang's external term format.
 *
 * Pure: no I/O, no allocation, no global state, no ei.h.
 *
 * Why: erl_interface's ei_decode_* functions take a buffer and an index but
 * no length, so a malformed term from the wire can make them read past the
 * end of the buffer. The C node therefore runs every received term through
 * etf_check first; only a buffer that passes is handed to ei_decode_*, and
 * then every length ei reads is known to lie inside it.
 *
 * What passes: every term kind OTP 25 puts on the wire except compressed
 * terms and atom cache references (ei resolves those before we see the
 * buffer). Funs (NEW_FUN_EXT) are walked field by field and must end where
 * their declared size says: ei_skip_term decodes every field of a fun.
 *
 * Cost: O(len) time, O(max_depth) stack; a term can never make the walk do
 * more work than its size, because every element needs at least one byte.
 */
#ifndef SYNOD_ETF_H
#define SYNOD_ETF_H

#include <stddef.h>
#include <stdint.h>

#define ETF_VERSION 131
#define ETF_DEFAULT_MAX_DEPTH 64

typedef enum etf_error {
    ETF_OK = 0,
    ETF_ETRUNCATED = -1, /* a length or element runs past the end */
    ETF_EBADTAG = -2,    /* an unknown or unsupported tag */
    ETF_EDEPTH = -3,     /* nested deeper than max_depth */
    ETF_EVERSION = -4,   /* the message does not start with 131 */
    ETF_ETRAILING = -5,  /* bytes left after the term */
    ETF_EBADVALUE = -6,  /* a field holds an impossible value */
} etf_error;

/* Checks one term at buf[*index] (no version byte). On ETF_OK, *index is
 * moved past the term; on error it is left where the bad part starts. */
etf_error etf_check_term(const uint8_t *buf, size_t len, size_t *index, unsigned max_depth);

/* Checks a whole message: the version byte, one term, nothing after. */
etf_error etf_check_message(const uint8_t *buf, size_t len, unsigned max_depth);

const char *etf_strerror(etf_error err);

#endif
