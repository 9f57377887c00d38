/* raft_log.c -- the in-memory Raft log between the snapshot and the last
 * index, and the membership sets. Pure: no I/O, no clock, no global state.
 *
 * The log is one array of entries, each owning a malloc'ed copy of its bytes.
 * Appends are amortised O(1); truncation frees the tail; compaction frees the
 * head and memmoves the rest (rare: once per snapshot). */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

void raft_log_init(raft_log *l, uint64_t snap_index, uint64_t snap_term)
{
    memset(l, 0, sizeof(*l));
    l->snap_index = snap_index;
    l->snap_term = snap_term;
}

static void raft_entry_free_data(raft_entry *e)
{
    free((void *)e->data);
    e->data = NULL;
    e->len = 0;
}

void raft_log_free(raft_log *l)
{
    for (size_t i = 0; i < l->n; i++)
        raft_entry_free_data(&l->ents[i]);
    free(l->ents);
    l->ents = NULL;
    l->n = l->cap = 0;
}

uint64_t raft_log_last_index(const raft_log *l)
{
    return l->snap_index + l->n;
}

uint64_t raft_log_last_term(const raft_log *l)
{
    return l->n ? l->ents[l->n - 1].term : l->snap_term;
}

bool raft_log_term(const raft_log *l, uint64_t index, uint64_t *term)
{
    if (index == l->snap_index) {
        *term = l->snap_term;
        return true;
    }
    if (index < l->snap_index || index > raft_log_last_index(l))
        return false;
    *term = l->ents[index - l->snap_index - 1].term;
    return true;
}

const raft_entry *raft_log_get(const raft_log *l, uint64_t index)
{
    if (index <= l->snap_index || index > raft_log_last_index(l))
        return NULL;
    return &l->ents[index - l->snap_index - 1];
}

int raft_log_append(raft_log *l, uint64_t term, uint8_t type, const uint8_t *data, size_t len)
{
    /* Terms never decrease along the log (a leader only appends its own
     * term, a follower copies a log that already has this property). */
    assert(term >= raft_log_last_term(l));
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        raft_entry *ents = realloc(l->ents, cap * sizeof(*ents));
        if (!ents)
            return RAFT_ERR_NOMEM;
        l->ents = ents;
        l->cap = cap;
    }
    uint8_t *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return RAFT_ERR_NOMEM;
        memcpy(copy, data, len);
    }
    raft_entry *e = &l->ents[l->n];
    e->term = term;
    e->index = raft_log_last_index(l) + 1;
    e->type = type;
    e->data = copy;
    e->len = len;
    l->n++;
    return RAFT_OK;
}

void raft_log_truncate(raft_log *l, uint64_t from)
{
    assert(from > l->snap_index);
    while (raft_log_last_index(l) >= from) {
        raft_entry_free_data(&l->ents[l->n - 1]);
        l->n--;
    }
}

void raft_log_compact(raft_log *l, uint64_t index)
{
    assert(index > l->snap_index && index <= raft_log_last_index(l));
    size_t drop = (size_t)(index - l->snap_index);
    l->snap_term = l->ents[drop - 1].term;
    for (size_t i = 0; i < drop; i++)
        raft_entry_free_data(&l->ents[i]);
    memmove(l->ents, l->ents + drop, (l->n - drop) * sizeof(*l->ents));
    l->n -= drop;
    l->snap_index = index;
}

void raft_log_reset(raft_log *l, uint64_t index, uint64_t term)
{
    raft_log_truncate(l, l->snap_index + 1);
    l->snap_index = index;
    l->snap_term = term;
}

void raft_log_check(const raft_log *l)
{
#ifndef NDEBUG
    uint64_t prev = l->snap_term;
    for (size_t i = 0; i < l->n; i++) {
        assert(l->ents[i].index == l->snap_index + 1 + i);
        assert(l->ents[i].term >= prev);
        assert((l->ents[i].data == NULL) == (l->ents[i].len == 0));
        prev = l->ents[i].term;
    }
#else
    (void)l;
#endif
}

/* ---- membership -------------------------------------------------------- */

static bool raft_ids_contain(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

bool raft_members_is_voter(const raft_members *c, uint64_t id)
{
    return raft_ids_contain(c->voters, c->n_voters, id);
}

bool raft_members_is_learner(const raft_members *c, uint64_t id)
{
    return raft_ids_contain(c->learners, c->n_learners, id);
}

static void raft_ids_sort(uint64_t *ids, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        uint64_t v = ids[i];
        uint32_t j = i;
        for (; j > 0 && ids[j - 1] > v; j--)
            ids[j] = ids[j - 1];
        ids[j] = v;
    }
}

static void raft_ids_remove(uint64_t *ids, uint32_t *n, uint64_t id)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (ids[i] == id) {
            memmove(ids + i, ids + i + 1, (*n - i - 1) * sizeof(*ids));
            (*n)--;
            return;
        }
    }
}

int raft_members_set(raft_members *c, const uint64_t *voters, size_t nv, const uint64_t *learners,
                     size_t nl)
{
    if (nv + nl > RAFT_MAX_MEMBERS)
        return RAFT_ERR_TOO_LARGE;
    raft_members t;
    memset(&t, 0, sizeof(t));
    for (size_t i = 0; i < nv + nl; i++) {
        uint64_t id = i < nv ? voters[i] : learners[i - nv];
        if (id == 0 || id >= RAFT_INDEX_MAX || raft_members_is_voter(&t, id) ||
            raft_members_is_learner(&t, id))
            return RAFT_ERR_INVALID;
        if (i < nv)
            t.voters[t.n_voters++] = id;
        else
            t.learners[t.n_learners++] = id;
    }
    raft_ids_sort(t.voters, t.n_voters);
    raft_ids_sort(t.learners, t.n_learners);
    *c = t;
    return RAFT_OK;
}

/* Conf entry data:  op:u8  then  id:varint                  (single ops)
 *                               n_voters:varint ids...
 *                               n_learners:varint ids...   (BOOTSTRAP) */
size_t raft_conf_encode_op(uint8_t *buf, uint8_t op, uint64_t id)
{
    buf[0] = op;
    return 1 + varint_put(buf + 1, id);
}

size_t raft_conf_encode_bootstrap(uint8_t *buf, const raft_members *c)
{
    size_t n = 0;
    buf[n++] = RAFT_CONF_BOOTSTRAP;
    n += varint_put(buf + n, c->n_voters);
    for (uint32_t i = 0; i < c->n_voters; i++)
        n += varint_put(buf + n, c->voters[i]);
    n += varint_put(buf + n, c->n_learners);
    for (uint32_t i = 0; i < c->n_learners; i++)
        n += varint_put(buf + n, c->learners[i]);
    return n;
}

static int raft_conf_read_ids(const uint8_t *data, size_t len, size_t *pos, uint64_t *ids,
                              size_t *n)
{
    uint64_t count;
    size_t k = varint_get(data + *pos, len - *pos, &count);
    if (!k)
        return RAFT_ERR_TRUNCATED;
    *pos += k;
    if (count > RAFT_MAX_MEMBERS)
        return RAFT_ERR_TOO_LARGE;
    for (uint64_t i = 0; i < count; i++) {
        k = varint_get(data + *pos, len - *pos, &ids[i]);
        if (!k)
            return RAFT_ERR_TRUNCATED;
        *pos += k;
    }
    *n = (size_t)count;
    return RAFT_OK;
}

int raft_conf_change_decode(const uint8_t *data, size_t len, raft_conf_change *out)
{
    memset(out, 0, sizeof(*out));
    if (!data || len < 2)
        return RAFT_ERR_TRUNCATED;
    uint8_t op = data[0];
    if (op == RAFT_CONF_BOOTSTRAP) {
        raft_members c;
        int rc = raft_members_set(&c, NULL, 0, NULL, 0);
        if (rc == RAFT_OK)
            rc = raft_members_apply(&c, data, len);
        if (rc == RAFT_OK)
            out->op = op;
        return rc;
    }
    if (op < RAFT_CONF_ADD_LEARNER || op > RAFT_CONF_REMOVE)
        return RAFT_ERR_INVALID;
    uint64_t id;
    size_t k = varint_get(data + 1, len - 1, &id);
    if (!k)
        return RAFT_ERR_TRUNCATED;
    if (1 + k != len)
        return RAFT_ERR_TRAILING;
    if (id == 0 || id >= RAFT_INDEX_MAX)
        return RAFT_ERR_INVALID;
    out->op = op;
    out->id = id;
    return RAFT_OK;
}

int raft_members_apply(raft_members *c, const uint8_t *data, size_t len)
{
    if (len >= 1 && data[0] == RAFT_CONF_BOOTSTRAP) {
        uint64_t v[RAFT_MAX_MEMBERS], l[RAFT_MAX_MEMBERS];
        size_t nv, nl, pos = 1;
        int rc = raft_conf_read_ids(data, len, &pos, v, &nv);
        if (rc == RAFT_OK)
            rc = raft_conf_read_ids(data, len, &pos, l, &nl);
        if (rc != RAFT_OK)
            return rc;
        if (pos != len)
            return RAFT_ERR_TRAILING;
        if (nv == 0)
            return RAFT_ERR_INVALID;
        return raft_members_set(c, v, nv, l, nl);
    }
    raft_conf_change cc;
    int rc = raft_conf_change_decode(data, len, &cc);
    if (rc != RAFT_OK)
        return rc;
    bool voter = raft_members_is_voter(c, cc.id), learner = raft_members_is_learner(c, cc.id);
    switch (cc.op) {
    case RAFT_CONF_ADD_LEARNER:
        if (voter || learner)
            return RAFT_ERR_NOT_MEMBER;
        if (c->n_voters + c->n_learners >= RAFT_MAX_MEMBERS)
            return RAFT_ERR_TOO_LARGE;
        c->learners[c->n_learners++] = cc.id;
        raft_ids_sort(c->learners, c->n_learners);
        return RAFT_OK;
    case RAFT_CONF_ADD_VOTER:
        if (!learner)
            return RAFT_ERR_NOT_MEMBER;
        raft_ids_remove(c->learners, &c->n_learners, cc.id);
        c->voters[c->n_voters++] = cc.id;
        raft_ids_sort(c->voters, c->n_voters);
        return RAFT_OK;
    case RAFT_CONF_REMOVE:
        if (!voter && !learner)
            return RAFT_ERR_NOT_MEMBER;
        if (voter && c->n_voters == 1)
            return RAFT_ERR_INVALID; /* a group keeps at least one voter */
        raft_ids_remove(voter ? c->voters : c->learners, voter ? &c->n_voters : &c->n_learners,
                        cc.id);
        return RAFT_OK;
    }
    return RAFT_ERR_INVALID;
}
