/* store_snapshot.h -- the store's snapshot format (store_snapshot_size,
 * store_snapshot_write and store_restore in store.h; layout in
 * docs/store.md). Internal to the store.
 *
 * INVARIANTS
 *
 *   - A snapshot is magic "SYST", a version byte, the body, and a 16-byte
 *     BLAKE2b (crypto_generichash) of everything before it; a snapshot
 *     whose sum does not match is refused, and the store built from it
 *     (restore parses as the bytes come, store_restorer) is freed: nothing
 *     is handed out before the sum was compared.
 *   - A streaming writer's pieces, joined, are the bytes store_snapshot_write
 *     would have written when the writer was made: it holds a reference on
 *     every record of that state, and records are immutable once shared.
 *   - The body depends only on the store's contents (config, revisions,
 *     leases, keys in order, history), never on the skip list's shape, so
 *     two members that agree write the same bytes.
 *   - Restore checks everything store_check() would (keys strictly
 *     ascending, records within their revisions, leases sorted and known,
 *     history ordered within (compact_revision, revision] and within its
 *     bounds), so a restored store satisfies the index's invariants or
 *     restore fails with STORE_ERR_CORRUPT and frees what it built.
 *   - A history event that is the live version of its key shares the live
 *     record, as it would have before the snapshot. */
#ifndef SYNOD_STORE_SNAPSHOT_H
#define SYNOD_STORE_SNAPSHOT_H

#define STORE_SNAPSHOT_CHECKSUM_BYTES 16u

#endif
