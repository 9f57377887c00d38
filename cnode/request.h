/*
 * request.h — what the C node accepts on the wire (docs/cnode.md).
 *
 * Every message is first checked whole by etf_check_message (bounds-checked;
 * ei's decoders are not), then decoded with ei. A request is a GenServer
 * call, {'$gen_call', {Pid, Tag}, Request}; the reply is {Tag, Reply} sent to
 * Pid, with Tag copied byte for byte (in OTP 25 it is [alias | Ref]).
 */
#ifndef SYNOD_CNODE_REQUEST_H
#define SYNOD_CNODE_REQUEST_H

#include <ei.h>

/* Messages larger than this are refused without being decoded: calls, and
 * messages to the node's own pid (coordinators' answers, which may carry a
 * result for each of PROTO_MAX_CHILDREN children). */
#define REQUEST_MAX_BYTES (1 << 20)
#define ANSWER_MAX_BYTES (8 << 20)

typedef enum request_kind {
    REQ_IS_AUTH, /* {is_auth, Node}: net_adm:ping's handshake */
    REQ_PING,    /* ping -> pong */
    REQ_VERSION, /* version -> {ok, <<"0.1.0">>} */
    REQ_NODES,   /* nodes -> [Node] connected now */
    REQ_HUB,     /* anything else sent to the server: the dispatcher's (dispatch.h) */
    REQ_UNKNOWN, /* a call to another name: answered {error, {bad_request, unknown_request}} */
} request_kind;

typedef struct request {
    request_kind kind;
    erlang_pid from;
    int tag_start, tag_len; /* the caller's Tag: bytes of the message buffer */
    int body_at;            /* where the Request term starts */
} request;

/* Why a message was refused before anything decoded it. A call refused this
 * way is still answered {error, {bad_request, request_refusal_atom(R)}} when
 * request_parse_head can read its reply address. */
typedef enum request_refusal {
    REFUSED_NONE = 0,
    REFUSED_TOO_LARGE, /* over the size limit: too_large */
    REFUSED_TOO_DEEP,  /* nested deeper than ETF_DEFAULT_MAX_DEPTH: too_deep */
    REFUSED_MALFORMED, /* not one well-formed term: bad_term */
} request_refusal;

/* Checks a message before anything decodes it: at most max_bytes, and one
 * well-formed term (etf_check_message). Returns REFUSED_NONE (0), or the
 * refusal with *why for the log. */
request_refusal request_validate(const char *buf, int len, int max_bytes, const char **why);

/* The reason atom a refused call is answered with. */
const char *request_refusal_atom(request_refusal r);

/* Reads the reply address of a message that request_validate refused: the
 * head {'$gen_call', {Pid, Tag}, is checked part by part (bounded by len,
 * like everything else), the body is never looked at. Returns 0 with
 * req->from, the tag and body_at set (kind REQ_UNKNOWN), or -1 when the head
 * is not a call's. */
int request_parse_head(const char *buf, int len, request *req);

/* Parses a GenServer call: request_validate with REQUEST_MAX_BYTES, then
 * request_parse_valid. */
int request_parse(const char *buf, int len, request *req, const char **why);
/* Parses a GenServer call in a validated message. Returns 0 when there is a
 * reply address, or -1 with *why when the message is not a call. */
int request_parse_valid(const char *buf, request *req, const char **why);

/* Starts a reply in x: the version byte, a 2-tuple and the caller's Tag. The
 * caller then encodes the reply term. Returns 0 or -1. */
int request_reply_begin(ei_x_buff *x, const char *buf, const request *req);

#endif
