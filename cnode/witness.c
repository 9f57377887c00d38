/*
 * witness.c — the C node's Raft witness member; see witness.h.
 */
#include "witness.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "etf.h"
#include "log.h"
#include "raft.h"
#include "witness_store.h"

#define WITNESS_MAX_PEERS RAFT_MAX_MEMBERS
#define WITNESS_MAX_MSG (RAFT_MSG_MAX_BYTES + 4096)

typedef struct wpeer {
    uint64_t id;
    char node[MAXATOMLEN_UTF8];
} wpeer;

typedef struct wgroup {
    char name[MAXATOMLEN_UTF8];
    char regname[MAXATOMLEN_UTF8 + sizeof WITNESS_MEMBER_PREFIX];
    raft_t *r;
    wstore *ws;
    wpeer peers[WITNESS_MAX_PEERS];
    size_t n_peers;
    long long next_tick_ms;
    int role;
    uint64_t leader;
    /* A vote request that arrived while the leader's lease held (the core
     * ignores those): kept to be stepped again once the leader's node is
     * seen down, which may be a moment later in the same poll round. */
    uint8_t held[256];
    size_t held_len;
    long long held_until_ms;
} wgroup;

struct witness {
    witness_config cfg;
    int lock_fd;
    uint64_t id;
    wgroup groups[WITNESS_MAX_GROUPS];
    size_t n_groups;
    int failed;
};

/* ---- md5 and the member id ------------------------------------------------- */

static uint32_t rotl32(uint32_t x, unsigned c)
{
    return (x << c) | (x >> (32 - c));
}

void witness_md5(const uint8_t *p, size_t len, uint8_t out[16])
{
    static const unsigned s[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                   5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                   4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                   6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};
    uint32_t k[64];
    for (int i = 0; i < 64; i++) /* RFC 1321: K[i] = floor(2^32 * |sin(i + 1)|) */
        k[i] = (uint32_t)(fabs(sin((double)(i + 1))) * 4294967296.0);
    uint32_t h[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    size_t total = ((len + 8) / 64 + 1) * 64;
    for (size_t off = 0; off < total; off += 64) {
        uint8_t blk[64];
        for (size_t i = 0; i < 64; i++) {
            size_t at = off + i;
            blk[i] = at < len ? p[at] : at == len ? 0x80 : 0;
        }
        if (off + 64 == total) {
            uint64_t bits = (uint64_t)len * 8;
            for (int i = 0; i < 8; i++)
                blk[56 + i] = (uint8_t)(bits >> (8 * i));
        }
        uint32_t m[16];
        for (int i = 0; i < 16; i++)
            m[i] = (uint32_t)blk[4 * i] | (uint32_t)blk[4 * i + 1] << 8 |
                   (uint32_t)blk[4 * i + 2] << 16 | (uint32_t)blk[4 * i + 3] << 24;
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
        for (int i = 0; i < 64; i++) {
            uint32_t f;
            int g;
            if (i < 16) {
                f = (b & c) | (~b & d);
                g = i;
            } else if (i < 32) {
                f = (d & b) | (~d & c);
                g = (5 * i + 1) % 16;
            } else if (i < 48) {
                f = b ^ c ^ d;
                g = (3 * i + 5) % 16;
            } else {
                f = c ^ (b | ~d);
                g = (7 * i) % 16;
            }
            f = f + a + k[i] + m[g];
            a = d;
            d = c;
            c = b;
            b = b + rotl32(f, s[i]);
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(h[i] >> (8 * j));
}

uint64_t witness_member_id(const char *node)
{
    uint8_t d[16];
    witness_md5((const uint8_t *)node, strlen(node), d);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | d[i];
    v >>= 2; /* <<Id:62, _:66>> */
    return v ? v : 1;
}

/* ---- peers -------------------------------------------------------------------- */

static const char *peer_node(const wgroup *g, uint64_t id)
{
    for (size_t i = 0; i < g->n_peers; i++)
        if (g->peers[i].id == id)
            return g->peers[i].node;
    return NULL;
}

/* A member's node, learned from its messages. The id must be the node's
 * member id: a message whose FromId and FromNode disagree is refused, so a
 * confused or forged sender cannot redirect another member's answers. */
static int learn_peer(wgroup *g, uint64_t id, const char *node)
{
    if (witness_member_id(node) != id)
        return -1;
    for (size_t i = 0; i < g->n_peers; i++)
        if (g->peers[i].id == id)
            return 0;
    if (g->n_peers == WITNESS_MAX_PEERS)
        memmove(g->peers, g->peers + 1, (WITNESS_MAX_PEERS - 1) * sizeof(*g->peers)), g->n_peers--;
    g->peers[g->n_peers].id = id;
    snprintf(g->peers[g->n_peers].node, sizeof g->peers[g->n_peers].node, "%s", node);
    g->n_peers++;
    return 0;
}

/* ---- the Ready loop ------------------------------------------------------------- */

static void send_msg(witness *w, wgroup *g, const raft_msg *m)
{
    const char *node = peer_node(g, m->to);
    if (!node) {
        log_limited(LOGK_NOT_AN_ANSWER, LOG_WARN, "witness %s: no node known for member %llu",
                    g->name, (unsigned long long)m->to);
        return;
    }
    size_t need = raft_msg_encoded_size(m), len = 0;
    uint8_t *buf = malloc(need ? need : 1);
    if (!buf)
        return;
    ei_x_buff x;
    if (raft_msg_encode(m, buf, need, &len) == RAFT_OK && ei_x_new_with_version(&x) == 0) {
        if (ei_x_encode_tuple_header(&x, 5) == 0 && ei_x_encode_atom(&x, "synod_raft") == 0 &&
            ei_x_encode_atom(&x, g->name) == 0 && ei_x_encode_ulonglong(&x, w->id) == 0 &&
            ei_x_encode_atom(&x, w->cfg.self) == 0 && ei_x_encode_binary(&x, buf, (long)len) == 0)
            (void)w->cfg.send(w->cfg.send_ctx, node, g->regname, &x);
        ei_x_free(&x);
    }
    free(buf);
}

static void fail(witness *w, wgroup *g, const char *what)
{
    LOG_E("witness %s: %s: %s; stopping (promises cannot be kept)", g->name, what,
          wstore_error(g->ws));
    w->failed = 1;
}

static void note_events(wgroup *g, const raft_ready_t *rd)
{
    for (size_t i = 0; i < rd->n_events; i++) {
        const raft_event *ev = &rd->events[i];
        g->role = ev->new_role;
        g->leader = ev->new_leader;
        LOG_I("witness %s: term %llu, leader %llu (%s)", g->name, (unsigned long long)ev->term,
              (unsigned long long)ev->new_leader, raft_cause_name(ev->cause));
    }
}

static void drain(witness *w, wgroup *g)
{
    for (int guard = 0; !w->failed && raft_has_ready(g->r) && guard < 1000; guard++) {
        raft_ready_t rd;
        int rc = raft_ready(g->r, &rd);
        if (rc != RAFT_OK) {
            LOG_E("witness %s: raft_ready: %s", g->name, raft_strerror(rc));
            w->failed = 1;
            return;
        }
        for (size_t i = 0; i < rd.n_early; i++)
            send_msg(w, g, &rd.msgs[i]);
        if (wstore_write_ready(g->ws, &rd) != WSTORE_OK) {
            fail(w, g, "write");
            return;
        }
        if (rd.must_sync && wstore_sync(g->ws) != WSTORE_OK) {
            fail(w, g, "fsync");
            return;
        }
        for (size_t i = rd.n_early; i < rd.n_msgs; i++)
            send_msg(w, g, &rd.msgs[i]);
        /* apply: nothing (a witness has no state machine) */
        note_events(g, &rd);
        /* A snapshot's chunks: a witness keeps none of its bytes, only the
         * metadata the core installs, so the last chunk completes it at
         * once (there is no file to fsync or check). Read before
         * raft_advance, which releases the Ready. */
        bool got = false;
        uint64_t snap_index = 0, snap_term = 0;
        for (size_t i = 0; i < rd.n_chunks; i++)
            if (rd.chunks[i].last) {
                got = true;
                snap_index = rd.chunks[i].index;
                snap_term = rd.chunks[i].term;
            }
        raft_advance(g->r, &rd);
        if (got && raft_snapshot_received(g->r, snap_index, snap_term, true) != RAFT_OK)
            LOG_W("witness %s: snapshot %llu not taken", g->name, (unsigned long long)snap_index);
    }
    raft_status st;
    raft_status_get(g->r, &st);
    if (st.applied >= st.first_index + w->cfg.compact_every) {
        if (raft_compact(g->r, st.applied, 0, 0) == RAFT_OK &&
            wstore_compact(g->ws, raft_snapshot_get(g->r)) != WSTORE_OK)
            fail(w, g, "compaction");
    }
}

/* ---- opening ------------------------------------------------------------------ */

static int open_group(witness *w, wgroup *g, const char *name, char *why, size_t whylen)
{
    if (strlen(name) == 0 || strlen(name) > 255) {
        snprintf(why, whylen, "group name %s must be 1..255 characters", name);
        return WSTORE_ERR_INVALID;
    }
    snprintf(g->name, sizeof g->name, "%s", name);
    snprintf(g->regname, sizeof g->regname, "%s%s", WITNESS_MEMBER_PREFIX, name);
    int rc = wstore_open(w->cfg.data_dir, name, &g->ws, why, whylen);
    if (rc != WSTORE_OK)
        return rc;
    raft_config c;
    unsigned char seed[8];
    randombytes_buf(seed, sizeof seed);
    uint64_t s = 0;
    memcpy(&s, seed, sizeof s);
    raft_config_init(&c, w->id, s);
    c.election_tick = w->cfg.election_tick;
    c.heartbeat_tick = w->cfg.heartbeat_tick;
    c.witness = true;
    raft_snapshot snap;
    wstore_state(g->ws, &c.hard_state, &snap, &c.entries, &c.n_entries);
    c.snapshot = snap.index ? &snap : NULL;
    /* Nothing recovered: it starts with no voters, like a member that joins;
     * the leader brings it up to date (the bootstrap entry included). */
    int err = 0;
    g->r = raft_new(&c, &err);
    if (!g->r) {
        snprintf(why, whylen, "%s: the recovered state is refused by the Raft core: %s", name,
                 raft_strerror(err));
        return err == RAFT_ERR_NOMEM ? WSTORE_ERR_NOMEM : WSTORE_ERR_CORRUPT;
    }
    raft_status st;
    raft_status_get(g->r, &st);
    LOG_I("witness %s: member %llu, term %llu, log %llu..%llu%s", name, (unsigned long long)w->id,
          (unsigned long long)st.term, (unsigned long long)st.first_index,
          (unsigned long long)st.last_index, wstore_torn(g->ws) ? " (torn tail truncated)" : "");
    drain(w, g);
    return WSTORE_OK;
}

int witness_open(witness **out, const witness_config *cfg, char *why, size_t whylen)
{
    *out = NULL;
    if (cfg->n_groups == 0 || cfg->n_groups > WITNESS_MAX_GROUPS || !cfg->data_dir ||
        cfg->election_tick <= cfg->heartbeat_tick || cfg->tick_ms == 0) {
        snprintf(why, whylen, "bad witness configuration");
        return WSTORE_ERR_INVALID;
    }
    witness *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(why, whylen, "out of memory");
        return WSTORE_ERR_NOMEM;
    }
    w->cfg = *cfg;
    if (!w->cfg.compact_every)
        w->cfg.compact_every = 1000;
    w->id = witness_member_id(cfg->self);
    int rc = wstore_lock_dir(cfg->data_dir, &w->lock_fd, why, whylen);
    if (rc != WSTORE_OK) {
        free(w);
        return rc;
    }
    for (size_t i = 0; i < cfg->n_groups; i++) {
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->groups[i], cfg->groups[j]) == 0) {
                snprintf(why, whylen, "group %s named twice", cfg->groups[i]);
                witness_close(w);
                return WSTORE_ERR_INVALID;
            }
        rc = open_group(w, &w->groups[w->n_groups], cfg->groups[i], why, whylen);
        if (w->groups[w->n_groups].ws)
            w->n_groups++;
        if (rc != WSTORE_OK) {
            witness_close(w);
            return rc;
        }
    }
    *out = w;
    return WSTORE_OK;
}

void witness_close(witness *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_groups; i++) {
        raft_free(w->groups[i].r);
        wstore_close(w->groups[i].ws);
    }
    wstore_unlock_dir(w->lock_fd);
    free(w);
}

/* ---- inputs ------------------------------------------------------------------- */

static wgroup *group_by_regname(witness *w, const char *toname)
{
    for (size_t i = 0; i < w->n_groups; i++)
        if (strcmp(w->groups[i].regname, toname) == 0)
            return &w->groups[i];
    return NULL;
}

int witness_wants(const witness *w, const char *toname)
{
    return w && group_by_regname((witness *)w, toname) != NULL;
}

/* Decodes and steps one Raft message from member `from`. A vote request of
 * a higher term that arrives while a leader is known is also kept (hold),
 * in case the lease is about to end because the leader's node is down. */
static int step_bin(witness *w, wgroup *g, const uint8_t *bin, size_t len, uint64_t from, int hold)
{
    raft_msg m;
    int rc = raft_msg_decode(bin, len, &m);
    if (rc != RAFT_OK)
        return rc;
    raft_status st;
    raft_status_get(g->r, &st);
    if (m.from != from || m.to != w->id) {
        rc = RAFT_ERR_INVALID;
    } else {
        if (hold && (m.type == RAFT_MSG_PREVOTE || m.type == RAFT_MSG_VOTE) && m.term > st.term &&
            st.leader != 0 && len <= sizeof g->held) {
            memcpy(g->held, bin, len);
            g->held_len = len;
            g->held_until_ms = monotonic_ms() + (long long)w->cfg.tick_ms * w->cfg.election_tick;
        }
        rc = raft_step(g->r, &m);
    }
    raft_msg_release(&m);
    return rc;
}

/* Steps a held vote request again once the leader is forgotten. */
static void retry_held(witness *w, wgroup *g, long long now_ms)
{
    if (!g->held_len)
        return;
    if (now_ms > g->held_until_ms) {
        g->held_len = 0;
        return;
    }
    raft_status st;
    raft_status_get(g->r, &st);
    if (st.leader != 0)
        return;
    raft_msg m;
    if (raft_msg_decode(g->held, g->held_len, &m) == RAFT_OK) {
        uint64_t from = m.from;
        raft_msg_release(&m);
        if (step_bin(w, g, g->held, g->held_len, from, 0) == RAFT_OK)
            drain(w, g);
    }
    g->held_len = 0;
}

void witness_handle(witness *w, const char *toname, const char *buf, int len)
{
    wgroup *g = group_by_regname(w, toname);
    if (!g || w->failed)
        return;
    if (len <= 0 || (size_t)len > WITNESS_MAX_MSG) {
        log_limited(LOGK_TOO_LARGE, LOG_WARN, "witness %s: dropped a %d-byte message", g->name,
                    len);
        return;
    }
    etf_error e = etf_check_message((const uint8_t *)buf, (size_t)len, ETF_DEFAULT_MAX_DEPTH);
    if (e != ETF_OK) {
        log_limited(LOGK_MALFORMED, LOG_WARN, "witness %s: dropped a malformed message", g->name);
        return;
    }
    int idx = 0, arity = 0, type = 0, size = 0;
    char tag[MAXATOMLEN_UTF8], group[MAXATOMLEN_UTF8], from_node[MAXATOMLEN_UTF8];
    unsigned long long from_id = 0;
    if (ei_decode_version(buf, &idx, NULL) != 0 || ei_decode_tuple_header(buf, &idx, &arity) != 0 ||
        arity != 5 || ei_decode_atom(buf, &idx, tag) != 0 || strcmp(tag, "synod_raft") != 0 ||
        ei_decode_atom(buf, &idx, group) != 0 || ei_decode_ulonglong(buf, &idx, &from_id) != 0 ||
        ei_decode_atom(buf, &idx, from_node) != 0 || ei_get_type(buf, &idx, &type, &size) != 0 ||
        type != ERL_BINARY_EXT) {
        log_limited(LOGK_MALFORMED, LOG_WARN,
                    "witness %s: dropped a message that is not {synod_raft, Group, FromId, "
                    "FromNode, Binary}",
                    g->name);
        return;
    }
    if (strcmp(group, g->name) != 0 || from_id == 0 || from_id >= RAFT_INDEX_MAX ||
        learn_peer(g, from_id, from_node) != 0) {
        log_limited(LOGK_MALFORMED, LOG_WARN,
                    "witness %s: dropped a message for group %s from %s (id %llu): wrong group "
                    "or an id that is not that node's",
                    g->name, group, from_node, from_id);
        return;
    }
    uint8_t *bin = malloc((size_t)size + 1);
    long blen = 0;
    if (!bin)
        return;
    if (ei_decode_binary(buf, &idx, bin, &blen) != 0 || idx != len) {
        free(bin);
        log_limited(LOGK_MALFORMED, LOG_WARN, "witness %s: dropped a message with trailing data",
                    g->name);
        return;
    }
    int rc = step_bin(w, g, bin, (size_t)blen, from_id, 1);
    free(bin);
    if (rc != RAFT_OK) {
        log_limited(LOGK_MALFORMED, LOG_WARN, "witness %s: refused a Raft message from %s: %s",
                    g->name, from_node, raft_strerror(rc));
        if (rc == RAFT_ERR_NOMEM)
            w->failed = 1;
        return;
    }
    drain(w, g);
}

void witness_tick(witness *w, long long now_ms)
{
    if (!w || w->failed)
        return;
    for (size_t i = 0; i < w->n_groups; i++) {
        wgroup *g = &w->groups[i];
        retry_held(w, g, now_ms);
        if (w->failed)
            return;
        if (g->next_tick_ms == 0)
            g->next_tick_ms = now_ms;
        if (now_ms < g->next_tick_ms)
            continue;
        g->next_tick_ms += w->cfg.tick_ms;
        if (g->next_tick_ms <= now_ms) /* fell behind (e.g. a slow fsync): no burst */
            g->next_tick_ms = now_ms + w->cfg.tick_ms;
        if (raft_tick(g->r) != RAFT_OK) {
            w->failed = 1;
            return;
        }
        drain(w, g);
    }
}

int witness_timeout_ms(const witness *w, long long now_ms, int cap)
{
    if (!w)
        return cap;
    long long best = cap;
    for (size_t i = 0; i < w->n_groups; i++) {
        long long d = w->groups[i].next_tick_ms - now_ms;
        if (d < best)
            best = d;
    }
    return best < 0 ? 0 : (int)best;
}

void witness_node_down(witness *w, const char *node)
{
    if (!w || w->failed)
        return;
    for (size_t i = 0; i < w->n_groups; i++) {
        wgroup *g = &w->groups[i];
        const char *ln = g->leader ? peer_node(g, g->leader) : NULL;
        if (ln && strcmp(ln, node) == 0 && raft_forget_leader(g->r) == RAFT_OK)
            drain(w, g);
    }
}

int witness_failed(const witness *w)
{
    return w && w->failed;
}

size_t witness_groups(const witness *w, witness_group_info *out, size_t cap)
{
    for (size_t i = 0; i < w->n_groups && i < cap; i++) {
        raft_status st;
        raft_status_get(w->groups[i].r, &st);
        out[i] = (witness_group_info){w->groups[i].name, st.id,         st.term, st.leader,
                                      st.commit,         st.last_index, st.role};
    }
    return w->n_groups;
}
