/*
 * witness.h — the C node as a Raft witness (docs/cnode.md "Witness",
 * docs/raft.md "Witness"): one raft_t per group named on the command line,
 * in witness mode, with its durable state in witness_store.
 *
 * It receives what Synod.Raft.Member sends to the registered name
 * "Synod.Raft.Member.<Group>":
 *
 *     {synod_raft, Group, FromId, FromNode, Bin}     Bin: the C codec's bytes
 *
 * and answers with the same shape (its own id and node) to the sender's
 * member name on FromNode. Every message is checked whole before it is
 * decoded (etf_check_message), then the group, the ids and the Raft message
 * (raft_msg_decode, raft_step) are checked; anything wrong is dropped with a
 * rate-limited log line. Ticks come from witness_tick; each Ready is
 * written and, when it says must_sync, fdatasync'ed before the messages
 * that depend on it leave. A failed write or sync stops the node (it cannot
 * keep its promises); witness_failed says so.
 *
 * Its member id is Synod.Raft.member_id(Node): the first 62 bits of
 * md5(atom_to_list(Node)), 0 mapped to 1.
 */
#ifndef SYNOD_CNODE_WITNESS_H
#define SYNOD_CNODE_WITNESS_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#define WITNESS_MAX_GROUPS 16
#define WITNESS_MEMBER_PREFIX "Synod.Raft.Member."

typedef struct witness witness;

/* Sends x to the process registered as `name` on `node`; returns 0 if it
 * went out (or was queued), -1 if not (not connected): Raft copes. */
typedef int (*witness_send_fn)(void *ctx, const char *node, const char *name, const ei_x_buff *x);

typedef struct witness_config {
    const char *data_dir;
    const char *const *groups;
    size_t n_groups;
    const char *self; /* this node's name */
    uint32_t tick_ms, election_tick, heartbeat_tick;
    uint32_t compact_every; /* committed entries between compactions */
    witness_send_fn send;
    void *send_ctx;
} witness_config;

/* Takes the data directory's lock, opens every group's store and starts its
 * raft_t. Returns 0, or a WSTORE_ERR_* code (witness_store.h) with why. */
int witness_open(witness **out, const witness_config *cfg, char *why, size_t whylen);
void witness_close(witness *w);

/* Whether a registered name is one a witness member answers to. */
int witness_wants(const witness *w, const char *toname);
/* A message sent to `toname` (witness_wants was true). */
void witness_handle(witness *w, const char *toname, const char *buf, int len);
/* Ticks every group whose tick is due at now_ms. */
void witness_tick(witness *w, long long now_ms);
/* Milliseconds until the next tick is due (at most cap). */
int witness_timeout_ms(const witness *w, long long now_ms, int cap);
/* A node went down: groups whose leader lived there forget it, so they
 * grant a survivor's vote at once (as the BEAM members do). */
void witness_node_down(witness *w, const char *node);
/* Non-zero once a write or fsync failed: the caller must exit (EXIT_IOERR). */
int witness_failed(const witness *w);

/* Synod.Raft.member_id/1 of a node name. */
uint64_t witness_member_id(const char *node);
/* MD5 of len bytes (RFC 1321), for the member id. */
void witness_md5(const uint8_t *p, size_t len, uint8_t out[16]);

/* One group's view, for logs and tests. */
typedef struct witness_group_info {
    const char *name;
    uint64_t id, term, leader, commit, last_index;
    int role;
} witness_group_info;
size_t witness_groups(const witness *w, witness_group_info *out, size_t cap);

#endif
