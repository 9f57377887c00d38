/* store_codec.c -- the store's command codec: decode, check, encode (see
 * store_codec.h for its invariants, docs/store.md for the format).
 * Pure: no I/O, no clock, no globals, malloc/free only. */
#include <stdlib.h>
#include <string.h>

#include "store_codec.h"
#include "store_index.h"
#include "varint.h"

void store_cur_fail(store_cursor *c, int err)
{
    if (!c->err)
        c->err = err;
    c->p = c->end;
}

uint8_t store_cur_u8(store_cursor *c)
{
    if (c->p >= c->end) {
        store_cur_fail(c, STORE_ERR_TRUNCATED);
        return 0;
    }
    return *c->p++;
}

uint64_t store_cur_varint(store_cursor *c)
{
    uint64_t v = 0;
    size_t avail = (size_t)(c->end - c->p);
    size_t n = varint_get(c->p, avail, &v);
    if (!n) {
        /* a varint that runs off the end is truncated; one that ends is bad */
        bool ended = false;
        for (size_t i = 0; i < avail && i < 10; i++)
            if (!(c->p[i] & 0x80))
                ended = true;
        store_cur_fail(c, ended || avail >= 10 ? STORE_ERR_INVALID : STORE_ERR_TRUNCATED);
        return 0;
    }
    c->p += n;
    return v;
}

store_bytes store_cur_bytes(store_cursor *c, size_t max)
{
    store_bytes b = {NULL, 0};
    uint64_t len = store_cur_varint(c);
    if (c->err)
        return b;
    if (len > max) {
        store_cur_fail(c, STORE_ERR_TOO_LARGE);
        return b;
    }
    if (len > (uint64_t)(c->end - c->p)) {
        store_cur_fail(c, STORE_ERR_TRUNCATED);
        return b;
    }
    b.p = c->p;
    b.len = (size_t)len;
    c->p += len;
    return b;
}

static void decode_op(store_cursor *c, uint8_t type, store_op *op)
{
    memset(op, 0, sizeof *op);
    op->type = type;
    op->flags = store_cur_u8(c);
    op->key = store_cur_bytes(c, STORE_MAX_KEY);
    switch (type) {
    case STORE_CMD_PUT:
        op->value = store_cur_bytes(c, STORE_MAX_VALUE);
        op->lease = store_cur_varint(c);
        break;
    case STORE_CMD_DELETE:
        op->range_end = store_cur_bytes(c, STORE_MAX_KEY);
        break;
    case STORE_CMD_RANGE:
        op->range_end = store_cur_bytes(c, STORE_MAX_KEY);
        op->limit = store_cur_varint(c);
        break;
    default:
        store_cur_fail(c, STORE_ERR_INVALID);
    }
}

static void decode_compare(store_cursor *c, store_compare *cmp)
{
    memset(cmp, 0, sizeof *cmp);
    cmp->target = store_cur_u8(c);
    cmp->result = store_cur_u8(c);
    cmp->key = store_cur_bytes(c, STORE_MAX_KEY);
    if (cmp->target == STORE_CMP_COUNT)
        cmp->range_end = store_cur_bytes(c, STORE_MAX_KEY);
    if (cmp->target == STORE_CMP_VALUE)
        cmp->value = store_cur_bytes(c, STORE_MAX_VALUE);
    else if (cmp->target != STORE_CMP_EXISTS)
        cmp->number = store_cur_varint(c);
}

/* The smallest encodings, which bound a count by the bytes left. */
#define MIN_OP_BYTES 5u
#define MIN_COMPARE_BYTES 4u

size_t store_cur_count(store_cursor *c, size_t cap, size_t min_bytes)
{
    uint64_t n = store_cur_varint(c);
    if (c->err)
        return 0;
    if (n > cap) {
        store_cur_fail(c, STORE_ERR_TOO_LARGE);
        return 0;
    }
    if (n > (uint64_t)(c->end - c->p) / min_bytes) {
        store_cur_fail(c, STORE_ERR_TRUNCATED);
        return 0;
    }
    return (size_t)n;
}

/* Decodes a txn body; with NULL arrays it only counts (the first pass). */
static void decode_txn(store_cursor *c, store_cmd *cmd, store_compare *cmps, store_op *ops)
{
    store_compare cmp_scratch;
    store_op op_scratch;
    cmd->n_compares = store_cur_count(c, STORE_MAX_COMPARES, MIN_COMPARE_BYTES);
    for (size_t i = 0; i < cmd->n_compares && !c->err; i++)
        decode_compare(c, cmps ? &cmps[i] : &cmp_scratch);
    size_t done = 0;
    for (int branch = 0; branch < 2 && !c->err; branch++) {
        size_t n = store_cur_count(c, STORE_MAX_TXN_OPS, MIN_OP_BYTES);
        if (branch == 0)
            cmd->n_success = n;
        else
            cmd->n_failure = n;
        for (size_t i = 0; i < n && !c->err; i++) {
            uint8_t type = store_cur_u8(c);
            decode_op(c, type, ops ? &ops[done + i] : &op_scratch);
        }
        done += n;
    }
}

bool store_num_ok(uint64_t v)
{
    return v < STORE_NUM_MAX;
}

int store_check_op(const store_op *op)
{
    static const uint8_t allowed[] = {
        [STORE_CMD_PUT] = STORE_FLAG_PREV_KV,
        [STORE_CMD_DELETE] = STORE_FLAG_PREV_KV | STORE_FLAG_FIRST,
        [STORE_CMD_RANGE] = STORE_FLAG_KEYS_ONLY | STORE_FLAG_COUNT_ONLY,
    };
    if (op->type < STORE_CMD_PUT || op->type > STORE_CMD_RANGE || (op->flags & ~allowed[op->type]))
        return STORE_ERR_INVALID;
    if (op->key.len > STORE_MAX_KEY || op->range_end.len > STORE_MAX_KEY ||
        op->value.len > STORE_MAX_VALUE)
        return STORE_ERR_TOO_LARGE;
    if (op->key.len == 0 || !op->key.p || (op->range_end.len && !op->range_end.p) ||
        (op->value.len && !op->value.p))
        return STORE_ERR_INVALID;
    if (op->type != STORE_CMD_PUT && (op->value.len || op->lease))
        return STORE_ERR_INVALID;
    if (op->type == STORE_CMD_PUT && op->range_end.len)
        return STORE_ERR_INVALID;
    if (op->type != STORE_CMD_RANGE && op->limit)
        return STORE_ERR_INVALID;
    if (!store_num_ok(op->lease) || !store_num_ok(op->limit))
        return STORE_ERR_INVALID;
    return STORE_OK;
}

static int check_compare(const store_compare *c)
{
    if (c->target > STORE_CMP_COUNT || c->result > STORE_CMP_NOT_EQUAL)
        return STORE_ERR_INVALID;
    if (c->target == STORE_CMP_EXISTS && c->result != STORE_CMP_EQUAL &&
        c->result != STORE_CMP_NOT_EQUAL)
        return STORE_ERR_INVALID;
    if (c->key.len > STORE_MAX_KEY || c->range_end.len > STORE_MAX_KEY ||
        c->value.len > STORE_MAX_VALUE)
        return STORE_ERR_TOO_LARGE;
    if (c->key.len == 0 || !c->key.p || (c->value.len && !c->value.p) ||
        (c->range_end.len && !c->range_end.p))
        return STORE_ERR_INVALID;
    if (c->target != STORE_CMP_COUNT && c->range_end.len)
        return STORE_ERR_INVALID;
    if (c->target != STORE_CMP_VALUE && c->value.len)
        return STORE_ERR_INVALID;
    if ((c->target == STORE_CMP_VALUE || c->target == STORE_CMP_EXISTS) && c->number)
        return STORE_ERR_INVALID;
    return store_num_ok(c->number) ? STORE_OK : STORE_ERR_INVALID;
}

/* One branch may not write a key twice: two puts of one key, or a put of a
 * key that a delete of the same branch covers (etcd's rule). */
static int check_branch(const store_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = store_check_op(&ops[i]);
        if (rc != STORE_OK)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (ops[i].type != STORE_CMD_PUT)
            continue;
        for (size_t j = 0; j < n; j++) {
            if (j == i)
                continue;
            const store_op *o = &ops[j];
            if ((o->type == STORE_CMD_PUT && j < i &&
                 store_bytes_cmp(o->key.p, o->key.len, ops[i].key.p, ops[i].key.len) == 0) ||
                (o->type == STORE_CMD_DELETE &&
                 store_range_contains(o, ops[i].key.p, ops[i].key.len)))
                return STORE_ERR_DUPLICATE_KEY;
        }
    }
    return STORE_OK;
}

int store_cmd_check(const store_cmd *c)
{
    if (!c)
        return STORE_ERR_INVALID;
    switch (c->type) {
    case STORE_CMD_PUT:
    case STORE_CMD_DELETE:
    case STORE_CMD_RANGE:
        return c->op.type == c->type ? store_check_op(&c->op) : STORE_ERR_INVALID;
    case STORE_CMD_TXN: {
        if (c->n_compares > STORE_MAX_COMPARES || c->n_success > STORE_MAX_TXN_OPS ||
            c->n_failure > STORE_MAX_TXN_OPS)
            return STORE_ERR_TOO_LARGE;
        if ((c->n_compares && !c->compares) || (c->n_success && !c->success) ||
            (c->n_failure && !c->failure))
            return STORE_ERR_INVALID;
        for (size_t i = 0; i < c->n_compares; i++) {
            int rc = check_compare(&c->compares[i]);
            if (rc != STORE_OK)
                return rc;
        }
        int rc = check_branch(c->success, c->n_success);
        return rc != STORE_OK ? rc : check_branch(c->failure, c->n_failure);
    }
    case STORE_CMD_LEASE_GRANT:
        if (!store_num_ok(c->lease_id) || c->ttl_ms == 0 || c->ttl_ms > STORE_MAX_TTL_MS)
            return STORE_ERR_INVALID;
        return STORE_OK;
    case STORE_CMD_LEASE_REVOKE:
        return c->lease_id && store_num_ok(c->lease_id) ? STORE_OK : STORE_ERR_INVALID;
    case STORE_CMD_COMPACT:
        return c->revision && store_num_ok(c->revision) ? STORE_OK : STORE_ERR_INVALID;
    default:
        return STORE_ERR_INVALID;
    }
}

int store_cmd_decode(const uint8_t *buf, size_t len, store_cmd *out)
{
    memset(out, 0, sizeof *out);
    if (!buf && len)
        return STORE_ERR_INVALID;
    if (len > STORE_MAX_COMMAND)
        return STORE_ERR_TOO_LARGE;
    if (len < 2)
        return STORE_ERR_TRUNCATED;
    if (buf[0] != STORE_CMD_VERSION)
        return STORE_ERR_VERSION;
    store_cursor c = {buf + 2, buf + len, 0};
    store_cmd cmd = {.type = buf[1]};
    switch (cmd.type) {
    case STORE_CMD_PUT:
    case STORE_CMD_DELETE:
    case STORE_CMD_RANGE:
        decode_op(&c, cmd.type, &cmd.op);
        break;
    case STORE_CMD_TXN: {
        decode_txn(&c, &cmd, NULL, NULL);
        if (c.err)
            break;
        size_t n_ops = cmd.n_success + cmd.n_failure;
        size_t size = cmd.n_compares * sizeof(store_compare) + n_ops * sizeof(store_op);
        cmd.mem = malloc(size ? size : 1);
        if (!cmd.mem)
            return STORE_ERR_NOMEM;
        store_compare *cmps = cmd.mem;
        store_op *ops = (store_op *)(cmps + cmd.n_compares);
        c.p = buf + 2;
        decode_txn(&c, &cmd, cmps, ops);
        cmd.compares = cmps;
        cmd.success = ops;
        cmd.failure = ops + cmd.n_success;
        break;
    }
    case STORE_CMD_LEASE_GRANT:
        cmd.lease_id = store_cur_varint(&c);
        cmd.ttl_ms = store_cur_varint(&c);
        break;
    case STORE_CMD_LEASE_REVOKE:
        cmd.lease_id = store_cur_varint(&c);
        break;
    case STORE_CMD_COMPACT:
        cmd.revision = store_cur_varint(&c);
        break;
    default:
        return STORE_ERR_INVALID;
    }
    int rc = c.err ? c.err : (c.p != c.end ? STORE_ERR_TRAILING : store_cmd_check(&cmd));
    if (rc != STORE_OK) {
        free(cmd.mem);
        return rc;
    }
    *out = cmd;
    return STORE_OK;
}

void store_cmd_release(store_cmd *c)
{
    if (!c)
        return;
    free(c->mem);
    memset(c, 0, sizeof *c);
}

void store_put_u8(store_writer *w, uint8_t v)
{
    if (w->buf)
        w->buf[w->n] = v;
    w->n++;
}

void store_put_varint(store_writer *w, uint64_t v)
{
    w->n += w->buf ? varint_put(w->buf + w->n, v) : varint_len(v);
}

void store_put_bytes(store_writer *w, const uint8_t *p, size_t len)
{
    store_put_varint(w, len);
    if (w->buf && len)
        memcpy(w->buf + w->n, p, len);
    w->n += len;
}

static void encode_op_body(store_writer *w, const store_op *op)
{
    store_put_u8(w, op->flags);
    store_put_bytes(w, op->key.p, op->key.len);
    if (op->type == STORE_CMD_PUT) {
        store_put_bytes(w, op->value.p, op->value.len);
        store_put_varint(w, op->lease);
    } else {
        store_put_bytes(w, op->range_end.p, op->range_end.len);
        if (op->type == STORE_CMD_RANGE)
            store_put_varint(w, op->limit);
    }
}

static void encode_cmd(store_writer *w, const store_cmd *c)
{
    store_put_u8(w, STORE_CMD_VERSION);
    store_put_u8(w, c->type);
    switch (c->type) {
    case STORE_CMD_PUT:
    case STORE_CMD_DELETE:
    case STORE_CMD_RANGE:
        encode_op_body(w, &c->op);
        break;
    case STORE_CMD_TXN:
        store_put_varint(w, c->n_compares);
        for (size_t i = 0; i < c->n_compares; i++) {
            const store_compare *cmp = &c->compares[i];
            store_put_u8(w, cmp->target);
            store_put_u8(w, cmp->result);
            store_put_bytes(w, cmp->key.p, cmp->key.len);
            if (cmp->target == STORE_CMP_COUNT)
                store_put_bytes(w, cmp->range_end.p, cmp->range_end.len);
            if (cmp->target == STORE_CMP_VALUE)
                store_put_bytes(w, cmp->value.p, cmp->value.len);
            else if (cmp->target != STORE_CMP_EXISTS)
                store_put_varint(w, cmp->number);
        }
        for (int branch = 0; branch < 2; branch++) {
            const store_op *ops = branch ? c->failure : c->success;
            size_t n = branch ? c->n_failure : c->n_success;
            store_put_varint(w, n);
            for (size_t i = 0; i < n; i++) {
                store_put_u8(w, ops[i].type);
                encode_op_body(w, &ops[i]);
            }
        }
        break;
    case STORE_CMD_LEASE_GRANT:
        store_put_varint(w, c->lease_id);
        store_put_varint(w, c->ttl_ms);
        break;
    case STORE_CMD_LEASE_REVOKE:
        store_put_varint(w, c->lease_id);
        break;
    default: /* COMPACT */
        store_put_varint(w, c->revision);
        break;
    }
}

size_t store_cmd_encoded_size(const store_cmd *c)
{
    store_writer w = {NULL, 0};
    encode_cmd(&w, c);
    return w.n;
}

int store_cmd_encode(const store_cmd *c, uint8_t *buf, size_t cap, size_t *len)
{
    int rc = store_cmd_check(c);
    if (rc != STORE_OK)
        return rc;
    size_t need = store_cmd_encoded_size(c);
    if (need > STORE_MAX_COMMAND)
        return STORE_ERR_TOO_LARGE;
    if (need > cap || !buf)
        return STORE_ERR_TRUNCATED;
    store_writer w = {buf, 0};
    encode_cmd(&w, c);
    *len = w.n;
    return STORE_OK;
}
