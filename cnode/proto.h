/*
 * proto.h — the C node's side of the hub protocol (docs/protocol.md,
 * docs/cnode.md): decoding and validating the dispatcher requests it accepts
 * as GenServer calls and the answers coordinators send it, and encoding the
 * messages it sends. No sockets, no clock, no state: every function works on
 * one message buffer that has already passed etf_check_message (request.c
 * does that), so ei only ever reads inside a well-formed term; on top of
 * that, every field is checked for shape and size here before use.
 *
 * Decoded requests do not copy the terms they carry: a span names the bytes
 * of one term inside the message. Child specs, metadata and event data are
 * forwarded by copying those bytes, never rebuilt.
 */
#ifndef SYNOD_CNODE_PROTO_H
#define SYNOD_CNODE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "ring.h"

/* Limits on every field (docs/cnode.md, "Limits"). The whole message is at
 * most REQUEST_MAX_BYTES (request.h). */
#define PROTO_MAX_CHILDREN 10000 /* entries or ids in one start or stop */
#define PROTO_MAX_SPEC 65536     /* one encoded child spec */
#define PROTO_MAX_META 65536     /* one encoded metadata map */
#define PROTO_MAX_DATA 524288    /* one encoded event payload */
#define PROTO_MAX_REPLY_TO 16    /* extra respondents */
#define PROTO_MAX_NODES 4096     /* nodes in a members list or ring */
#define PROTO_MAX_TIMEOUT_MS 300000
#define PROTO_DEFAULT_TIMEOUT_MS 5000

/* The bytes of one encoded term (no version byte) inside a message. */
typedef struct span {
    int at, len;
} span;

/* Why a request was refused: encoded {bad_request, Why} or, with a detail
 * term, {bad_request, {Why, Detail}} (Detail copied from the request). */
typedef struct proto_error {
    const char *why;
    span detail;
} proto_error;

typedef enum proto_kind {
    PROTO_CHILDREN_START,  /* {children_start, Hub, [{Id, Spec, Meta}], Opts} */
    PROTO_CHILDREN_STOP,   /* {children_stop, Hub, [Id], Opts} */
    PROTO_PROPAGATE_EVENT, /* {propagate_event, Hub, {EventId, Data}, Opts} */
    PROTO_DISPATCH_EVENT,  /* {dispatch_event, Hub, EventId, Data, Opts} */
    PROTO_OWNERS,          /* {owners, Hub, Id} */
    PROTO_RING_INFO,       /* {ring_info, Hub} */
    PROTO_RING_KEY,        /* {ring_key, Id} */
    PROTO_RING_OWNERS,     /* {ring_owners, Members, Vnodes, Seed, [Key], N} */
} proto_kind;

typedef enum proto_members_kind {
    MEMBERS_GLOBAL,
    MEMBERS_LOCAL, /* the caller's node (docs/cnode.md) */
    MEMBERS_EXTERNAL,
    MEMBERS_LIST,
} proto_members_kind;

typedef struct proto_entry {
    span id, spec, meta; /* spec and meta unused for stops and keys */
} proto_entry;

typedef struct proto_request {
    proto_kind kind;
    char hub[MAXATOMLEN_UTF8];
    proto_entry *entries; /* children, ids or keys; owned (proto_request_free) */
    size_t count;
    unsigned timeout_ms;
    span reply_to[PROTO_MAX_REPLY_TO]; /* pids */
    size_t nreply_to;
    char event_id[MAXATOMLEN_UTF8];
    span data;
    int discard;
    proto_members_kind members;
    span member_list; /* MEMBERS_LIST: a proper list of node atoms */
    size_t nmember_list;
    /* PROTO_RING_OWNERS */
    ring_member_spec *ring_members; /* names point into the message; owned */
    span *ring_member_terms;        /* owned */
    size_t nring_members;
    uint32_t vnodes;
    uint8_t seed[RING_SEED_BYTES];
    size_t n;
} proto_request;

/* Decodes the Request of a GenServer call, buf[at..] (the message passed
 * etf_check_message). Returns 0, or -1 with *err; never allocates on
 * failure. On success free with proto_request_free. `hub` is the hub this
 * node serves: a request naming another is refused (unknown_hub). A request
 * that is not one of the shapes above fails with why "unknown_request". */
int proto_decode_request(const char *buf, int at, const char *hub, proto_request *req,
                         proto_error *err);
void proto_request_free(proto_request *req);

/* The i-th node of a MEMBERS_LIST, as text. Returns 0 or -1. */
int proto_member_at(const char *buf, const proto_request *req, size_t i,
                    char node[MAXATOMLEN_UTF8]);

/* Validators, exposed for tests: a stored child spec ({M, F, A}, or a map
 * with start and any of restart, shutdown, type, modules) and metadata (nil
 * or a map). Return 0 or -1 with *why. */
int proto_check_spec(const char *buf, int at, const char **why);
int proto_check_meta(const char *buf, int at, const char **why);

/* Messages the C node receives at its own pid. */
typedef enum proto_answer_kind {
    ANSWER_RESULTS, /* {synod_results, Ref, Node, [{Id, Result}]} */
    ANSWER_CHILD,   /* {Ref, Id, Result, Node} */
    ANSWER_REPLY,   /* {Ref, Reply}: the answer to a call it made */
    ANSWER_EVENT,   /* {synod, Hub, EventId, Data} */
} proto_answer_kind;

typedef struct proto_answer {
    proto_answer_kind kind;
    erlang_ref ref;
    char node[MAXATOMLEN_UTF8];
    span list; /* ANSWER_RESULTS: the result list */
    size_t count;
    span id, result; /* ANSWER_CHILD */
    span reply;      /* ANSWER_REPLY */
    char hub[MAXATOMLEN_UTF8], event_id[MAXATOMLEN_UTF8];
    span data; /* ANSWER_EVENT */
} proto_answer;

/* Decodes a message that is not a GenServer call. buf passed
 * etf_check_message. Returns 0, or -1 with *why. */
int proto_decode_answer(const char *buf, proto_answer *ans, const char **why);

/* Iterates the {Id, Result} pairs of an ANSWER_RESULTS list: *at starts at
 * ans->list.at + the list header (proto_results_begin). Returns 0 or -1. */
int proto_results_begin(const char *buf, const proto_answer *ans, int *at);
int proto_results_next(const char *buf, int *at, span *id, span *result);

/* Whether a Result term is {ok, _}; and whether it is {error, not_found}. */
int proto_result_ok(const char *buf, span result);
int proto_result_not_found(const char *buf, span result);

/* ring_info answered by a coordinator: {ok, [Node], Vnodes, Seed, RF}. Node
 * names are written to names (cap entries of MAXATOMLEN_UTF8). Returns 0 or
 * -1. */
int proto_decode_ring_info(const char *buf, span reply, char (*names)[MAXATOMLEN_UTF8], size_t cap,
                           size_t *count, uint32_t *vnodes, uint8_t seed[RING_SEED_BYTES],
                           unsigned *rf);
/* config answered by a coordinator: {ok, {RF, Model, Vnodes, Seed,
 * PartitionStrategy}}. *active_passive is set from Model. */
int proto_decode_config(const char *buf, span reply, int *active_passive);

/* ── encoding ───────────────────────────────────────────────────────────
 * Each encoder appends to x (which already holds the version byte, or the
 * start of an enclosing term) and returns 0 or -1. */

/* {'$gen_call', {Self, Ref}, ... — the caller then encodes the request. */
int proto_encode_call_begin(ei_x_buff *x, const erlang_pid *self, const erlang_ref *ref);
/* {synod_start | synod_stop, Ref, [Self | ReplyTo], [...count entries — the
 * caller appends them, then proto_encode_batch_end. */
int proto_encode_batch_begin(ei_x_buff *x, int start, const erlang_ref *ref, const erlang_pid *self,
                             const char *buf, const span *reply_to, size_t nreply_to, size_t count);
/* One StartEntry {Id, Spec, Meta, Mode}, its terms copied from buf. */
int proto_encode_start_entry(ei_x_buff *x, const char *buf, const proto_entry *e, int active);
int proto_encode_batch_end(ei_x_buff *x);
/* {synod_event, EventId, Data, Discard} */
int proto_encode_event(ei_x_buff *x, const char *buf, const proto_request *req, int discard);
/* {error, {bad_request, Why}} or {error, {bad_request, {Why, Detail}}} */
int proto_encode_bad_request(ei_x_buff *x, const char *buf, const proto_error *err);
/* Appends a span's bytes. */
int proto_append(ei_x_buff *x, const char *buf, span s);

#endif
