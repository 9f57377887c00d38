/*
 * fuzz_cnode_request.c — libFuzzer harness over the C node's request
 * decoder: the path every message takes before the dispatcher acts on it
 * (request_validate, request_parse_valid, proto_decode_request or
 * proto_decode_answer, and request_parse_head for what was refused), then
 * every accessor the dispatcher uses on what was decoded. Any input must be
 * accepted or refused without reading out of bounds (ASan), undefined
 * behaviour (UBSan) or a leak; what is accepted must hold the invariants
 * checked below.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "childkey.h"
#include "proto.h"
#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t key[CHILDKEY_MAX_KEY];

static void must_fit(span s, size_t size)
{
    if (s.at < 0 || s.len < 0 || (size_t)s.at + (size_t)s.len > size)
        abort();
}

static void use_request(const char *buf, size_t size, const proto_request *req)
{
    for (size_t i = 0; i < req->count; i++) {
        size_t len;
        const char *why;
        must_fit(req->entries[i].id, size);
        /* the decoder checked every id: its key must be computable */
        if (childkey_of((const uint8_t *)buf + req->entries[i].id.at,
                        (size_t)req->entries[i].id.len, key, &len, &why) != 0)
            abort();
        if (req->kind == PROTO_CHILDREN_START) {
            must_fit(req->entries[i].spec, size);
            must_fit(req->entries[i].meta, size);
        }
    }
    char node[MAXATOMLEN_UTF8];
    for (size_t i = 0; i < req->nmember_list; i++)
        if (proto_member_at(buf, req, i, node) != 0)
            abort();
    for (size_t i = 0; i < req->nreply_to; i++)
        must_fit(req->reply_to[i], size);
    if (req->data.len > PROTO_MAX_DATA)
        abort();
}

static void use_answer(const char *buf, const proto_answer *a)
{
    if (a->kind == ANSWER_RESULTS) {
        int at;
        span id, result;
        if (proto_results_begin(buf, a, &at) != 0)
            abort();
        for (size_t i = 0; i < a->count; i++) {
            if (proto_results_next(buf, &at, &id, &result) != 0)
                abort();
            (void)proto_result_ok(buf, result);
            (void)proto_result_not_found(buf, result);
        }
    } else if (a->kind == ANSWER_REPLY) {
        static char names[8][MAXATOMLEN_UTF8];
        size_t count;
        uint32_t vnodes;
        uint8_t seed[RING_SEED_BYTES];
        unsigned rf;
        int ap;
        (void)proto_decode_ring_info(buf, a->reply, names, 8, &count, &vnodes, seed, &rf);
        (void)proto_decode_config(buf, a->reply, &ap);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data, *why;
    request req;
    if (size > REQUEST_MAX_BYTES)
        return 0;
    if (request_validate(buf, (int)size, REQUEST_MAX_BYTES, &why) != REFUSED_NONE) {
        /* a refused message: only its head is read, for the reply address */
        if (request_parse_head(buf, (int)size, &req) == 0 &&
            (req.tag_start + req.tag_len != req.body_at || req.body_at > (int)size))
            abort();
        return 0;
    }
    if (request_parse_valid(buf, &req, &why) == 0) {
        proto_request pr;
        proto_error err = {0};
        if (proto_decode_request(buf, req.body_at, "hub", &pr, &err) == 0) {
            use_request(buf, size, &pr);
            proto_request_free(&pr);
        } else if (err.why == NULL) {
            abort(); /* every refusal names its reason */
        }
    } else {
        proto_answer a;
        if (proto_decode_answer(buf, &a, &why) == 0)
            use_answer(buf, &a);
    }
    return 0;
}
