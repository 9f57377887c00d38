/* request.c — see request.h. */
#include "request.h"

#include <string.h>

#include "etf.h"

static int decode_atom(const char *buf, int *index, char out[MAXATOMLEN_UTF8])
{
    return ei_decode_atom_as(buf, index, out, MAXATOMLEN_UTF8, ERLANG_UTF8, NULL, NULL);
}

static request_kind classify(const char *buf, int index)
{
    char atom[MAXATOMLEN_UTF8];
    int arity, type, size, at = index;
    if (ei_get_type(buf, &at, &type, &size) != 0)
        return REQ_UNKNOWN;
    if (type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT || type == ERL_ATOM_UTF8_EXT ||
        type == ERL_SMALL_ATOM_UTF8_EXT) {
        if (decode_atom(buf, &at, atom) != 0)
            return REQ_UNKNOWN;
        if (strcmp(atom, "ping") == 0)
            return REQ_PING;
        if (strcmp(atom, "version") == 0)
            return REQ_VERSION;
        if (strcmp(atom, "nodes") == 0)
            return REQ_NODES;
        return REQ_HUB;
    }
    if (ei_decode_tuple_header(buf, &at, &arity) == 0 && arity == 2 &&
        decode_atom(buf, &at, atom) == 0 && strcmp(atom, "is_auth") == 0)
        return REQ_IS_AUTH;
    return REQ_HUB;
}

request_refusal request_validate(const char *buf, int len, int max_bytes, const char **why)
{
    if (len < 0 || len > max_bytes) {
        *why = "message too large";
        return REFUSED_TOO_LARGE;
    }
    etf_error e = etf_check_message((const uint8_t *)buf, (size_t)len, ETF_DEFAULT_MAX_DEPTH);
    if (e != ETF_OK) {
        *why = etf_strerror(e);
        return e == ETF_EDEPTH ? REFUSED_TOO_DEEP : REFUSED_MALFORMED;
    }
    return REFUSED_NONE;
}

const char *request_refusal_atom(request_refusal r)
{
    switch (r) {
    case REFUSED_TOO_LARGE:
        return "too_large";
    case REFUSED_TOO_DEEP:
        return "too_deep";
    case REFUSED_MALFORMED:
    case REFUSED_NONE:
        break;
    }
    return "bad_term";
}

/* A small tuple header of `arity` at buf[*at]. */
static int head_tuple(const unsigned char *buf, int len, int *at, int arity)
{
    if (*at + 2 > len || buf[*at] != ERL_SMALL_TUPLE_EXT || buf[*at + 1] != arity)
        return -1;
    *at += 2;
    return 0;
}

/* Steps over one shallow term at buf[*at] (an atom, a pid, a tag), checked
 * by etf_check_term within len so that ei may decode it from *start. */
static int head_field(const char *buf, int len, int *at, int *start)
{
    size_t index = (size_t)*at;
    if (etf_check_term((const uint8_t *)buf, (size_t)len, &index, 4) != ETF_OK)
        return -1;
    *start = *at;
    *at = (int)index;
    return 0;
}

int request_parse_head(const char *buf, int len, request *req)
{
    const unsigned char *u = (const unsigned char *)buf;
    char atom[MAXATOMLEN_UTF8];
    int at = 1, start;
    if (len < 1 || u[0] != ETF_VERSION || head_tuple(u, len, &at, 3) != 0 ||
        head_field(buf, len, &at, &start) != 0 || decode_atom(buf, &start, atom) != 0 ||
        strcmp(atom, "$gen_call") != 0)
        return -1;
    if (head_tuple(u, len, &at, 2) != 0 || head_field(buf, len, &at, &start) != 0 ||
        ei_decode_pid(buf, &start, &req->from) != 0)
        return -1;
    if (head_field(buf, len, &at, &req->tag_start) != 0)
        return -1;
    req->tag_len = at - req->tag_start;
    req->body_at = at;
    req->kind = REQ_UNKNOWN;
    return 0;
}

int request_parse(const char *buf, int len, request *req, const char **why)
{
    if (request_validate(buf, len, REQUEST_MAX_BYTES, why) != 0)
        return -1;
    return request_parse_valid(buf, req, why);
}

int request_parse_valid(const char *buf, request *req, const char **why)
{
    /* From here on ei reads only inside a well-formed term. */
    int index = 0, version, arity;
    char atom[MAXATOMLEN_UTF8];
    if (ei_decode_version(buf, &index, &version) != 0 ||
        ei_decode_tuple_header(buf, &index, &arity) != 0 || arity != 3 ||
        decode_atom(buf, &index, atom) != 0 || strcmp(atom, "$gen_call") != 0) {
        *why = "not a GenServer call";
        return -1;
    }
    if (ei_decode_tuple_header(buf, &index, &arity) != 0 || arity != 2 ||
        ei_decode_pid(buf, &index, &req->from) != 0) {
        *why = "the call has no {Pid, Tag} reply address";
        return -1;
    }
    req->tag_start = index;
    if (ei_skip_term(buf, &index) != 0) {
        *why = "bad reply tag";
        return -1;
    }
    req->tag_len = index - req->tag_start;
    req->body_at = index;
    req->kind = classify(buf, index);
    return 0;
}

int request_reply_begin(ei_x_buff *x, const char *buf, const request *req)
{
    if (ei_x_new_with_version(x) != 0)
        return -1;
    if (ei_x_encode_tuple_header(x, 2) != 0 ||
        ei_x_append_buf(x, buf + req->tag_start, req->tag_len) != 0) {
        ei_x_free(x);
        return -1;
    }
    return 0;
}
