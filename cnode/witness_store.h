/*
 * witness_store.h — the durable state of one Raft witness member (one group)
 * in the C node: term, vote, commit, the snapshot's metadata and the log's
 * (index, term, type) records (conf entries whole; a witness keeps no bytes of
 * normal entries, docs/raft.md "Witness"). Pure file I/O: no Raft logic, no
 * Erlang; the driver (witness.c) feeds it each Ready and asks it to fsync when
 * the Ready says must_sync, before the Ready's messages leave.
 *
 * ON DISK (docs/cnode.md, "Witness")
 *
 *   <dir>/LOCK               held with flock(2) by the process that owns <dir>
 *   <dir>/<group>.wal        8-byte magic "SYNWIT01", then records:
 *       u32 LE payload length | u8 type | payload | u64 LE checksum
 *   The checksum is libsodium's crypto_shorthash (SipHash-2-4) under a fixed
 *   key over length, type and payload: it detects damage, it is not a MAC.
 *   Record types: HARD (term, vote, commit), ENTRIES (first index, count, then
 *   term, type, length, bytes per entry: a write of them replaces every
 *   record at or after the first index), SNAP (index, term, voters,
 *   learners, and whether it replaces the whole log or drops a prefix).
 *   Integers in payloads are canonical LEB128 varints (c_src/varint.h).
 *
 * RECOVERY
 *
 *   Records are replayed in order. A record cut short by the end of the file,
 *   or a complete last record whose checksum fails, is a torn tail (a crash
 *   mid-write): the file is truncated to the last good record and opening
 *   succeeds (wstore_torn tells how many bytes went). A bad record with more
 *   bytes after it, a bad magic, or a record whose checksum holds but whose
 *   contents are impossible is corruption: opening fails with
 *   WSTORE_ERR_CORRUPT and the file is left untouched for an operator.
 *
 *   When the file holds much more than the live state (after compactions) it
 *   is rewritten: a new file with the live state, fsynced, renamed over the
 *   old one, and the directory fsynced.
 */
#ifndef SYNOD_CNODE_WITNESS_STORE_H
#define SYNOD_CNODE_WITNESS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

enum {
    WSTORE_OK = 0,
    WSTORE_ERR_IO = -1,      /* a system call failed (errno in the message) */
    WSTORE_ERR_CORRUPT = -2, /* mid-file damage or impossible contents */
    WSTORE_ERR_LOCKED = -3,  /* another process holds the directory */
    WSTORE_ERR_NOMEM = -4,
    WSTORE_ERR_INVALID = -5, /* bad argument (e.g. entries not contiguous) */
};

#define WSTORE_MAX_RECORD (64u << 20)

typedef struct wstore wstore;

/* Creates `dir` (0700) if missing and takes its lock file. Returns WSTORE_OK
 * with *fd set (keep it open while the directory is in use), or an error with
 * a message in why. A second holder, in this process or another, gets
 * WSTORE_ERR_LOCKED. */
int wstore_lock_dir(const char *dir, int *fd, char *why, size_t whylen);
void wstore_unlock_dir(int fd);

/* Opens (creating if missing) the log of `group` in `dir` and replays it. The
 * group name must be 1..255 bytes; bytes other than [A-Za-z0-9_.-] are
 * written as %XX in the file name. */
int wstore_open(const char *dir, const char *group, wstore **out, char *why, size_t whylen);
void wstore_close(wstore *ws);
const char *wstore_error(const wstore *ws); /* the last error's message */
size_t wstore_torn(const wstore *ws);       /* bytes cut off as a torn tail at open */

/* What was recovered, for raft_config: hard state, snapshot (index 0: none)
 * and entries after it. Pointers are valid until the next call that writes. */
void wstore_state(const wstore *ws, raft_hard_state *hs, raft_snapshot *snap,
                  const raft_entry **entries, size_t *n_entries);

/* Step 1 of the driver loop (raft.h): writes rd's hard state, snapshot
 * (replacing the log) and entries (replacing those at or after the first),
 * in that order (the hard state first, see witness_store.c). Does not fsync. */
int wstore_write_ready(wstore *ws, const raft_ready_t *rd);
/* fdatasync of everything written so far. */
int wstore_sync(wstore *ws);
/* Records a compaction to snap (metadata only; drops entries <= index) and
 * rewrites the file when it has grown well past the live state. Fsyncs. */
int wstore_compact(wstore *ws, const raft_snapshot *snap);
/* Bytes in the file and bytes the live state would take. */
uint64_t wstore_file_bytes(const wstore *ws);

#endif
