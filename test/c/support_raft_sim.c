/* support_raft_sim.c -- the deterministic Raft network simulator; see the
 * header for what it models and what it checks. Self-contained (links into
 * every test binary): only libc and the Raft core. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support_raft_sim.h"

typedef struct rsim_entry {
    uint64_t term;
    uint8_t type;
    uint8_t *data;
    size_t len;
} rsim_entry;

typedef struct rsim_node {
    uint64_t id;
    raft_t *r; /* NULL while crashed */
    uint32_t phase;
    /* stable storage: what survives a crash (fsynced) */
    raft_hard_state hs;
    /* a hard state written without fsync (commit only): lost in a crash,
     * made durable by the next fsync */
    raft_hard_state hs_written;
    bool hs_unsynced;
    uint64_t snap_index, snap_term;
    uint64_t snap_voters[RAFT_MAX_MEMBERS], snap_learners[RAFT_MAX_MEMBERS];
    size_t snap_nv, snap_nl;
    uint8_t snap_data[RSIM_SNAP_LEN];
    size_t snap_len;
    uint64_t snap_checksum;
    /* the receive file of a snapshot in transit (written without fsync:
     * lost in a crash) and the install check owed after raft_advance */
    uint8_t rx_data[RSIM_SNAP_LEN];
    uint64_t rx_len;
    bool owe_received, received_ok;
    uint64_t received_index, received_term;
    rsim_entry *log; /* log[i] has index snap_index + 1 + i */
    size_t n_log, cap_log;
    /* state machine: applied index and a hash chain over applied entries */
    uint64_t applied, sm;
    /* what the events told us, to check the next event against */
    uint8_t role;
    uint64_t leader;
    raft_read_state *reads;
    size_t n_reads, cap_reads;
    /* async_persist: writes handed out and not yet stable, oldest first */
    struct rsim_write *writes;
    size_t n_writes, cap_writes;
} rsim_node;

/* One Ready's writes (async_persist), copied: entries and hard state. A
 * Ready with a snapshot is written at once, with everything before it. */
typedef struct rsim_write {
    uint64_t seq;
    bool must_sync, hs_changed;
    raft_hard_state hs;
    raft_entry *ents;
    size_t n;
} rsim_write;

typedef struct rsim_msg {
    uint64_t at, seq;
    uint64_t to;
    size_t len;
    uint8_t *bytes;
    bool corrupted; /* a chunk damaged in transit on purpose */
} rsim_msg;

typedef struct rsim_slot {
    uint64_t index, term; /* term 0: empty */
    uint64_t hash, prev_term;
} rsim_slot;

typedef struct rsim_committed {
    uint64_t term, hash, sm, commit_term; /* term 0: not known yet */
} rsim_committed;

typedef struct rsim_pending_read {
    uint64_t ctx, min_index;
} rsim_pending_read;

struct rsim {
    rsim_opts o;
    rsim_snap_stats snap_stats;
    bool corrupting;
    uint64_t rng, now, seq, delivered;
    rsim_node nodes[RSIM_MAX_NODES + 1]; /* by id; [0] unused */
    bool link[RSIM_MAX_NODES + 1][RSIM_MAX_NODES + 1];
    rsim_msg *q;
    size_t nq, capq;
    /* checker state */
    uint64_t *term_leader;
    size_t cap_terms;
    rsim_slot *reg;
    size_t cap_reg, n_reg;
    rsim_committed *com;
    size_t cap_com;
    uint64_t max_com;
    rsim_pending_read *preads;
    size_t n_preads, cap_preads;
    char err[600];
    rsim_event_fn on_event;
    void *event_ctx;
    rsim_filter_fn filter;
    void *filter_ctx;
};

/* ---- utilities ---------------------------------------------------------- */

uint64_t rsim_rand(rsim *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rsim_below(rsim *s, uint64_t n)
{
    return n ? rsim_rand(s) % n : 0;
}

static uint64_t rsim_mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 33);
}

static uint64_t rsim_hash_entry(uint8_t type, const uint8_t *data, size_t len)
{
    uint64_t h = rsim_mix(0x12345, type);
    for (size_t i = 0; i < len; i++)
        h = rsim_mix(h, data[i]);
    return rsim_mix(h, len);
}

static bool rsim_is_witness(const rsim *s, uint64_t id)
{
    return id < 32 && (s->o.witness_mask >> id) & 1;
}

static void rsim_fail(rsim *s, const char *fmt, ...)
{
    if (s->err[0])
        return; /* keep the first failure */
    int n = snprintf(s->err, sizeof(s->err), "t=%llu: ", (unsigned long long)s->now);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err + n, sizeof(s->err) - (size_t)n, fmt, ap);
    va_end(ap);
}

static void *rsim_grow(void *p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * size);
    if (!q) {
        fprintf(stderr, "rsim: out of memory\n");
        abort();
    }
    memset((char *)q + *cap * size, 0, (c - *cap) * size);
    *cap = c;
    return q;
}

const char *rsim_error(const rsim *s)
{
    return s->err[0] ? s->err : NULL;
}

uint64_t rsim_now(const rsim *s)
{
    return s->now;
}

uint64_t rsim_delivered(const rsim *s)
{
    return s->delivered;
}

raft_t *rsim_raft(rsim *s, uint64_t id)
{
    return id >= 1 && id <= s->o.n_nodes ? s->nodes[id].r : NULL;
}

uint64_t rsim_applied(const rsim *s, uint64_t id)
{
    return s->nodes[id].applied;
}

uint64_t rsim_max_committed(const rsim *s)
{
    return s->max_com;
}

uint64_t rsim_leader(rsim *s)
{
    uint64_t best = 0, best_term = 0;
    for (uint64_t id = 1; id <= s->o.n_nodes; id++) {
        raft_status st;
        if (!s->nodes[id].r)
            continue;
        raft_status_get(s->nodes[id].r, &st);
        if (st.role == RAFT_LEADER && st.term >= best_term) {
            best = id;
            best_term = st.term;
        }
    }
    return best;
}

size_t rsim_reads(const rsim *s, uint64_t id, const raft_read_state **out)
{
    *out = s->nodes[id].reads;
    return s->nodes[id].n_reads;
}

void rsim_snap_stats_get(const rsim *s, rsim_snap_stats *out)
{
    *out = s->snap_stats;
}

void rsim_set_event_hook(rsim *s, rsim_event_fn fn, void *ctx)
{
    s->on_event = fn;
    s->event_ctx = ctx;
}

void rsim_set_filter(rsim *s, rsim_filter_fn fn, void *ctx)
{
    s->filter = fn;
    s->filter_ctx = ctx;
}

void rsim_set_faults(rsim *s, uint32_t drop_pm, uint32_t dup_pm)
{
    s->o.drop_pm = drop_pm;
    s->o.dup_pm = dup_pm;
}

/* ---- checks --------------------------------------------------------------- */

static void rsim_check_leader(rsim *s, uint64_t id, uint64_t term)
{
    s->term_leader = rsim_grow(s->term_leader, &s->cap_terms, term + 1, sizeof(uint64_t));
    if (s->term_leader[term] && s->term_leader[term] != id)
        rsim_fail(s, "election safety: %llu and %llu both leaders of term %llu",
                  (unsigned long long)s->term_leader[term], (unsigned long long)id,
                  (unsigned long long)term);
    s->term_leader[term] = id;
}

static rsim_slot *rsim_reg_find(rsim *s, uint64_t index, uint64_t term)
{
    static rsim_slot none; /* nothing registered yet (a witness may write
                              first with async_persist): read-only, empty */
    if (s->cap_reg == 0) {
        memset(&none, 0, sizeof(none));
        return &none;
    }
    uint64_t h = rsim_mix(index, term);
    size_t mask = s->cap_reg - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        rsim_slot *sl = &s->reg[i];
        if (sl->term == 0 || (sl->index == index && sl->term == term))
            return sl;
    }
}

/* Log matching, by induction: if every (index, term) pair ever written names
 * one content and one predecessor term, logs sharing an (index, term) are
 * identical up to it. */
static void rsim_check_entry(rsim *s, uint64_t id, uint64_t index, uint64_t term,
                             uint64_t prev_term, uint64_t hash)
{
    if (s->n_reg * 2 >= s->cap_reg) {
        rsim_slot *old = s->reg;
        size_t n = s->cap_reg;
        s->cap_reg = n ? n * 2 : 1024;
        s->reg = calloc(s->cap_reg, sizeof(*s->reg));
        if (!s->reg)
            abort();
        for (size_t i = 0; i < n; i++)
            if (old[i].term)
                *rsim_reg_find(s, old[i].index, old[i].term) = old[i];
        free(old);
    }
    rsim_slot *sl = rsim_reg_find(s, index, term);
    if (sl->term == 0) {
        sl->index = index;
        sl->term = term;
        sl->hash = hash;
        sl->prev_term = prev_term;
        s->n_reg++;
    } else if (sl->hash != hash || sl->prev_term != prev_term) {
        rsim_fail(s,
                  "log matching: member %llu has a different entry or predecessor at "
                  "index %llu term %llu",
                  (unsigned long long)id, (unsigned long long)index, (unsigned long long)term);
    }
}

static rsim_committed *rsim_com(rsim *s, uint64_t index)
{
    s->com = rsim_grow(s->com, &s->cap_com, index + 1, sizeof(*s->com));
    return &s->com[index];
}

/* Leader completeness: entries committed in an earlier term are in the log
 * of every later leader (compacted ones are covered by its snapshot). */
static void rsim_check_completeness(rsim *s, rsim_node *n, uint64_t term)
{
    raft_status st;
    raft_status_get(n->r, &st);
    for (uint64_t i = st.first_index; i <= s->max_com; i++) {
        rsim_committed *c = rsim_com(s, i);
        if (c->term == 0 || c->commit_term >= term)
            continue;
        const raft_entry *e = raft_entry_get(n->r, i);
        if (!e || e->term != c->term || rsim_hash_entry(e->type, e->data, e->len) != c->hash) {
            rsim_fail(s,
                      "leader completeness: leader %llu of term %llu lacks committed index "
                      "%llu (term %llu)",
                      (unsigned long long)n->id, (unsigned long long)term, (unsigned long long)i,
                      (unsigned long long)c->term);
            return;
        }
    }
}

/* ---- storage -------------------------------------------------------------- */

static uint64_t rsim_store_last(const rsim_node *n)
{
    return n->snap_index + n->n_log;
}

static uint64_t rsim_store_term(const rsim_node *n, uint64_t index)
{
    if (index == n->snap_index)
        return n->snap_term;
    return n->log[index - n->snap_index - 1].term;
}

static void rsim_store_truncate(rsim_node *n, uint64_t from)
{
    while (rsim_store_last(n) >= from && n->n_log) {
        free(n->log[n->n_log - 1].data);
        n->n_log--;
    }
}

static void rsim_store_drop_prefix(rsim_node *n, uint64_t upto)
{
    size_t k = 0;
    while (k < n->n_log && n->snap_index + 1 + k <= upto)
        free(n->log[k++].data);
    if (k) {
        memmove(n->log, n->log + k, (n->n_log - k) * sizeof(*n->log));
        n->n_log -= k;
    }
}

static uint64_t rsim_checksum(const uint8_t *data, size_t len)
{
    return rsim_hash_entry(0, data, len) & (((uint64_t)1 << 62) - 1);
}

/* The snapshot file's bytes: the state machine at `applied`. */
static void rsim_snap_bytes(uint8_t *out, uint64_t applied, uint64_t sm)
{
    memcpy(out, &applied, 8);
    memcpy(out + 8, &sm, 8);
    uint64_t h = rsim_mix(applied, sm);
    for (size_t i = 16; i < RSIM_SNAP_LEN; i++) {
        h = rsim_mix(h, i);
        out[i] = (uint8_t)h;
    }
}

static void rsim_store_snapshot(rsim_node *n, const raft_snapshot *sn, const uint8_t *data,
                                size_t len)
{
    n->snap_nv = sn->n_voters;
    n->snap_nl = sn->n_learners;
    if (sn->n_voters)
        memcpy(n->snap_voters, sn->voters, sn->n_voters * sizeof(uint64_t));
    if (sn->n_learners)
        memcpy(n->snap_learners, sn->learners, sn->n_learners * sizeof(uint64_t));
    n->snap_len = len <= sizeof(n->snap_data) ? len : sizeof(n->snap_data);
    if (n->snap_len)
        memcpy(n->snap_data, data, n->snap_len);
    n->snap_checksum = sn->checksum;
}

/* Step 1d: chunks go to the receive file; the last one is "fsynced" and
 * checked, and the result is owed to the core after raft_advance. */
static void rsim_write_chunks(rsim *s, rsim_node *n, const raft_ready_t *rd)
{
    for (size_t i = 0; i < rd->n_chunks; i++) {
        const raft_chunk *c = &rd->chunks[i];
        if (c->offset == 0)
            n->rx_len = 0;
        if (c->offset != n->rx_len || c->size != RSIM_SNAP_LEN || c->offset + c->len > c->size) {
            rsim_fail(s, "member %llu got chunk [%llu, +%zu) of %llu with %llu bytes received",
                      (unsigned long long)n->id, (unsigned long long)c->offset, c->len,
                      (unsigned long long)c->size, (unsigned long long)n->rx_len);
            return;
        }
        if (c->len)
            memcpy(n->rx_data + c->offset, c->data, c->len);
        n->rx_len += c->len;
        if (c->last) {
            if (i + 1 != rd->n_chunks)
                rsim_fail(s, "member %llu got chunks after the last one",
                          (unsigned long long)n->id);
            if (s->o.bad_install_pm && rsim_below(s, 1000) < s->o.bad_install_pm)
                n->rx_data[rsim_below(s, RSIM_SNAP_LEN)] ^= 0x5a; /* a bad disk */
            n->owe_received = true;
            n->received_index = c->index;
            n->received_term = c->term;
            n->received_ok =
                n->rx_len == c->size && rsim_checksum(n->rx_data, n->rx_len) == c->checksum;
        }
    }
}

/* The core's persistence rule, checked on every Ready: a promise (snapshot,
 * entries, new term or vote) always asks for an fsync, and only the leader's
 * own messages may leave before it. */
static void rsim_check_rule(rsim *s, const rsim_node *n, const raft_ready_t *rd)
{
    const raft_hard_state *d = n->hs_unsynced ? &n->hs_written : &n->hs;
    bool promise = rd->snapshot || rd->n_entries ||
                   (rd->hard_state_changed &&
                    (rd->hard_state.term != d->term || rd->hard_state.vote != d->vote));
    if (promise && !rd->must_sync)
        rsim_fail(s, "ready of %llu holds a promise without must_sync", (unsigned long long)n->id);
    for (size_t i = 0; i < rd->n_early; i++) {
        uint8_t t = rd->msgs[i].type;
        if (t != RAFT_MSG_APPEND && t != RAFT_MSG_HEARTBEAT && t != RAFT_MSG_SNAPSHOT &&
            t != RAFT_MSG_TIMEOUT_NOW)
            rsim_fail(s, "ready of %llu lets a %s leave before its fsync",
                      (unsigned long long)n->id, raft_msg_type_name(t));
    }
    if (rd->n_early && rd->hard_state_changed &&
        (rd->hard_state.term != d->term || rd->hard_state.vote != d->vote))
        rsim_fail(s, "ready of %llu sends early with a new term or vote",
                  (unsigned long long)n->id);
}

/* Step 1 of raft.h: write, then fsync if the Ready says so. Only synced
 * state is stable storage; a commit-only hard state waits in hs_written. */
static void rsim_persist_write(rsim *s, rsim_node *n, const raft_ready_t *rd);

static void rsim_persist(rsim *s, rsim_node *n, const raft_ready_t *rd)
{
    rsim_check_rule(s, n, rd);
    rsim_write_chunks(s, n, rd);
    rsim_persist_write(s, n, rd);
}

static void rsim_persist_write(rsim *s, rsim_node *n, const raft_ready_t *rd)
{
    if (rd->hard_state_changed && !rd->must_sync) {
        n->hs_written = rd->hard_state;
        n->hs_unsynced = true;
        return;
    }
    if (!rd->must_sync)
        return;
    if (n->hs_unsynced) {
        n->hs = n->hs_written;
        n->hs_unsynced = false;
    }
    if (rd->snapshot) {
        const raft_snapshot *sn = rd->snapshot;
        rsim_store_truncate(n, n->snap_index + 1);
        /* Only a received, checked snapshot is ever handed out here. */
        if (n->rx_len != sn->size || rsim_checksum(n->rx_data, n->rx_len) != sn->checksum)
            rsim_fail(s, "member %llu must install a snapshot it has not received and checked",
                      (unsigned long long)n->id);
        n->snap_index = sn->index;
        n->snap_term = sn->term;
        rsim_store_snapshot(n, sn, n->rx_data, n->rx_len);
        s->snap_stats.installed++;
    }
    if (rd->n_entries) {
        uint64_t first = rd->entries[0].index;
        if (first <= n->snap_index || first > rsim_store_last(n) + 1) {
            rsim_fail(s, "ready: member %llu got entries from %llu, storage holds (%llu, %llu]",
                      (unsigned long long)n->id, (unsigned long long)first,
                      (unsigned long long)n->snap_index, (unsigned long long)rsim_store_last(n));
            return;
        }
        rsim_store_truncate(n, first);
        n->log = rsim_grow(n->log, &n->cap_log, n->n_log + rd->n_entries, sizeof(*n->log));
        for (size_t i = 0; i < rd->n_entries; i++) {
            const raft_entry *e = &rd->entries[i];
            uint64_t prev_term = rsim_store_term(n, e->index - 1);
            if (rsim_is_witness(s, n->id)) {
                /* no bytes to compare: the predecessor must still agree */
                const rsim_slot *sl = rsim_reg_find(s, e->index, e->term);
                if (e->type == RAFT_ENTRY_NORMAL && e->len)
                    rsim_fail(s, "witness %llu keeps the bytes of entry %llu",
                              (unsigned long long)n->id, (unsigned long long)e->index);
                if (sl->term && sl->prev_term != prev_term)
                    rsim_fail(s,
                              "log matching: witness %llu has a different predecessor at "
                              "index %llu term %llu",
                              (unsigned long long)n->id, (unsigned long long)e->index,
                              (unsigned long long)e->term);
            } else {
                rsim_check_entry(s, n->id, e->index, e->term, prev_term,
                                 rsim_hash_entry(e->type, e->data, e->len));
            }
            rsim_entry *d = &n->log[n->n_log++];
            d->term = e->term;
            d->type = e->type;
            d->len = e->len;
            d->data = NULL;
            if (e->len) {
                d->data = malloc(e->len);
                if (!d->data)
                    abort();
                memcpy(d->data, e->data, e->len);
            }
        }
    }
    if (rd->hard_state_changed) {
        /* Terms never go back, and a vote is never changed within a term. */
        if (rd->hard_state.term < n->hs.term ||
            (rd->hard_state.term == n->hs.term && n->hs.vote && rd->hard_state.vote != n->hs.vote))
            rsim_fail(s, "hard state of %llu went from term %llu vote %llu to term %llu vote %llu",
                      (unsigned long long)n->id, (unsigned long long)n->hs.term,
                      (unsigned long long)n->hs.vote, (unsigned long long)rd->hard_state.term,
                      (unsigned long long)rd->hard_state.vote);
        n->hs = rd->hard_state;
    }
}

/* ---- asynchronous persistence (opts.async_persist) ------------------------ */

static void rsim_write_free(rsim_write *w)
{
    for (size_t i = 0; i < w->n; i++)
        free((void *)w->ents[i].data);
    free(w->ents);
    memset(w, 0, sizeof(*w));
}

static void rsim_writes_drop(rsim_node *n)
{
    for (size_t i = 0; i < n->n_writes; i++)
        rsim_write_free(&n->writes[i]);
    n->n_writes = 0;
}

static void rsim_queue_write(rsim_node *n, const raft_ready_t *rd)
{
    if (!rd->must_sync && !rd->hard_state_changed && !rd->n_entries)
        return;
    n->writes = rsim_grow(n->writes, &n->cap_writes, n->n_writes + 1, sizeof(*n->writes));
    rsim_write *w = &n->writes[n->n_writes++];
    memset(w, 0, sizeof(*w));
    w->seq = rd->seq;
    w->must_sync = rd->must_sync;
    w->hs_changed = rd->hard_state_changed;
    w->hs = rd->hard_state;
    w->n = rd->n_entries;
    if (w->n) {
        w->ents = calloc(w->n, sizeof(*w->ents));
        if (!w->ents)
            abort();
    }
    for (size_t i = 0; i < w->n; i++) {
        w->ents[i] = rd->entries[i];
        w->ents[i].data = NULL;
        if (rd->entries[i].len) {
            uint8_t *d = malloc(rd->entries[i].len);
            if (!d)
                abort();
            memcpy(d, rd->entries[i].data, rd->entries[i].len);
            w->ents[i].data = d;
        }
    }
}

/* The oldest k queued writes become stable; returns the highest seq among
 * them (0: none asked for a sync). */
static uint64_t rsim_flush_writes(rsim *s, rsim_node *n, size_t k)
{
    uint64_t seq = 0;
    for (size_t i = 0; i < k; i++) {
        rsim_write *w = &n->writes[i];
        raft_ready_t rd;
        memset(&rd, 0, sizeof(rd));
        rd.entries = w->ents;
        rd.n_entries = w->n;
        rd.hard_state_changed = w->hs_changed;
        rd.hard_state = w->hs;
        rd.must_sync = w->must_sync;
        rsim_persist_write(s, n, &rd);
        if (w->seq > seq)
            seq = w->seq;
        rsim_write_free(w);
    }
    memmove(n->writes, n->writes + k, (n->n_writes - k) * sizeof(*n->writes));
    n->n_writes -= k;
    return seq;
}

static void rsim_told_persisted(rsim *s, rsim_node *n, uint64_t seq)
{
    if (!seq || !n->r)
        return;
    int rc = raft_persisted(n->r, seq);
    if (rc != RAFT_OK)
        rsim_fail(s, "raft_persisted(%llu) on %llu: %s", (unsigned long long)seq,
                  (unsigned long long)n->id, raft_strerror(rc));
}

size_t rsim_pending_writes(const rsim *s, uint64_t id)
{
    return id >= 1 && id <= s->o.n_nodes ? s->nodes[id].n_writes : 0;
}

/* Async mode's rule, checked on every Ready: everything may leave at once,
 * so whatever a message promises must already be on stable storage. */
static void rsim_check_async(rsim *s, const rsim_node *n, const raft_ready_t *rd)
{
    if (rd->n_early != rd->n_msgs)
        rsim_fail(s, "async ready of %llu holds late messages", (unsigned long long)n->id);
    if ((rd->seq != 0) != rd->must_sync)
        rsim_fail(s, "async ready of %llu: seq %llu with must_sync %d", (unsigned long long)n->id,
                  (unsigned long long)rd->seq, rd->must_sync);
    for (size_t i = 0; i < rd->n_msgs; i++) {
        const raft_msg *m = &rd->msgs[i];
        bool reject = m->flags & RAFT_FLAG_REJECT;
        if (m->type == RAFT_MSG_APPEND_RESP && !reject && m->term >= n->hs.term) {
            /* (An ack of an older term was true when its write landed; a
             * leader of a later term may have cut the entries since, as it
             * may cut them after a synchronous ack still on the wire.) */
            const raft_entry *e = raft_entry_get(n->r, m->index);
            if (m->index > rsim_store_last(n) ||
                (e && m->index > n->snap_index && rsim_store_term(n, m->index) != e->term))
                rsim_fail(s, "async: %llu acknowledges index %llu, its stable log ends at %llu",
                          (unsigned long long)n->id, (unsigned long long)m->index,
                          (unsigned long long)rsim_store_last(n));
        } else if ((m->type == RAFT_MSG_VOTE_RESP && !reject) || m->type == RAFT_MSG_VOTE) {
            uint64_t want = m->type == RAFT_MSG_VOTE ? n->id : m->to;
            /* A stable term above the message's: the vote was stable
             * once and has been superseded since (the message was held). */
            if (n->hs.term < m->term || (n->hs.term == m->term && n->hs.vote != want))
                rsim_fail(s,
                          "async: %llu sends %s in term %llu, its stable vote is %llu in "
                          "term %llu",
                          (unsigned long long)n->id, raft_msg_type_name(m->type),
                          (unsigned long long)m->term, (unsigned long long)n->hs.vote,
                          (unsigned long long)n->hs.term);
        }
    }
}

/* ---- sending -------------------------------------------------------------- */

static void rsim_enqueue(rsim *s, uint64_t to, const uint8_t *bytes, size_t len, uint64_t delay)
{
    s->q = rsim_grow(s->q, &s->capq, s->nq + 1, sizeof(*s->q));
    rsim_msg *m = &s->q[s->nq++];
    m->at = s->now + delay;
    m->seq = s->seq++;
    m->to = to;
    m->len = len;
    m->corrupted = s->corrupting;
    m->bytes = malloc(len);
    if (!m->bytes)
        abort();
    memcpy(m->bytes, bytes, len);
}

static void rsim_send(rsim *s, const raft_msg *orig)
{
    raft_msg copy = *orig, *m = &copy;
    if (m->type == RAFT_MSG_SNAPSHOT) {
        /* The driver reads the chunk from its snapshot file. */
        const rsim_node *from = &s->nodes[m->from];
        if (from->snap_index != m->snapshot.index || from->snap_len != m->snapshot.size ||
            m->offset + m->len > from->snap_len || m->data) {
            rsim_fail(s,
                      "member %llu asked to send chunk [%llu, +%zu) of snapshot %llu, holds %llu",
                      (unsigned long long)m->from, (unsigned long long)m->offset, m->len,
                      (unsigned long long)m->snapshot.index, (unsigned long long)from->snap_index);
            return;
        }
        m->data = m->len ? from->snap_data + m->offset : NULL;
        s->snap_stats.chunks_sent++;
    }
    if (s->filter && !s->filter(s->filter_ctx, m))
        return;
    uint8_t stackbuf[512];
    size_t need = raft_msg_encoded_size(m), len = 0;
    uint8_t *buf = need <= sizeof(stackbuf) ? stackbuf : malloc(need);
    if (!buf)
        abort();
    int rc = raft_msg_encode(m, buf, need, &len);
    if (rc != RAFT_OK || len != need) {
        rsim_fail(s, "encode of %s from %llu failed: %s", raft_msg_type_name(m->type),
                  (unsigned long long)m->from, raft_strerror(rc));
    } else {
        if (m->type == RAFT_MSG_SNAPSHOT && m->len && s->o.corrupt_chunk_pm &&
            rsim_below(s, 1000) < s->o.corrupt_chunk_pm) {
            buf[len - 1 - rsim_below(s, m->len)] ^= 0x20; /* damaged in transit */
            s->snap_stats.chunks_corrupted++;
            s->corrupting = true;
        }
        if (s->o.manual) {
            rsim_enqueue(s, m->to, buf, len, 0);
        } else if (rsim_below(s, 1000) >= s->o.drop_pm) {
            uint32_t span = s->o.max_delay - s->o.min_delay + 1;
            rsim_enqueue(s, m->to, buf, len, s->o.min_delay + rsim_below(s, span));
            if (rsim_below(s, 1000) < s->o.dup_pm)
                rsim_enqueue(s, m->to, buf, len, s->o.min_delay + rsim_below(s, span));
        }
    }
    s->corrupting = false;
    if (buf != stackbuf)
        free(buf);
}

/* ---- applying and events -------------------------------------------------- */

/* A witness applies nothing: it only follows the commit index and keeps no
 * bytes of normal entries. A snapshot's data reaches it in chunks like any
 * member (the simulated driver checks them, rsim_write_chunks); the C
 * witness keeps only the metadata (cnode/witness.c drain()). */
static void rsim_apply_witness(rsim *s, rsim_node *n, const raft_ready_t *rd)
{
    if (rd->snapshot) {
        if (rd->snapshot->index < n->applied)
            rsim_fail(s, "snapshot at %llu would move witness %llu back from applied %llu",
                      (unsigned long long)rd->snapshot->index, (unsigned long long)n->id,
                      (unsigned long long)n->applied);
        n->applied = rd->snapshot->index;
    }
    for (size_t i = 0; i < rd->n_committed; i++) {
        const raft_entry *e = &rd->committed[i];
        if (e->index != n->applied + 1) {
            rsim_fail(s, "witness %llu commits %llu after %llu", (unsigned long long)n->id,
                      (unsigned long long)e->index, (unsigned long long)n->applied);
            return;
        }
        rsim_committed *c = rsim_com(s, e->index);
        if (c->term && c->term != e->term)
            rsim_fail(s, "witness %llu committed term %llu at %llu, the group term %llu",
                      (unsigned long long)n->id, (unsigned long long)e->term,
                      (unsigned long long)e->index, (unsigned long long)c->term);
        n->applied = e->index;
    }
}

static void rsim_apply(rsim *s, rsim_node *n, const raft_ready_t *rd)
{
    if (rsim_is_witness(s, n->id)) {
        rsim_apply_witness(s, n, rd);
        return;
    }
    if (rd->snapshot) {
        const raft_snapshot *sn = rd->snapshot;
        uint64_t idx = 0, sm = 0;
        if (n->snap_len == RSIM_SNAP_LEN && n->snap_index == sn->index) {
            memcpy(&idx, n->snap_data, 8);
            memcpy(&sm, n->snap_data + 8, 8);
        }
        rsim_committed *c = rsim_com(s, sn->index);
        if (idx != sn->index || (c->term && (c->sm != sm || c->term != sn->term)))
            rsim_fail(s, "snapshot at %llu installed on %llu disagrees with the committed state",
                      (unsigned long long)sn->index, (unsigned long long)n->id);
        if (sn->index < n->applied)
            rsim_fail(s, "snapshot at %llu would move %llu back from applied %llu",
                      (unsigned long long)sn->index, (unsigned long long)n->id,
                      (unsigned long long)n->applied);
        n->applied = sn->index;
        n->sm = sm;
    }
    for (size_t i = 0; i < rd->n_committed; i++) {
        const raft_entry *e = &rd->committed[i];
        if (e->index != n->applied + 1) {
            rsim_fail(s, "member %llu applies %llu after %llu", (unsigned long long)n->id,
                      (unsigned long long)e->index, (unsigned long long)n->applied);
            return;
        }
        if (e->index > rsim_store_last(n) || e->index <= n->snap_index ||
            rsim_store_term(n, e->index) != e->term) {
            rsim_fail(s, "member %llu applies index %llu that is not in its stable log",
                      (unsigned long long)n->id, (unsigned long long)e->index);
            return;
        }
        uint64_t h = rsim_hash_entry(e->type, e->data, e->len);
        n->sm = rsim_mix(rsim_mix(n->sm, e->index), rsim_mix(e->term, h));
        n->applied = e->index;
        rsim_committed *c = rsim_com(s, e->index);
        if (c->term == 0) {
            c->term = e->term;
            c->hash = h;
            c->sm = n->sm;
            c->commit_term = rd->hard_state.term ? rd->hard_state.term : n->hs.term;
            if (e->index > s->max_com)
                s->max_com = e->index;
        } else if (c->term != e->term || c->hash != h || c->sm != n->sm) {
            rsim_fail(s,
                      "state machine safety: member %llu applied a different entry or state "
                      "at index %llu (term %llu, committed term %llu)",
                      (unsigned long long)n->id, (unsigned long long)e->index,
                      (unsigned long long)e->term, (unsigned long long)c->term);
            return;
        } else if (n->hs.term < c->commit_term) {
            c->commit_term = n->hs.term;
        }
    }
}

static void rsim_events(rsim *s, rsim_node *n, const raft_ready_t *rd)
{
    for (size_t i = 0; i < rd->n_events; i++) {
        const raft_event *ev = &rd->events[i];
        if (ev->old_role != n->role || ev->old_leader != n->leader)
            rsim_fail(s,
                      "event on %llu: old state (%s, leader %llu) is not the previous new "
                      "state (%s, leader %llu)",
                      (unsigned long long)n->id, raft_role_name(ev->old_role),
                      (unsigned long long)ev->old_leader, raft_role_name(n->role),
                      (unsigned long long)n->leader);
        if (ev->old_role == ev->new_role && ev->old_leader == ev->new_leader)
            rsim_fail(s, "event on %llu without a change", (unsigned long long)n->id);
        bool type_ok = ev->new_role == RAFT_LEADER     ? ev->type == RAFT_EVENT_BECOME_LEADER
                       : ev->new_role == RAFT_FOLLOWER ? ev->type == RAFT_EVENT_BECOME_FOLLOWER
                                                       : ev->type == RAFT_EVENT_BECOME_CANDIDATE;
        if (!type_ok)
            rsim_fail(s, "event type %d does not match new role %s", ev->type,
                      raft_role_name(ev->new_role));
        if (rsim_is_witness(s, n->id) && ev->new_role != RAFT_FOLLOWER)
            rsim_fail(s, "witness %llu became %s in term %llu", (unsigned long long)n->id,
                      raft_role_name(ev->new_role), (unsigned long long)ev->term);
        n->role = ev->new_role;
        n->leader = ev->new_leader;
        if (ev->type == RAFT_EVENT_BECOME_LEADER) {
            rsim_check_leader(s, n->id, ev->term);
            rsim_check_completeness(s, n, ev->term);
        }
        if (s->on_event)
            s->on_event(s->event_ctx, n->id, ev, s->now);
    }
    for (size_t i = 0; i < rd->n_reads; i++) {
        const raft_read_state *rs = &rd->reads[i];
        for (size_t k = 0; k < s->n_preads; k++) {
            if (s->preads[k].ctx == rs->ctx && rs->index < s->preads[k].min_index)
                rsim_fail(s,
                          "read %llu on %llu at index %llu misses index %llu committed "
                          "before it was requested",
                          (unsigned long long)rs->ctx, (unsigned long long)n->id,
                          (unsigned long long)rs->index,
                          (unsigned long long)s->preads[k].min_index);
        }
        n->reads = rsim_grow(n->reads, &n->cap_reads, n->n_reads + 1, sizeof(*n->reads));
        n->reads[n->n_reads++] = *rs;
    }
}

/* Where, inside one Ready, a member crashes (chaos runs only). */
enum { RSIM_CRASH_NONE, RSIM_CRASH_BEFORE_SYNC, RSIM_CRASH_AFTER_SYNC, RSIM_CRASH_AFTER_SEND };

static int rsim_crash_point(rsim *s)
{
    if (s->o.manual || !s->o.crash_ready_pm || rsim_below(s, 1000) >= s->o.crash_ready_pm)
        return RSIM_CRASH_NONE;
    return 1 + (int)rsim_below(s, 3);
}

static void rsim_after_advance(rsim *s, rsim_node *n);

/* The driver of raft.h's ASYNCHRONOUS PERSISTENCE: send everything, queue
 * the writes, apply, advance; the writes become stable later
 * (rsim_run_units) and the core is told then. */
static void rsim_drain_async(rsim *s, rsim_node *n, raft_ready_t *rd)
{
    uint64_t id = n->id;
    int crash_at = rsim_crash_point(s);
    rsim_check_async(s, n, rd);
    for (size_t i = 0; i < rd->n_msgs; i++)
        rsim_send(s, &rd->msgs[i]);
    if (crash_at == RSIM_CRASH_BEFORE_SYNC) {
        rsim_crash(s, id);
        return;
    }
    rsim_write_chunks(s, n, rd);
    rsim_queue_write(n, rd);
    uint64_t synced = 0;
    if (rd->snapshot) {
        /* The state machine is restored from the snapshot's file: the
         * driver writes it (and everything queued before it) first. */
        synced = rsim_flush_writes(s, n, n->n_writes - 1);
        raft_ready_t w = *rd;
        w.n_chunks = 0;
        rsim_persist_write(s, n, &w);
        rsim_write_free(&n->writes[0]);
        n->n_writes = 0;
        synced = rd->seq;
    }
    if (crash_at == RSIM_CRASH_AFTER_SYNC) {
        rsim_crash(s, id);
        return;
    }
    if (crash_at == RSIM_CRASH_AFTER_SEND) {
        rsim_crash(s, id);
        return;
    }
    rsim_apply(s, n, rd);
    rsim_events(s, n, rd);
    int rc = raft_advance(n->r, rd);
    if (rc != RAFT_OK)
        rsim_fail(s, "raft_advance on %llu: %s", (unsigned long long)id, raft_strerror(rc));
    rsim_told_persisted(s, n, synced);
    rsim_after_advance(s, n);
}

size_t rsim_flush(rsim *s, uint64_t id)
{
    if (id < 1 || id > s->o.n_nodes || !s->nodes[id].r)
        return 0;
    rsim_node *n = &s->nodes[id];
    size_t k = n->n_writes;
    rsim_told_persisted(s, n, rsim_flush_writes(s, n, k));
    rsim_drain(s, id);
    return k;
}

void rsim_drain(rsim *s, uint64_t id)
{
    rsim_node *n = &s->nodes[id];
    for (int guard = 0; n->r && raft_has_ready(n->r) && guard < 1000; guard++) {
        raft_ready_t rd;
        int rc = raft_ready(n->r, &rd);
        if (rc != RAFT_OK) {
            rsim_fail(s, "raft_ready on %llu: %s", (unsigned long long)id, raft_strerror(rc));
            return;
        }
        if (s->o.async_persist) {
            rsim_drain_async(s, n, &rd);
            continue;
        }
        /* The order of raft.h: early sends, persist (+ fsync), the other
         * sends, apply, notify, advance; a crash may come between any two. */
        int crash_at = rsim_crash_point(s);
        for (size_t i = 0; i < rd.n_early; i++)
            rsim_send(s, &rd.msgs[i]);
        if (crash_at == RSIM_CRASH_BEFORE_SYNC) {
            rsim_crash(s, id); /* what was written but not synced is lost */
            return;
        }
        rsim_persist(s, n, &rd);
        if (crash_at == RSIM_CRASH_AFTER_SYNC) {
            rsim_crash(s, id);
            return;
        }
        for (size_t i = rd.n_early; i < rd.n_msgs; i++)
            rsim_send(s, &rd.msgs[i]);
        if (crash_at == RSIM_CRASH_AFTER_SEND) {
            rsim_crash(s, id);
            return;
        }
        rsim_apply(s, n, &rd);
        rsim_events(s, n, &rd);
        rc = raft_advance(n->r, &rd);
        if (rc != RAFT_OK)
            rsim_fail(s, "raft_advance on %llu: %s", (unsigned long long)id, raft_strerror(rc));
        rsim_after_advance(s, n);
    }
}

static void rsim_after_advance(rsim *s, rsim_node *n)
{
    uint64_t id = n->id;
    int rc;
    {
        if (n->owe_received) {
            n->owe_received = false;
            if (!n->received_ok)
                s->snap_stats.failed_installs++;
            rc = raft_snapshot_received(n->r, n->received_index, n->received_term, n->received_ok);
            if (rc != RAFT_OK)
                rsim_fail(s, "raft_snapshot_received on %llu: %s", (unsigned long long)id,
                          raft_strerror(rc));
        }
        raft_status st;
        raft_status_get(n->r, &st);
        if (st.role == RAFT_LEADER)
            rsim_check_leader(s, id, st.term);
        if (s->o.compact_every && n->applied >= n->snap_index + s->o.compact_every)
            rsim_compact(s, id);
    }
}

/* ---- lifecycle ------------------------------------------------------------ */

void rsim_opts_default(rsim_opts *o, size_t n, uint64_t seed)
{
    memset(o, 0, sizeof(*o));
    o->n_nodes = n;
    o->seed = seed;
    o->election_tick = 10;
    o->heartbeat_tick = 1;
    o->pre_vote = true;
    o->check_quorum = true;
    o->min_delay = 1;
    o->max_delay = 10;
}

static void rsim_boot(rsim *s, uint64_t id, bool fresh)
{
    rsim_node *n = &s->nodes[id];
    raft_config cfg;
    raft_config_init(&cfg, id, rsim_rand(s));
    cfg.election_tick = s->o.election_tick;
    cfg.heartbeat_tick = s->o.heartbeat_tick;
    cfg.pre_vote = s->o.pre_vote;
    cfg.check_quorum = s->o.check_quorum;
    cfg.quiesce = s->o.quiesce;
    cfg.async_persist = s->o.async_persist;
    cfg.witness = rsim_is_witness(s, id);
    if (s->o.max_inflight)
        cfg.max_inflight = s->o.max_inflight;
    if (s->o.snapshot_chunk)
        cfg.snapshot_chunk = s->o.snapshot_chunk;
    if (s->o.snapshot_window)
        cfg.snapshot_window = s->o.snapshot_window;
    if (s->o.max_msg_entries)
        cfg.max_msg_entries = s->o.max_msg_entries;
    uint64_t voters[RSIM_MAX_NODES];
    size_t nv = s->o.n_voters ? s->o.n_voters : s->o.n_nodes;
    raft_entry *ents = NULL;
    raft_snapshot snap;
    if (fresh) {
        if (id <= nv) {
            for (size_t i = 0; i < nv; i++)
                voters[i] = i + 1;
            cfg.voters = voters;
            cfg.n_voters = nv;
        }
    } else {
        cfg.hard_state = n->hs;
        if (n->snap_index) {
            memset(&snap, 0, sizeof(snap));
            snap.index = n->snap_index;
            snap.term = n->snap_term;
            snap.voters = n->snap_voters;
            snap.n_voters = n->snap_nv;
            snap.learners = n->snap_learners;
            snap.n_learners = n->snap_nl;
            snap.size = n->snap_len;
            snap.checksum = n->snap_checksum;
            cfg.snapshot = &snap;
        }
        ents = calloc(n->n_log + 1, sizeof(*ents));
        if (!ents)
            abort();
        for (size_t i = 0; i < n->n_log; i++) {
            ents[i].index = n->snap_index + 1 + i;
            ents[i].term = n->log[i].term;
            ents[i].type = n->log[i].type;
            ents[i].data = n->log[i].data;
            ents[i].len = n->log[i].len;
        }
        cfg.entries = ents;
        cfg.n_entries = n->n_log;
        /* The state machine is rebuilt from the snapshot; the committed log
         * after it is applied again. */
        n->applied = n->snap_index;
        n->sm = 0;
        if (n->snap_len == RSIM_SNAP_LEN)
            memcpy(&n->sm, n->snap_data + 8, 8);
    }
    int err = 0;
    n->r = raft_new(&cfg, &err);
    free(ents);
    n->role = RAFT_FOLLOWER;
    n->leader = 0;
    if (!n->r)
        rsim_fail(s, "raft_new(%llu): %s", (unsigned long long)id, raft_strerror(err));
}

rsim *rsim_new(const rsim_opts *o)
{
    if (o->n_nodes < 1 || o->n_nodes > RSIM_MAX_NODES)
        return NULL;
    rsim *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->o = *o;
    if (s->o.max_delay < s->o.min_delay)
        s->o.max_delay = s->o.min_delay;
    s->rng = o->seed;
    rsim_heal(s);
    for (uint64_t id = 1; id <= o->n_nodes; id++) {
        s->nodes[id].id = id;
        s->nodes[id].phase = o->lockstep ? 0 : (uint32_t)rsim_below(s, RSIM_UNITS);
        rsim_boot(s, id, true);
    }
    for (uint64_t id = 1; id <= o->n_nodes; id++)
        rsim_drain(s, id);
    return s;
}

void rsim_free(rsim *s)
{
    if (!s)
        return;
    for (uint64_t id = 1; id <= s->o.n_nodes; id++) {
        rsim_node *n = &s->nodes[id];
        raft_free(n->r);
        rsim_store_truncate(n, n->snap_index + 1);
        free(n->log);
        free(n->reads);
        rsim_writes_drop(n);
        free(n->writes);
    }
    for (size_t i = 0; i < s->nq; i++)
        free(s->q[i].bytes);
    free(s->q);
    free(s->term_leader);
    free(s->reg);
    free(s->com);
    free(s->preads);
    free(s);
}

void rsim_crash(rsim *s, uint64_t id)
{
    if (id < 1 || id > s->o.n_nodes)
        return;
    raft_free(s->nodes[id].r);
    s->nodes[id].r = NULL;
    s->nodes[id].hs_unsynced = false;
    rsim_writes_drop(&s->nodes[id]); /* writes in flight are lost */
    /* The receive file was never synced: gone (the driver also deletes a
     * leftover one when it starts). */
    s->nodes[id].rx_len = 0;
    s->nodes[id].owe_received = false;
    if (s->o.nodedown)
        for (uint64_t o = 1; o <= s->o.n_nodes; o++)
            if (o != id)
                rsim_nodedown(s, o, id);
}

void rsim_nodedown(rsim *s, uint64_t id, uint64_t down)
{
    raft_t *r = rsim_raft(s, id);
    if (!r)
        return;
    raft_status st;
    raft_status_get(r, &st);
    (void)(st.leader == down ? raft_forget_leader(r) : raft_wake(r));
    rsim_drain(s, id);
}

void rsim_nodeup(rsim *s, uint64_t id, uint64_t up)
{
    (void)up;
    raft_t *r = rsim_raft(s, id);
    if (!r)
        return;
    (void)raft_wake(r);
    rsim_drain(s, id);
}

void rsim_wipe(rsim *s, uint64_t id)
{
    if (id < 1 || id > s->o.n_nodes)
        return;
    rsim_crash(s, id);
    rsim_node *n = &s->nodes[id];
    rsim_store_truncate(n, n->snap_index + 1);
    memset(&n->hs, 0, sizeof(n->hs));
    n->snap_index = n->snap_term = 0;
    n->snap_nv = n->snap_nl = 0;
    n->snap_len = 0;
    n->snap_checksum = 0;
    n->applied = n->sm = 0;
    rsim_boot(s, id, true);
    rsim_drain(s, id);
}

void rsim_restart(rsim *s, uint64_t id)
{
    if (id < 1 || id > s->o.n_nodes || s->nodes[id].r)
        return;
    rsim_boot(s, id, false);
    rsim_drain(s, id);
    if (s->o.nodedown)
        for (uint64_t o = 1; o <= s->o.n_nodes; o++)
            if (o != id)
                rsim_nodeup(s, o, id);
}

/* ---- network -------------------------------------------------------------- */

void rsim_heal(rsim *s)
{
    for (size_t a = 0; a <= RSIM_MAX_NODES; a++)
        for (size_t b = 0; b <= RSIM_MAX_NODES; b++)
            s->link[a][b] = true;
    /* Reconnected nodes see each other come up (a partition that lasted
     * gave a nodedown: modelled here only as the nodeup on healing). */
    if (s->o.nodedown)
        for (uint64_t id = 1; id <= s->o.n_nodes; id++)
            rsim_nodeup(s, id, 0);
}

void rsim_cut(rsim *s, uint64_t a, uint64_t b)
{
    s->link[a][b] = s->link[b][a] = false;
}

void rsim_isolate(rsim *s, uint64_t id)
{
    for (uint64_t o = 1; o <= s->o.n_nodes; o++)
        if (o != id)
            rsim_cut(s, id, o);
}

void rsim_split(rsim *s, const uint64_t *side, size_t n)
{
    bool in[RSIM_MAX_NODES + 1] = {false};
    for (size_t i = 0; i < n; i++)
        in[side[i]] = true;
    rsim_heal(s);
    for (uint64_t a = 1; a <= s->o.n_nodes; a++)
        for (uint64_t b = 1; b <= s->o.n_nodes; b++)
            if (in[a] != in[b])
                s->link[a][b] = false;
}

void rsim_ring(rsim *s)
{
    /* Member i reaches its d nearest neighbours on each side, with 2d+1 the
     * smallest odd number >= a quorum: every member sees a quorum, but no
     * quorum sees all the others (leaders flap in such a network). */
    size_t n = s->o.n_nodes, q = n / 2 + 1, d = q / 2;
    for (uint64_t a = 1; a <= n; a++) {
        for (uint64_t b = 1; b <= n; b++) {
            size_t dist = a > b ? a - b : b - a;
            if (n - dist < dist)
                dist = n - dist;
            s->link[a][b] = dist <= d;
        }
    }
}

static int rsim_cmp_msg(const void *x, const void *y)
{
    const rsim_msg *a = x, *b = y;
    if (a->at != b->at)
        return a->at < b->at ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static void rsim_deliver(rsim *s, rsim_msg *qm)
{
    raft_msg m;
    rsim_node *n = &s->nodes[qm->to];
    int rc = raft_msg_decode(qm->bytes, qm->len, &m);
    if (rc != RAFT_OK) {
        /* Only a chunk damaged on purpose may fail, and it must. */
        if (!qm->corrupted || rc != RAFT_ERR_CHECKSUM)
            rsim_fail(s, "decode of a message the core encoded failed: %s", raft_strerror(rc));
        return;
    }
    if (n->r && s->link[m.from][m.to]) {
        rc = raft_step(n->r, &m);
        s->delivered++;
        if (rc != RAFT_OK)
            rsim_fail(s, "raft_step(%llu, %s from %llu): %s", (unsigned long long)m.to,
                      raft_msg_type_name(m.type), (unsigned long long)m.from, raft_strerror(rc));
        rsim_drain(s, m.to);
    }
    raft_msg_release(&m);
}

/* Takes the messages due now out of the queue, in (time, send order). */
static size_t rsim_take_due(rsim *s, rsim_msg **out, uint64_t until)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nq; i++)
        if (s->q[i].at <= until)
            k++;
    if (!k)
        return 0;
    rsim_msg *due = malloc(k * sizeof(*due));
    if (!due)
        abort();
    size_t j = 0, w = 0;
    for (size_t i = 0; i < s->nq; i++) {
        if (s->q[i].at <= until)
            due[j++] = s->q[i];
        else
            s->q[w++] = s->q[i];
    }
    s->nq = w;
    qsort(due, k, sizeof(*due), rsim_cmp_msg);
    *out = due;
    return k;
}

size_t rsim_deliver_all(rsim *s)
{
    size_t total = 0;
    for (int round = 0; round < 10000 && s->nq; round++) {
        rsim_msg *due = NULL;
        size_t k = rsim_take_due(s, &due, UINT64_MAX);
        for (size_t i = 0; i < k; i++) {
            rsim_deliver(s, &due[i]);
            free(due[i].bytes);
        }
        free(due);
        total += k;
    }
    return total;
}

void rsim_tick(rsim *s, uint64_t id)
{
    if (!s->nodes[id].r)
        return;
    int rc = raft_tick(s->nodes[id].r);
    if (rc != RAFT_OK)
        rsim_fail(s, "raft_tick(%llu): %s", (unsigned long long)id, raft_strerror(rc));
    rsim_drain(s, id);
}

void rsim_tick_n(rsim *s, uint64_t id, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        rsim_tick(s, id);
}

void rsim_run_units(rsim *s, uint64_t units)
{
    for (uint64_t u = 0; u < units && !s->err[0]; u++) {
        s->now++;
        rsim_msg *due = NULL;
        size_t k = rsim_take_due(s, &due, s->now);
        for (size_t i = 0; i < k; i++) {
            rsim_deliver(s, &due[i]);
            free(due[i].bytes);
        }
        free(due);
        for (uint64_t id = 1; id <= s->o.n_nodes; id++)
            if ((s->now + s->nodes[id].phase) % RSIM_UNITS == 0)
                rsim_tick(s, id);
        if (s->o.async_persist && !s->o.manual) {
            for (uint64_t id = 1; id <= s->o.n_nodes; id++) {
                rsim_node *n = &s->nodes[id];
                uint32_t lag = s->o.persist_lag ? s->o.persist_lag : 1;
                if (!n->r || !n->n_writes || rsim_below(s, lag) != 0)
                    continue;
                size_t upto = 1 + (size_t)rsim_below(s, n->n_writes);
                rsim_told_persisted(s, n, rsim_flush_writes(s, n, upto));
                rsim_drain(s, id);
            }
        }
    }
}

void rsim_run_ticks(rsim *s, uint64_t ticks)
{
    rsim_run_units(s, ticks * RSIM_UNITS);
}

bool rsim_run_until(rsim *s, bool (*pred)(rsim *, void *), void *ctx, uint64_t max_ticks)
{
    for (uint64_t u = 0; u < max_ticks * RSIM_UNITS; u++) {
        if (pred(s, ctx))
            return true;
        if (s->err[0])
            return false;
        rsim_run_units(s, 1);
    }
    return pred(s, ctx);
}

/* ---- requests ------------------------------------------------------------- */

#define RSIM_CALL(s, id, call)                                                                     \
    do {                                                                                           \
        if (!(s)->nodes[id].r)                                                                     \
            return RAFT_ERR_INVALID;                                                               \
        int rc_ = (call);                                                                          \
        rsim_drain((s), (id));                                                                     \
        return rc_;                                                                                \
    } while (0)

int rsim_campaign(rsim *s, uint64_t id)
{
    RSIM_CALL(s, id, raft_campaign(s->nodes[id].r));
}

int rsim_wake(rsim *s, uint64_t id)
{
    RSIM_CALL(s, id, raft_wake(s->nodes[id].r));
}

int rsim_propose(rsim *s, uint64_t id, const void *data, size_t len, uint64_t *index)
{
    RSIM_CALL(s, id, raft_propose(s->nodes[id].r, data, len, index));
}

int rsim_read_index(rsim *s, uint64_t id, uint64_t ctx)
{
    if (!s->nodes[id].r)
        return RAFT_ERR_INVALID;
    /* Linearizability: whatever was committed before the request must be
     * covered by the index the read is served at. */
    s->preads = rsim_grow(s->preads, &s->cap_preads, s->n_preads + 1, sizeof(*s->preads));
    s->preads[s->n_preads].ctx = ctx;
    s->preads[s->n_preads].min_index = s->max_com;
    s->n_preads++;
    RSIM_CALL(s, id, raft_read_index(s->nodes[id].r, ctx));
}

int rsim_conf_change(rsim *s, uint64_t id, raft_conf_op op, uint64_t target)
{
    RSIM_CALL(s, id, raft_propose_conf_change(s->nodes[id].r, op, target, NULL));
}

int rsim_transfer(rsim *s, uint64_t id, uint64_t target)
{
    RSIM_CALL(s, id, raft_transfer_leader(s->nodes[id].r, target));
}

int rsim_compact(rsim *s, uint64_t id)
{
    rsim_node *n = &s->nodes[id];
    if (!n->r || n->applied <= n->snap_index)
        return RAFT_ERR_COMPACTED;
    uint8_t data[RSIM_SNAP_LEN];
    rsim_snap_bytes(data, n->applied, n->sm);
    uint64_t checksum = rsim_checksum(data, sizeof(data));
    int rc = raft_compact(n->r, n->applied, sizeof(data), checksum);
    if (rc != RAFT_OK)
        return rc;
    /* The driver persists the snapshot, then drops its log prefix. */
    const raft_snapshot *sn = raft_snapshot_get(n->r);
    rsim_store_drop_prefix(n, sn->index);
    n->snap_index = sn->index;
    n->snap_term = sn->term;
    rsim_store_snapshot(n, sn, data, sizeof(data));
    return RAFT_OK;
}

int rsim_inject(rsim *s, const raft_msg *m)
{
    RSIM_CALL(s, m->to, raft_step(s->nodes[m->to].r, m));
}

/* ---- randomized runs ------------------------------------------------------ */

/* A leader has committed its whole log, which ends in its own term, and
 * every member of its configuration has applied all of it. */
static bool rsim_converged(rsim *s, void *ctx)
{
    (void)ctx;
    uint64_t leader = rsim_leader(s);
    if (!leader)
        return false;
    raft_t *lr = s->nodes[leader].r;
    raft_status st;
    raft_status_get(lr, &st);
    if (st.commit != st.last_index || st.last_term != st.term)
        return false;
    uint64_t ids[RAFT_MAX_MEMBERS];
    size_t nv = raft_voters(lr, ids, RAFT_MAX_MEMBERS);
    size_t nl = raft_learners(lr, ids + nv, RAFT_MAX_MEMBERS - nv);
    for (size_t i = 0; i < nv + nl; i++)
        if (ids[i] <= s->o.n_nodes && s->nodes[ids[i]].applied < st.last_index)
            return false;
    return true;
}

static uint64_t rsim_pick_up(rsim *s, bool up)
{
    uint64_t c[RSIM_MAX_NODES];
    size_t k = 0;
    for (uint64_t id = 1; id <= s->o.n_nodes; id++)
        if ((s->nodes[id].r != NULL) == up)
            c[k++] = id;
    return k ? c[rsim_below(s, k)] : 0;
}

static void rsim_chaos_network(rsim *s)
{
    size_t n = s->o.n_nodes;
    switch (rsim_below(s, 4)) {
    case 0:
        rsim_heal(s);
        rsim_isolate(s, 1 + rsim_below(s, n));
        break;
    case 1: { /* split in two halves, random membership */
        uint64_t side[RSIM_MAX_NODES], ids[RSIM_MAX_NODES];
        for (size_t i = 0; i < n; i++)
            ids[i] = i + 1;
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = rsim_below(s, i + 1);
            uint64_t t = ids[i];
            ids[i] = ids[j];
            ids[j] = t;
        }
        size_t k = n / 2;
        memcpy(side, ids, k * sizeof(uint64_t));
        rsim_split(s, side, k);
        break;
    }
    case 2:
        rsim_ring(s);
        break;
    default:
        rsim_heal(s);
        break;
    }
}

static void rsim_chaos_conf(rsim *s, uint64_t leader)
{
    raft_t *lr = s->nodes[leader].r;
    if (!lr)
        return; /* it crashed part way through a Ready this tick */
    uint64_t v[RAFT_MAX_MEMBERS], l[RAFT_MAX_MEMBERS];
    size_t nv = raft_voters(lr, v, RAFT_MAX_MEMBERS);
    size_t nl = raft_learners(lr, l, RAFT_MAX_MEMBERS);
    uint64_t outsider = 0;
    for (uint64_t id = 1; id <= s->o.n_nodes && !outsider; id++) {
        bool member = false;
        for (size_t i = 0; i < nv; i++)
            member |= v[i] == id;
        for (size_t i = 0; i < nl; i++)
            member |= l[i] == id;
        if (!member)
            outsider = id;
    }
    uint64_t r = rsim_below(s, 3);
    if (r == 0 && outsider)
        (void)rsim_conf_change(s, leader, RAFT_CONF_ADD_LEARNER, outsider);
    else if (r == 1 && nl)
        (void)rsim_conf_change(s, leader, RAFT_CONF_ADD_VOTER, l[rsim_below(s, nl)]);
    else if (r == 2 && nv > 3)
        (void)rsim_conf_change(s, leader, RAFT_CONF_REMOVE, v[rsim_below(s, nv)]);
}

static int rsim_run_random_opts(uint64_t seed, bool witness, char *err, size_t errlen)
{
    uint64_t pick = seed;
    rsim_opts o;
    /* The scenario is a function of the seed alone. */
    uint64_t z = rsim_mix(seed, 0x5eed);
    size_t sizes[] = {3, 3, 3, 3, 5, 5, 5, 7};
    size_t n = sizes[z % 8];
    if (witness) {
        /* 2 voters + 1 witness mostly; 3 + 2 and 4 + 1 as well */
        static const uint32_t masks[] = {1u << 3, 1u << 3, 1u << 3, (1u << 4) | (1u << 5), 1u << 5};
        size_t k = (size_t)(z % 5);
        n = k < 3 ? 3 : 5;
        rsim_opts_default(&o, n, pick);
        o.witness_mask = masks[k];
    } else {
        rsim_opts_default(&o, n, pick);
    }
    z = rsim_mix(z, 1);
    bool joiners = !witness && z % 5 == 0 && n <= 5;
    if (joiners) {
        o.n_voters = n;
        o.n_nodes = n + 2;
    }
    z = rsim_mix(z, 2);
    o.pre_vote = z % 8 != 0;
    o.check_quorum = (z >> 8) % 8 != 0;
    o.heartbeat_tick = 1 + (uint32_t)((z >> 16) % 3);
    o.election_tick = 10 + (uint32_t)((z >> 24) % 3) * 5;
    o.drop_pm = (uint32_t)((z >> 32) % 4) * 50;
    o.dup_pm = (uint32_t)((z >> 40) % 3) * 30;
    o.max_delay = 5 + (uint32_t)((z >> 48) % 4) * 5;
    o.compact_every = (z >> 56) % 3 == 0 ? 0 : 4 + (uint32_t)((z >> 58) % 12);
    o.max_inflight = (z >> 62) ? 1024 : 4;
    o.max_msg_entries = 1 + (uint32_t)((z >> 20) % 8);
    o.crash_ready_pm = rsim_mix(z, 3) % 2 ? 4 : 0;
    z = rsim_mix(z, 4);
    o.snapshot_chunk = 1 + (uint32_t)(z % 24); /* 1..24 bytes: 3..64 chunks */
    o.snapshot_window = 1 + (uint32_t)((z >> 8) % 4);
    o.bad_install_pm = (z >> 16) % 3 == 0 ? 150 : 0;
    o.corrupt_chunk_pm = (z >> 24) % 3 == 0 ? 30 : 0;
    /* Quiescing on a third of the seeds, with the driver's node monitor
     * (without it a quiesced group would never notice a crashed leader). */
    o.quiesce = o.nodedown = rsim_mix(z, 5) % 3 == 0;
    /* Asynchronous persistence on half of the seeds, writes lagging 1 to
     * 40 units (up to 4 ticks) behind their Ready. */
    z = rsim_mix(z, 6);
    o.async_persist = z % 2 == 0;
    o.persist_lag = 1 + (uint32_t)((z >> 8) % 40);
    rsim *s = rsim_new(&o);
    if (!s) {
        snprintf(err, errlen, "rsim_new failed");
        return -1;
    }
    uint64_t counter = 0, ctx = 0;
    uint64_t chaos_ticks = 100 + rsim_below(s, 80);
    for (uint64_t t = 0; t < chaos_ticks && !s->err[0]; t++) {
        uint64_t leader = rsim_leader(s);
        uint64_t roll = rsim_below(s, 1000);
        if (leader && roll < 400) {
            uint8_t data[8];
            counter++;
            memcpy(data, &counter, 8);
            (void)rsim_propose(s, leader, data, 1 + rsim_below(s, 8), NULL);
        }
        roll = rsim_below(s, 1000);
        if (roll < 40)
            rsim_chaos_network(s);
        else if (roll < 55)
            rsim_crash(s, rsim_pick_up(s, true));
        else if (roll < 90)
            rsim_restart(s, rsim_pick_up(s, false));
        else if (roll < 100 && leader)
            (void)rsim_transfer(s, leader, 1 + rsim_below(s, o.n_nodes));
        else if (roll < 140 && leader)
            (void)rsim_read_index(s, leader, ++ctx);
        else if (roll < 160 && leader && joiners)
            rsim_chaos_conf(s, leader);
        rsim_run_ticks(s, 1);
    }
    /* Heal everything; a leader must emerge and bring every member up to
     * date (liveness once the network is good). */
    rsim_heal(s);
    rsim_set_faults(s, 0, 0);
    s->o.crash_ready_pm = 0;
    s->o.bad_install_pm = 0;
    s->o.corrupt_chunk_pm = 0;
    for (uint64_t id = 1; id <= o.n_nodes; id++)
        rsim_restart(s, id);
    uint64_t before = s->max_com;
    bool proposed = false;
    for (int i = 0; i < 40 && !proposed && !s->err[0]; i++) {
        rsim_run_until(s, rsim_converged, NULL, 150);
        uint64_t leader = rsim_leader(s);
        proposed = leader && rsim_propose(s, leader, "fin", 3, NULL) == RAFT_OK;
        if (!proposed)
            rsim_run_ticks(s, 5); /* e.g. a transfer is pending */
    }
    bool ok = proposed && rsim_run_until(s, rsim_converged, NULL, 300) && s->max_com > before;
    int rc = 0;
    if (s->err[0]) {
        snprintf(err, errlen, "%s", s->err);
        rc = -1;
    } else if (!ok) {
        uint64_t leader = rsim_leader(s);
        snprintf(err, errlen,
                 "liveness: no convergence after healing (n=%zu leader=%llu "
                 "max_committed=%llu)",
                 o.n_nodes, (unsigned long long)leader, (unsigned long long)s->max_com);
        rc = -1;
    }
    rsim_free(s);
    return rc;
}

int rsim_run_random(uint64_t seed, char *err, size_t errlen)
{
    return rsim_run_random_opts(seed, false, err, errlen);
}

int rsim_run_random_witness(uint64_t seed, char *err, size_t errlen)
{
    return rsim_run_random_opts(seed, true, err, errlen);
}

/* ---- one member driven by hand -------------------------------------------- */

raft_t *rsim_solo_new(uint64_t id, size_t n_voters, uint64_t seed, bool pre_vote, bool check_quorum)
{
    uint64_t voters[RAFT_MAX_MEMBERS];
    for (size_t i = 0; i < n_voters && i < RAFT_MAX_MEMBERS; i++)
        voters[i] = i + 1;
    raft_config cfg;
    raft_config_init(&cfg, id, seed);
    cfg.pre_vote = pre_vote;
    cfg.check_quorum = check_quorum;
    cfg.voters = voters;
    cfg.n_voters = n_voters;
    raft_t *r = raft_new(&cfg, NULL);
    if (r) {
        rsim_cap *cap = malloc(sizeof(*cap));
        if (!cap)
            abort();
        rsim_solo_drain(r, cap);
        free(cap);
    }
    return r;
}

void rsim_solo_drain(raft_t *r, rsim_cap *cap)
{
    memset(cap, 0, sizeof(*cap));
    while (raft_has_ready(r)) {
        raft_ready_t rd;
        if (raft_ready(r, &rd) != RAFT_OK)
            return;
        cap->n_readies++;
        if (rd.snapshot)
            cap->snapshot_index = rd.snapshot->index;
        if (rd.n_entries) {
            if (!cap->n_entries)
                cap->entries_from = rd.entries[0].index;
            cap->n_entries += rd.n_entries;
        }
        if (rd.hard_state_changed) {
            cap->hs_changed = true;
            cap->hs = rd.hard_state;
        }
        cap->must_sync |= rd.must_sync;
        for (size_t i = 0; i < rd.n_msgs && cap->n_msgs < 128; i++) {
            cap->early[cap->n_msgs] = i < rd.n_early;
            raft_msg *m = &cap->msgs[cap->n_msgs++];
            *m = rd.msgs[i];
            m->entries = NULL;
            m->mem = NULL;
            m->snapshot.voters = NULL;
            m->snapshot.learners = NULL;
            m->data = NULL;
        }
        if (rd.n_committed) {
            cap->n_committed += rd.n_committed;
            cap->committed_last = rd.committed[rd.n_committed - 1].index;
        }
        for (size_t i = 0; i < rd.n_events && cap->n_events < 32; i++)
            cap->events[cap->n_events++] = rd.events[i];
        for (size_t i = 0; i < rd.n_reads && cap->n_reads < 32; i++)
            cap->reads[cap->n_reads++] = rd.reads[i];
        raft_advance(r, &rd);
    }
}

const raft_msg *rsim_cap_find(const rsim_cap *c, uint8_t type, uint64_t to)
{
    for (size_t i = 0; i < c->n_msgs; i++)
        if (c->msgs[i].type == type && (to == 0 || c->msgs[i].to == to))
            return &c->msgs[i];
    return NULL;
}

size_t rsim_cap_count(const rsim_cap *c, uint8_t type)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n_msgs; i++)
        n += c->msgs[i].type == type;
    return n;
}

static uint64_t rsim_env_u64(const char *env, const char *what, uint64_t dflt)
{
    char name[96];
    snprintf(name, sizeof(name), "%s_%s", env, what);
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 0) : dflt;
}

uint64_t rsim_run_seeds(rsim_seeded_fn run, const char *env, uint64_t runs, const char *binary)
{
    char err[700];
    uint64_t one = rsim_env_u64(env, "SEED", 0);
    if (one) {
        int rc = run(one, err, sizeof(err));
        fprintf(stderr, "seed %llu: %s\n", (unsigned long long)one, rc ? err : "ok");
        return rc != 0;
    }
    runs = rsim_env_u64(env, "RUNS", runs);
    uint64_t base = rsim_env_u64(env, "BASE", 1), failures = 0;
    for (uint64_t seed = base; seed < base + runs; seed++)
        if (run(seed, err, sizeof(err)) != 0 && failures++ < 5)
            fprintf(stderr, "seed %llu: %s\n  replay: %s_SEED=%llu %s\n", (unsigned long long)seed,
                    err, env, (unsigned long long)seed, binary);
    if (failures)
        fprintf(stderr, "%llu of %llu seeded runs failed\n", (unsigned long long)failures,
                (unsigned long long)runs);
    return failures;
}

bool rsim_has_leader(rsim *s, void *ctx)
{
    (void)ctx;
    return rsim_leader(s) != 0;
}

bool rsim_has_other_leader(rsim *s, void *ctx)
{
    uint64_t l = rsim_leader(s);
    return l && l != *(const uint64_t *)ctx;
}
