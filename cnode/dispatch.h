/*
 * dispatch.h — the dispatcher's work done by the C node: children_start,
 * children_stop, propagate_event, dispatch_event and the placement calls
 * (docs/cnode.md), and keeping the hub view current.
 *
 * It decides and encodes; it never touches a socket or a clock. Messages go
 * out through a transport (node.c implements it over ei connections), and
 * the current time comes in as an argument, so the event loop stays the only
 * place with I/O.
 *
 * Membership: on every new connection it asks that node's coordinator for
 * ring_info and config and subscribes to member_joined / member_left; on any
 * such event, on a lost connection, and every DISPATCH_REFRESH_MS it asks
 * every member again. The latest answer wins: every coordinator's answers
 * and events travel on one ordered connection, so a stale answer is always
 * followed by the event that makes the C node ask again.
 */
#ifndef SYNOD_CNODE_DISPATCH_H
#define SYNOD_CNODE_DISPATCH_H

#include <stddef.h>

#include <ei.h>

#include "hubview.h"
#include "pending.h"
#include "request.h"

#define DISPATCH_REFRESH_MS 2000
#define DISPATCH_MAX_CALLS 64

typedef struct transport {
    void *ctx;
    /* Sends an encoded message (version byte first) to the process
     * registered as `name` on `node`; 0, or -1 when not connected. */
    int (*send_reg)(void *ctx, const char *node, const char *name, const ei_x_buff *x);
    int (*send_pid)(void *ctx, const erlang_pid *to, const ei_x_buff *x);
    int (*make_ref)(void *ctx, erlang_ref *ref);
    erlang_pid self;
} transport;

typedef enum call_kind { CALL_NONE, CALL_RING_INFO, CALL_CONFIG, CALL_SUBSCRIBE } call_kind;

typedef struct dispatcher {
    const char *hub;
    transport tr;
    hubview view;
    int view_changed; /* set when the members changed; node.c clears it */
    pending *pending;
    struct {
        erlang_ref ref;
        call_kind kind;
    } calls[DISPATCH_MAX_CALLS]; /* calls to coordinators awaiting answers */
    size_t next_call;
    long long next_refresh_ms;
} dispatcher;

void dispatcher_init(dispatcher *d, const char *hub, const transport *tr);
void dispatcher_free(dispatcher *d);

/* A GenServer call for the dispatcher (req->kind == REQ_HUB); buf passed
 * etf_check_message. Replies now, or later when the answers are in. */
void dispatcher_call(dispatcher *d, const char *buf, int len, const request *req, long long now);

/* A message to the C node's pid that is not a call: answers and events. */
void dispatcher_answer(dispatcher *d, const char *buf, int len);

void dispatcher_node_up(dispatcher *d, const char *node);
/* Fails every open slot on `node` with {error, {nodedown, Node}}. */
void dispatcher_node_down(dispatcher *d, const char *node);

/* Expires requests past their deadline ({error, timeout}) and refreshes the
 * view when due; `connected` are the nodes connected now (asked when the
 * hub is not known yet). */
void dispatcher_tick(dispatcher *d, long long now, const char *const *connected, size_t n);

/* Milliseconds until the next deadline or refresh (at most max_ms). */
int dispatcher_timeout_ms(const dispatcher *d, long long now, int max_ms);

#endif
