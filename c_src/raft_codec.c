/* raft_codec.c -- the wire format of Raft messages (version 1).
 * Pure: no I/O, no clock, no global state.
 *
 * Layout (every integer an unsigned LEB128 varint in canonical form, so each
 * message has exactly one encoding):
 *
 *   version:u8 type:u8 flags:u8 from term to          common header
 *   PREVOTE, VOTE      index log_term
 *   *VOTE_RESP         (nothing)
 *   APPEND             index log_term commit n  n x { type:u8 term len bytes }
 *   APPEND_RESP        index hint log_term
 *   HEARTBEAT          commit ctx
 *   HEARTBEAT_RESP     ctx
 *   SNAPSHOT           index term nv nv x id nl nl x id len bytes
 *   TIMEOUT_NOW        (nothing)
 *
 * The decoder walks a cursor that can never pass the end of the buffer,
 * bounds every count by both its cap and the bytes left (so a forged count
 * cannot make it allocate), rejects trailing bytes, then runs raft_msg_check:
 * the same semantic checks raft_step applies to messages built in C. */
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

/* ---- semantic checks --------------------------------------------------- */

static int raft_check_members(const raft_snapshot *s)
{
    raft_members c;
    if (s->n_voters == 0)
        return RAFT_ERR_INVALID;
    if (s->n_voters + s->n_learners > RAFT_MAX_MEMBERS)
        return RAFT_ERR_TOO_LARGE;
    return raft_members_set(&c, s->voters, s->n_voters, s->learners, s->n_learners);
}

int raft_msg_check(const raft_msg *m)
{
    if (!m || m->type < 1 || m->type > RAFT_MSG_TYPE_MAX)
        return RAFT_ERR_INVALID;
    if (m->flags & ~(RAFT_FLAG_REJECT | RAFT_FLAG_TRANSFER))
        return RAFT_ERR_INVALID;
    if (m->from == 0 || m->to == 0 || m->from == m->to || m->term == 0)
        return RAFT_ERR_INVALID;
    const uint64_t nums[] = {m->from,     m->to,     m->term, m->index,
                             m->log_term, m->commit, m->hint, m->ctx};
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        if (nums[i] >= RAFT_INDEX_MAX)
            return RAFT_ERR_INVALID;
    if (m->log_term > m->term)
        return RAFT_ERR_INVALID;
    if (m->type != RAFT_MSG_APPEND && m->n_entries)
        return RAFT_ERR_INVALID;
    switch (m->type) {
    case RAFT_MSG_APPEND: {
        if (m->n_entries > RAFT_MSG_MAX_ENTRIES)
            return RAFT_ERR_TOO_LARGE;
        if (m->n_entries && !m->entries)
            return RAFT_ERR_INVALID;
        if (m->index + m->n_entries >= RAFT_INDEX_MAX)
            return RAFT_ERR_INVALID;
        if ((m->log_term == 0) != (m->index == 0))
            return RAFT_ERR_INVALID;
        uint64_t prev = m->log_term;
        for (size_t i = 0; i < m->n_entries; i++) {
            const raft_entry *e = &m->entries[i];
            if (e->index != m->index + 1 + i || e->term < prev || e->term == 0 ||
                e->term > m->term || e->type > RAFT_ENTRY_CONF)
                return RAFT_ERR_INVALID;
            if (e->len > RAFT_ENTRY_MAX_DATA)
                return RAFT_ERR_TOO_LARGE;
            if (e->len && !e->data)
                return RAFT_ERR_INVALID;
            if (e->type == RAFT_ENTRY_CONF) {
                raft_conf_change cc;
                int rc = raft_conf_change_decode(e->data, e->len, &cc);
                if (rc != RAFT_OK)
                    return rc;
                /* Only the first entry of a group's log is a bootstrap. */
                if (cc.op == RAFT_CONF_BOOTSTRAP && e->index != 1)
                    return RAFT_ERR_INVALID;
            }
            prev = e->term;
        }
        break;
    }
    case RAFT_MSG_APPEND_RESP:
        if ((m->flags & RAFT_FLAG_REJECT) && m->hint > m->index)
            return RAFT_ERR_INVALID;
        break;
    case RAFT_MSG_SNAPSHOT: {
        const raft_snapshot *s = &m->snapshot;
        if (s->index == 0 || s->index >= RAFT_INDEX_MAX || s->term == 0 || s->term > m->term)
            return RAFT_ERR_INVALID;
        if (s->len > RAFT_SNAPSHOT_MAX_DATA)
            return RAFT_ERR_TOO_LARGE;
        if ((s->len && !s->data) || (s->n_voters && !s->voters) || (s->n_learners && !s->learners))
            return RAFT_ERR_INVALID;
        return raft_check_members(s);
    }
    default:
        break;
    }
    return RAFT_OK;
}

/* ---- encoding ---------------------------------------------------------- */

size_t raft_msg_encoded_size(const raft_msg *m)
{
    size_t n = 3 + varint_len(m->from) + varint_len(m->term) + varint_len(m->to);
    switch (m->type) {
    case RAFT_MSG_PREVOTE:
    case RAFT_MSG_VOTE:
        n += varint_len(m->index) + varint_len(m->log_term);
        break;
    case RAFT_MSG_APPEND:
        n += varint_len(m->index) + varint_len(m->log_term) + varint_len(m->commit) +
             varint_len(m->n_entries);
        for (size_t i = 0; i < m->n_entries; i++) {
            const raft_entry *e = &m->entries[i];
            n += 1 + varint_len(e->term) + varint_len(e->len) + e->len;
        }
        break;
    case RAFT_MSG_APPEND_RESP:
        n += varint_len(m->index) + varint_len(m->hint) + varint_len(m->log_term);
        break;
    case RAFT_MSG_HEARTBEAT:
        n += varint_len(m->commit) + varint_len(m->ctx);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        n += varint_len(m->ctx);
        break;
    case RAFT_MSG_SNAPSHOT: {
        const raft_snapshot *s = &m->snapshot;
        n += varint_len(s->index) + varint_len(s->term);
        n += varint_len(s->n_voters) + varint_len(s->n_learners);
        for (size_t i = 0; i < s->n_voters; i++)
            n += varint_len(s->voters[i]);
        for (size_t i = 0; i < s->n_learners; i++)
            n += varint_len(s->learners[i]);
        n += varint_len(s->len) + s->len;
        break;
    }
    default:
        break;
    }
    return n;
}

int raft_msg_encode(const raft_msg *m, uint8_t *buf, size_t cap, size_t *len)
{
    int rc = raft_msg_check(m);
    if (rc != RAFT_OK)
        return rc;
    size_t need = raft_msg_encoded_size(m);
    if (need > RAFT_MSG_MAX_BYTES)
        return RAFT_ERR_TOO_LARGE;
    if (need > cap)
        return RAFT_ERR_TRUNCATED;
    uint8_t *p = buf;
    *p++ = RAFT_WIRE_VERSION;
    *p++ = m->type;
    *p++ = m->flags;
    p += varint_put(p, m->from);
    p += varint_put(p, m->term);
    p += varint_put(p, m->to);
    switch (m->type) {
    case RAFT_MSG_PREVOTE:
    case RAFT_MSG_VOTE:
        p += varint_put(p, m->index);
        p += varint_put(p, m->log_term);
        break;
    case RAFT_MSG_APPEND:
        p += varint_put(p, m->index);
        p += varint_put(p, m->log_term);
        p += varint_put(p, m->commit);
        p += varint_put(p, m->n_entries);
        for (size_t i = 0; i < m->n_entries; i++) {
            const raft_entry *e = &m->entries[i];
            *p++ = e->type;
            p += varint_put(p, e->term);
            p += varint_put(p, e->len);
            if (e->len)
                memcpy(p, e->data, e->len);
            p += e->len;
        }
        break;
    case RAFT_MSG_APPEND_RESP:
        p += varint_put(p, m->index);
        p += varint_put(p, m->hint);
        p += varint_put(p, m->log_term);
        break;
    case RAFT_MSG_HEARTBEAT:
        p += varint_put(p, m->commit);
        p += varint_put(p, m->ctx);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        p += varint_put(p, m->ctx);
        break;
    case RAFT_MSG_SNAPSHOT: {
        const raft_snapshot *s = &m->snapshot;
        p += varint_put(p, s->index);
        p += varint_put(p, s->term);
        p += varint_put(p, s->n_voters);
        for (size_t i = 0; i < s->n_voters; i++)
            p += varint_put(p, s->voters[i]);
        p += varint_put(p, s->n_learners);
        for (size_t i = 0; i < s->n_learners; i++)
            p += varint_put(p, s->learners[i]);
        p += varint_put(p, s->len);
        if (s->len)
            memcpy(p, s->data, s->len);
        p += s->len;
        break;
    }
    default:
        break;
    }
    /* Invariant: the size function and the writer agree byte for byte. */
    if ((size_t)(p - buf) != need)
        return RAFT_ERR_INVALID;
    *len = need;
    return RAFT_OK;
}

/* ---- decoding ---------------------------------------------------------- */

typedef struct raft_cursor {
    const uint8_t *p;
    size_t left;
    int err;
} raft_cursor;

static uint64_t raft_cur_varint(raft_cursor *c)
{
    uint64_t v = 0;
    if (c->err)
        return 0;
    size_t k = varint_get(c->p, c->left, &v);
    if (!k) {
        /* Out of bytes mid-varint (no terminating byte before the end), or a
         * malformed one (overlong or over 64 bits). */
        c->err = RAFT_ERR_TRUNCATED;
        for (size_t i = 0; i < c->left && i < 10; i++)
            if (!(c->p[i] & 0x80) || i == 9)
                c->err = RAFT_ERR_INVALID;
        return 0;
    }
    c->p += k;
    c->left -= k;
    return v;
}

static uint8_t raft_cur_u8(raft_cursor *c)
{
    if (c->err)
        return 0;
    if (c->left < 1) {
        c->err = RAFT_ERR_TRUNCATED;
        return 0;
    }
    c->left--;
    return *c->p++;
}

static const uint8_t *raft_cur_bytes(raft_cursor *c, uint64_t n)
{
    if (c->err)
        return NULL;
    if (n > c->left) {
        c->err = RAFT_ERR_TRUNCATED;
        return NULL;
    }
    const uint8_t *p = c->p;
    c->p += n;
    c->left -= (size_t)n;
    return n ? p : NULL;
}

/* A count field: capped, and each counted item needs at least min_bytes. */
static size_t raft_cur_count(raft_cursor *c, uint64_t cap, size_t min_bytes)
{
    uint64_t n = raft_cur_varint(c);
    if (c->err)
        return 0;
    if (n > cap) {
        c->err = RAFT_ERR_TOO_LARGE;
        return 0;
    }
    if (n * min_bytes > c->left) {
        c->err = RAFT_ERR_TRUNCATED;
        return 0;
    }
    return (size_t)n;
}

static int raft_decode_fail(raft_msg *out, int err)
{
    free(out->mem);
    memset(out, 0, sizeof(*out));
    return err;
}

int raft_msg_decode(const uint8_t *buf, size_t len, raft_msg *out)
{
    memset(out, 0, sizeof(*out));
    if (!buf && len)
        return RAFT_ERR_INVALID;
    if (len > RAFT_MSG_MAX_BYTES)
        return RAFT_ERR_TOO_LARGE;
    raft_cursor c = {buf, len, 0};
    uint8_t version = raft_cur_u8(&c);
    if (!c.err && version != RAFT_WIRE_VERSION)
        return RAFT_ERR_VERSION;
    out->type = raft_cur_u8(&c);
    out->flags = raft_cur_u8(&c);
    out->from = raft_cur_varint(&c);
    out->term = raft_cur_varint(&c);
    out->to = raft_cur_varint(&c);
    if (!c.err && (out->type < 1 || out->type > RAFT_MSG_TYPE_MAX))
        return raft_decode_fail(out, RAFT_ERR_INVALID);
    switch (out->type) {
    case RAFT_MSG_PREVOTE:
    case RAFT_MSG_VOTE:
        out->index = raft_cur_varint(&c);
        out->log_term = raft_cur_varint(&c);
        break;
    case RAFT_MSG_APPEND: {
        out->index = raft_cur_varint(&c);
        out->log_term = raft_cur_varint(&c);
        out->commit = raft_cur_varint(&c);
        size_t n = raft_cur_count(&c, RAFT_MSG_MAX_ENTRIES, 3);
        if (c.err || n == 0)
            break;
        raft_entry *ents = calloc(n, sizeof(*ents));
        if (!ents)
            return raft_decode_fail(out, RAFT_ERR_NOMEM);
        out->mem = ents;
        out->entries = ents;
        out->n_entries = n;
        for (size_t i = 0; i < n && !c.err; i++) {
            ents[i].index = out->index + 1 + i;
            ents[i].type = raft_cur_u8(&c);
            ents[i].term = raft_cur_varint(&c);
            uint64_t dlen = raft_cur_varint(&c);
            if (!c.err && dlen > RAFT_ENTRY_MAX_DATA)
                c.err = RAFT_ERR_TOO_LARGE;
            ents[i].data = raft_cur_bytes(&c, dlen);
            ents[i].len = c.err ? 0 : (size_t)dlen;
        }
        break;
    }
    case RAFT_MSG_APPEND_RESP:
        out->index = raft_cur_varint(&c);
        out->hint = raft_cur_varint(&c);
        out->log_term = raft_cur_varint(&c);
        break;
    case RAFT_MSG_HEARTBEAT:
        out->commit = raft_cur_varint(&c);
        out->ctx = raft_cur_varint(&c);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        out->ctx = raft_cur_varint(&c);
        break;
    case RAFT_MSG_SNAPSHOT: {
        raft_snapshot *s = &out->snapshot;
        s->index = raft_cur_varint(&c);
        s->term = raft_cur_varint(&c);
        uint64_t *ids = malloc(RAFT_MAX_MEMBERS * sizeof(*ids));
        if (!ids)
            return raft_decode_fail(out, RAFT_ERR_NOMEM);
        out->mem = ids;
        size_t nv = raft_cur_count(&c, RAFT_MAX_MEMBERS, 1);
        for (size_t i = 0; i < nv && !c.err; i++)
            ids[i] = raft_cur_varint(&c);
        size_t nl = raft_cur_count(&c, RAFT_MAX_MEMBERS - nv, 1);
        for (size_t i = 0; i < nl && !c.err; i++)
            ids[nv + i] = raft_cur_varint(&c);
        s->voters = ids;
        s->n_voters = nv;
        s->learners = ids + nv;
        s->n_learners = nl;
        uint64_t dlen = raft_cur_varint(&c);
        if (!c.err && dlen > RAFT_SNAPSHOT_MAX_DATA)
            c.err = RAFT_ERR_TOO_LARGE;
        s->data = raft_cur_bytes(&c, dlen);
        s->len = c.err ? 0 : (size_t)dlen;
        break;
    }
    default:
        break;
    }
    if (c.err)
        return raft_decode_fail(out, c.err);
    if (c.left)
        return raft_decode_fail(out, RAFT_ERR_TRAILING);
    int rc = raft_msg_check(out);
    if (rc != RAFT_OK)
        return raft_decode_fail(out, rc);
    return RAFT_OK;
}

void raft_msg_release(raft_msg *m)
{
    if (!m)
        return;
    free(m->mem);
    memset(m, 0, sizeof(*m));
}
