/* support_store.c -- see support_store.h. */
#include <stdlib.h>
#include <string.h>

#include "support_store.h"

store_bytes sb(const char *s)
{
    return (store_bytes){(const uint8_t *)s, s ? strlen(s) : 0};
}

store_bytes sbn(const void *p, size_t len)
{
    return (store_bytes){p, len};
}

store_op put_op(const char *key, const char *value, uint64_t lease, uint8_t flags)
{
    return (store_op){
        .type = STORE_CMD_PUT, .flags = flags, .key = sb(key), .value = sb(value), .lease = lease};
}

store_op del_op(const char *key, const char *range_end, uint8_t flags)
{
    return (store_op){
        .type = STORE_CMD_DELETE, .flags = flags, .key = sb(key), .range_end = sb(range_end)};
}

store_op range_op(const char *key, const char *range_end, uint64_t limit, uint8_t flags)
{
    return (store_op){.type = STORE_CMD_RANGE,
                      .flags = flags,
                      .key = sb(key),
                      .range_end = sb(range_end),
                      .limit = limit};
}

store_compare cmp_num(uint8_t target, const char *key, uint8_t result, uint64_t number)
{
    return (store_compare){.target = target, .result = result, .key = sb(key), .number = number};
}

store_compare cmp_value(const char *key, uint8_t result, const char *value)
{
    return (store_compare){
        .target = STORE_CMP_VALUE, .result = result, .key = sb(key), .value = sb(value)};
}

int apply_cmd(store_t *s, const store_cmd *c, store_result *r)
{
    size_t need = store_cmd_encoded_size(c), len = 0;
    uint8_t *buf = malloc(need ? need : 1);
    if (!buf)
        abort();
    int rc = store_cmd_encode(c, buf, need, &len);
    if (rc == STORE_OK) {
        rc = store_apply(s, buf, len, r);
    } else { /* what store_apply answers to bytes it refuses */
        memset(r, 0, sizeof *r);
        r->revision = store_revision(s);
    }
    free(buf);
    return rc;
}

static int apply_released(store_t *s, const store_cmd *c, store_result *keep)
{
    store_result r;
    int rc = apply_cmd(s, c, &r);
    if (keep)
        *keep = r;
    else
        store_result_release(&r);
    return rc;
}

int do_put(store_t *s, const char *key, const char *value, uint64_t lease)
{
    store_cmd c = {.type = STORE_CMD_PUT, .op = put_op(key, value, lease, 0)};
    return apply_released(s, &c, NULL);
}

int do_delete(store_t *s, const char *key, const char *range_end, uint64_t *deleted)
{
    store_cmd c = {.type = STORE_CMD_DELETE, .op = del_op(key, range_end, 0)};
    store_result r;
    int rc = apply_released(s, &c, &r);
    if (deleted)
        *deleted = rc == STORE_OK ? r.ops[0].count : 0;
    store_result_release(&r);
    return rc;
}

int do_grant(store_t *s, uint64_t id, uint64_t ttl_ms, uint64_t *granted)
{
    store_cmd c = {.type = STORE_CMD_LEASE_GRANT, .lease_id = id, .ttl_ms = ttl_ms};
    store_result r;
    int rc = apply_released(s, &c, &r);
    if (granted)
        *granted = r.lease_id;
    store_result_release(&r);
    return rc;
}

int do_revoke(store_t *s, uint64_t id)
{
    store_cmd c = {.type = STORE_CMD_LEASE_REVOKE, .lease_id = id};
    return apply_released(s, &c, NULL);
}

static int copy_kv(void *ctx, const store_kv *kv)
{
    got_kv *g = ctx;
    g->found = true;
    size_t n = kv->value_len < sizeof g->value - 1 ? kv->value_len : sizeof g->value - 1;
    memcpy(g->value, kv->value, n);
    g->value[n] = '\0';
    g->create_revision = kv->create_revision;
    g->mod_revision = kv->mod_revision;
    g->version = kv->version;
    g->lease = kv->lease;
    return 0;
}

got_kv get_key(const store_t *s, const char *key)
{
    got_kv g = {0};
    store_op op = range_op(key, NULL, 0, 0);
    uint64_t count;
    bool more;
    if (store_range(s, &op, copy_kv, &g, &count, &more) != STORE_OK)
        abort();
    return g;
}

uint8_t *snapshot_of(const store_t *s, size_t *len)
{
    size_t need = store_snapshot_size(s);
    uint8_t *buf = malloc(need);
    if (!buf || store_snapshot_write(s, buf, need, len) != STORE_OK || *len != need)
        abort();
    return buf;
}
