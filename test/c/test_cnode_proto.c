/*
 * test_cnode_proto.c — cmocka tests for the C node's protocol layer:
 * decoding and validating requests (cnode/request.c, cnode/proto.c), the
 * canonical child-id keys (cnode/childkey.c), owner grouping (cnode/hubview.c)
 * and collecting answers into one reply (cnode/pending.c).
 *
 * Messages are built with ei's encoders, the way a BEAM node's would arrive,
 * and run through the same request_parse the event loop uses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <ei.h>

#include "childkey.h"
#include "hubview.h"
#include "pending.h"
#include "proto.h"
#include "request.h"

#define HUB "hub"

static erlang_pid test_pid(void)
{
    erlang_pid pid;
    memset(&pid, 0, sizeof pid);
    strcpy(pid.node, "t@127.0.0.1");
    pid.num = 42;
    pid.creation = 7;
    return pid;
}

static erlang_ref test_ref(unsigned n)
{
    erlang_ref ref;
    memset(&ref, 0, sizeof ref);
    strcpy(ref.node, "t@127.0.0.1");
    ref.len = 3;
    ref.n[0] = n;
    ref.n[1] = 2;
    ref.n[2] = 3;
    ref.creation = 7;
    return ref;
}

/* {'$gen_call', {Pid, Ref}, — the test appends the request. */
static void call_begin(ei_x_buff *x)
{
    erlang_pid pid = test_pid();
    erlang_ref ref = test_ref(1);
    assert_int_equal(ei_x_new_with_version(x), 0);
    assert_int_equal(proto_encode_call_begin(x, &pid, &ref), 0);
}

static void mfa(ei_x_buff *x, const char *arg)
{
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "Elixir.Worker");
    ei_x_encode_atom(x, "start_link");
    ei_x_encode_list_header(x, 1);
    ei_x_encode_binary(x, arg, (long)strlen(arg));
    ei_x_encode_empty_list(x);
}

/* Decodes x as a call; returns proto_decode_request's result. */
static int decode(ei_x_buff *x, proto_request *req, proto_error *err)
{
    request r;
    const char *why;
    assert_int_equal(request_parse(x->buff, x->index, &r, &why), 0);
    assert_int_equal(r.kind, REQ_HUB);
    return proto_decode_request(x->buff, r.body_at, HUB, req, err);
}

static void expect_refused(ei_x_buff *x, const char *why)
{
    proto_request req;
    proto_error err;
    assert_int_equal(decode(x, &req, &err), -1);
    assert_string_equal(err.why, why);
    assert_null(req.entries);
    ei_x_free(x);
}

/* ── requests ─────────────────────────────────────────────────────────── */

static void test_children_start_decodes(void **state)
{
    (void)state;
    ei_x_buff x;
    call_begin(&x);
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "children_start");
    ei_x_encode_atom(&x, HUB);
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_binary(&x, "a", 1);
    mfa(&x, "a");
    ei_x_encode_atom(&x, "nil");
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_tuple_header(&x, 2); /* the id {b, 7} */
    ei_x_encode_atom(&x, "b");
    ei_x_encode_long(&x, 7);
    ei_x_encode_map_header(&x, 2); /* %{start: MFA, restart: temporary} */
    ei_x_encode_atom(&x, "start");
    mfa(&x, "b");
    ei_x_encode_atom(&x, "restart");
    ei_x_encode_atom(&x, "temporary");
    ei_x_encode_map_header(&x, 0);
    ei_x_encode_empty_list(&x);
    ei_x_encode_list_header(&x, 1); /* [{timeout, 900}] */
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "timeout");
    ei_x_encode_long(&x, 900);
    ei_x_encode_empty_list(&x);

    proto_request req;
    proto_error err;
    assert_int_equal(decode(&x, &req, &err), 0);
    assert_int_equal(req.kind, PROTO_CHILDREN_START);
    assert_int_equal(req.count, 2);
    assert_int_equal(req.timeout_ms, 900);
    /* spans name the very bytes of each field */
    assert_int_equal((unsigned char)x.buff[req.entries[0].id.at], ERL_BINARY_EXT);
    assert_int_equal(req.entries[0].id.len, 6);
    assert_int_equal((unsigned char)x.buff[req.entries[1].spec.at], ERL_MAP_EXT);
    assert_int_equal((unsigned char)x.buff[req.entries[1].meta.at], ERL_MAP_EXT);
    proto_request_free(&req);
    ei_x_free(&x);
}

/* children_start with one entry whose spec is written by `spec`. */
static void start_with_spec(ei_x_buff *x, void (*spec)(ei_x_buff *))
{
    call_begin(x);
    ei_x_encode_tuple_header(x, 4);
    ei_x_encode_atom(x, "children_start");
    ei_x_encode_atom(x, HUB);
    ei_x_encode_list_header(x, 1);
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_binary(x, "a", 1);
    spec(x);
    ei_x_encode_atom(x, "nil");
    ei_x_encode_empty_list(x);
    ei_x_encode_empty_list(x);
}

static void spec_atom(ei_x_buff *x)
{
    ei_x_encode_atom(x, "worker");
}

static void spec_bad_restart(ei_x_buff *x)
{
    ei_x_encode_map_header(x, 2);
    ei_x_encode_atom(x, "start");
    mfa(x, "a");
    ei_x_encode_atom(x, "restart");
    ei_x_encode_atom(x, "sometimes");
}

static void spec_no_start(ei_x_buff *x)
{
    ei_x_encode_map_header(x, 1);
    ei_x_encode_atom(x, "type");
    ei_x_encode_atom(x, "worker");
}

static void spec_with_id(ei_x_buff *x)
{
    ei_x_encode_map_header(x, 2);
    ei_x_encode_atom(x, "start");
    mfa(x, "a");
    ei_x_encode_atom(x, "id");
    ei_x_encode_atom(x, "a");
}

static void spec_improper_args(ei_x_buff *x)
{
    ei_x_encode_tuple_header(x, 3);
    ei_x_encode_atom(x, "m");
    ei_x_encode_atom(x, "f");
    ei_x_encode_list_header(x, 1);
    ei_x_encode_long(x, 1);
    ei_x_encode_long(x, 2); /* [1 | 2] */
}

static void spec_full(ei_x_buff *x)
{
    ei_x_encode_map_header(x, 5);
    ei_x_encode_atom(x, "start");
    mfa(x, "a");
    ei_x_encode_atom(x, "restart");
    ei_x_encode_atom(x, "transient");
    ei_x_encode_atom(x, "shutdown");
    ei_x_encode_long(x, 10000);
    ei_x_encode_atom(x, "type");
    ei_x_encode_atom(x, "supervisor");
    ei_x_encode_atom(x, "modules");
    ei_x_encode_atom(x, "dynamic");
}

static void test_specs_are_checked(void **state)
{
    (void)state;
    ei_x_buff x;
    void (*bad[])(ei_x_buff *) = {spec_atom, spec_bad_restart, spec_no_start, spec_with_id,
                                  spec_improper_args};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        start_with_spec(&x, bad[i]);
        expect_refused(&x, "bad_spec");
    }
    start_with_spec(&x, spec_full);
    proto_request req;
    proto_error err;
    assert_int_equal(decode(&x, &req, &err), 0);
    proto_request_free(&req);
    ei_x_free(&x);
}

static void test_hub_options_and_shapes_are_checked(void **state)
{
    (void)state;
    ei_x_buff x;

    call_begin(&x); /* another hub */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "children_stop");
    ei_x_encode_atom(&x, "other");
    ei_x_encode_empty_list(&x);
    ei_x_encode_empty_list(&x);
    expect_refused(&x, "unknown_hub");

    call_begin(&x); /* an unknown option */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "children_stop");
    ei_x_encode_atom(&x, HUB);
    ei_x_encode_empty_list(&x);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "colour");
    ei_x_encode_atom(&x, "red");
    ei_x_encode_empty_list(&x);
    expect_refused(&x, "unknown_option");

    call_begin(&x); /* a timeout over the limit */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "children_stop");
    ei_x_encode_atom(&x, HUB);
    ei_x_encode_empty_list(&x);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "timeout");
    ei_x_encode_long(&x, PROTO_MAX_TIMEOUT_MS + 1);
    ei_x_encode_empty_list(&x);
    expect_refused(&x, "bad_option");

    call_begin(&x); /* one child too many */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "children_stop");
    ei_x_encode_atom(&x, HUB);
    ei_x_encode_list_header(&x, PROTO_MAX_CHILDREN + 1);
    for (int i = 0; i <= PROTO_MAX_CHILDREN; i++)
        ei_x_encode_long(&x, 1000 + i);
    ei_x_encode_empty_list(&x);
    ei_x_encode_empty_list(&x);
    expect_refused(&x, "too_many_children");

    call_begin(&x); /* an id the C node cannot place exactly */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "children_stop");
    ei_x_encode_atom(&x, HUB);
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_map_header(&x, 0);
    ei_x_encode_empty_list(&x);
    ei_x_encode_empty_list(&x);
    expect_refused(&x, "map_in_child_id");

    call_begin(&x); /* wrong arity */
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "children_start");
    ei_x_encode_atom(&x, HUB);
    expect_refused(&x, "bad_arity");

    call_begin(&x); /* not a request at all */
    ei_x_encode_tuple_header(&x, 3);
    ei_x_encode_atom(&x, "what");
    ei_x_encode_atom(&x, "is");
    ei_x_encode_atom(&x, "this");
    expect_refused(&x, "unknown_request");
}

static void test_events_decode(void **state)
{
    (void)state;
    ei_x_buff x;
    call_begin(&x);
    ei_x_encode_tuple_header(&x, 5);
    ei_x_encode_atom(&x, "dispatch_event");
    ei_x_encode_atom(&x, HUB);
    ei_x_encode_atom(&x, "job");
    ei_x_encode_binary(&x, "payload", 7);
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "members");
    ei_x_encode_list_header(&x, 2);
    ei_x_encode_atom(&x, "a@h");
    ei_x_encode_atom(&x, "b@h");
    ei_x_encode_empty_list(&x);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "discard");
    ei_x_encode_atom(&x, "true");
    ei_x_encode_empty_list(&x);

    proto_request req;
    proto_error err;
    assert_int_equal(decode(&x, &req, &err), 0);
    assert_int_equal(req.kind, PROTO_DISPATCH_EVENT);
    assert_string_equal(req.event_id, "job");
    assert_int_equal(req.discard, 1);
    assert_int_equal(req.members, MEMBERS_LIST);
    char node[MAXATOMLEN_UTF8];
    assert_int_equal(proto_member_at(x.buff, &req, 1, node), 0);
    assert_string_equal(node, "b@h");
    assert_int_equal(proto_member_at(x.buff, &req, 2, node), -1);

    /* the encoded synod_event carries Data byte for byte */
    ei_x_buff out;
    ei_x_new_with_version(&out);
    assert_int_equal(proto_encode_event(&out, x.buff, &req, req.discard), 0);
    int at = 0, version, arity;
    char atom[MAXATOMLEN_UTF8], data[16];
    long len;
    assert_int_equal(ei_decode_version(out.buff, &at, &version), 0);
    assert_int_equal(ei_decode_tuple_header(out.buff, &at, &arity), 0);
    assert_int_equal(arity, 4);
    ei_decode_atom(out.buff, &at, atom);
    assert_string_equal(atom, "synod_event");
    ei_decode_atom(out.buff, &at, atom);
    assert_string_equal(atom, "job");
    assert_int_equal(ei_decode_binary(out.buff, &at, data, &len), 0);
    assert_memory_equal(data, "payload", 7);
    ei_decode_atom(out.buff, &at, atom);
    assert_string_equal(atom, "true");
    ei_x_free(&out);
    proto_request_free(&req);
    ei_x_free(&x);

    call_begin(&x); /* data over the limit */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "propagate_event");
    ei_x_encode_atom(&x, HUB);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "e");
    char *big = calloc(PROTO_MAX_DATA, 1);
    ei_x_encode_binary(&x, big, PROTO_MAX_DATA);
    free(big);
    ei_x_encode_empty_list(&x);
    expect_refused(&x, "data_too_large");
}

/* ── child-id keys ───────────────────────────────────────────────────── */

static int key_of(const uint8_t *id, size_t len, uint8_t *key, size_t *key_len, const char **why)
{
    return childkey_of(id, len, key, key_len, why);
}

static void test_child_keys(void **state)
{
    (void)state;
    static uint8_t key[CHILDKEY_MAX_KEY];
    size_t n;
    const char *why;

    const uint8_t binary[] = {109, 0, 0, 0, 2, 'h', 'i'};
    assert_int_equal(key_of(binary, sizeof binary, key, &n, &why), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(key, "hi", 2);

    const uint8_t atom[] = {119, 3, 'f', 'o', 'o'};
    assert_int_equal(key_of(atom, sizeof atom, key, &n, &why), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(key, "foo", 3);

    /* {1, "a"}: term_to_binary bytes, version byte first */
    const uint8_t tuple[] = {104, 2, 97, 1, 107, 0, 1, 'a'};
    assert_int_equal(key_of(tuple, sizeof tuple, key, &n, &why), 0);
    assert_int_equal(n, sizeof tuple + 1);
    assert_int_equal(key[0], 131);
    assert_memory_equal(key + 1, tuple, sizeof tuple);

    /* canonical forms pass */
    const uint8_t big[] = {110, 4, 0, 0, 0, 0, 0x80};           /* 2^31 */
    const uint8_t neg_big[] = {110, 4, 1, 1, 0, 0, 0x80};       /* -2^31 - 1 */
    const uint8_t integer[] = {98, 0xff, 0xff, 0xff, 0xff};     /* -1 */
    const uint8_t bits[] = {77, 0, 0, 0, 1, 3, 0xe0};           /* <<7::3>> */
    const uint8_t improper[] = {108, 0, 0, 0, 1, 97, 1, 97, 2}; /* [1 | 2] */
    const struct {
        const uint8_t *b;
        size_t n;
    } good[] = {{big, sizeof big},
                {neg_big, sizeof neg_big},
                {integer, sizeof integer},
                {bits, sizeof bits},
                {improper, sizeof improper}};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(childkey_check(good[i].b, good[i].n, &why), 0);

    /* every non-canonical or unplaceable form is refused, with its reason */
    const uint8_t wide_int[] = {98, 0, 0, 0, 5};               /* 5 as INTEGER_EXT */
    const uint8_t small_big[] = {110, 1, 0, 5};                /* 5 as SMALL_BIG */
    const uint8_t min_int_big[] = {110, 4, 1, 0, 0, 0, 0x80};  /* -2^31 as big */
    const uint8_t zero_top[] = {110, 5, 0, 0, 0, 0, 0x80, 0};  /* a leading zero digit */
    const uint8_t byte_list[] = {108, 0, 0, 0, 1, 97, 1, 106}; /* [1] as LIST_EXT */
    const uint8_t list_tail[] = {108, 0, 0, 0, 1, 100, 0, 0, 106};
    const uint8_t latin1[] = {100, 0, 1, 'a'};
    const uint8_t empty_string[] = {107, 0, 0};
    const uint8_t byte_bits[] = {77, 0, 0, 0, 1, 8, 1};     /* 8 bits: a binary */
    const uint8_t dirty_bits[] = {77, 0, 0, 0, 1, 3, 0xe1}; /* unused bits set */
    const uint8_t map[] = {116, 0, 0, 0, 0};
    const uint8_t large_tuple[] = {105, 0, 0, 0, 0};
    const uint8_t old_float[] = {99};
    const uint8_t trailing[] = {97, 1, 97};
    const struct {
        const uint8_t *b;
        size_t n;
        const char *why;
    } bad[] = {
        {wide_int, sizeof wide_int, "non_canonical_integer"},
        {small_big, sizeof small_big, "non_canonical_integer"},
        {min_int_big, sizeof min_int_big, "non_canonical_integer"},
        {zero_top, sizeof zero_top, "non_canonical_integer"},
        {byte_list, sizeof byte_list, "non_canonical_list"},
        {list_tail, sizeof list_tail, "non_canonical_atom"},
        {latin1, sizeof latin1, "non_canonical_atom"},
        {empty_string, sizeof empty_string, "non_canonical_list"},
        {byte_bits, sizeof byte_bits, "non_canonical_bitstring"},
        {dirty_bits, sizeof dirty_bits, "non_canonical_bitstring"},
        {map, sizeof map, "map_in_child_id"},
        {large_tuple, sizeof large_tuple, "non_canonical_tuple"},
        {old_float, sizeof old_float, "non_canonical_float"},
        {trailing, sizeof trailing, "trailing_bytes"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why = NULL;
        assert_int_equal(childkey_check(bad[i].b, bad[i].n, &why), -1);
        assert_string_equal(why, bad[i].why);
    }
    /* a list whose tail is a list */
    const uint8_t nested_tail[] = {108, 0, 0, 0, 1, 119, 1, 'a', 107, 0, 1, 1};
    assert_int_equal(childkey_check(nested_tail, sizeof nested_tail, &why), -1);
    assert_string_equal(why, "non_canonical_list");
}

/* ── owner grouping ──────────────────────────────────────────────────── */

static void test_hubview_owners(void **state)
{
    (void)state;
    char names[3][MAXATOMLEN_UTF8] = {"c@127.0.0.1", "a@127.0.0.1", "b@127.0.0.1"};
    hubview v;
    hubview_init(&v);
    const uint8_t *seed = (const uint8_t *)RING_DEFAULT_SEED;
    assert_int_equal(hubview_set(&v, (const char(*)[MAXATOMLEN_UTF8])names, 3, 64, seed, 2), 1);
    assert_int_equal(hubview_set(&v, (const char(*)[MAXATOMLEN_UTF8])names, 3, 64, seed, 2), 0);
    assert_string_equal(v.names[0], "a@127.0.0.1");
    assert_int_equal(hubview_find(&v, "b@127.0.0.1"), 1);
    assert_int_equal(hubview_find(&v, "z@127.0.0.1"), -1);

    /* owners are ring_owners' answer, mapped to the view's member indexes */
    ring_member_spec specs[3];
    for (uint32_t i = 0; i < 3; i++)
        specs[i] = (ring_member_spec){(const uint8_t *)v.names[i], strlen(v.names[i]), 1, i};
    ring_t *ring;
    assert_int_equal(ring_build(&ring, specs, 3, 64, seed, NULL), RING_OK);
    for (int k = 0; k < 200; k++) {
        char key[16];
        int len = snprintf(key, sizeof key, "child-%d", k);
        uint32_t got[3], want[3];
        assert_int_equal(hubview_owners(&v, (const uint8_t *)key, (size_t)len, got), 2);
        assert_int_equal(ring_owners(ring, key, (size_t)len, want, 2), 2);
        for (int r = 0; r < 2; r++)
            assert_int_equal(got[r], ring_member_tag(ring, want[r]));
        assert_int_not_equal(got[0], got[1]);
    }
    ring_free(ring);

    v.model = MODEL_ACTIVE_PASSIVE;
    assert_true(hubview_active(&v, 0));
    assert_false(hubview_active(&v, 1));
    v.model = MODEL_ACTIVE_ACTIVE;
    assert_true(hubview_active(&v, 1));
    hubview_free(&v);
}

/* ── collecting answers ──────────────────────────────────────────────── */

/* A start of ids "a", "b", "c" on targets n0 and n1 (every child on both),
 * built from a real call message. */
static pending *three_children(pend_kind kind, ei_x_buff *msg)
{
    call_begin(msg);
    ei_x_encode_tuple_header(msg, 4);
    ei_x_encode_atom(msg, "children_stop"); /* ids only: enough to collect */
    ei_x_encode_atom(msg, HUB);
    ei_x_encode_list_header(msg, 3);
    ei_x_encode_binary(msg, "a", 1);
    ei_x_encode_binary(msg, "b", 1);
    ei_x_encode_binary(msg, "c", 1);
    ei_x_encode_empty_list(msg);
    ei_x_encode_empty_list(msg);
    request r;
    const char *why;
    assert_int_equal(request_parse(msg->buff, msg->index, &r, &why), 0);
    proto_request req;
    proto_error err;
    assert_int_equal(proto_decode_request(msg->buff, r.body_at, HUB, &req, &err), 0);
    erlang_ref ref = test_ref(9);
    pending *p = pending_new(kind, &ref, 1000, &r.from, msg->buff, msg->index, r.tag_start,
                             r.tag_len, req.entries, req.count, 2);
    assert_non_null(p);
    pending_name_target(p, 0, "n0@h");
    pending_name_target(p, 1, "n1@h");
    for (uint32_t i = 0; i < 3; i++)
        for (uint32_t t = 0; t < 2; t++)
            assert_int_equal(pending_add(p, i, t, t == 0), 0);
    assert_int_equal(pending_seal(p), 0);
    return p;
}

/* Encodes {Id, Result} answers into one buffer and records them. */
static void answer(pending *p, const char *node, const char *id, const char *result_kind)
{
    ei_x_buff a;
    ei_x_new(&a);
    span sid = {a.index, 0};
    ei_x_encode_binary(&a, id, (long)strlen(id));
    sid.len = a.index - sid.at;
    span res = {a.index, 0};
    ei_x_encode_tuple_header(&a, 2);
    if (strcmp(result_kind, "ok") == 0) {
        erlang_pid pid = test_pid();
        ei_x_encode_atom(&a, "ok");
        ei_x_encode_pid(&a, &pid);
    } else {
        ei_x_encode_atom(&a, "error");
        ei_x_encode_atom(&a, result_kind);
    }
    res.len = a.index - res.at;
    assert_int_equal(pending_record(p, pending_target(p, node), a.buff, sid, res), 1);
    ei_x_free(&a);
}

typedef struct scripted {
    const char *node, *id, *kind;
} scripted;

static void answer_all(pending *p, const scripted *script, size_t n)
{
    for (size_t i = 0; i < n; i++)
        answer(p, script[i].node, script[i].id, script[i].kind);
}

/* Decodes {Status, [{Id, Node, Result}]} into "status:id@node=kind,..." */
static void describe_reply(const pending *p, char *out, size_t cap)
{
    ei_x_buff x;
    ei_x_new_with_version(&x);
    assert_int_equal(pending_encode_reply(p, &x), 0);
    int at = 0, v, arity, n;
    char status[MAXATOMLEN_UTF8];
    ei_decode_version(x.buff, &at, &v);
    ei_decode_tuple_header(x.buff, &at, &arity);
    ei_decode_atom(x.buff, &at, status);
    ei_decode_list_header(x.buff, &at, &n);
    size_t used = (size_t)snprintf(out, cap, "%s:", status);
    for (int i = 0; i < n; i++) {
        char id[8], node[MAXATOMLEN_UTF8], kind[MAXATOMLEN_UTF8], reason[MAXATOMLEN_UTF8] = "";
        long len;
        ei_decode_tuple_header(x.buff, &at, &arity);
        ei_decode_binary(x.buff, &at, id, &len);
        id[len] = '\0';
        ei_decode_atom(x.buff, &at, node);
        ei_decode_tuple_header(x.buff, &at, &arity);
        ei_decode_atom(x.buff, &at, kind);
        int type, size;
        ei_get_type(x.buff, &at, &type, &size);
        if (type == ERL_SMALL_TUPLE_EXT) { /* {nodedown, Node} */
            ei_decode_tuple_header(x.buff, &at, &arity);
            ei_decode_atom(x.buff, &at, reason);
            ei_skip_term(x.buff, &at);
        } else if (type == ERL_ATOM_EXT) {
            ei_decode_atom(x.buff, &at, reason);
        } else {
            ei_skip_term(x.buff, &at);
        }
        used += (size_t)snprintf(out + used, cap - used, "%s%s@%s=%s", i ? "," : "", id, node,
                                 strcmp(kind, "ok") == 0 ? "ok" : reason);
    }
    ei_x_free(&x);
}

static void test_pending_start_collects_and_fails_nodes(void **state)
{
    (void)state;
    ei_x_buff msg;
    pending *p = three_children(PEND_START, &msg);
    char text[512];

    /* n0 in order; n1 out of order */
    const scripted first[] = {{"n0@h", "a", "ok"}, {"n1@h", "c", "ok"}, {"n1@h", "a", "ok"}};
    answer_all(p, first, 3);
    assert_false(pending_done(p));
    /* a repeated or unknown answer fills nothing */
    ei_x_buff a;
    ei_x_new(&a);
    ei_x_encode_binary(&a, "zz", 2);
    span id = {0, a.index};
    assert_int_equal(pending_record(p, 0, a.buff, id, id), 0);
    ei_x_free(&a);

    ei_x_buff reason;
    ei_x_new(&reason);
    ei_x_encode_tuple_header(&reason, 2);
    ei_x_encode_atom(&reason, "error");
    ei_x_encode_tuple_header(&reason, 2);
    ei_x_encode_atom(&reason, "nodedown");
    ei_x_encode_atom(&reason, "n0@h");
    assert_int_equal(pending_fail(p, 0, reason.buff, reason.index), 0);
    ei_x_free(&reason);
    assert_false(pending_done(p));
    answer(p, "n1@h", "b", "already_started");
    assert_true(pending_done(p));

    describe_reply(p, text, sizeof text);
    assert_string_equal(text, "error:a@n0@h=ok,a@n1@h=ok,b@n0@h=nodedown,b@n1@h=already_started,"
                              "c@n0@h=nodedown,c@n1@h=ok");
    pending_free(p);
    ei_x_free(&msg);
}

static void test_pending_stop_reports_each_child_once(void **state)
{
    (void)state;
    ei_x_buff msg;
    pending *p = three_children(PEND_STOP, &msg);
    char text[512];
    /* a: stopped on n1; b: nowhere; c: stopped on n0 */
    const scripted script[] = {{"n0@h", "a", "not_found"}, {"n1@h", "a", "ok"},
                               {"n0@h", "b", "not_found"}, {"n1@h", "b", "not_found"},
                               {"n0@h", "c", "ok"},        {"n1@h", "c", "not_found"}};
    answer_all(p, script, 6);
    describe_reply(p, text, sizeof text);
    assert_string_equal(text, "error:a@n1@h=ok,b@n0@h=not_found,c@n0@h=ok");
    pending_free(p);
    ei_x_free(&msg);
}

/* ── answers ─────────────────────────────────────────────────────────── */

static void test_answers_decode(void **state)
{
    (void)state;
    erlang_ref ref = test_ref(5);
    ei_x_buff x;
    proto_answer a;
    const char *why;

    ei_x_new_with_version(&x); /* {synod_results, Ref, Node, [{<<"a">>, {ok, Pid}}]} */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "synod_results");
    ei_x_encode_ref(&x, &ref);
    ei_x_encode_atom(&x, "n0@h");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_binary(&x, "a", 1);
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "ok");
    erlang_pid pid = test_pid();
    ei_x_encode_pid(&x, &pid);
    ei_x_encode_empty_list(&x);
    assert_int_equal(proto_decode_answer(x.buff, &a, &why), 0);
    assert_int_equal(a.kind, ANSWER_RESULTS);
    assert_int_equal(ei_cmp_refs(&a.ref, &ref), 0);
    assert_string_equal(a.node, "n0@h");
    assert_int_equal(a.count, 1);
    int at;
    span id, result;
    assert_int_equal(proto_results_begin(x.buff, &a, &at), 0);
    assert_int_equal(proto_results_next(x.buff, &at, &id, &result), 0);
    assert_true(proto_result_ok(x.buff, result));
    assert_false(proto_result_not_found(x.buff, result));
    ei_x_free(&x);

    ei_x_new_with_version(&x); /* {Ref, ok}: a reply */
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_ref(&x, &ref);
    ei_x_encode_atom(&x, "ok");
    assert_int_equal(proto_decode_answer(x.buff, &a, &why), 0);
    assert_int_equal(a.kind, ANSWER_REPLY);
    ei_x_free(&x);

    ei_x_new_with_version(&x); /* {synod, Hub, member_left, {Node, nodedown}} */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "synod");
    ei_x_encode_atom(&x, HUB);
    ei_x_encode_atom(&x, "member_left");
    ei_x_encode_tuple_header(&x, 2);
    ei_x_encode_atom(&x, "n0@h");
    ei_x_encode_atom(&x, "nodedown");
    assert_int_equal(proto_decode_answer(x.buff, &a, &why), 0);
    assert_int_equal(a.kind, ANSWER_EVENT);
    assert_string_equal(a.event_id, "member_left");
    ei_x_free(&x);

    ei_x_new_with_version(&x); /* anything else is refused */
    ei_x_encode_atom(&x, "ok");
    assert_int_equal(proto_decode_answer(x.buff, &a, &why), -1);
    ei_x_free(&x);

    ei_x_new_with_version(&x); /* results whose list holds a non-pair */
    ei_x_encode_tuple_header(&x, 4);
    ei_x_encode_atom(&x, "synod_results");
    ei_x_encode_ref(&x, &ref);
    ei_x_encode_atom(&x, "n0@h");
    ei_x_encode_list_header(&x, 1);
    ei_x_encode_atom(&x, "junk");
    ei_x_encode_empty_list(&x);
    assert_int_equal(proto_decode_answer(x.buff, &a, &why), -1);
    ei_x_free(&x);
}

static void test_start_batch_encodes_protocol_shape(void **state)
{
    (void)state;
    ei_x_buff msg;
    start_with_spec(&msg, spec_full);
    proto_request req;
    proto_error err;
    assert_int_equal(decode(&msg, &req, &err), 0);

    erlang_ref ref = test_ref(3);
    erlang_pid self = test_pid();
    ei_x_buff x;
    ei_x_new_with_version(&x);
    assert_int_equal(proto_encode_batch_begin(&x, 1, &ref, &self, msg.buff, NULL, 0, 1), 0);
    assert_int_equal(proto_encode_start_entry(&x, msg.buff, &req.entries[0], 0), 0);
    assert_int_equal(proto_encode_batch_end(&x), 0);

    /* {synod_start, Ref, [Self], [{Id, Spec, Meta, passive}], []} */
    int at = 0, v, arity, n;
    char atom[MAXATOMLEN_UTF8];
    ei_decode_version(x.buff, &at, &v);
    ei_decode_tuple_header(x.buff, &at, &arity);
    assert_int_equal(arity, 5);
    ei_decode_atom(x.buff, &at, atom);
    assert_string_equal(atom, "synod_start");
    ei_skip_term(x.buff, &at);
    ei_decode_list_header(x.buff, &at, &n);
    assert_int_equal(n, 1);
    ei_skip_term(x.buff, &at);
    ei_skip_term(x.buff, &at); /* [] */
    ei_decode_list_header(x.buff, &at, &n);
    assert_int_equal(n, 1);
    ei_decode_tuple_header(x.buff, &at, &arity);
    assert_int_equal(arity, 4);
    /* the spec is the caller's bytes, copied */
    ei_skip_term(x.buff, &at);
    int spec_at = at;
    ei_skip_term(x.buff, &at);
    assert_int_equal(at - spec_at, req.entries[0].spec.len);
    assert_memory_equal(x.buff + spec_at, msg.buff + req.entries[0].spec.at,
                        (size_t)req.entries[0].spec.len);
    ei_skip_term(x.buff, &at);
    ei_decode_atom(x.buff, &at, atom);
    assert_string_equal(atom, "passive");
    ei_x_free(&x);
    proto_request_free(&req);
    ei_x_free(&msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_children_start_decodes),
        cmocka_unit_test(test_specs_are_checked),
        cmocka_unit_test(test_hub_options_and_shapes_are_checked),
        cmocka_unit_test(test_events_decode),
        cmocka_unit_test(test_child_keys),
        cmocka_unit_test(test_hubview_owners),
        cmocka_unit_test(test_pending_start_collects_and_fails_nodes),
        cmocka_unit_test(test_pending_stop_reports_each_child_once),
        cmocka_unit_test(test_answers_decode),
        cmocka_unit_test(test_start_batch_encodes_protocol_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
