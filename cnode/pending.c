/* pending.c — see pending.h. Pure. */
#include "pending.h"

#include <stdlib.h>
#include <string.h>

pending *pending_new(pend_kind kind, const erlang_ref *ref, long long deadline_ms,
                     const erlang_pid *caller, const char *msg, int msg_len, int tag_at,
                     int tag_len, proto_entry *entries, size_t nentries, size_t ntargets)
{
    pending *p = calloc(1, sizeof *p);
    if (p) {
        p->msg = malloc(msg_len > 0 ? (size_t)msg_len : 1);
        p->targets = calloc(ntargets > 0 ? ntargets : 1, sizeof *p->targets);
    }
    if (!p || !p->msg || !p->targets) {
        if (p) {
            free(p->msg);
            free(p->targets);
        }
        free(p);
        free(entries);
        return NULL;
    }
    memcpy(p->msg, msg, (size_t)msg_len);
    p->kind = kind;
    p->ref = *ref;
    p->deadline_ms = deadline_ms;
    p->caller = *caller;
    p->msg_len = msg_len;
    p->tag_at = tag_at;
    p->tag_len = tag_len;
    p->entries = entries;
    p->nentries = nentries;
    p->ntargets = ntargets;
    return p;
}

void pending_free(pending *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nslots; i++)
        free(p->slots[i].result);
    for (size_t t = 0; t < p->ntargets; t++)
        free(p->targets[t].slots);
    free(p->slots);
    free(p->targets);
    free(p->entries);
    free(p->msg);
    free(p);
}

void pending_name_target(pending *p, size_t t, const char *node)
{
    strncpy(p->targets[t].node, node, MAXATOMLEN_UTF8 - 1);
    p->targets[t].node[MAXATOMLEN_UTF8 - 1] = '\0';
}

int pending_add(pending *p, uint32_t entry, uint32_t target, int active)
{
    if (p->nslots == p->cap_slots) {
        size_t cap = p->cap_slots ? p->cap_slots * 2 : 16;
        pend_slot *s = realloc(p->slots, cap * sizeof *s);
        if (!s)
            return -1;
        p->slots = s;
        p->cap_slots = cap;
    }
    p->slots[p->nslots++] = (pend_slot){entry, target, active, NULL, 0};
    p->targets[target].count++;
    p->open++;
    return 0;
}

int pending_seal(pending *p)
{
    for (size_t t = 0; t < p->ntargets; t++) {
        pend_target *tg = &p->targets[t];
        tg->slots = malloc((tg->count ? tg->count : 1) * sizeof *tg->slots);
        if (!tg->slots)
            return -1;
        tg->count = 0;
    }
    for (size_t i = 0; i < p->nslots; i++) {
        pend_target *tg = &p->targets[p->slots[i].target];
        tg->slots[tg->count++] = (uint32_t)i;
    }
    return 0;
}

int pending_target(const pending *p, const char *node)
{
    for (size_t t = 0; t < p->ntargets; t++)
        if (p->targets[t].count > 0 && strcmp(p->targets[t].node, node) == 0)
            return (int)t;
    return -1;
}

static int fill(pending *p, pend_slot *s, const char *bytes, int len)
{
    s->result = malloc(len > 0 ? (size_t)len : 1);
    if (!s->result)
        return -1;
    memcpy(s->result, bytes, (size_t)len);
    s->result_len = len;
    p->targets[s->target].filled++;
    p->open--;
    return 0;
}

static int id_matches(const pending *p, const pend_slot *s, const char *buf, span id)
{
    if (p->kind == PEND_EVENT)
        return 1; /* one slot, no child id */
    span mine = p->entries[s->entry].id;
    return mine.len == id.len && memcmp(p->msg + mine.at, buf + id.at, (size_t)id.len) == 0;
}

int pending_record(pending *p, int t, const char *buf, span id, span result)
{
    if (t < 0 || (size_t)t >= p->ntargets)
        return 0;
    pend_target *tg = &p->targets[t];
    /* answers come in request order: try the cursor first, then look */
    for (uint32_t k = 0; k < tg->count; k++) {
        uint32_t at = (tg->cursor + k) % tg->count;
        pend_slot *s = &p->slots[tg->slots[at]];
        if (s->result == NULL && id_matches(p, s, buf, id)) {
            tg->cursor = (at + 1) % tg->count;
            return fill(p, s, buf + result.at, result.len) == 0 ? 1 : -1;
        }
    }
    return 0;
}

int pending_fail(pending *p, int t, const char *reason, int reason_len)
{
    for (size_t i = 0; i < p->nslots; i++) {
        pend_slot *s = &p->slots[i];
        if (s->result == NULL && (t < 0 || s->target == (uint32_t)t))
            if (fill(p, s, reason, reason_len) != 0)
                return -1;
    }
    return 0;
}

static span slot_result(const pend_slot *s)
{
    return (span){0, s->result_len};
}

/* Which slots of a stop's entry (slots [first, end)) go into the answer. */
static int stop_listed(const pending *p, size_t i, size_t first, size_t end)
{
    const pend_slot *s = &p->slots[i];
    if (!proto_result_not_found(s->result, slot_result(s)))
        return 1;
    for (size_t k = first; k < end; k++) {
        const pend_slot *o = &p->slots[k];
        if (!proto_result_not_found(o->result, slot_result(o)))
            return 0; /* stopped elsewhere, or failed for another reason */
        if (k < i)
            return 0; /* an earlier not_found is the one reported */
    }
    return 1;
}

/* Calls f on every slot that goes into the answer; stops early on error. */
static int each_listed(const pending *p, int (*f)(const pending *, const pend_slot *, void *),
                       void *arg)
{
    size_t first = 0;
    for (size_t i = 0; i < p->nslots; i++) {
        if (p->slots[i].entry != p->slots[first].entry)
            first = i;
        if (p->kind == PEND_STOP) {
            size_t end = first;
            while (end < p->nslots && p->slots[end].entry == p->slots[first].entry)
                end++;
            if (!stop_listed(p, i, first, end))
                continue;
        }
        if (f(p, &p->slots[i], arg) != 0)
            return -1;
    }
    return 0;
}

typedef struct tally {
    size_t listed, failed;
} tally;

static int count_slot(const pending *p, const pend_slot *s, void *arg)
{
    (void)p;
    tally *t = arg;
    t->listed++;
    t->failed += !proto_result_ok(s->result, slot_result(s));
    return 0;
}

static int encode_slot(const pending *p, const pend_slot *s, void *arg)
{
    ei_x_buff *x = arg;
    return ei_x_encode_tuple_header(x, 3) || proto_append(x, p->msg, p->entries[s->entry].id) ||
           ei_x_encode_atom(x, p->targets[s->target].node) ||
           ei_x_append_buf(x, s->result, s->result_len);
}

int pending_encode_reply(const pending *p, ei_x_buff *x)
{
    if (p->kind == PEND_EVENT)
        return p->nslots == 1 ? ei_x_append_buf(x, p->slots[0].result, p->slots[0].result_len) : -1;
    tally t = {0, 0};
    each_listed(p, count_slot, &t);
    if (ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, t.failed ? "error" : "ok"))
        return -1;
    if (t.listed > 0 &&
        (ei_x_encode_list_header(x, (long)t.listed) || each_listed(p, encode_slot, x) != 0))
        return -1;
    return ei_x_encode_empty_list(x);
}
