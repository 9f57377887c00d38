/*
 * etf.c — external term format validation; see etf.h. Pure.
 *
 * The walk is recursive with an explicit depth bound. Every read is preceded
 * by a check that the bytes exist: need(n) before touching n bytes. Element
 * counts are never trusted for allocation (nothing is allocated); a huge
 * declared arity just runs out of bytes and fails as truncated.
 */
#include "etf.h"

enum {
    TAG_NEW_FLOAT = 70,
    TAG_BIT_BINARY = 77,
    TAG_NEW_PID = 88,
    TAG_NEW_PORT = 89,
    TAG_NEWER_REFERENCE = 90,
    TAG_SMALL_INTEGER = 97,
    TAG_INTEGER = 98,
    TAG_FLOAT = 99,
    TAG_ATOM = 100,
    TAG_REFERENCE = 101,
    TAG_PORT = 102,
    TAG_PID = 103,
    TAG_SMALL_TUPLE = 104,
    TAG_LARGE_TUPLE = 105,
    TAG_NIL = 106,
    TAG_STRING = 107,
    TAG_LIST = 108,
    TAG_BINARY = 109,
    TAG_SMALL_BIG = 110,
    TAG_LARGE_BIG = 111,
    TAG_NEW_FUN = 112,
    TAG_EXPORT = 113,
    TAG_NEW_REFERENCE = 114,
    TAG_SMALL_ATOM = 115,
    TAG_MAP = 116,
    TAG_ATOM_UTF8 = 118,
    TAG_SMALL_ATOM_UTF8 = 119,
    TAG_V4_PORT = 120,
};

/* The largest number of 32-bit words in a reference (OTP 25 uses 3 to 5). */
#define MAX_REF_WORDS 5

typedef struct cursor {
    const uint8_t *buf;
    size_t len;
    size_t at;
} cursor;

static int have(const cursor *c, size_t n)
{
    return c->len - c->at >= n;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* Skips n bytes if they exist. */
static etf_error skip(cursor *c, size_t n)
{
    if (!have(c, n))
        return ETF_ETRUNCATED;
    c->at += n;
    return ETF_OK;
}

/* Reads a length field of `width` bytes (1, 2 or 4) into *out. */
static etf_error read_len(cursor *c, unsigned width, size_t *out)
{
    if (!have(c, width))
        return ETF_ETRUNCATED;
    const uint8_t *p = c->buf + c->at;
    *out = width == 1 ? p[0] : width == 2 ? be16(p) : be32(p);
    c->at += width;
    return ETF_OK;
}

static etf_error check(cursor *c, unsigned depth);

/* An atom: the node field of pids, ports and references must be one. */
static etf_error check_atom(cursor *c)
{
    if (!have(c, 1))
        return ETF_ETRUNCATED;
    uint8_t tag = c->buf[c->at++];
    size_t n;
    etf_error e;
    switch (tag) {
    case TAG_ATOM:
    case TAG_ATOM_UTF8:
        e = read_len(c, 2, &n);
        break;
    case TAG_SMALL_ATOM:
    case TAG_SMALL_ATOM_UTF8:
        e = read_len(c, 1, &n);
        break;
    default:
        c->at--;
        return ETF_EBADTAG;
    }
    if (e != ETF_OK)
        return e;
    /* An atom holds at most 255 characters, 4 bytes each in UTF-8. */
    if (n > 255 * 4)
        return ETF_EBADVALUE;
    return skip(c, n);
}

/* `count` terms in a row. */
static etf_error check_n(cursor *c, size_t count, unsigned depth)
{
    for (size_t i = 0; i < count; i++) {
        etf_error e = check(c, depth);
        if (e != ETF_OK)
            return e;
    }
    return ETF_OK;
}

static etf_error check_reference(cursor *c, uint8_t tag)
{
    size_t words;
    etf_error e = read_len(c, 2, &words);
    if (e != ETF_OK)
        return e;
    if (words == 0 || words > MAX_REF_WORDS)
        return ETF_EBADVALUE;
    if ((e = check_atom(c)) != ETF_OK)
        return e;
    return skip(c, (tag == TAG_NEWER_REFERENCE ? 4 : 1) + 4 * words);
}

/* NEW_FUN_EXT: Size(4) Arity(1) Uniq(16) Index(4) NumFree(4) Module OldIndex
 * OldUniq Pid FreeVars...; Size counts every byte after the tag, Size
 * included. Every field is walked (ei_skip_term decodes them all, so a
 * size that merely fits is not enough), and they must end exactly where
 * Size says. */
static etf_error check_fun(cursor *c, size_t tag_at, unsigned depth)
{
    size_t size, nfree;
    etf_error e = read_len(c, 4, &size);
    if (e != ETF_OK)
        return e;
    if (size < 4 + 1 + 16 + 4 + 4)
        return ETF_EBADVALUE;
    if (size > c->len - (tag_at + 1))
        return ETF_ETRUNCATED;
    if ((e = skip(c, 1 + 16 + 4)) != ETF_OK || (e = read_len(c, 4, &nfree)) != ETF_OK)
        return e;
    /* Module, OldIndex, OldUniq, Pid, then the free variables. */
    for (size_t i = 0; i < 4 + nfree; i++) {
        if (c->at >= tag_at + 1 + size)
            return ETF_EBADVALUE;
        if ((e = check(c, depth - 1)) != ETF_OK)
            return e;
    }
    return c->at == tag_at + 1 + size ? ETF_OK : ETF_EBADVALUE;
}

static etf_error check(cursor *c, unsigned depth)
{
    if (depth == 0)
        return ETF_EDEPTH;
    if (!have(c, 1))
        return ETF_ETRUNCATED;
    size_t tag_at = c->at;
    uint8_t tag = c->buf[c->at++];
    size_t n;
    etf_error e;
    switch (tag) {
    case TAG_SMALL_INTEGER:
        return skip(c, 1);
    case TAG_INTEGER:
        return skip(c, 4);
    case TAG_NEW_FLOAT:
        return skip(c, 8);
    case TAG_FLOAT:
        return skip(c, 31);
    case TAG_NIL:
        return ETF_OK;
    case TAG_ATOM:
    case TAG_ATOM_UTF8:
    case TAG_SMALL_ATOM:
    case TAG_SMALL_ATOM_UTF8:
        c->at = tag_at;
        return check_atom(c);
    case TAG_STRING:
        if ((e = read_len(c, 2, &n)) != ETF_OK)
            return e;
        return skip(c, n);
    case TAG_BINARY:
        if ((e = read_len(c, 4, &n)) != ETF_OK)
            return e;
        return skip(c, n);
    case TAG_BIT_BINARY:
        if ((e = read_len(c, 4, &n)) != ETF_OK)
            return e;
        if (!have(c, 1))
            return ETF_ETRUNCATED;
        if (c->buf[c->at] < 1 || c->buf[c->at] > 8 || n == 0)
            return ETF_EBADVALUE;
        return skip(c, 1 + n);
    case TAG_SMALL_BIG:
    case TAG_LARGE_BIG:
        if ((e = read_len(c, tag == TAG_SMALL_BIG ? 1 : 4, &n)) != ETF_OK)
            return e;
        if (!have(c, 1))
            return ETF_ETRUNCATED;
        if (c->buf[c->at] > 1)
            return ETF_EBADVALUE;
        return skip(c, 1 + n);
    case TAG_SMALL_TUPLE:
    case TAG_LARGE_TUPLE:
        if ((e = read_len(c, tag == TAG_SMALL_TUPLE ? 1 : 4, &n)) != ETF_OK)
            return e;
        return check_n(c, n, depth - 1);
    case TAG_LIST:
        if ((e = read_len(c, 4, &n)) != ETF_OK)
            return e;
        if ((e = check_n(c, n, depth - 1)) != ETF_OK)
            return e;
        return check(c, depth - 1); /* the tail */
    case TAG_MAP:
        if ((e = read_len(c, 4, &n)) != ETF_OK)
            return e;
        /* 2n terms; n <= 2^32 - 1, so 2n fits a 64-bit size_t */
        return check_n(c, 2 * n, depth - 1);
    case TAG_PID:
    case TAG_NEW_PID:
        if ((e = check_atom(c)) != ETF_OK)
            return e;
        return skip(c, tag == TAG_PID ? 9 : 12);
    case TAG_PORT:
    case TAG_NEW_PORT:
    case TAG_V4_PORT:
        if ((e = check_atom(c)) != ETF_OK)
            return e;
        return skip(c, tag == TAG_PORT ? 5 : tag == TAG_NEW_PORT ? 8 : 12);
    case TAG_REFERENCE:
        if ((e = check_atom(c)) != ETF_OK)
            return e;
        return skip(c, 5);
    case TAG_NEW_REFERENCE:
    case TAG_NEWER_REFERENCE:
        return check_reference(c, tag);
    case TAG_EXPORT:
        if ((e = check_atom(c)) != ETF_OK || (e = check_atom(c)) != ETF_OK)
            return e;
        if (!have(c, 2))
            return ETF_ETRUNCATED;
        if (c->buf[c->at] != TAG_SMALL_INTEGER)
            return ETF_EBADVALUE;
        return skip(c, 2);
    case TAG_NEW_FUN:
        return check_fun(c, tag_at, depth);
    default:
        c->at = tag_at;
        return ETF_EBADTAG;
    }
}

etf_error etf_check_term(const uint8_t *buf, size_t len, size_t *index, unsigned max_depth)
{
    if (*index > len)
        return ETF_ETRUNCATED;
    cursor c = {buf, len, *index};
    etf_error e = check(&c, max_depth);
    if (e == ETF_OK)
        *index = c.at;
    return e;
}

etf_error etf_check_message(const uint8_t *buf, size_t len, unsigned max_depth)
{
    if (len == 0)
        return ETF_ETRUNCATED;
    if (buf[0] != ETF_VERSION)
        return ETF_EVERSION;
    size_t index = 1;
    etf_error e = etf_check_term(buf, len, &index, max_depth);
    if (e != ETF_OK)
        return e;
    return index == len ? ETF_OK : ETF_ETRAILING;
}

const char *etf_strerror(etf_error err)
{
    switch (err) {
    case ETF_OK:
        return "ok";
    case ETF_ETRUNCATED:
        return "truncated term";
    case ETF_EBADTAG:
        return "unknown or unsupported term tag";
    case ETF_EDEPTH:
        return "term nested too deeply";
    case ETF_EVERSION:
        return "not external term format version 131";
    case ETF_ETRAILING:
        return "bytes after the term";
    case ETF_EBADVALUE:
        return "impossible field value";
    }
    return "unknown etf error";
}
