/*
 * pending.h — requests the C node is waiting on: one per children_start,
 * children_stop or dispatch_event call whose answer depends on other nodes.
 *
 * A pending request owns a copy of the caller's message (every span it holds
 * points into that copy: child ids, the caller's reply tag) and one slot per
 * (child, target node) pair, in request order. Answers fill slots; a target
 * that goes down, or the deadline, fills every slot still open with an error,
 * so each request ends in bounded time and answers its caller exactly once.
 *
 * Pure: no I/O, no clock (deadlines are compared with times passed in).
 * Matching an answer to its slot costs O(1) when a node answers in request
 * order (coordinators do), O(children of that node) otherwise.
 */
#ifndef SYNOD_CNODE_PENDING_H
#define SYNOD_CNODE_PENDING_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "proto.h"

typedef enum pend_kind { PEND_START, PEND_STOP, PEND_EVENT } pend_kind;

typedef struct pend_slot {
    uint32_t entry;  /* index into entries */
    uint32_t target; /* index into targets */
    int active;      /* the replica's mode (starts only) */
    char *result;    /* the encoded Result term (no version byte); NULL while open */
    int result_len;
} pend_slot;

typedef struct pend_target {
    char node[MAXATOMLEN_UTF8];
    uint32_t *slots; /* this target's slots, in request order */
    uint32_t count, filled, cursor;
} pend_target;

typedef struct pending {
    pend_kind kind;
    erlang_ref ref;
    long long deadline_ms;
    erlang_pid caller;
    char *msg; /* copy of the caller's message */
    int msg_len;
    int tag_at, tag_len; /* the caller's reply tag, in msg */
    proto_entry *entries;
    size_t nentries;
    pend_slot *slots;
    size_t nslots, cap_slots, open;
    pend_target *targets;
    size_t ntargets;
    struct pending *next;
} pending;

/* A new request waiting on up to `ntargets` nodes. Copies msg; takes
 * ownership of entries (spans into msg). Returns NULL when out of memory
 * (entries are then freed too). */
pending *pending_new(pend_kind kind, const erlang_ref *ref, long long deadline_ms,
                     const erlang_pid *caller, const char *msg, int msg_len, int tag_at,
                     int tag_len, proto_entry *entries, size_t nentries, size_t ntargets);
void pending_free(pending *p);

/* Names target t (its node). */
void pending_name_target(pending *p, size_t t, const char *node);
/* Adds the slot (entry, target); call in request order. Returns 0 or -1. */
int pending_add(pending *p, uint32_t entry, uint32_t target, int active);
/* Ends construction: builds each target's slot list. Returns 0 or -1. */
int pending_seal(pending *p);

/* The target answering for `node`, or -1. */
int pending_target(const pending *p, const char *node);
/* Records target t's Result (bytes of buf) for child id (bytes of buf).
 * Returns 1 if it filled a slot, 0 if nothing matched (a stray or repeated
 * answer, ignored), -1 when out of memory. */
int pending_record(pending *p, int t, const char *buf, span id, span result);
/* Fills every open slot of target t (or of all targets, t = -1) with a copy
 * of the encoded Result term `reason` (no version byte). Returns 0 or -1. */
int pending_fail(pending *p, int t, const char *reason, int reason_len);

static inline int pending_done(const pending *p)
{
    return p->open == 0;
}

/* Encodes the caller's reply (not the {Tag, _} wrapper):
 *   start: {ok | error, [{Id, Node, Result}]} — one per child and owner;
 *   stop:  the same, where a child counts as stopped if any node stopped it:
 *          its {error, not_found} answers from other nodes are left out, and
 *          a child no node knew is reported once as not_found;
 *   event: the one target's answer as it came.
 * The status is ok when every listed Result is {ok, _}. */
int pending_encode_reply(const pending *p, ei_x_buff *x);

#endif
