/* store.h -- Synod's replicated key-value store: the deterministic state
 * machine that a Raft group runs (etcd v3's data model is the reference).
 *
 * WHAT IT IS
 *
 *   One store_t is the whole state of one store: keys and values (binaries),
 *   one revision that every change bumps, leases, a bounded history of change
 *   events and its compaction revision. It is changed only by commands, which
 *   arrive as bytes (the Raft log holds them; format in docs/store.md) and are
 *   applied with store_apply. Reads (store_range, store_events_since,
 *   store_leases) run on the state directly and never change it.
 *
 *   Pure: no I/O, no clock, no globals, malloc/free only. The same commands
 *   in the same order give the same results and the same snapshot bytes on
 *   every member, bit for bit. Time is not in here: a lease's expiry is
 *   decided by the leader outside the machine and arrives as a revoke command;
 *   the store only records each lease's TTL so a new leader can restart the
 *   countdowns.
 *
 * DATA STRUCTURES AND COSTS (n keys, L leases, E events in the history)
 *
 *   Keys live in a skip list (p = 1/4, at most 24 levels) whose node levels
 *   come from a splitmix64 generator inside the store: the shape depends on
 *   the store's own history, never on a clock, and never on anything a result
 *   or a snapshot can see. Point lookup, put and delete O(log n) expected; a
 *   range read O(log n + keys in the range) (the count covers the whole range
 *   even when a limit cuts the returned keys).
 *   Each key version is an immutable, reference-counted record (key, value,
 *   revisions, lease) shared by the key, the history and results: a put
 *   allocates one record, never copies it again.
 *   Leases: a sorted array (lookup O(log L), grant/revoke O(L) memmove); each
 *   lease threads the keys attached to it through their nodes, so a revoke
 *   costs O(k log k + k log n) for its k keys.
 *   History: a ring of events in revision order; from-revision lookups are a
 *   binary search, eviction drops whole revisions from the oldest end.
 *
 * ATOMICITY
 *
 *   store_apply either applies the whole command or changes nothing. Every
 *   allocation a command needs (records, nodes, history slots, result arrays)
 *   is made before the first change; if one fails the call returns
 *   STORE_ERR_NOMEM and the state is untouched. A driver must not skip such a
 *   command (the other members applied it): retry, or stop the member.
 *
 * MEMORY OWNERSHIP
 *
 *   - Command bytes are borrowed for the call. store_cmd_decode fills a
 *     store_cmd that points INTO the input buffer; store_cmd_release frees
 *     its arrays.
 *   - A store_result holds references to records; release it with
 *     store_result_release. Records are reference-counted without atomics, so
 *     release a result before another thread touches the same store (the NIF
 *     does both under the store's mutex).
 *   - store_kv / store_event pointers handed to visitors are borrowed for the
 *     duration of the callback only.
 *
 * THREADS: none. One store_t must not be used by two threads at once.
 */
#ifndef SYNOD_STORE_H
#define SYNOD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits. The decoder and the snapshot reader reject anything above them. */
#define STORE_MAX_KEY 4096u                          /* bytes of a key (and of a range end) */
#define STORE_MAX_VALUE (1u << 20)                   /* bytes of a value */
#define STORE_MAX_COMMAND ((1u << 20) + (64u << 10)) /* bytes of one encoded command */
#define STORE_MAX_TXN_OPS 128u                       /* ops in one branch of a txn */
#define STORE_MAX_COMPARES 128u                      /* compares in one txn */
#define STORE_MAX_TTL_MS ((uint64_t)1 << 40)         /* a lease's TTL, ms */
#define STORE_MAX_HISTORY_EVENTS (1u << 24)          /* config cap */
#define STORE_MAX_HISTORY_BYTES ((uint64_t)1 << 40)
#define STORE_NUM_MAX ((uint64_t)1 << 62) /* revisions, versions, lease ids, limits */
#define STORE_CMD_VERSION 1
#define STORE_SNAPSHOT_VERSION 1

enum store_err {
    STORE_OK = 0,
    STORE_ERR_NOMEM = -1,           /* allocation failed; nothing changed */
    STORE_ERR_INVALID = -2,         /* malformed command or argument */
    STORE_ERR_TRUNCATED = -3,       /* decode: input ends inside a field */
    STORE_ERR_TRAILING = -4,        /* decode: bytes after the command */
    STORE_ERR_VERSION = -5,         /* decode: unknown format version */
    STORE_ERR_TOO_LARGE = -6,       /* over a documented limit */
    STORE_ERR_DUPLICATE_KEY = -7,   /* a txn branch writes one key twice */
    STORE_ERR_LEASE_NOT_FOUND = -8, /* put with / revoke of an unknown lease */
    STORE_ERR_LEASE_EXISTS = -9,    /* grant of an id in use */
    STORE_ERR_COMPACTED = -10,      /* revision at or below the compaction revision */
    STORE_ERR_FUTURE_REV = -11,     /* revision above the current revision */
    STORE_ERR_CORRUPT = -12,        /* snapshot refused: checksum, structure or invariant */
};

const char *store_strerror(int err);
/* The error's name for drivers to hand out (an Erlang atom in the NIF):
 * "lease_not_found", "compacted", ...; "unknown" for a code not above. */
const char *store_err_name(int err);

/* ---- configuration (identical on every member; kept in snapshots) ---- */
typedef struct store_config {
    uint32_t history_max_events; /* 0..STORE_MAX_HISTORY_EVENTS; 0 = no history */
    uint64_t history_max_bytes;  /* 0..STORE_MAX_HISTORY_BYTES (see docs/store.md) */
    bool history_prev_kv;        /* events keep the key's previous version */
} store_config;

/* Defaults: 10,000 events, 16 MiB, prev_kv on. */
void store_config_init(store_config *cfg);

typedef struct store store_t;

/* NULL on failure with *err (if not NULL) set: STORE_ERR_INVALID for a config
 * over its caps, STORE_ERR_NOMEM. */
store_t *store_new(const store_config *cfg, int *err);
void store_free(store_t *s);

/* ---- commands ---- */
enum store_cmd_type {
    STORE_CMD_PUT = 1,
    STORE_CMD_DELETE = 2, /* one key, or a range [key, range_end) */
    STORE_CMD_RANGE = 3,  /* a read through the log (linearizable) */
    STORE_CMD_TXN = 4,
    STORE_CMD_LEASE_GRANT = 5,
    STORE_CMD_LEASE_REVOKE = 6,
    STORE_CMD_COMPACT = 7, /* drop history up to a revision */
};

/* Op flags. PUT and DELETE accept PREV_KV; RANGE accepts KEYS_ONLY and
 * COUNT_ONLY; DELETE accepts FIRST: only the first key of its range in key
 * order is deleted (none if the range is empty), so a txn takes the head of
 * a sequence in one log entry (the queue's dequeue, docs/store.md). */
#define STORE_FLAG_PREV_KV 0x01u
#define STORE_FLAG_KEYS_ONLY 0x02u
#define STORE_FLAG_COUNT_ONLY 0x04u
#define STORE_FLAG_FIRST 0x08u

typedef struct store_bytes {
    const uint8_t *p;
    size_t len;
} store_bytes;

/* A put, a delete or a range read. Ranges follow etcd: range_end empty means
 * the single key `key`; range_end == "\0" (one zero byte) means every key >=
 * key; otherwise the half-open [key, range_end). store_prefix_end turns a
 * prefix into its range end. */
typedef struct store_op {
    uint8_t type; /* STORE_CMD_PUT, STORE_CMD_DELETE or STORE_CMD_RANGE */
    uint8_t flags;
    store_bytes key; /* 1..STORE_MAX_KEY bytes */
    store_bytes range_end;
    store_bytes value; /* put */
    uint64_t lease;    /* put: 0 = none */
    uint64_t limit;    /* range: 0 = no limit */
} store_op;

enum store_cmp_target {
    STORE_CMP_EXISTS = 0, /* EQUAL: the key exists; NOT_EQUAL: it does not */
    STORE_CMP_VERSION = 1,
    STORE_CMP_CREATE = 2, /* create_revision */
    STORE_CMP_MOD = 3,    /* mod_revision */
    STORE_CMP_VALUE = 4,  /* bytewise; false whatever the operator if the key is absent */
    STORE_CMP_LEASE = 5,
    STORE_CMP_COUNT = 6, /* the number of keys in [key, range_end) (store_op's range rules) */
};
enum store_cmp_result {
    STORE_CMP_EQUAL = 0,
    STORE_CMP_GREATER = 1,
    STORE_CMP_LESS = 2,
    STORE_CMP_NOT_EQUAL = 3,
};

/* Numeric targets compare the key's field with `number`; an absent key has
 * version, revisions and lease 0. COUNT compares the number of keys in the
 * range key..range_end (the ranges of store_op) with `number`; it counts at
 * most number + 1 keys, so its cost is bounded by the compare, not the
 * range. */
typedef struct store_compare {
    uint8_t target, result;
    store_bytes key;
    store_bytes range_end; /* COUNT only */
    store_bytes value;     /* VALUE */
    uint64_t number;       /* VERSION, CREATE, MOD, LEASE, COUNT */
} store_compare;

typedef struct store_cmd {
    uint8_t type;
    store_op op; /* PUT, DELETE, RANGE */
    /* TXN: if every compare holds, `success` runs, else `failure`. Ops run in
     * order and see the writes before them; the whole txn is one revision. */
    const store_compare *compares;
    const store_op *success, *failure;
    size_t n_compares, n_success, n_failure;
    uint64_t lease_id; /* LEASE_GRANT (0 = the store picks), LEASE_REVOKE */
    uint64_t ttl_ms;   /* LEASE_GRANT: 1..STORE_MAX_TTL_MS */
    uint64_t revision; /* COMPACT */
    void *mem;         /* decoder-owned arrays */
} store_cmd;

/* Checks every length, count, field and limit, rejects trailing bytes and
 * non-canonical varints, and rejects a txn branch that writes one key twice
 * (two puts, or a put inside a deleted range). On error *out is zeroed and
 * nothing is allocated. On success call store_cmd_release(out). */
int store_cmd_decode(const uint8_t *buf, size_t len, store_cmd *out);
void store_cmd_release(store_cmd *c);
/* Encoding (the C node and the tests build commands with it). The encoding is
 * canonical: decode then encode gives back the same bytes. */
size_t store_cmd_encoded_size(const store_cmd *c);
int store_cmd_encode(const store_cmd *c, uint8_t *buf, size_t cap, size_t *len);
/* Checks a command built in C with the decoder's rules. */
int store_cmd_check(const store_cmd *c);

/* The range end of `prefix`: the prefix with its last byte below 0xff
 * incremented and what follows dropped; "\0" (every key) when there is no
 * such byte. `out` holds at least len bytes (1 if len == 0); returns the
 * range end's length. */
size_t store_prefix_end(const uint8_t *prefix, size_t len, uint8_t *out);

/* ---- results ---- */
typedef struct store_kv {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    uint64_t create_revision, mod_revision, version, lease;
} store_kv;

typedef struct store_op_result {
    uint8_t type;   /* the op's type */
    uint64_t count; /* RANGE: keys in the range; DELETE: keys deleted */
    bool more;      /* RANGE: the limit cut the returned keys */
    /* RANGE: the keys returned, in key order (values empty with KEYS_ONLY,
     * none with COUNT_ONLY); PUT with PREV_KV: the previous version if there
     * was one; DELETE with PREV_KV: the deleted versions, in key order. */
    const store_kv *kvs;
    size_t n_kvs;
} store_op_result;

typedef struct store_result {
    uint8_t type;               /* the command's type */
    uint64_t revision;          /* the store's revision after the command */
    bool succeeded;             /* TXN: the compares held (success branch ran) */
    const store_op_result *ops; /* PUT/DELETE/RANGE: one; TXN: one per op run */
    size_t n_ops;
    uint64_t lease_id;         /* LEASE_GRANT (the id granted), LEASE_REVOKE */
    uint64_t ttl_ms;           /* LEASE_GRANT */
    uint64_t deleted;          /* LEASE_REVOKE: keys deleted with the lease */
    uint64_t compact_revision; /* COMPACT, and the STORE_ERR_COMPACTED error */
    void *mem;                 /* owned arrays and record references */
} store_result;

/* Decodes and applies one command. Returns STORE_OK or an error; on any
 * error nothing changed (out->compact_revision is set for
 * STORE_ERR_COMPACTED). Always call store_result_release(out) afterwards. */
int store_apply(store_t *s, const uint8_t *cmd, size_t len, store_result *out);
int store_apply_cmd(store_t *s, const store_cmd *cmd, store_result *out);
void store_result_release(store_result *r);

/* ---- reads (never change the state) ---- */

/* Visitors return 0 to go on, anything else to stop (store_range and
 * store_events_since then return that value). */
typedef int (*store_kv_fn)(void *ctx, const store_kv *kv);

/* A range read (op->type must be STORE_CMD_RANGE; flags and limit apply).
 * Calls fn for each returned key in key order; *count is the number of keys
 * in the whole range, *more whether the limit cut it. */
int store_range(const store_t *s, const store_op *op, store_kv_fn fn, void *ctx, uint64_t *count,
                bool *more);

enum store_event_type { STORE_EVENT_PUT = 1, STORE_EVENT_DELETE = 2 };

/* A change. PUT: kv is the new version. DELETE: kv holds the key and
 * mod_revision = the delete's revision (value empty, other fields 0). prev is
 * the version before the change, if the history keeps it
 * (history_prev_kv; always known for deletes when it is on). */
typedef struct store_event {
    uint8_t type;
    uint64_t revision;
    store_kv kv;
    bool has_prev;
    store_kv prev;
} store_event;

typedef int (*store_event_fn)(void *ctx, const store_event *ev);

/* The events with revision >= from (from >= 1), in revision order, at most
 * `limit` of them (0 = no limit) but never part of a revision: a revision
 * with more events than the limit comes whole when it is the first.
 * *next is where to resume: the first revision not delivered.
 * STORE_ERR_COMPACTED if from <= the compaction revision (see
 * store_compact_revision); STORE_ERR_INVALID if from == 0. */
int store_events_since(const store_t *s, uint64_t from, size_t limit, store_event_fn fn, void *ctx,
                       uint64_t *next);

/* Leases in id order, each with its attached keys in key order. Returns
 * STORE_ERR_NOMEM if the sort buffer cannot be allocated, else what fn
 * returned (0 to go on). */
typedef int (*store_lease_fn)(void *ctx, uint64_t id, uint64_t ttl_ms, const store_kv *keys,
                              size_t n_keys);
int store_leases(const store_t *s, store_lease_fn fn, void *ctx);
/* One lease: true and its TTL and number of keys if it exists. */
bool store_lease_get(const store_t *s, uint64_t id, uint64_t *ttl_ms, size_t *n_keys);

typedef struct store_stats {
    uint64_t revision, compact_revision, next_lease_id;
    size_t keys, leases, events;
    uint64_t history_bytes;
    store_config config;
} store_stats;
void store_stats_get(const store_t *s, store_stats *st);
uint64_t store_revision(const store_t *s);
uint64_t store_compact_revision(const store_t *s);

/* ---- snapshots (format in docs/store.md) ----
 * The whole state: config, revision, compaction revision, lease id counter,
 * leases, keys, history; then a BLAKE2b-128 checksum of all of it. The bytes
 * depend only on the state (not on the shape of the skip list), so a restored
 * store snapshots to the same bytes. */
size_t store_snapshot_size(const store_t *s);
/* STORE_ERR_TOO_LARGE if cap < store_snapshot_size(s). */
int store_snapshot_write(const store_t *s, uint8_t *buf, size_t cap, size_t *len);
/* Builds a store from a snapshot. Checks the version, the checksum, every
 * length and every invariant (sorted unique keys, revisions in order, leases
 * that exist, history within its bounds); anything else is STORE_ERR_CORRUPT
 * (or STORE_ERR_VERSION / STORE_ERR_NOMEM), never a crash. */
store_t *store_restore(const uint8_t *buf, size_t len, int *err);

#endif
