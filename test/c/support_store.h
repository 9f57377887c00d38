/* support_store.h -- helpers the store tests share: build commands in C,
 * encode them, apply the bytes (so every test also runs the decoder), and
 * read keys back. */
#ifndef SYNOD_SUPPORT_STORE_H
#define SYNOD_SUPPORT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

store_bytes sb(const char *s);
store_bytes sbn(const void *p, size_t len);
store_op put_op(const char *key, const char *value, uint64_t lease, uint8_t flags);
store_op del_op(const char *key, const char *range_end, uint8_t flags);
store_op range_op(const char *key, const char *range_end, uint64_t limit, uint8_t flags);
store_compare cmp_num(uint8_t target, const char *key, uint8_t result, uint64_t number);
store_compare cmp_value(const char *key, uint8_t result, const char *value);

/* Encodes c and applies the bytes; the caller releases r. */
int apply_cmd(store_t *s, const store_cmd *c, store_result *r);
/* One-op commands and leases; results released, rc returned. */
int do_put(store_t *s, const char *key, const char *value, uint64_t lease);
int do_delete(store_t *s, const char *key, const char *range_end, uint64_t *deleted);
int do_grant(store_t *s, uint64_t id, uint64_t ttl_ms, uint64_t *granted);
int do_revoke(store_t *s, uint64_t id);

/* A point read into a copy (value NUL-terminated, at most 255 bytes). */
typedef struct got_kv {
    bool found;
    char value[256];
    uint64_t create_revision, mod_revision, version, lease;
} got_kv;
got_kv get_key(const store_t *s, const char *key);

/* A snapshot in a malloc'ed buffer. */
uint8_t *snapshot_of(const store_t *s, size_t *len);

#endif
