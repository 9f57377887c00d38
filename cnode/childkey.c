/*
 * childkey.c — see childkey.h. Pure.
 *
 * The walk re-checks every length against the end of the buffer (it does not
 * rely on the caller's etf check for memory safety) and is bounded in depth.
 * "Canonical" means what erts' encoder (external.c, enc_term) writes for the
 * value: the narrowest integer form, UTF-8 atoms, STRING_EXT for proper byte
 * lists up to 65535 long, the small tuple and big forms when they fit.
 */
#include "childkey.h"

#include <string.h>

#include <ei.h>

/* Tags are ei.h's ERL_*_EXT constants (only the macros: nothing of ei is
 * called here). */

#define MAX_DEPTH 64
#define MAX_STRING_EXT 65535
#define MAX_REF_WORDS 5

typedef struct cur {
    const uint8_t *b;
    size_t len, at;
    const char *why;
} cur;

static int fail(cur *c, const char *why)
{
    c->why = why;
    return -1;
}

static int need(cur *c, size_t n)
{
    return c->len - c->at >= n ? 0 : fail(c, "truncated");
}

static size_t be(const uint8_t *p, unsigned width)
{
    size_t v = 0;
    for (unsigned i = 0; i < width; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads a big-endian length of `width` bytes. */
static int len_field(cur *c, unsigned width, size_t *n)
{
    if (need(c, width))
        return -1;
    *n = be(c->b + c->at, width);
    c->at += width;
    return 0;
}

static int skip(cur *c, size_t n)
{
    if (need(c, n))
        return -1;
    c->at += n;
    return 0;
}

static int check_term(cur *c, unsigned depth);

static int check_atom(cur *c)
{
    if (need(c, 1))
        return -1;
    uint8_t tag = c->b[c->at++];
    size_t n;
    if (tag == ERL_SMALL_ATOM_UTF8_EXT)
        return len_field(c, 1, &n) || skip(c, n);
    if (tag == ERL_ATOM_UTF8_EXT) {
        if (len_field(c, 2, &n))
            return -1;
        return n <= 255 ? fail(c, "non_canonical_atom") : skip(c, n);
    }
    return fail(c, "non_canonical_atom");
}

/* A big's magnitude: n little-endian digits. Canonical when the top digit is
 * not zero and the value does not fit INTEGER_EXT (-2^31 .. 2^31-1). */
static int check_big(cur *c, unsigned width, size_t min_digits)
{
    size_t n;
    if (len_field(c, width, &n) || need(c, 1 + n))
        return -1;
    uint8_t sign = c->b[c->at];
    const uint8_t *d = c->b + c->at + 1;
    if (sign > 1 || n < min_digits || n == 0 || d[n - 1] == 0)
        return fail(c, "non_canonical_integer");
    if (n < 4)
        return fail(c, "non_canonical_integer");
    if (n == 4) {
        uint32_t mag =
            (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
        if (mag < 0x80000000u || (sign == 1 && mag == 0x80000000u))
            return fail(c, "non_canonical_integer");
    }
    c->at += 1 + n;
    return 0;
}

/* LIST_EXT: not a proper list of bytes short enough for STRING_EXT, and a
 * tail that is not itself a list. */
static int check_list(cur *c, unsigned depth)
{
    size_t n;
    if (len_field(c, 4, &n))
        return -1;
    if (n == 0)
        return fail(c, "non_canonical_list");
    int all_bytes = 1;
    for (size_t i = 0; i < n; i++) {
        if (need(c, 1))
            return -1;
        all_bytes &= c->b[c->at] == ERL_SMALL_INTEGER_EXT;
        if (check_term(c, depth - 1))
            return -1;
    }
    if (need(c, 1))
        return -1;
    uint8_t tail = c->b[c->at];
    if (tail == ERL_LIST_EXT || tail == ERL_STRING_EXT ||
        (tail == ERL_NIL_EXT && all_bytes && n <= MAX_STRING_EXT))
        return fail(c, "non_canonical_list");
    return check_term(c, depth - 1);
}

static int check_tuple(cur *c, unsigned width, unsigned depth)
{
    size_t n;
    if (len_field(c, width, &n))
        return -1;
    if (width == 4 && n <= 255)
        return fail(c, "non_canonical_tuple");
    for (size_t i = 0; i < n; i++)
        if (check_term(c, depth - 1))
            return -1;
    return 0;
}

static int check_bits(cur *c)
{
    size_t n;
    if (len_field(c, 4, &n) || need(c, 1 + n))
        return -1;
    uint8_t bits = c->b[c->at];
    if (n == 0 || bits < 1 || bits > 7)
        return fail(c, "non_canonical_bitstring");
    uint8_t unused = (uint8_t)(0xffu >> bits);
    if (c->b[c->at + n] & unused)
        return fail(c, "non_canonical_bitstring");
    c->at += 1 + n;
    return 0;
}

static int check_term(cur *c, unsigned depth)
{
    if (depth == 0)
        return fail(c, "too_deep");
    if (need(c, 1))
        return -1;
    uint8_t tag = c->b[c->at];
    size_t n;
    switch (tag) {
    case ERL_SMALL_INTEGER_EXT:
        return skip(c, 2);
    case ERL_INTEGER_EXT:
        if (need(c, 5))
            return -1;
        n = be(c->b + c->at + 1, 4);
        c->at += 5;
        return n <= 255 ? fail(c, "non_canonical_integer") : 0;
    case ERL_SMALL_BIG_EXT:
        c->at++;
        return check_big(c, 1, 1);
    case ERL_LARGE_BIG_EXT:
        c->at++;
        return check_big(c, 4, 256);
    case NEW_FLOAT_EXT:
        return skip(c, 9);
    case ERL_SMALL_ATOM_UTF8_EXT:
    case ERL_ATOM_UTF8_EXT:
        return check_atom(c);
    case ERL_NIL_EXT:
        return skip(c, 1);
    case ERL_STRING_EXT:
        c->at++;
        if (len_field(c, 2, &n))
            return -1;
        return n == 0 ? fail(c, "non_canonical_list") : skip(c, n);
    case ERL_LIST_EXT:
        c->at++;
        return check_list(c, depth);
    case ERL_SMALL_TUPLE_EXT:
        c->at++;
        return check_tuple(c, 1, depth);
    case ERL_LARGE_TUPLE_EXT:
        c->at++;
        return check_tuple(c, 4, depth);
    case ERL_BINARY_EXT:
        c->at++;
        return len_field(c, 4, &n) || skip(c, n);
    case ERL_BIT_BINARY_EXT:
        c->at++;
        return check_bits(c);
    case ERL_NEW_PID_EXT:
        c->at++;
        return check_atom(c) || skip(c, 12);
    case ERL_NEWER_REFERENCE_EXT:
        c->at++;
        if (len_field(c, 2, &n))
            return -1;
        if (n == 0 || n > MAX_REF_WORDS)
            return fail(c, "bad_reference");
        return check_atom(c) || skip(c, 4 + 4 * n);
    case ERL_MAP_EXT:
        return fail(c, "map_in_child_id");
    case ERL_NEW_FUN_EXT:
    case ERL_EXPORT_EXT:
        return fail(c, "fun_in_child_id");
    case 89: /* NEW_PORT_EXT */
    case ERL_PORT_EXT:
    case ERL_V4_PORT_EXT:
        return fail(c, "port_in_child_id");
    case ERL_FLOAT_EXT:
        return fail(c, "non_canonical_float");
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
        return fail(c, "non_canonical_atom");
    case ERL_REFERENCE_EXT:
    case ERL_PID_EXT:
    case ERL_NEW_REFERENCE_EXT:
        return fail(c, "old_pid_or_reference_format");
    default:
        return fail(c, "unsupported_term");
    }
}

int childkey_check(const uint8_t *buf, size_t len, const char **why)
{
    cur c = {buf, len, 0, NULL};
    if (len > CHILDKEY_MAX_ID) {
        *why = "child_id_too_large";
        return -1;
    }
    if (check_term(&c, MAX_DEPTH) != 0 || c.at != len) {
        *why = c.why ? c.why : "trailing_bytes";
        return -1;
    }
    return 0;
}

int childkey_of(const uint8_t *buf, size_t len, uint8_t out[CHILDKEY_MAX_KEY], size_t *key_len,
                const char **why)
{
    if (childkey_check(buf, len, why) != 0)
        return -1;
    size_t head = 0, n = 0;
    if (buf[0] == ERL_BINARY_EXT) {
        head = 5;
        n = be(buf + 1, 4);
    } else if (buf[0] == ERL_SMALL_ATOM_UTF8_EXT) {
        head = 2;
        n = buf[1];
    } else if (buf[0] == ERL_ATOM_UTF8_EXT) {
        head = 3;
        n = be(buf + 1, 2);
    }
    if (head > 0) {
        memcpy(out, buf + head, n);
        *key_len = n;
        return 0;
    }
    out[0] = 131;
    memcpy(out + 1, buf, len);
    *key_len = len + 1;
    return 0;
}
