/* dispatch.c — see dispatch.h. */
#include "dispatch.h"

#include <stdlib.h>
#include <string.h>

#include "childkey.h"
#include "log.h"

/* ── sending ─────────────────────────────────────────────────────────── */

static int new_message(ei_x_buff *x)
{
    return ei_x_new_with_version(x);
}

static void send_reg(dispatcher *d, const char *node, ei_x_buff *x, int *ok)
{
    int rc = d->tr.send_reg(d->tr.ctx, node, d->hub, x);
    if (ok)
        *ok = rc == 0;
    ei_x_free(x);
}

/* Sends {Tag, Reply} to a caller; `encode` writes Reply. */
typedef int (*reply_fn)(dispatcher *d, ei_x_buff *x, const void *arg);

static void reply_with(dispatcher *d, const char *buf, const request *req, reply_fn encode,
                       const void *arg)
{
    ei_x_buff x;
    if (request_reply_begin(&x, buf, req) != 0)
        return;
    if (encode(d, &x, arg) != 0)
        LOG_E("cannot encode a reply");
    else if (d->tr.send_pid(d->tr.ctx, &req->from, &x) != 0)
        LOG_W("cannot reply to %s: not connected", req->from.node);
    ei_x_free(&x);
}

static int encode_atom(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)d;
    return ei_x_encode_atom(x, arg);
}

/* {error, Reason} with Reason an atom */
static int encode_error(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)d;
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
           ei_x_encode_atom(x, arg);
}

typedef struct bad_arg {
    const char *buf;
    const proto_error *err;
} bad_arg;

static int encode_bad(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)d;
    const bad_arg *b = arg;
    return proto_encode_bad_request(x, b->buf, b->err);
}

static void reply_bad(dispatcher *d, const char *buf, const request *req, const char *why,
                      span detail)
{
    proto_error err = {why, detail};
    bad_arg arg = {buf, &err};
    log_limited(LOGK_BAD_REQUEST, LOG_INFO, "refused a request from %s: %s", req->from.node, why);
    reply_with(d, buf, req, encode_bad, &arg);
}

/* Calls {Hub, Node} with `request` (an atom or encoded by enc). */
static void call_coordinator(dispatcher *d, const char *node, call_kind kind)
{
    ei_x_buff x;
    erlang_ref ref;
    if (d->tr.make_ref(d->tr.ctx, &ref) != 0 || new_message(&x) != 0)
        return;
    int bad = proto_encode_call_begin(&x, &d->tr.self, &ref);
    if (kind == CALL_RING_INFO)
        bad = bad || ei_x_encode_atom(&x, "ring_info");
    else if (kind == CALL_CONFIG)
        bad = bad || ei_x_encode_atom(&x, "config");
    else
        bad = bad || ei_x_encode_tuple_header(&x, 3) || ei_x_encode_atom(&x, "synod_subscribe") ||
              ei_x_encode_pid(&x, &d->tr.self) || ei_x_encode_list_header(&x, 2) ||
              ei_x_encode_atom(&x, "member_joined") || ei_x_encode_atom(&x, "member_left") ||
              ei_x_encode_empty_list(&x);
    if (bad) {
        ei_x_free(&x);
        return;
    }
    int ok;
    send_reg(d, node, &x, &ok);
    if (ok) {
        d->calls[d->next_call].ref = ref;
        d->calls[d->next_call].kind = kind;
        d->next_call = (d->next_call + 1) % DISPATCH_MAX_CALLS;
    }
}

static void ask_node(dispatcher *d, const char *node)
{
    call_coordinator(d, node, CALL_RING_INFO);
    if (d->view.model == MODEL_UNKNOWN)
        call_coordinator(d, node, CALL_CONFIG);
}

static void ask_members(dispatcher *d)
{
    for (size_t i = 0; i < d->view.count; i++)
        ask_node(d, d->view.names[i]);
}

/* ── lifecycle ───────────────────────────────────────────────────────── */

void dispatcher_init(dispatcher *d, const char *hub, const transport *tr)
{
    memset(d, 0, sizeof *d);
    d->hub = hub;
    d->tr = *tr;
    hubview_init(&d->view);
}

void dispatcher_free(dispatcher *d)
{
    while (d->pending) {
        pending *p = d->pending;
        d->pending = p->next;
        pending_free(p);
    }
    hubview_free(&d->view);
}

/* ── finishing requests ──────────────────────────────────────────────── */

static int encode_pending(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)d;
    return pending_encode_reply(arg, x);
}

static void finish(dispatcher *d, pending *p)
{
    request caller = {.from = p->caller, .tag_start = p->tag_at, .tag_len = p->tag_len};
    reply_with(d, p->msg, &caller, encode_pending, p);
    pending **link = &d->pending;
    while (*link && *link != p)
        link = &(*link)->next;
    if (*link)
        *link = p->next;
    pending_free(p);
}

/* Encodes {error, {Why, Node}} or {error, Why} (node NULL) as a Result term
 * without the version byte. */
static int failure(ei_x_buff *x, const char *why, const char *node)
{
    if (ei_x_new(x) != 0)
        return -1;
    int bad = ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error");
    if (node)
        bad = bad || ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, why) ||
              ei_x_encode_atom(x, node);
    else
        bad = bad || ei_x_encode_atom(x, why);
    if (bad) {
        ei_x_free(x);
        return -1;
    }
    return 0;
}

static void fail_target(pending *p, int t, const char *why, const char *node)
{
    ei_x_buff x;
    if (failure(&x, why, node) != 0 || pending_fail(p, t, x.buff, x.index) != 0)
        LOG_E("out of memory failing a request");
    ei_x_free(&x);
}

/* Links p in, or answers at once if nothing is left to wait for. */
static void track(dispatcher *d, pending *p)
{
    p->next = d->pending;
    d->pending = p;
    if (pending_done(p))
        finish(d, p);
}

/* ── children_start / children_stop ──────────────────────────────────── */

typedef struct id_ref {
    const char *bytes;
    int len;
} id_ref;

static int cmp_ids(const void *a, const void *b)
{
    const id_ref *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->bytes, y->bytes, (size_t)x->len);
}

typedef struct dup_list {
    const char *buf;
    const id_ref *sorted;
    size_t n;
} dup_list;

static size_t each_dup(const dup_list *l, ei_x_buff *x)
{
    size_t count = 0;
    for (size_t i = 1; i < l->n; i++)
        if (cmp_ids(&l->sorted[i - 1], &l->sorted[i]) == 0 &&
            (i < 2 || cmp_ids(&l->sorted[i - 2], &l->sorted[i - 1]) != 0)) {
            count++;
            if (x)
                ei_x_append_buf(x, l->sorted[i].bytes, l->sorted[i].len);
        }
    return count;
}

static int encode_dups(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)d;
    const dup_list *l = arg;
    size_t n = each_dup(l, NULL);
    if (ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
        ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "duplicate_ids") ||
        ei_x_encode_list_header(x, (long)n))
        return -1;
    each_dup(l, x);
    return ei_x_encode_empty_list(x);
}

/* Refuses a request naming one child twice: {error, {duplicate_ids, Ids}}. */
static int refuse_duplicates(dispatcher *d, const char *buf, const request *req,
                             const proto_request *pr)
{
    id_ref *ids = malloc((pr->count ? pr->count : 1) * sizeof *ids);
    if (!ids)
        return -1;
    for (size_t i = 0; i < pr->count; i++)
        ids[i] = (id_ref){buf + pr->entries[i].id.at, pr->entries[i].id.len};
    qsort(ids, pr->count, sizeof *ids, cmp_ids);
    dup_list l = {buf, ids, pr->count};
    int dups = each_dup(&l, NULL) > 0;
    if (dups)
        reply_with(d, buf, req, encode_dups, &l);
    free(ids);
    return dups;
}

/* Adds the slots of one child: its owners (start) or every member (stop). */
static int place(dispatcher *d, pending *p, const char *buf, uint32_t i)
{
    if (p->kind == PEND_STOP) {
        for (uint32_t t = 0; t < d->view.count; t++)
            if (pending_add(p, i, t, 1) != 0)
                return -1;
        return 0;
    }
    static uint8_t key[CHILDKEY_MAX_KEY];
    size_t len;
    const char *why;
    span id = p->entries[i].id;
    if (childkey_of((const uint8_t *)buf + id.at, (size_t)id.len, key, &len, &why) != 0)
        return -1; /* cannot happen: proto checked every id */
    uint32_t owners[PROTO_MAX_NODES];
    size_t n = hubview_owners(&d->view, key, len, owners);
    for (size_t r = 0; r < n; r++)
        if (pending_add(p, i, owners[r], hubview_active(&d->view, r)) != 0)
            return -1;
    return 0;
}

/* One synod_start / synod_stop per target, with the C node in ReplyTo. */
static void send_batches(dispatcher *d, pending *p, const proto_request *pr)
{
    int start = p->kind == PEND_START;
    for (size_t t = 0; t < p->ntargets; t++) {
        pend_target *tg = &p->targets[t];
        if (tg->count == 0)
            continue;
        ei_x_buff x;
        int bad =
            new_message(&x) || proto_encode_batch_begin(&x, start, &p->ref, &d->tr.self, p->msg,
                                                        pr->reply_to, pr->nreply_to, tg->count);
        for (uint32_t k = 0; !bad && k < tg->count; k++) {
            const pend_slot *s = &p->slots[tg->slots[k]];
            const proto_entry *e = &p->entries[s->entry];
            bad = start ? proto_encode_start_entry(&x, p->msg, e, s->active)
                        : proto_append(&x, p->msg, e->id);
        }
        bad = bad || proto_encode_batch_end(&x);
        int ok = 0;
        if (!bad)
            send_reg(d, tg->node, &x, &ok);
        else
            ei_x_free(&x);
        if (!ok) {
            LOG_W("cannot send %zu children to %s: not connected", (size_t)tg->count, tg->node);
            fail_target(p, (int)t, "nodedown", tg->node);
        }
    }
}

static int hub_ready(const dispatcher *d)
{
    return d->view.ring && (d->view.rf == 1 || d->view.model != MODEL_UNKNOWN);
}

static void children(dispatcher *d, const char *buf, int len, const request *req, proto_request *pr,
                     long long now)
{
    if (!hub_ready(d)) {
        reply_with(d, buf, req, encode_error, "hub_unavailable");
        return;
    }
    if (refuse_duplicates(d, buf, req, pr))
        return;
    erlang_ref ref;
    if (d->tr.make_ref(d->tr.ctx, &ref) != 0)
        return;
    pend_kind kind = pr->kind == PROTO_CHILDREN_START ? PEND_START : PEND_STOP;
    pending *p = pending_new(kind, &ref, now + pr->timeout_ms, &req->from, buf, len, req->tag_start,
                             req->tag_len, pr->entries, pr->count, d->view.count);
    size_t count = pr->count;
    pr->entries = NULL; /* p owns them now */
    int bad = p == NULL;
    for (size_t t = 0; !bad && t < d->view.count; t++)
        pending_name_target(p, t, d->view.names[t]);
    for (uint32_t i = 0; !bad && i < count; i++)
        bad = place(d, p, buf, i) != 0;
    if (bad || pending_seal(p) != 0) {
        LOG_E("out of memory placing %zu children", count);
        pending_free(p);
        reply_with(d, buf, req, encode_error, "out_of_memory");
        return;
    }
    send_batches(d, p, pr);
    track(d, p);
}

/* ── events ──────────────────────────────────────────────────────────── */

/* Whether `node` is chosen by the request's members: global (all),
 * local (the caller's node), external (all but the caller's node), or a
 * list (those in it). */
static int chosen(const char *buf, const proto_request *pr, const char *caller, const char *node)
{
    switch (pr->members) {
    case MEMBERS_GLOBAL:
        return 1;
    case MEMBERS_LOCAL:
        return strcmp(node, caller) == 0;
    case MEMBERS_EXTERNAL:
        return strcmp(node, caller) != 0;
    case MEMBERS_LIST:
        for (size_t i = 0; i < pr->nmember_list; i++) {
            char listed[MAXATOMLEN_UTF8];
            if (proto_member_at(buf, pr, i, listed) == 0 && strcmp(listed, node) == 0)
                return 1;
        }
        return 0;
    }
    return 0;
}

static void send_event(dispatcher *d, const char *buf, const proto_request *pr, const char *node)
{
    ei_x_buff x;
    if (new_message(&x) != 0)
        return;
    if (proto_encode_event(&x, buf, pr, pr->kind == PROTO_DISPATCH_EVENT && pr->discard) != 0) {
        ei_x_free(&x);
        return;
    }
    int ok;
    send_reg(d, node, &x, &ok);
    if (!ok)
        LOG_W("cannot send event %s to %s: not connected", pr->event_id, node);
}

/* The local part of dispatch_event: a synod_dispatch_event call to the
 * caller's coordinator, whose answer is relayed to the caller. */
static void dispatch_local(dispatcher *d, const char *buf, int len, const request *req,
                           const proto_request *pr, long long now)
{
    erlang_ref ref;
    ei_x_buff x;
    if (d->tr.make_ref(d->tr.ctx, &ref) != 0 || new_message(&x) != 0)
        return;
    if (proto_encode_call_begin(&x, &d->tr.self, &ref) || ei_x_encode_tuple_header(&x, 4) ||
        ei_x_encode_atom(&x, "synod_dispatch_event") || ei_x_encode_atom(&x, pr->event_id) ||
        proto_append(&x, buf, pr->data) || ei_x_encode_atom(&x, pr->discard ? "true" : "false")) {
        ei_x_free(&x);
        return;
    }
    pending *p = pending_new(PEND_EVENT, &ref, now + pr->timeout_ms, &req->from, buf, len,
                             req->tag_start, req->tag_len, NULL, 0, 1);
    if (!p || pending_add(p, 0, 0, 1) != 0 || pending_seal(p) != 0) {
        pending_free(p);
        ei_x_free(&x);
        reply_with(d, buf, req, encode_error, "out_of_memory");
        return;
    }
    pending_name_target(p, 0, req->from.node);
    int ok;
    send_reg(d, req->from.node, &x, &ok);
    if (!ok)
        fail_target(p, 0, "nodedown", req->from.node);
    track(d, p);
}

static int encode_dispatched(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)d;
    (void)arg;
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
           ei_x_encode_atom(x, "event_dispatched");
}

static void events(dispatcher *d, const char *buf, int len, const request *req,
                   const proto_request *pr, long long now)
{
    if (!d->view.ring) {
        reply_with(d, buf, req, encode_error, "hub_unavailable");
        return;
    }
    const char *caller = req->from.node;
    int local = 0;
    for (size_t i = 0; i < d->view.count; i++) {
        const char *node = d->view.names[i];
        if (!chosen(buf, pr, caller, node))
            continue;
        if (pr->kind == PROTO_DISPATCH_EVENT && strcmp(node, caller) == 0)
            local = 1;
        else
            send_event(d, buf, pr, node);
    }
    if (pr->kind == PROTO_PROPAGATE_EVENT)
        reply_with(d, buf, req, encode_atom, "ok");
    else if (local)
        dispatch_local(d, buf, len, req, pr, now);
    else
        reply_with(d, buf, req, encode_dispatched, NULL);
}

/* ── placement calls ─────────────────────────────────────────────────── */

static int encode_nodes(ei_x_buff *x, const hubview *v, const uint32_t *idx, size_t n)
{
    if (n > 0 && ei_x_encode_list_header(x, (long)n))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (ei_x_encode_atom(x, v->names[idx ? idx[i] : i]))
            return -1;
    return ei_x_encode_empty_list(x);
}

typedef struct key_arg {
    const char *buf;
    span id;
} key_arg;

static int encode_owners(dispatcher *d, ei_x_buff *x, const void *arg)
{
    const key_arg *k = arg;
    static uint8_t key[CHILDKEY_MAX_KEY];
    size_t len;
    const char *why;
    uint32_t owners[PROTO_MAX_NODES];
    if (childkey_of((const uint8_t *)k->buf + k->id.at, (size_t)k->id.len, key, &len, &why) != 0)
        return -1;
    size_t n = hubview_owners(&d->view, key, len, owners);
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
           encode_nodes(x, &d->view, owners, n);
}

static int encode_ring_key(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)d;
    const key_arg *k = arg;
    static uint8_t key[CHILDKEY_MAX_KEY];
    size_t len;
    const char *why;
    if (childkey_of((const uint8_t *)k->buf + k->id.at, (size_t)k->id.len, key, &len, &why) != 0)
        return -1;
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
           ei_x_encode_binary(x, key, (long)len);
}

static int encode_ring_info(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)arg;
    const hubview *v = &d->view;
    return ei_x_encode_tuple_header(x, 5) || ei_x_encode_atom(x, "ok") ||
           encode_nodes(x, v, NULL, v->count) || ei_x_encode_ulong(x, v->vnodes) ||
           ei_x_encode_binary(x, v->seed, RING_SEED_BYTES) || ei_x_encode_ulong(x, v->rf);
}

typedef struct ring_arg {
    const char *buf;
    const proto_request *pr;
    const ring_t *ring;
} ring_arg;

/* {ok, [[Member]]}: for each key, its first N owners, as the member terms
 * the caller gave (copied). */
static int encode_ring_owners(dispatcher *d, ei_x_buff *x, const void *arg)
{
    (void)d;
    const ring_arg *r = arg;
    const proto_request *pr = r->pr;
    static uint8_t key[CHILDKEY_MAX_KEY];
    uint32_t owners[PROTO_MAX_NODES];
    if (ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
        (pr->count > 0 && ei_x_encode_list_header(x, (long)pr->count)))
        return -1;
    for (size_t i = 0; i < pr->count; i++) {
        size_t len;
        const char *why;
        span id = pr->entries[i].id;
        if (childkey_of((const uint8_t *)r->buf + id.at, (size_t)id.len, key, &len, &why) != 0)
            return -1;
        size_t n = ring_owners(r->ring, key, len, owners, pr->n);
        if (ei_x_encode_list_header(x, (long)n))
            return -1;
        for (size_t k = 0; k < n; k++)
            if (proto_append(x, r->buf, pr->ring_member_terms[ring_member_tag(r->ring, owners[k])]))
                return -1;
        if (ei_x_encode_empty_list(x))
            return -1;
    }
    return ei_x_encode_empty_list(x);
}

static void ring_owners_call(dispatcher *d, const char *buf, const request *req,
                             const proto_request *pr)
{
    ring_t *ring = NULL;
    ring_error e =
        ring_build(&ring, pr->ring_members, pr->nring_members, pr->vnodes, pr->seed, NULL);
    if (e != RING_OK) {
        reply_bad(d, buf, req, "bad_ring", (span){0, 0});
        return;
    }
    ring_arg arg = {buf, pr, ring};
    reply_with(d, buf, req, encode_ring_owners, &arg);
    ring_free(ring);
}

/* ── entry points ────────────────────────────────────────────────────── */

void dispatcher_call(dispatcher *d, const char *buf, int len, const request *req, long long now)
{
    proto_request pr;
    proto_error err;
    if (proto_decode_request(buf, req->body_at, d->hub, &pr, &err) != 0) {
        reply_bad(d, buf, req, err.why, err.detail);
        return;
    }
    key_arg key = {buf, pr.count > 0 ? pr.entries[0].id : (span){0, 0}};
    switch (pr.kind) {
    case PROTO_CHILDREN_START:
    case PROTO_CHILDREN_STOP:
        children(d, buf, len, req, &pr, now);
        break;
    case PROTO_PROPAGATE_EVENT:
    case PROTO_DISPATCH_EVENT:
        events(d, buf, len, req, &pr, now);
        break;
    case PROTO_OWNERS:
        if (d->view.ring)
            reply_with(d, buf, req, encode_owners, &key);
        else
            reply_with(d, buf, req, encode_error, "hub_unavailable");
        break;
    case PROTO_RING_INFO:
        if (d->view.ring)
            reply_with(d, buf, req, encode_ring_info, NULL);
        else
            reply_with(d, buf, req, encode_error, "hub_unavailable");
        break;
    case PROTO_RING_KEY:
        reply_with(d, buf, req, encode_ring_key, &key);
        break;
    case PROTO_RING_OWNERS:
        ring_owners_call(d, buf, req, &pr);
        break;
    }
    proto_request_free(&pr);
}

static pending *find_pending(dispatcher *d, erlang_ref *ref)
{
    for (pending *p = d->pending; p; p = p->next)
        if (ei_cmp_refs(&p->ref, ref) == 0)
            return p;
    return NULL;
}

static call_kind take_call(dispatcher *d, erlang_ref *ref)
{
    for (size_t i = 0; i < DISPATCH_MAX_CALLS; i++)
        if (d->calls[i].kind != CALL_NONE && ei_cmp_refs(&d->calls[i].ref, ref) == 0) {
            call_kind k = d->calls[i].kind;
            d->calls[i].kind = CALL_NONE;
            return k;
        }
    return CALL_NONE;
}

static void subscribe_members(dispatcher *d)
{
    for (size_t i = 0; i < d->view.count; i++)
        call_coordinator(d, d->view.names[i], CALL_SUBSCRIBE);
}

static void adopt_ring_info(dispatcher *d, const char *buf, span reply)
{
    static char names[PROTO_MAX_NODES][MAXATOMLEN_UTF8];
    size_t count;
    uint32_t vnodes;
    uint8_t seed[RING_SEED_BYTES];
    unsigned rf;
    if (proto_decode_ring_info(buf, reply, names, PROTO_MAX_NODES, &count, &vnodes, seed, &rf) !=
        0) {
        LOG_W("ignored a malformed ring_info answer");
        return;
    }
    int changed =
        hubview_set(&d->view, (const char(*)[MAXATOMLEN_UTF8])names, count, vnodes, seed, rf);
    if (changed == 1) {
        LOG_I("hub %s: %zu members, replication factor %u", d->hub, count, rf);
        d->view_changed = 1;
        subscribe_members(d);
    } else if (changed < 0) {
        LOG_W("cannot build the ring for a ring_info answer");
    }
}

static void answer_reply(dispatcher *d, const char *buf, proto_answer *a)
{
    pending *p = find_pending(d, &a->ref);
    if (p && p->kind == PEND_EVENT) {
        pending_record(p, 0, buf, (span){0, 0}, a->reply);
        if (pending_done(p))
            finish(d, p);
        return;
    }
    int model;
    switch (take_call(d, &a->ref)) {
    case CALL_RING_INFO:
        adopt_ring_info(d, buf, a->reply);
        break;
    case CALL_CONFIG:
        if (proto_decode_config(buf, a->reply, &model) == 0)
            d->view.model = model ? MODEL_ACTIVE_PASSIVE : MODEL_ACTIVE_ACTIVE;
        else
            LOG_W("ignored a malformed config answer");
        break;
    case CALL_SUBSCRIBE:
        break;
    case CALL_NONE:
        LOG_D("ignored a reply to no known call");
        break;
    }
}

static void answer_results(dispatcher *d, const char *buf, const proto_answer *a, pending *p)
{
    int t = pending_target(p, a->node), at;
    span id, result;
    if (a->kind == ANSWER_CHILD) {
        pending_record(p, t, buf, a->id, a->result);
    } else if (proto_results_begin(buf, a, &at) == 0) {
        for (size_t i = 0; i < a->count; i++)
            if (proto_results_next(buf, &at, &id, &result) != 0 ||
                pending_record(p, t, buf, id, result) < 0)
                break;
    }
    if (pending_done(p))
        finish(d, p);
}

void dispatcher_answer(dispatcher *d, const char *buf, int len)
{
    proto_answer a;
    const char *why;
    if (proto_decode_answer(buf, &a, &why) != 0) {
        log_limited(LOGK_NOT_AN_ANSWER, LOG_WARN,
                    "dropped a message to the node's pid (%d bytes): %s", len, why);
        return;
    }
    pending *p;
    switch (a.kind) {
    case ANSWER_REPLY:
        answer_reply(d, buf, &a);
        break;
    case ANSWER_RESULTS:
    case ANSWER_CHILD:
        if ((p = find_pending(d, &a.ref)) != NULL && p->kind != PEND_EVENT)
            answer_results(d, buf, &a, p);
        else
            LOG_D("ignored answers from %s to no pending request", a.node);
        break;
    case ANSWER_EVENT:
        if (strcmp(a.hub, d->hub) == 0 &&
            (strcmp(a.event_id, "member_joined") == 0 || strcmp(a.event_id, "member_left") == 0))
            ask_members(d);
        break;
    }
}

void dispatcher_node_up(dispatcher *d, const char *node)
{
    ask_node(d, node);
    call_coordinator(d, node, CALL_SUBSCRIBE);
}

void dispatcher_node_down(dispatcher *d, const char *node)
{
    for (pending *p = d->pending, *next; p; p = next) {
        next = p->next;
        int t = pending_target(p, node);
        if (t < 0 || p->targets[t].filled == p->targets[t].count)
            continue;
        fail_target(p, t, "nodedown", node);
        if (pending_done(p))
            finish(d, p);
    }
    ask_members(d);
}

void dispatcher_tick(dispatcher *d, long long now, const char *const *connected, size_t n)
{
    for (pending *p = d->pending, *next; p; p = next) {
        next = p->next;
        if (p->deadline_ms <= now) {
            fail_target(p, -1, "timeout", NULL);
            finish(d, p);
        }
    }
    if (now < d->next_refresh_ms)
        return;
    d->next_refresh_ms = now + DISPATCH_REFRESH_MS;
    if (d->view.ring) {
        ask_members(d);
    } else {
        for (size_t i = 0; i < n; i++)
            dispatcher_node_up(d, connected[i]);
    }
}

int dispatcher_timeout_ms(const dispatcher *d, long long now, int max_ms)
{
    long long best = d->next_refresh_ms - now;
    for (const pending *p = d->pending; p; p = p->next)
        if (p->deadline_ms - now < best)
            best = p->deadline_ms - now;
    if (best > max_ms)
        best = max_ms;
    return best < 0 ? 0 : (int)best;
}
