/* test_raft_codec.c -- the Raft wire format: round trips, every truncation,
 * caps, semantic rejections, and seeded garbage. Also replays the fuzzer's
 * corpus and regressions (tests run from the repository root). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft.h"
#include "raft_internal.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static const uint8_t conf_add[] = {RAFT_CONF_ADD_LEARNER, 7};
static raft_entry sample_entries[3];
static const uint64_t snap_voters[] = {1, 2, 3};
static const uint64_t snap_learners[] = {9};
static const uint8_t snap_data[] = "state-machine-bytes";

/* One message of every type, with every field it carries non-trivial. */
static size_t sample_msgs(raft_msg *out)
{
    static const uint8_t d1[] = "hello";
    sample_entries[0] =
        (raft_entry){.term = 4, .index = 301, .type = RAFT_ENTRY_NORMAL, .data = d1, .len = 5};
    sample_entries[1] = (raft_entry){.term = 5, .index = 302, .type = RAFT_ENTRY_NOOP};
    sample_entries[2] = (raft_entry){.term = 5,
                                     .index = 303,
                                     .type = RAFT_ENTRY_CONF,
                                     .data = conf_add,
                                     .len = sizeof(conf_add)};
    size_t n = 0;
    memset(out, 0, 12 * sizeof(*out));
    out[n++] = (raft_msg){
        .type = RAFT_MSG_PREVOTE, .from = 1, .to = 2, .term = 6, .index = 300, .log_term = 5};
    out[n++] = (raft_msg){
        .type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 6, .flags = RAFT_FLAG_REJECT};
    out[n++] = (raft_msg){.type = RAFT_MSG_VOTE,
                          .from = 1,
                          .to = 3,
                          .term = 6,
                          .index = 300,
                          .log_term = 5,
                          .flags = RAFT_FLAG_TRANSFER};
    out[n++] = (raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 3, .to = 1, .term = 6};
    out[n++] = (raft_msg){.type = RAFT_MSG_APPEND,
                          .from = 1,
                          .to = 2,
                          .term = 5,
                          .index = 300,
                          .log_term = 4,
                          .commit = 299,
                          .entries = sample_entries,
                          .n_entries = 3};
    out[n++] = (raft_msg){.type = RAFT_MSG_APPEND, .from = 1, .to = 2, .term = 1};
    out[n++] = (raft_msg){.type = RAFT_MSG_APPEND_RESP,
                          .from = 2,
                          .to = 1,
                          .term = 5,
                          .index = 300,
                          .hint = 120,
                          .log_term = 3,
                          .flags = RAFT_FLAG_REJECT};
    out[n++] = (raft_msg){
        .type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 5, .commit = 1u << 30, .ctx = 77};
    out[n++] =
        (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP, .from = 2, .to = 1, .term = 5, .ctx = 77};
    out[n] = (raft_msg){.type = RAFT_MSG_SNAPSHOT, .from = 1, .to = 2, .term = 9};
    out[n].snapshot = (raft_snapshot){.index = 1000,
                                      .term = 8,
                                      .voters = snap_voters,
                                      .n_voters = 3,
                                      .learners = snap_learners,
                                      .n_learners = 1,
                                      .size = (uint64_t)1 << 40,
                                      .checksum = 0xfeedbeef};
    out[n].offset = ((uint64_t)1 << 40) - sizeof(snap_data);
    out[n].data = snap_data;
    out[n].len = sizeof(snap_data);
    n++;
    out[n++] = (raft_msg){.type = RAFT_MSG_SNAPSHOT_RESP,
                          .from = 2,
                          .to = 1,
                          .term = 9,
                          .index = 1000,
                          .log_term = 8,
                          .hint = 3u << 20,
                          .flags = RAFT_FLAG_REJECT};
    out[n++] =
        (raft_msg){.type = RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 2, .term = RAFT_INDEX_MAX - 1};
    return n;
}

static uint8_t *encode(const raft_msg *m, size_t *len)
{
    size_t cap = raft_msg_encoded_size(m);
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    assert_int_equal(raft_msg_encode(m, buf, cap, len), RAFT_OK);
    assert_int_equal(*len, cap);
    return buf;
}

static void assert_msg_equal(const raft_msg *a, const raft_msg *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->from, b->from);
    assert_int_equal(a->to, b->to);
    assert_int_equal(a->term, b->term);
    assert_int_equal(a->index, b->index);
    assert_int_equal(a->log_term, b->log_term);
    assert_int_equal(a->commit, b->commit);
    assert_int_equal(a->hint, b->hint);
    assert_int_equal(a->ctx, b->ctx);
    assert_int_equal(a->n_entries, b->n_entries);
    for (size_t i = 0; i < a->n_entries; i++) {
        assert_int_equal(a->entries[i].term, b->entries[i].term);
        assert_int_equal(a->entries[i].index, b->entries[i].index);
        assert_int_equal(a->entries[i].type, b->entries[i].type);
        assert_int_equal(a->entries[i].len, b->entries[i].len);
        if (a->entries[i].len)
            assert_memory_equal(a->entries[i].data, b->entries[i].data, a->entries[i].len);
    }
    const raft_snapshot *x = &a->snapshot, *y = &b->snapshot;
    assert_int_equal(x->index, y->index);
    assert_int_equal(x->term, y->term);
    assert_int_equal(x->n_voters, y->n_voters);
    assert_int_equal(x->n_learners, y->n_learners);
    assert_int_equal(x->size, y->size);
    assert_int_equal(x->checksum, y->checksum);
    assert_int_equal(a->offset, b->offset);
    assert_int_equal(a->len, b->len);
    for (size_t i = 0; i < x->n_voters; i++)
        assert_int_equal(x->voters[i], y->voters[i]);
    for (size_t i = 0; i < x->n_learners; i++)
        assert_int_equal(x->learners[i], y->learners[i]);
    if (a->len)
        assert_memory_equal(a->data, b->data, a->len);
}

static void test_roundtrip_every_type(void **state)
{
    (void)state;
    raft_msg msgs[12];
    size_t n = sample_msgs(msgs);
    bool seen[RAFT_MSG_TYPE_MAX + 1] = {false};
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *buf = encode(&msgs[i], &len);
        assert_int_equal(buf[0], RAFT_WIRE_VERSION);
        raft_msg d;
        assert_int_equal(raft_msg_decode(buf, len, &d), RAFT_OK);
        assert_msg_equal(&msgs[i], &d);
        /* Zero copy: entry bytes point into the input buffer. */
        for (size_t k = 0; k < d.n_entries; k++)
            if (d.entries[k].len)
                assert_true(d.entries[k].data >= buf && d.entries[k].data < buf + len);
        /* Canonical: re-encoding gives the same bytes. */
        size_t len2;
        uint8_t *buf2 = encode(&d, &len2);
        assert_int_equal(len, len2);
        assert_memory_equal(buf, buf2, len);
        seen[msgs[i].type] = true;
        raft_msg_release(&d);
        free(buf);
        free(buf2);
    }
    for (int t = 1; t <= RAFT_MSG_TYPE_MAX; t++)
        assert_true(seen[t]);
}

/* A snapshot chunk: every byte is covered by its CRC-32C (a flipped bit
 * anywhere in the chunk is refused), the chunk must lie inside the snapshot,
 * and a chunk is capped at RAFT_SNAPSHOT_MAX_CHUNK. */
static void test_snapshot_chunk_checks(void **state)
{
    (void)state;
    raft_msg msgs[12];
    size_t n = sample_msgs(msgs);
    raft_msg *snap = NULL;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].type == RAFT_MSG_SNAPSHOT)
            snap = &msgs[i];
    assert_non_null(snap);
    size_t len;
    uint8_t *buf = encode(snap, &len);
    for (size_t k = 0; k < snap->len; k++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[len - 1 - k] ^= (uint8_t)(1u << bit);
            raft_msg d;
            assert_int_equal(raft_msg_decode(buf, len, &d), RAFT_ERR_CHECKSUM);
            buf[len - 1 - k] ^= (uint8_t)(1u << bit);
        }
    }
    /* The CRC itself damaged. */
    buf[len - 1 - snap->len] ^= 1;
    raft_msg d;
    assert_int_equal(raft_msg_decode(buf, len, &d), RAFT_ERR_CHECKSUM);
    free(buf);
    /* Known CRC-32C check value, and the sliced loop against a bitwise
     * reference at every length and alignment up to 300 bytes. */
    assert_int_equal(raft_crc32c((const uint8_t *)"123456789", 9), 0xe3069283u);
    uint8_t bytes[320];
    uint64_t seed = 7;
    for (size_t i = 0; i < sizeof(bytes); i++)
        bytes[i] = (uint8_t)rng_next(&seed);
    for (size_t off = 0; off < 8; off++) {
        for (size_t k = 0; k <= 300; k++) {
            uint32_t c = 0xffffffffu;
            for (size_t i = 0; i < k; i++) {
                c ^= bytes[off + i];
                for (int b = 0; b < 8; b++)
                    c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
            }
            assert_int_equal(raft_crc32c(bytes + off, k), c ^ 0xffffffffu);
        }
    }
    raft_msg m = *snap;
    m.offset = m.snapshot.size - m.len + 1; /* past the end */
    uint8_t out[256];
    assert_int_equal(raft_msg_encode(&m, out, sizeof(out), &len), RAFT_ERR_INVALID);
    m.offset = 0;
    m.snapshot.size = 3; /* a chunk bigger than its snapshot */
    assert_int_equal(raft_msg_encode(&m, out, sizeof(out), &len), RAFT_ERR_INVALID);
    m = *snap;
    m.len = RAFT_SNAPSHOT_MAX_CHUNK + 1;
    assert_int_equal(raft_msg_check(&m), RAFT_ERR_TOO_LARGE);
    m = *snap;
    m.data = NULL; /* a chunk the driver did not fill in */
    assert_int_equal(raft_msg_check(&m), RAFT_ERR_INVALID);
    /* Chunk fields on another type are refused. */
    raft_msg hb = {.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 3, .offset = 1};
    assert_int_equal(raft_msg_check(&hb), RAFT_ERR_INVALID);
    raft_msg resp = {.type = RAFT_MSG_SNAPSHOT_RESP, .from = 2, .to = 1, .term = 3};
    assert_int_equal(raft_msg_check(&resp), RAFT_ERR_INVALID); /* no snapshot index */
    /* An empty chunk (a snapshot of zero bytes) round-trips. */
    m = *snap;
    m.snapshot.size = 0;
    m.offset = 0;
    m.data = NULL;
    m.len = 0;
    buf = encode(&m, &len);
    assert_int_equal(raft_msg_decode(buf, len, &d), RAFT_OK);
    assert_int_equal(d.len, 0);
    assert_null(d.data);
    raft_msg_release(&d);
    free(buf);
}

static void test_heartbeat_is_compact(void **state)
{
    (void)state;
    raft_msg m = {.type = RAFT_MSG_HEARTBEAT, .from = 1, .to = 2, .term = 3, .commit = 100};
    /* version, type, flags, then five small varints (one of them two bytes). */
    assert_int_equal(raft_msg_encoded_size(&m), 3 + 1 + 1 + 1 + 1 + 1);
}

static void test_every_truncation_fails(void **state)
{
    (void)state;
    raft_msg msgs[12];
    size_t n = sample_msgs(msgs);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *buf = encode(&msgs[i], &len);
        for (size_t cut = 0; cut < len; cut++) {
            /* A heap copy of exactly `cut` bytes: ASan catches any overread. */
            uint8_t *part = malloc(cut ? cut : 1);
            assert_non_null(part);
            memcpy(part, buf, cut);
            raft_msg d;
            int rc = raft_msg_decode(cut ? part : NULL, cut, &d);
            assert_int_not_equal(rc, RAFT_OK);
            assert_null(d.mem);
            assert_int_equal(d.type, 0);
            free(part);
        }
        free(buf);
    }
}

static void test_trailing_and_version(void **state)
{
    (void)state;
    raft_msg msgs[12];
    sample_msgs(msgs);
    size_t len;
    uint8_t *buf = encode(&msgs[4], &len);
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, buf, len);
    longer[len] = 0;
    raft_msg d;
    assert_int_equal(raft_msg_decode(longer, len + 1, &d), RAFT_ERR_TRAILING);
    buf[0] = 2;
    assert_int_equal(raft_msg_decode(buf, len, &d), RAFT_ERR_VERSION);
    buf[0] = 0;
    assert_int_equal(raft_msg_decode(buf, len, &d), RAFT_ERR_VERSION);
    free(buf);
    free(longer);
}

static void test_varints_must_be_canonical(void **state)
{
    (void)state;
    /* TIMEOUT_NOW from 1 to 2, term 3, with `from` written overlong. */
    const uint8_t good[] = {1, RAFT_MSG_TIMEOUT_NOW, 0, 1, 3, 2};
    const uint8_t overlong[] = {1, RAFT_MSG_TIMEOUT_NOW, 0, 0x81, 0x00, 3, 2};
    const uint8_t eleven[] = {1,    RAFT_MSG_TIMEOUT_NOW,
                              0,    0xff,
                              0xff, 0xff,
                              0xff, 0xff,
                              0xff, 0xff,
                              0xff, 0xff,
                              0xff, 0x01,
                              3,    2};
    const uint8_t over64[] = {
        1, RAFT_MSG_TIMEOUT_NOW, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 3,
        2};
    raft_msg d;
    assert_int_equal(raft_msg_decode(good, sizeof(good), &d), RAFT_OK);
    raft_msg_release(&d);
    assert_int_equal(raft_msg_decode(overlong, sizeof(overlong), &d), RAFT_ERR_INVALID);
    assert_int_equal(raft_msg_decode(eleven, sizeof(eleven), &d), RAFT_ERR_INVALID);
    assert_int_equal(raft_msg_decode(over64, sizeof(over64), &d), RAFT_ERR_INVALID);
}

static void test_caps(void **state)
{
    (void)state;
    uint8_t buf[64];
    raft_msg d;
    /* APPEND claiming RAFT_MSG_MAX_ENTRIES + 1 entries. */
    size_t n = 0;
    buf[n++] = 1;
    buf[n++] = RAFT_MSG_APPEND;
    buf[n++] = 0;
    n += varint_put(buf + n, 1);
    n += varint_put(buf + n, 2);
    n += varint_put(buf + n, 2);
    n += varint_put(buf + n, 0);
    n += varint_put(buf + n, 0);
    n += varint_put(buf + n, 0);
    size_t count_at = n;
    n += varint_put(buf + n, RAFT_MSG_MAX_ENTRIES + 1);
    assert_int_equal(raft_msg_decode(buf, n, &d), RAFT_ERR_TOO_LARGE);
    /* A plausible count with no bytes behind it: refused before allocating. */
    n = count_at + varint_put(buf + count_at, 4000);
    assert_int_equal(raft_msg_decode(buf, n, &d), RAFT_ERR_TRUNCATED);
    /* One entry whose length is over the cap. */
    n = count_at + varint_put(buf + count_at, 1);
    buf[n++] = RAFT_ENTRY_NORMAL;
    n += varint_put(buf + n, 1);
    n += varint_put(buf + n, RAFT_ENTRY_MAX_DATA + 1);
    assert_int_equal(raft_msg_decode(buf, n, &d), RAFT_ERR_TOO_LARGE);
    /* SNAPSHOT with too many members. */
    n = 0;
    buf[n++] = 1;
    buf[n++] = RAFT_MSG_SNAPSHOT;
    buf[n++] = 0;
    n += varint_put(buf + n, 1);
    n += varint_put(buf + n, 2);
    n += varint_put(buf + n, 2);
    n += varint_put(buf + n, 10);
    n += varint_put(buf + n, 1);
    n += varint_put(buf + n, RAFT_MAX_MEMBERS + 1);
    assert_int_equal(raft_msg_decode(buf, n, &d), RAFT_ERR_TOO_LARGE);
    /* Buffer over the message cap. */
    assert_int_equal(raft_msg_decode(buf, (size_t)RAFT_MSG_MAX_BYTES + 1, &d), RAFT_ERR_TOO_LARGE);
}

static void test_semantic_rejections(void **state)
{
    (void)state;
    raft_msg msgs[12];
    sample_msgs(msgs);
    raft_msg base = msgs[4]; /* APPEND with three entries */
    raft_entry ents[3];
    memcpy(ents, sample_entries, sizeof(ents));
    size_t len;
    uint8_t buf[256];
    int rc;
#define REJECT(stmt)                                                                               \
    do {                                                                                           \
        raft_msg m = base;                                                                         \
        memcpy(ents, sample_entries, sizeof(ents));                                                \
        m.entries = ents;                                                                          \
        stmt;                                                                                      \
        rc = raft_msg_check(&m);                                                                   \
        assert_int_not_equal(rc, RAFT_OK);                                                         \
        assert_int_not_equal(raft_msg_encode(&m, buf, sizeof(buf), &len), RAFT_OK);                \
    } while (0)
    REJECT(m.from = 0);
    REJECT(m.to = 0);
    REJECT(m.to = m.from);
    REJECT(m.term = 0);
    REJECT(m.type = 0);
    REJECT(m.type = RAFT_MSG_TYPE_MAX + 1);
    REJECT(m.flags = 0x80);
    REJECT(m.log_term = m.term + 1);
    REJECT(m.term = RAFT_INDEX_MAX);
    REJECT(ents[1].term = 3);               /* terms decrease */
    REJECT(ents[2].term = 6);               /* above the message term */
    REJECT(ents[1].index = 7);              /* not consecutive */
    REJECT(ents[0].type = 3);               /* unknown entry type */
    REJECT(ents[0].type = RAFT_ENTRY_CONF); /* conf entry with bad data */
    REJECT(m.log_term = 0);                 /* prev index > 0 with term 0 */
    REJECT(m.type = RAFT_MSG_HEARTBEAT);    /* entries on a heartbeat */
    REJECT(m.n_entries = RAFT_MSG_MAX_ENTRIES + 1);
#undef REJECT
    raft_msg s = msgs[9]; /* SNAPSHOT */
    uint64_t dup[] = {1, 1};
    s.snapshot.voters = dup;
    s.snapshot.n_voters = 2;
    assert_int_equal(raft_msg_check(&s), RAFT_ERR_INVALID);
    s = msgs[9];
    s.snapshot.n_voters = 0;
    assert_int_equal(raft_msg_check(&s), RAFT_ERR_INVALID);
    s = msgs[9];
    s.snapshot.term = s.term + 1;
    assert_int_equal(raft_msg_check(&s), RAFT_ERR_INVALID);
    raft_msg r = msgs[6]; /* APPEND_RESP reject: hint above the rejected index */
    r.hint = r.index + 1;
    assert_int_equal(raft_msg_check(&r), RAFT_ERR_INVALID);
}

static void test_encode_needs_room(void **state)
{
    (void)state;
    raft_msg msgs[12];
    sample_msgs(msgs);
    uint8_t buf[8];
    size_t len = 0;
    assert_int_equal(raft_msg_encode(&msgs[4], buf, sizeof(buf), &len), RAFT_ERR_TRUNCATED);
    assert_int_equal(len, 0);
}

/* Decoding must never crash or read out of bounds, and anything it accepts
 * must re-encode to the same bytes. */
static void check_garbage(const uint8_t *buf, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    raft_msg d;
    if (raft_msg_decode(len ? copy : NULL, len, &d) == RAFT_OK) {
        size_t n = raft_msg_encoded_size(&d), out_len = 0;
        uint8_t *again = malloc(n);
        assert_non_null(again);
        assert_int_equal(raft_msg_encode(&d, again, n, &out_len), RAFT_OK);
        assert_int_equal(out_len, len);
        assert_memory_equal(again, buf, len);
        free(again);
        raft_msg_release(&d);
    }
    free(copy);
}

static void test_seeded_garbage_and_mutations(void **state)
{
    (void)state;
    uint64_t seed = 0xc0dec;
    uint8_t buf[96];
    for (int i = 0; i < 20000; i++) {
        size_t len = rng_next(&seed) % sizeof(buf);
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)rng_next(&seed);
        if (len > 0)
            buf[0] = 1; /* get past the version byte most of the time */
        if (len > 1)
            buf[1] = (uint8_t)(1 + rng_next(&seed) % RAFT_MSG_TYPE_MAX);
        check_garbage(buf, len);
    }
    raft_msg msgs[12];
    size_t n = sample_msgs(msgs);
    size_t accepted = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *enc = encode(&msgs[i], &len);
        for (int k = 0; k < 2000; k++) {
            uint8_t *mut = malloc(len);
            assert_non_null(mut);
            memcpy(mut, enc, len);
            int flips = 1 + (int)(rng_next(&seed) % 3);
            for (int f = 0; f < flips; f++)
                mut[rng_next(&seed) % len] ^= (uint8_t)(1u << (rng_next(&seed) % 8));
            raft_msg d;
            if (raft_msg_decode(mut, len, &d) == RAFT_OK) {
                accepted++;
                raft_msg_release(&d);
            }
            check_garbage(mut, len);
            free(mut);
        }
        free(enc);
    }
    /* Some mutations are still valid messages (e.g. another term): the
     * generator is exercising the accepting path too. */
    assert_true(accepted > 0);
}

static void test_conf_change_decode(void **state)
{
    (void)state;
    raft_conf_change cc;
    const uint8_t add[] = {RAFT_CONF_ADD_VOTER, 0x80, 0x01};
    assert_int_equal(raft_conf_change_decode(add, sizeof(add), &cc), RAFT_OK);
    assert_int_equal(cc.op, RAFT_CONF_ADD_VOTER);
    assert_int_equal(cc.id, 128);
    const uint8_t zero_id[] = {RAFT_CONF_REMOVE, 0};
    assert_int_equal(raft_conf_change_decode(zero_id, sizeof(zero_id), &cc), RAFT_ERR_INVALID);
    const uint8_t bad_op[] = {9, 1};
    assert_int_equal(raft_conf_change_decode(bad_op, sizeof(bad_op), &cc), RAFT_ERR_INVALID);
    const uint8_t trailing[] = {RAFT_CONF_REMOVE, 1, 1};
    assert_int_equal(raft_conf_change_decode(trailing, sizeof(trailing), &cc), RAFT_ERR_TRAILING);
    const uint8_t boot[] = {RAFT_CONF_BOOTSTRAP, 2, 1, 2, 1, 3};
    assert_int_equal(raft_conf_change_decode(boot, sizeof(boot), &cc), RAFT_OK);
    assert_int_equal(cc.op, RAFT_CONF_BOOTSTRAP);
    const uint8_t boot_dup[] = {RAFT_CONF_BOOTSTRAP, 2, 1, 1, 0};
    assert_int_not_equal(raft_conf_change_decode(boot_dup, sizeof(boot_dup), &cc), RAFT_OK);
    const uint8_t boot_short[] = {RAFT_CONF_BOOTSTRAP, 3, 1, 2};
    assert_int_equal(raft_conf_change_decode(boot_short, sizeof(boot_short), &cc),
                     RAFT_ERR_TRUNCATED);
    assert_int_equal(raft_conf_change_decode(NULL, 0, &cc), RAFT_ERR_TRUNCATED);
}

static size_t replay_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char file[1024];
        snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
        FILE *f = fopen(file, "rb");
        if (!f)
            continue;
        uint8_t *buf = malloc(1 << 20);
        assert_non_null(buf);
        size_t len = fread(buf, 1, 1 << 20, f);
        fclose(f);
        check_garbage(buf, len);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void test_fuzz_corpus_and_regressions(void **state)
{
    (void)state;
    size_t n = replay_dir("fuzz/corpus/fuzz_raft_decode");
    n += replay_dir("fuzz/regressions/fuzz_raft_decode");
    /* The seed corpus is part of the repository. */
    assert_true(n > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_heartbeat_is_compact),
        cmocka_unit_test(test_snapshot_chunk_checks),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_trailing_and_version),
        cmocka_unit_test(test_varints_must_be_canonical),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_semantic_rejections),
        cmocka_unit_test(test_encode_needs_room),
        cmocka_unit_test(test_seeded_garbage_and_mutations),
        cmocka_unit_test(test_conf_change_decode),
        cmocka_unit_test(test_fuzz_corpus_and_regressions),
    };
    return cmocka_run_group_tests_name("raft_codec", tests, NULL, NULL);
}
