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

int request_validate(const char *buf, int len, int max_bytes, const char **why)
{
    if (len < 0 || len > max_bytes) {
        *why = "message too large";
        return -1;
    }
    etf_error e = etf_check_message((const uint8_t *)buf, (size_t)len, ETF_DEFAULT_MAX_DEPTH);
    if (e != ETF_OK) {
        *why = etf_strerror(e);
        return -1;
    }
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
