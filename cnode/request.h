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

/* Messages larger than this are refused without being decoded. */
#define REQUEST_MAX_BYTES (1 << 20)

typedef enum request_kind {
    REQ_IS_AUTH, /* {is_auth, Node}: net_adm:ping's handshake */
    REQ_PING,    /* ping -> pong */
    REQ_VERSION, /* version -> {ok, <<"0.1.0">>} */
    REQ_NODES,   /* nodes -> [Node] connected now */
    REQ_UNKNOWN, /* anything else: answered {error, {bad_request, unknown_request}} */
} request_kind;

typedef struct request {
    request_kind kind;
    erlang_pid from;
    int tag_start, tag_len; /* the caller's Tag: bytes of the message buffer */
} request;

/* Parses a GenServer call. Returns 0 when there is a reply address (kind may
 * still be REQ_UNKNOWN), or -1 with *why when the message is not a call we
 * can answer. */
int request_parse(const char *buf, int len, request *req, const char **why);

/* Starts a reply in x: the version byte, a 2-tuple and the caller's Tag. The
 * caller then encodes the reply term. Returns 0 or -1. */
int request_reply_begin(ei_x_buff *x, const char *buf, const request *req);

#endif
