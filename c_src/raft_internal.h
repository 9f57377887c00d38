/* raft_internal.h -- pieces shared by raft.c, raft_log.c and raft_codec.c.
 * Not part of the contract: drivers include raft.h only. Pure like the rest
 * of the core: no I/O, no clock, no global state. */
#ifndef SYNOD_RAFT_INTERNAL_H
#define SYNOD_RAFT_INTERNAL_H

#include "raft.h"
#include "varint.h"

/* ---- the in-memory log ------------------------------------------------
 *
 * ents[0 .. n) hold the entries with indexes snap_index+1 .. snap_index+n.
 * Invariants (raft_log_check):
 *   - ents[i].index == snap_index + 1 + i
 *   - terms never decrease, and ents[0].term >= snap_term
 *   - every entry owns its data (malloc'ed, NULL iff len == 0)
 * Compaction memmoves the array; it is rare and bounded by the log length. */
typedef struct raft_log {
    raft_entry *ents;
    size_t n, cap;
    uint64_t snap_index, snap_term;
} raft_log;

void raft_log_init(raft_log *l, uint64_t snap_index, uint64_t snap_term);
void raft_log_free(raft_log *l);
uint64_t raft_log_last_index(const raft_log *l);
uint64_t raft_log_last_term(const raft_log *l);
/* Term of `index`: 0 if index == 0; false if compacted (< snap_index) or
 * beyond the last index. */
bool raft_log_term(const raft_log *l, uint64_t index, uint64_t *term);
const raft_entry *raft_log_get(const raft_log *l, uint64_t index);
/* Appends at last_index + 1, copying data. RAFT_OK or RAFT_ERR_NOMEM. */
int raft_log_append(raft_log *l, uint64_t term, uint8_t type, const uint8_t *data, size_t len);
/* Deletes the entries with index >= from (from > snap_index). */
void raft_log_truncate(raft_log *l, uint64_t from);
/* Drops entries <= index (snap_index < index <= last) and makes index the
 * new snapshot point. */
void raft_log_compact(raft_log *l, uint64_t index);
/* Drops everything; the log restarts after (index, term). */
void raft_log_reset(raft_log *l, uint64_t index, uint64_t term);
void raft_log_check(const raft_log *l);

/* ---- membership -------------------------------------------------------- */
typedef struct raft_members {
    uint32_t n_voters, n_learners;
    uint64_t voters[RAFT_MAX_MEMBERS];   /* sorted ascending */
    uint64_t learners[RAFT_MAX_MEMBERS]; /* sorted ascending */
} raft_members;

bool raft_members_is_voter(const raft_members *c, uint64_t id);
bool raft_members_is_learner(const raft_members *c, uint64_t id);
/* Checks ids non-zero, < RAFT_INDEX_MAX, no duplicates, caps; sorts. */
int raft_members_set(raft_members *c, const uint64_t *voters, size_t nv, const uint64_t *learners,
                     size_t nl);
/* Applies a decoded conf entry to c. RAFT_ERR_INVALID if it does not apply. */
int raft_members_apply(raft_members *c, const uint8_t *data, size_t len);
/* Encodes a conf entry's data; returns the length (buf >= raft_conf_max_len). */
size_t raft_conf_encode_op(uint8_t *buf, uint8_t op, uint64_t id);
size_t raft_conf_encode_bootstrap(uint8_t *buf, const raft_members *c);
#define RAFT_CONF_MAX_LEN (1 + 2 * 10 + 2 * RAFT_MAX_MEMBERS * 10)

/* CRC-32C of a snapshot chunk (raft_codec.c). */
uint32_t raft_crc32c(const uint8_t *p, size_t n);

/* ---- helpers ----------------------------------------------------------- */
static inline uint64_t raft_min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}
static inline uint64_t raft_max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

#endif
