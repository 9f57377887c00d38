/*
 * proto.c — see proto.h.
 *
 * Every decoder follows one pattern: read the outer shape with ei (safe,
 * since the buffer passed etf_check_message), take the span of each field,
 * then check the field's kind and size before anything else looks at it.
 */
#include "proto.h"

#include <stdlib.h>
#include <string.h>

#include "childkey.h"

/* ── small readers ───────────────────────────────────────────────────── */

static int is_atom_type(int type)
{
    return type == ERL_ATOM_EXT || type == ERL_SMALL_ATOM_EXT || type == ERL_ATOM_UTF8_EXT ||
           type == ERL_SMALL_ATOM_UTF8_EXT;
}

static int type_at(const char *buf, int at, int *type, int *size)
{
    return ei_get_type(buf, &at, type, size);
}

/* The term's own tag byte: ei_get_type folds some tags together (new pid,
 * reference and atom forms into the old ones), and a few checks need the
 * exact encoding. */
static int tag_at(const char *buf, int at)
{
    return (unsigned char)buf[at];
}

static unsigned be_len(const char *buf, int at, int width)
{
    unsigned v = 0;
    for (int i = 0; i < width; i++)
        v = v << 8 | (unsigned char)buf[at + i];
    return v;
}

/* The span of the term at *at; moves *at past it. */
static int take_span(const char *buf, int *at, span *s)
{
    s->at = *at;
    if (ei_skip_term(buf, at) != 0)
        return -1;
    s->len = *at - s->at;
    return 0;
}

static int take_atom(const char *buf, int *at, char out[MAXATOMLEN_UTF8])
{
    return ei_decode_atom_as(buf, at, out, MAXATOMLEN_UTF8, ERLANG_UTF8, NULL, NULL);
}

static int atom_is(const char *buf, int at, const char *name)
{
    char atom[MAXATOMLEN_UTF8];
    return take_atom(buf, &at, atom) == 0 && strcmp(atom, name) == 0;
}

/* A list header: NIL or LIST_EXT (a STRING_EXT is a list of bytes, which no
 * caller of this wants). Sets *n. */
static int list_header(const char *buf, int *at, int *n)
{
    int type, size;
    if (type_at(buf, *at, &type, &size) != 0)
        return -1;
    if (type != ERL_NIL_EXT && type != ERL_LIST_EXT)
        return -1;
    return ei_decode_list_header(buf, at, n);
}

/* After the n elements of a non-empty LIST_EXT: the tail must be []. */
static int list_tail(const char *buf, int *at, int n)
{
    if (n == 0)
        return 0;
    int type, size;
    if (type_at(buf, *at, &type, &size) != 0 || type != ERL_NIL_EXT)
        return -1;
    return ei_skip_term(buf, at);
}

static int is_proper_list(const char *buf, int at)
{
    int type, size, n;
    if (type_at(buf, at, &type, &size) != 0)
        return 0;
    if (type == ERL_STRING_EXT)
        return 1;
    if (list_header(buf, &at, &n) != 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (ei_skip_term(buf, &at) != 0)
            return 0;
    return list_tail(buf, &at, n) == 0;
}

static int tuple_of(const char *buf, int *at, int arity)
{
    int a;
    return ei_decode_tuple_header(buf, at, &a) == 0 && a == arity ? 0 : -1;
}

static int refuse(proto_error *err, const char *why, span detail)
{
    err->why = why;
    err->detail = detail;
    return -1;
}

static const span NO_DETAIL = {0, 0};

/* ── child specs and metadata ────────────────────────────────────────── */

static int is_mfa(const char *buf, int at)
{
    int type, size;
    if (tuple_of(buf, &at, 3) != 0)
        return 0;
    for (int i = 0; i < 2; i++) {
        if (type_at(buf, at, &type, &size) != 0 || !is_atom_type(type))
            return 0;
        ei_skip_term(buf, &at);
    }
    return is_proper_list(buf, at);
}

static int is_atom_in(const char *buf, int at, const char *const *names)
{
    char atom[MAXATOMLEN_UTF8];
    if (take_atom(buf, &at, atom) != 0)
        return 0;
    for (; *names; names++)
        if (strcmp(atom, *names) == 0)
            return 1;
    return 0;
}

static int is_shutdown(const char *buf, int at)
{
    static const char *const words[] = {"brutal_kill", "infinity", NULL};
    int type, size;
    if (type_at(buf, at, &type, &size) != 0)
        return 0;
    if (type == ERL_SMALL_INTEGER_EXT)
        return 1;
    if (type == ERL_INTEGER_EXT) {
        long v;
        return ei_decode_long(buf, &at, &v) == 0 && v >= 0;
    }
    if (type == ERL_SMALL_BIG_EXT || type == ERL_LARGE_BIG_EXT) {
        /* the sign byte follows the tag and the digit count */
        const unsigned char *p = (const unsigned char *)buf + at;
        return (type == ERL_SMALL_BIG_EXT ? p[2] : p[5]) == 0;
    }
    return is_atom_in(buf, at, words);
}

static int is_modules(const char *buf, int at)
{
    static const char *const dynamic[] = {"dynamic", NULL};
    int type, size, n;
    if (type_at(buf, at, &type, &size) != 0)
        return 0;
    if (is_atom_type(type))
        return is_atom_in(buf, at, dynamic);
    if (list_header(buf, &at, &n) != 0)
        return 0;
    for (int i = 0; i < n; i++) {
        if (type_at(buf, at, &type, &size) != 0 || !is_atom_type(type))
            return 0;
        ei_skip_term(buf, &at);
    }
    return list_tail(buf, &at, n) == 0;
}

int proto_check_spec(const char *buf, int at, const char **why)
{
    static const char *const keys[] = {"start", "restart", "shutdown", "type", "modules", NULL};
    static const char *const restarts[] = {"permanent", "transient", "temporary", NULL};
    static const char *const types[] = {"worker", "supervisor", NULL};
    int type, size, n;
    *why = "bad_spec";
    if (type_at(buf, at, &type, &size) != 0)
        return -1;
    if (type == ERL_SMALL_TUPLE_EXT)
        return is_mfa(buf, at) ? 0 : -1;
    if (type != ERL_MAP_EXT || ei_decode_map_header(buf, &at, &n) != 0 || n < 1 || n > 5)
        return -1;
    unsigned seen = 0;
    for (int i = 0; i < n; i++) {
        char key[MAXATOMLEN_UTF8];
        if (take_atom(buf, &at, key) != 0)
            return -1;
        unsigned k = 0;
        while (keys[k] && strcmp(keys[k], key) != 0)
            k++;
        if (!keys[k] || (seen & (1u << k)))
            return -1;
        seen |= 1u << k;
        int ok = k == 0   ? is_mfa(buf, at)
                 : k == 1 ? is_atom_in(buf, at, restarts)
                 : k == 2 ? is_shutdown(buf, at)
                 : k == 3 ? is_atom_in(buf, at, types)
                          : is_modules(buf, at);
        if (!ok)
            return -1;
        ei_skip_term(buf, &at);
    }
    return (seen & 1u) ? 0 : -1;
}

int proto_check_meta(const char *buf, int at, const char **why)
{
    int type, size;
    *why = "bad_meta";
    if (type_at(buf, at, &type, &size) != 0)
        return -1;
    if (type == ERL_MAP_EXT || (is_atom_type(type) && atom_is(buf, at, "nil")))
        return 0;
    return -1;
}

/* ── options ─────────────────────────────────────────────────────────── */

static int decode_members(const char *buf, span value, proto_request *req)
{
    int type, size, n, at = value.at;
    char atom[MAXATOMLEN_UTF8];
    if (type_at(buf, at, &type, &size) != 0)
        return -1;
    if (is_atom_type(type)) {
        if (take_atom(buf, &at, atom) != 0)
            return -1;
        if (strcmp(atom, "global") == 0)
            req->members = MEMBERS_GLOBAL;
        else if (strcmp(atom, "local") == 0)
            req->members = MEMBERS_LOCAL;
        else if (strcmp(atom, "external") == 0)
            req->members = MEMBERS_EXTERNAL;
        else
            return -1;
        return 0;
    }
    if (list_header(buf, &at, &n) != 0 || n > PROTO_MAX_NODES)
        return -1;
    for (int i = 0; i < n; i++)
        if (take_atom(buf, &at, atom) != 0)
            return -1;
    if (list_tail(buf, &at, n) != 0)
        return -1;
    req->members = MEMBERS_LIST;
    req->member_list = value;
    req->nmember_list = (size_t)n;
    return 0;
}

static int decode_reply_to(const char *buf, span value, proto_request *req)
{
    int n, at = value.at;
    if (list_header(buf, &at, &n) != 0 || n > PROTO_MAX_REPLY_TO)
        return -1;
    for (int i = 0; i < n; i++) {
        int tag = tag_at(buf, at);
        if ((tag != ERL_NEW_PID_EXT && tag != ERL_PID_EXT) ||
            take_span(buf, &at, &req->reply_to[i]) != 0)
            return -1;
    }
    req->nreply_to = (size_t)n;
    return list_tail(buf, &at, n);
}

static int decode_bool(const char *buf, span value, int *out)
{
    if (atom_is(buf, value.at, "true"))
        *out = 1;
    else if (atom_is(buf, value.at, "false"))
        *out = 0;
    else
        return -1;
    return 0;
}

static int decode_timeout(const char *buf, span value, unsigned *out)
{
    long v;
    int at = value.at, type, size;
    if (type_at(buf, at, &type, &size) != 0 ||
        (type != ERL_SMALL_INTEGER_EXT && type != ERL_INTEGER_EXT) ||
        ei_decode_long(buf, &at, &v) != 0 || v < 0 || v > PROTO_MAX_TIMEOUT_MS)
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* Opts: a proper list of {Key, Value}; `allowed` names the keys this
 * request takes. Each value is checked by its key's rule. */
static int decode_opts(const char *buf, int *at, const char *const *allowed, proto_request *req,
                       proto_error *err)
{
    span opts;
    int n, type, size;
    if (take_span(buf, at, &opts) != 0)
        return refuse(err, "bad_options", NO_DETAIL);
    int p = opts.at;
    if (list_header(buf, &p, &n) != 0)
        return refuse(err, "bad_options", opts);
    for (int i = 0; i < n; i++) {
        char key[MAXATOMLEN_UTF8];
        span value, pair;
        int q = p;
        if (take_span(buf, &p, &pair) != 0 || type_at(buf, q, &type, &size) != 0 ||
            type != ERL_SMALL_TUPLE_EXT || tuple_of(buf, &q, 2) != 0 ||
            take_atom(buf, &q, key) != 0 || take_span(buf, &q, &value) != 0)
            return refuse(err, "bad_options", opts);
        const char *const *k = allowed;
        while (*k && strcmp(*k, key) != 0)
            k++;
        if (!*k)
            return refuse(err, "unknown_option", pair);
        int bad = strcmp(key, "timeout") == 0    ? decode_timeout(buf, value, &req->timeout_ms)
                  : strcmp(key, "reply_to") == 0 ? decode_reply_to(buf, value, req)
                  : strcmp(key, "members") == 0  ? decode_members(buf, value, req)
                                                 : decode_bool(buf, value, &req->discard);
        if (bad)
            return refuse(err, "bad_option", pair);
    }
    if (list_tail(buf, &p, n) != 0)
        return refuse(err, "bad_options", opts);
    return 0;
}

/* ── child lists ─────────────────────────────────────────────────────── */

static int check_id(const char *buf, span id, proto_error *err)
{
    const char *why;
    if (childkey_check((const uint8_t *)buf + id.at, (size_t)id.len, &why) != 0)
        return refuse(err, why, id);
    return 0;
}

static int check_sized(const char *buf, span s, int max,
                       int (*check)(const char *, int, const char **), const char *too_large,
                       proto_error *err)
{
    const char *why;
    if (s.len > max)
        return refuse(err, too_large, NO_DETAIL);
    if (check(buf, s.at, &why) != 0)
        return refuse(err, why, s);
    return 0;
}

/* {Id, Spec, Meta} */
static int decode_start_entry(const char *buf, int *at, proto_entry *e, proto_error *err)
{
    span whole;
    int p = *at, type, size;
    if (take_span(buf, at, &whole) != 0 || type_at(buf, p, &type, &size) != 0 ||
        type != ERL_SMALL_TUPLE_EXT || tuple_of(buf, &p, 3) != 0)
        return refuse(err, "bad_entry", NO_DETAIL);
    take_span(buf, &p, &e->id);
    take_span(buf, &p, &e->spec);
    take_span(buf, &p, &e->meta);
    if (check_id(buf, e->id, err) != 0 ||
        check_sized(buf, e->spec, PROTO_MAX_SPEC, proto_check_spec, "spec_too_large", err) != 0 ||
        check_sized(buf, e->meta, PROTO_MAX_META, proto_check_meta, "meta_too_large", err) != 0)
        return -1;
    return 0;
}

/* A proper list of child entries (start) or ids (stop, keys). Allocates
 * req->entries. */
static int decode_children(const char *buf, int *at, int with_spec, proto_request *req,
                           proto_error *err)
{
    int n;
    if (list_header(buf, at, &n) != 0)
        return refuse(err, with_spec ? "bad_entries" : "bad_ids", NO_DETAIL);
    if (n > PROTO_MAX_CHILDREN)
        return refuse(err, "too_many_children", NO_DETAIL);
    req->entries = calloc(n > 0 ? (size_t)n : 1, sizeof *req->entries);
    if (!req->entries)
        return refuse(err, "out_of_memory", NO_DETAIL);
    req->count = (size_t)n;
    for (int i = 0; i < n; i++) {
        proto_entry *e = &req->entries[i];
        if (with_spec ? decode_start_entry(buf, at, e, err) != 0
                      : (take_span(buf, at, &e->id) != 0 || check_id(buf, e->id, err) != 0))
            goto fail;
    }
    if (list_tail(buf, at, n) != 0) {
        refuse(err, with_spec ? "bad_entries" : "bad_ids", NO_DETAIL);
        goto fail;
    }
    return 0;
fail:
    if (!err->why)
        err->why = "bad_entries";
    free(req->entries);
    req->entries = NULL;
    return -1;
}

/* ── requests ────────────────────────────────────────────────────────── */

static int decode_hub(const char *buf, int *at, const char *hub, proto_request *req,
                      proto_error *err)
{
    span s;
    int p = *at;
    if (take_span(buf, &p, &s) != 0 || take_atom(buf, at, req->hub) != 0)
        return refuse(err, "bad_hub", NO_DETAIL);
    if (strcmp(req->hub, hub) != 0)
        return refuse(err, "unknown_hub", s);
    return 0;
}

static int decode_start_stop(const char *buf, int at, int arity, const char *hub,
                             proto_request *req, proto_error *err)
{
    static const char *const allowed[] = {"timeout", "reply_to", NULL};
    int start = req->kind == PROTO_CHILDREN_START;
    if (arity != 4)
        return refuse(err, "bad_arity", NO_DETAIL);
    if (decode_hub(buf, &at, hub, req, err) != 0)
        return -1;
    int opts_at = at;
    if (ei_skip_term(buf, &opts_at) != 0)
        return refuse(err, "bad_entries", NO_DETAIL);
    /* options first: they allocate nothing, so a bad one frees nothing */
    if (decode_opts(buf, &opts_at, allowed, req, err) != 0)
        return -1;
    return decode_children(buf, &at, start, req, err);
}

static int decode_event_id(const char *buf, int *at, proto_request *req, proto_error *err)
{
    int type, size;
    if (type_at(buf, *at, &type, &size) != 0 || !is_atom_type(type) ||
        take_atom(buf, at, req->event_id) != 0)
        return refuse(err, "bad_event_id", NO_DETAIL);
    return 0;
}

static int decode_data(const char *buf, int *at, proto_request *req, proto_error *err)
{
    if (take_span(buf, at, &req->data) != 0)
        return refuse(err, "bad_event", NO_DETAIL);
    if (req->data.len > PROTO_MAX_DATA)
        return refuse(err, "data_too_large", NO_DETAIL);
    return 0;
}

static int decode_propagate(const char *buf, int at, int arity, const char *hub, proto_request *req,
                            proto_error *err)
{
    static const char *const allowed[] = {"members", NULL};
    int type, size;
    if (arity != 4)
        return refuse(err, "bad_arity", NO_DETAIL);
    if (decode_hub(buf, &at, hub, req, err) != 0)
        return -1;
    if (type_at(buf, at, &type, &size) != 0 || type != ERL_SMALL_TUPLE_EXT ||
        tuple_of(buf, &at, 2) != 0)
        return refuse(err, "bad_event", NO_DETAIL);
    req->members = MEMBERS_GLOBAL;
    if (decode_event_id(buf, &at, req, err) || decode_data(buf, &at, req, err) ||
        decode_opts(buf, &at, allowed, req, err))
        return -1;
    return 0;
}

static int decode_dispatch(const char *buf, int at, int arity, const char *hub, proto_request *req,
                           proto_error *err)
{
    static const char *const allowed[] = {"members", "discard", "timeout", NULL};
    if (arity != 5)
        return refuse(err, "bad_arity", NO_DETAIL);
    req->members = MEMBERS_LOCAL;
    if (decode_hub(buf, &at, hub, req, err) || decode_event_id(buf, &at, req, err) ||
        decode_data(buf, &at, req, err) || decode_opts(buf, &at, allowed, req, err))
        return -1;
    return 0;
}

static int decode_single_id(const char *buf, int at, proto_request *req, proto_error *err)
{
    req->entries = calloc(1, sizeof *req->entries);
    if (!req->entries)
        return refuse(err, "out_of_memory", NO_DETAIL);
    req->count = 1;
    if (take_span(buf, &at, &req->entries[0].id) != 0 ||
        check_id(buf, req->entries[0].id, err) != 0) {
        free(req->entries);
        req->entries = NULL;
        return -1;
    }
    return 0;
}

/* A ring member: a UTF-8 atom or binary name, or {Name, Weight}. *term is
 * the name's span (what the answer lists, as Synod.Ring does). */
static int decode_ring_member(const char *buf, int *at, ring_member_spec *m, span *term)
{
    int type, size, p = *at;
    long weight = 1;
    if (type_at(buf, p, &type, &size) != 0)
        return -1;
    if (type == ERL_SMALL_TUPLE_EXT) {
        if (tuple_of(buf, &p, 2) != 0)
            return -1;
        int q = p;
        if (ei_skip_term(buf, &q) != 0 || ei_decode_long(buf, &q, &weight) != 0 || weight < 1 ||
            weight > RING_MAX_WEIGHT)
            return -1;
    }
    int tag = tag_at(buf, p), head;
    if (tag == ERL_BINARY_EXT)
        head = 5;
    else if (tag == ERL_SMALL_ATOM_UTF8_EXT)
        head = 2;
    else if (tag == ERL_ATOM_UTF8_EXT)
        head = 3;
    else
        return -1;
    m->name = (const uint8_t *)buf + p + head;
    m->name_len = be_len(buf, p + 1, head - 1);
    m->weight = (uint32_t)weight;
    return take_span(buf, &p, term) || ei_skip_term(buf, at);
}

static int decode_ring_owners(const char *buf, int at, int arity, proto_request *req,
                              proto_error *err)
{
    int n, type, size;
    long vnodes, count;
    if (arity != 6)
        return refuse(err, "bad_arity", NO_DETAIL);
    if (list_header(buf, &at, &n) != 0 || n < 1 || n > PROTO_MAX_NODES)
        return refuse(err, "bad_members", NO_DETAIL);
    req->ring_members = calloc((size_t)n, sizeof *req->ring_members);
    req->ring_member_terms = calloc((size_t)n, sizeof *req->ring_member_terms);
    req->nring_members = (size_t)n;
    if (!req->ring_members || !req->ring_member_terms) {
        refuse(err, "out_of_memory", NO_DETAIL);
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        req->ring_members[i].tag = (uint32_t)i;
        if (decode_ring_member(buf, &at, &req->ring_members[i], &req->ring_member_terms[i]) != 0) {
            refuse(err, "bad_members", NO_DETAIL);
            goto fail;
        }
    }
    if (list_tail(buf, &at, n) != 0 || ei_decode_long(buf, &at, &vnodes) != 0 || vnodes < 1 ||
        vnodes > RING_MAX_VNODES) {
        refuse(err, "bad_vnodes", NO_DETAIL);
        goto fail;
    }
    req->vnodes = (uint32_t)vnodes;
    if (type_at(buf, at, &type, &size) != 0 || type != ERL_BINARY_EXT || size != RING_SEED_BYTES) {
        refuse(err, "bad_seed", NO_DETAIL);
        goto fail;
    }
    memcpy(req->seed, buf + at + 5, RING_SEED_BYTES);
    ei_skip_term(buf, &at);
    int keys_at = at;
    if (ei_skip_term(buf, &at) != 0 || ei_decode_long(buf, &at, &count) != 0 || count < 1 ||
        count > PROTO_MAX_NODES) {
        refuse(err, "bad_count", NO_DETAIL);
        goto fail;
    }
    req->n = (size_t)count;
    if (decode_children(buf, &keys_at, 0, req, err) != 0)
        goto fail;
    return 0;
fail:
    free(req->ring_members);
    free(req->ring_member_terms);
    req->ring_members = NULL;
    req->ring_member_terms = NULL;
    return -1;
}

static const struct {
    const char *name;
    proto_kind kind;
} request_names[] = {
    {"children_start", PROTO_CHILDREN_START},
    {"children_stop", PROTO_CHILDREN_STOP},
    {"propagate_event", PROTO_PROPAGATE_EVENT},
    {"dispatch_event", PROTO_DISPATCH_EVENT},
    {"owners", PROTO_OWNERS},
    {"ring_info", PROTO_RING_INFO},
    {"ring_key", PROTO_RING_KEY},
    {"ring_owners", PROTO_RING_OWNERS},
};

int proto_decode_request(const char *buf, int at, const char *hub, proto_request *req,
                         proto_error *err)
{
    memset(req, 0, sizeof *req);
    err->why = NULL;
    err->detail = NO_DETAIL;
    req->timeout_ms = PROTO_DEFAULT_TIMEOUT_MS;
    int arity, type, size;
    char tag[MAXATOMLEN_UTF8];
    if (type_at(buf, at, &type, &size) != 0 ||
        (type != ERL_SMALL_TUPLE_EXT && type != ERL_LARGE_TUPLE_EXT) ||
        ei_decode_tuple_header(buf, &at, &arity) != 0 || arity < 2 ||
        type_at(buf, at, &type, &size) != 0 || !is_atom_type(type) || take_atom(buf, &at, tag) != 0)
        return refuse(err, "unknown_request", NO_DETAIL);
    size_t k = 0, nnames = sizeof request_names / sizeof *request_names;
    while (k < nnames && strcmp(request_names[k].name, tag) != 0)
        k++;
    if (k == nnames)
        return refuse(err, "unknown_request", NO_DETAIL);
    req->kind = request_names[k].kind;
    switch (req->kind) {
    case PROTO_CHILDREN_START:
    case PROTO_CHILDREN_STOP:
        return decode_start_stop(buf, at, arity, hub, req, err);
    case PROTO_PROPAGATE_EVENT:
        return decode_propagate(buf, at, arity, hub, req, err);
    case PROTO_DISPATCH_EVENT:
        return decode_dispatch(buf, at, arity, hub, req, err);
    case PROTO_OWNERS:
        if (arity != 3)
            return refuse(err, "bad_arity", NO_DETAIL);
        return decode_hub(buf, &at, hub, req, err) || decode_single_id(buf, at, req, err) ? -1 : 0;
    case PROTO_RING_INFO:
        if (arity != 2)
            return refuse(err, "bad_arity", NO_DETAIL);
        return decode_hub(buf, &at, hub, req, err);
    case PROTO_RING_KEY:
        if (arity != 2)
            return refuse(err, "bad_arity", NO_DETAIL);
        return decode_single_id(buf, at, req, err);
    case PROTO_RING_OWNERS:
        return decode_ring_owners(buf, at, arity, req, err);
    }
    return refuse(err, "unknown_request", NO_DETAIL);
}

void proto_request_free(proto_request *req)
{
    free(req->entries);
    free(req->ring_members);
    free(req->ring_member_terms);
    req->entries = NULL;
    req->ring_members = NULL;
    req->ring_member_terms = NULL;
}

int proto_member_at(const char *buf, const proto_request *req, size_t i, char node[MAXATOMLEN_UTF8])
{
    int at = req->member_list.at, n;
    if (i >= req->nmember_list || list_header(buf, &at, &n) != 0)
        return -1;
    for (size_t k = 0; k < i; k++)
        if (ei_skip_term(buf, &at) != 0)
            return -1;
    return take_atom(buf, &at, node);
}

/* ── answers ─────────────────────────────────────────────────────────── */

static int decode_results(const char *buf, int at, proto_answer *ans)
{
    int n;
    ans->kind = ANSWER_RESULTS;
    if (ei_decode_ref(buf, &at, &ans->ref) != 0 || take_atom(buf, &at, ans->node) != 0)
        return -1;
    int list_at = at;
    if (list_header(buf, &at, &n) != 0 || n > PROTO_MAX_CHILDREN * 2)
        return -1;
    ans->list.at = list_at;
    ans->count = (size_t)n;
    for (int i = 0; i < n; i++) {
        int type, size;
        if (type_at(buf, at, &type, &size) != 0 || type != ERL_SMALL_TUPLE_EXT ||
            tuple_of(buf, &at, 2) != 0 || ei_skip_term(buf, &at) != 0 ||
            ei_skip_term(buf, &at) != 0)
            return -1;
    }
    if (list_tail(buf, &at, n) != 0)
        return -1;
    ans->list.len = at - list_at;
    return 0;
}

int proto_decode_answer(const char *buf, proto_answer *ans, const char **why)
{
    int at = 0, version, arity, type, size;
    memset(ans, 0, sizeof *ans);
    *why = "unexpected message";
    if (ei_decode_version(buf, &at, &version) != 0 || type_at(buf, at, &type, &size) != 0 ||
        type != ERL_SMALL_TUPLE_EXT || ei_decode_tuple_header(buf, &at, &arity) != 0 ||
        type_at(buf, at, &type, &size) != 0)
        return -1;
    if (is_atom_type(type)) {
        char tag[MAXATOMLEN_UTF8];
        if (take_atom(buf, &at, tag) != 0)
            return -1;
        if (arity == 4 && strcmp(tag, "synod_results") == 0) {
            if (decode_results(buf, at, ans) != 0) {
                *why = "malformed synod_results";
                return -1;
            }
            return 0;
        }
        if (arity == 4 && strcmp(tag, "synod") == 0) {
            ans->kind = ANSWER_EVENT;
            if (take_atom(buf, &at, ans->hub) != 0 || take_atom(buf, &at, ans->event_id) != 0 ||
                take_span(buf, &at, &ans->data) != 0)
                return -1;
            return 0;
        }
        return -1;
    }
    if (ei_decode_ref(buf, &at, &ans->ref) != 0)
        return -1;
    if (arity == 2) {
        ans->kind = ANSWER_REPLY;
        return take_span(buf, &at, &ans->reply);
    }
    if (arity == 4) {
        ans->kind = ANSWER_CHILD;
        if (take_span(buf, &at, &ans->id) != 0 || take_span(buf, &at, &ans->result) != 0 ||
            take_atom(buf, &at, ans->node) != 0)
            return -1;
        return 0;
    }
    return -1;
}

int proto_results_begin(const char *buf, const proto_answer *ans, int *at)
{
    int n;
    *at = ans->list.at;
    return list_header(buf, at, &n);
}

int proto_results_next(const char *buf, int *at, span *id, span *result)
{
    return tuple_of(buf, at, 2) || take_span(buf, at, id) || take_span(buf, at, result);
}

static int result_is(const char *buf, span result, const char *first, const char *second)
{
    int at = result.at, type, size;
    if (type_at(buf, at, &type, &size) != 0 || type != ERL_SMALL_TUPLE_EXT ||
        tuple_of(buf, &at, 2) != 0 || !atom_is(buf, at, first))
        return 0;
    ei_skip_term(buf, &at);
    return second == NULL || atom_is(buf, at, second);
}

int proto_result_ok(const char *buf, span result)
{
    return result_is(buf, result, "ok", NULL);
}

int proto_result_not_found(const char *buf, span result)
{
    return result_is(buf, result, "error", "not_found");
}

/* {ok, ...} of the given arity; leaves *at after the ok. */
static int ok_tuple(const char *buf, span reply, int arity, int *at)
{
    int type, size;
    *at = reply.at;
    if (type_at(buf, *at, &type, &size) != 0 || type != ERL_SMALL_TUPLE_EXT ||
        tuple_of(buf, at, arity) != 0 || !atom_is(buf, *at, "ok"))
        return -1;
    return ei_skip_term(buf, at);
}

static int decode_seed(const char *buf, int *at, uint8_t seed[RING_SEED_BYTES])
{
    int type, size;
    if (type_at(buf, *at, &type, &size) != 0 || type != ERL_BINARY_EXT || size != RING_SEED_BYTES)
        return -1;
    memcpy(seed, buf + *at + 5, RING_SEED_BYTES);
    return ei_skip_term(buf, at);
}

int proto_decode_ring_info(const char *buf, span reply, char (*names)[MAXATOMLEN_UTF8], size_t cap,
                           size_t *count, uint32_t *vnodes, uint8_t seed[RING_SEED_BYTES],
                           unsigned *rf)
{
    int at, n;
    long v, r;
    if (ok_tuple(buf, reply, 5, &at) != 0 || list_header(buf, &at, &n) != 0 || n < 1 ||
        (size_t)n > cap)
        return -1;
    for (int i = 0; i < n; i++)
        if (take_atom(buf, &at, names[i]) != 0)
            return -1;
    if (list_tail(buf, &at, n) != 0 || ei_decode_long(buf, &at, &v) != 0 || v < 1 ||
        v > RING_MAX_VNODES || decode_seed(buf, &at, seed) != 0 ||
        ei_decode_long(buf, &at, &r) != 0 || r < 1 || r > PROTO_MAX_NODES)
        return -1;
    *count = (size_t)n;
    *vnodes = (uint32_t)v;
    *rf = (unsigned)r;
    return 0;
}

int proto_decode_config(const char *buf, span reply, int *active_passive)
{
    int at;
    char model[MAXATOMLEN_UTF8];
    if (ok_tuple(buf, reply, 2, &at) != 0 || tuple_of(buf, &at, 5) != 0 ||
        ei_skip_term(buf, &at) != 0 || take_atom(buf, &at, model) != 0)
        return -1;
    if (strcmp(model, "active_passive") == 0)
        *active_passive = 1;
    else if (strcmp(model, "active_active") == 0)
        *active_passive = 0;
    else
        return -1;
    return 0;
}

/* ── encoding ────────────────────────────────────────────────────────── */

int proto_append(ei_x_buff *x, const char *buf, span s)
{
    return ei_x_append_buf(x, buf + s.at, s.len);
}

int proto_encode_call_begin(ei_x_buff *x, const erlang_pid *self, const erlang_ref *ref)
{
    return ei_x_encode_tuple_header(x, 3) || ei_x_encode_atom(x, "$gen_call") ||
           ei_x_encode_tuple_header(x, 2) || ei_x_encode_pid(x, self) || ei_x_encode_ref(x, ref);
}

int proto_encode_batch_begin(ei_x_buff *x, int start, const erlang_ref *ref, const erlang_pid *self,
                             const char *buf, const span *reply_to, size_t nreply_to, size_t count)
{
    if (ei_x_encode_tuple_header(x, 5) ||
        ei_x_encode_atom(x, start ? "synod_start" : "synod_stop") || ei_x_encode_ref(x, ref) ||
        ei_x_encode_list_header(x, (long)nreply_to + 1) || ei_x_encode_pid(x, self))
        return -1;
    for (size_t i = 0; i < nreply_to; i++)
        if (proto_append(x, buf, reply_to[i]))
            return -1;
    return ei_x_encode_empty_list(x) || (count > 0 && ei_x_encode_list_header(x, (long)count));
}

int proto_encode_start_entry(ei_x_buff *x, const char *buf, const proto_entry *e, int active)
{
    return ei_x_encode_tuple_header(x, 4) || proto_append(x, buf, e->id) ||
           proto_append(x, buf, e->spec) || proto_append(x, buf, e->meta) ||
           ei_x_encode_atom(x, active ? "active" : "passive");
}

int proto_encode_batch_end(ei_x_buff *x)
{
    /* the entry list's tail, then Opts = [] */
    return ei_x_encode_empty_list(x) || ei_x_encode_empty_list(x);
}

int proto_encode_event(ei_x_buff *x, const char *buf, const proto_request *req, int discard)
{
    return ei_x_encode_tuple_header(x, 4) || ei_x_encode_atom(x, "synod_event") ||
           ei_x_encode_atom(x, req->event_id) || proto_append(x, buf, req->data) ||
           ei_x_encode_atom(x, discard ? "true" : "false");
}

int proto_encode_bad_request(ei_x_buff *x, const char *buf, const proto_error *err)
{
    if (ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
        ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "bad_request"))
        return -1;
    if (err->detail.len == 0)
        return ei_x_encode_atom(x, err->why);
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, err->why) ||
           proto_append(x, buf, err->detail);
}
