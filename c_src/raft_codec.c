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
 *   SNAPSHOT           index term nv nv x id nl nl x id size checksum
 *                      offset len crc:u32le bytes   (one chunk; crc =
 *                      CRC-32C of its bytes, checked by the decoder)
 *   TIMEOUT_NOW        (nothing)
 *   SNAPSHOT_RESP      index log_term hint
 *
 * The decoder walks a cursor that can never pass the end of the buffer,
 * bounds every count by both its cap and the bytes left (so a forged count
 * cannot make it allocate), rejects trailing bytes, then runs raft_msg_check:
 * the same semantic checks raft_step applies to messages built in C. */
#include <stdlib.h>
#include <string.h>

#include "raft_internal.h"

/* ---- CRC-32C (Castagnoli, reflected), one table, no state ------------------ */

static const uint32_t raft_crc_table[256] = {
    0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu, 0x26a1e7e8u,
    0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu, 0x4d43cfd0u, 0xbf284cd3u,
    0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu, 0xf165b798u, 0x030e349bu, 0xd7c45070u,
    0x25afd373u, 0x36ff2087u, 0xc494a384u, 0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u,
    0x5d1d08bfu, 0xaf768bbcu, 0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u,
    0x33ed7d2au, 0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
    0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau, 0x30e349b1u,
    0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu, 0x1642ae59u, 0xe4292d5au,
    0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au, 0x7da08661u, 0x8fcb0562u, 0x9c9bf696u,
    0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu, 0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u,
    0x67dafa54u, 0x95b17957u, 0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu,
    0xfe53516fu, 0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
    0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu, 0x3ac7f2ebu,
    0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u, 0x61c69362u, 0x93ad1061u,
    0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu, 0x4767748au, 0xb50cf789u, 0xeb1fcbadu,
    0x197448aeu, 0x0a24bb5au, 0xf84f3859u, 0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u,
    0x7198540du, 0x83f3d70eu, 0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u,
    0xa55230e6u, 0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
    0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu, 0x456cac67u,
    0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u, 0xe9141340u, 0x1b7f9043u,
    0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu, 0x92a8fc17u, 0x60c37f14u, 0x73938ce0u,
    0x81f80fe3u, 0x55326b08u, 0xa759e80bu, 0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu,
    0xf94ad42fu, 0x0b21572cu, 0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u,
    0x502036a5u, 0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
    0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u, 0x0e330a81u,
    0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du, 0x758fe5d6u, 0x87e466d5u,
    0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u, 0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u,
    0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu, 0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u,
    0x0417b1dbu, 0xf67c32d8u, 0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu,
    0x5a048dffu, 0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
    0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u, 0x590ab964u,
    0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u, 0x7fab5e8cu, 0x8dc0dd8fu,
    0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu, 0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u,
    0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u, 0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u,
    0x4f48173du, 0xbd23943eu, 0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au,
    0xc69f7b69u, 0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
    0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
};

uint32_t raft_crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = raft_crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

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
    if (m->flags & ~(RAFT_FLAG_REJECT | RAFT_FLAG_TRANSFER | RAFT_FLAG_LOST))
        return RAFT_ERR_INVALID;
    if ((m->flags & RAFT_FLAG_LOST) &&
        (m->type != RAFT_MSG_APPEND_RESP || !(m->flags & RAFT_FLAG_REJECT)))
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
    if (m->type != RAFT_MSG_SNAPSHOT && (m->offset || m->len || m->data))
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
    case RAFT_MSG_SNAPSHOT_RESP:
        if (m->index == 0 || m->log_term == 0)
            return RAFT_ERR_INVALID;
        break;
    case RAFT_MSG_SNAPSHOT: {
        const raft_snapshot *s = &m->snapshot;
        if (s->index == 0 || s->index >= RAFT_INDEX_MAX || s->term == 0 || s->term > m->term)
            return RAFT_ERR_INVALID;
        if (m->len > RAFT_SNAPSHOT_MAX_CHUNK)
            return RAFT_ERR_TOO_LARGE;
        if (s->size >= RAFT_INDEX_MAX || s->checksum >= RAFT_INDEX_MAX || m->offset > s->size ||
            m->len > s->size - m->offset)
            return RAFT_ERR_INVALID;
        if ((m->len && !m->data) || (s->n_voters && !s->voters) || (s->n_learners && !s->learners))
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
        n += varint_len(s->size) + varint_len(s->checksum) + varint_len(m->offset);
        n += varint_len(m->len) + 4 + m->len;
        break;
    }
    case RAFT_MSG_SNAPSHOT_RESP:
        n += varint_len(m->index) + varint_len(m->log_term) + varint_len(m->hint);
        break;
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
        p += varint_put(p, s->size);
        p += varint_put(p, s->checksum);
        p += varint_put(p, m->offset);
        p += varint_put(p, m->len);
        uint32_t crc = raft_crc32c(m->data, m->len);
        for (int i = 0; i < 4; i++)
            *p++ = (uint8_t)(crc >> (8 * i));
        if (m->len)
            memcpy(p, m->data, m->len);
        p += m->len;
        break;
    }
    case RAFT_MSG_SNAPSHOT_RESP:
        p += varint_put(p, m->index);
        p += varint_put(p, m->log_term);
        p += varint_put(p, m->hint);
        break;
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
        s->size = raft_cur_varint(&c);
        s->checksum = raft_cur_varint(&c);
        out->offset = raft_cur_varint(&c);
        uint64_t dlen = raft_cur_varint(&c);
        uint32_t crc = 0;
        for (int i = 0; i < 4; i++)
            crc |= (uint32_t)raft_cur_u8(&c) << (8 * i);
        if (!c.err && dlen > RAFT_SNAPSHOT_MAX_CHUNK)
            c.err = RAFT_ERR_TOO_LARGE;
        out->data = raft_cur_bytes(&c, dlen);
        out->len = c.err ? 0 : (size_t)dlen;
        /* A chunk damaged in transit is refused here; the leader resends. */
        if (!c.err && crc != raft_crc32c(out->data, out->len))
            c.err = RAFT_ERR_INVALID;
        break;
    }
    case RAFT_MSG_SNAPSHOT_RESP:
        out->index = raft_cur_varint(&c);
        out->log_term = raft_cur_varint(&c);
        out->hint = raft_cur_varint(&c);
        break;
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
