/*
 * witness_store.c — the witness's durable state; format and recovery rules in
 * witness_store.h.
 */
#define _DEFAULT_SOURCE /* flock(2) */
#include "witness_store.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "varint.h"

#define WS_MAGIC "SYNWIT01"
#define WS_MAGIC_LEN 8
#define WS_HEAD 5 /* u32 length + u8 type */
#define WS_TAIL 8 /* u64 checksum */
#define WS_MAX_ENTRY_DATA 4096

enum { WS_REC_HARD = 1, WS_REC_ENTRIES = 2, WS_REC_SNAP = 3 };
enum { WS_SNAP_COMPACT = 0, WS_SNAP_REPLACE = 1 };

/* Fixed key: the checksum finds damage; nobody is assumed to forge records. */
static const unsigned char ws_key[crypto_shorthash_KEYBYTES] = "synod-witness-01";

typedef struct ws_entry {
    uint64_t term;
    uint8_t type;
    uint8_t *data;
    size_t len;
} ws_entry;

struct wstore {
    int fd;
    char *path, *dir;
    uint64_t file_bytes;
    size_t torn;
    raft_hard_state hs;
    uint64_t snap_index, snap_term;
    uint64_t voters[RAFT_MAX_MEMBERS], learners[RAFT_MAX_MEMBERS];
    size_t nv, nl;
    ws_entry *log; /* log[i] has index snap_index + 1 + i */
    size_t n_log, cap_log;
    raft_entry *view; /* wstore_state's entries */
    size_t cap_view;
    uint8_t *buf; /* record being built */
    size_t cap_buf, n_buf;
    bool nomem;
    char err[256];
};

static int ws_fail(wstore *ws, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ws_fail(wstore *ws, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ws->err, sizeof ws->err, fmt, ap);
    va_end(ap);
    return rc;
}

static void ws_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t ws_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void ws_sum(const uint8_t *rec, size_t len, uint8_t out[WS_TAIL])
{
    crypto_shorthash(out, rec, len, ws_key);
}

/* ---- the lock --------------------------------------------------------------- */

int wstore_lock_dir(const char *dir, int *fd, char *why, size_t whylen)
{
    *fd = -1;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot create %s: %s", dir, strerror(errno));
        return WSTORE_ERR_IO;
    }
    char path[4096];
    if (snprintf(path, sizeof path, "%s/LOCK", dir) >= (int)sizeof path) {
        snprintf(why, whylen, "data directory path too long");
        return WSTORE_ERR_INVALID;
    }
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f < 0) {
        snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
        return WSTORE_ERR_IO;
    }
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[32] = "";
        ssize_t n = pread(f, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(f);
        if (e == EWOULDBLOCK) {
            snprintf(why, whylen, "%s is held by another witness (pid %s)", dir,
                     holder[0] ? holder : "?");
            return WSTORE_ERR_LOCKED;
        }
        snprintf(why, whylen, "cannot lock %s: %s", path, strerror(e));
        return WSTORE_ERR_IO;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)n, 0) != n) {
        snprintf(why, whylen, "cannot write %s: %s", path, strerror(errno));
        close(f);
        return WSTORE_ERR_IO;
    }
    *fd = f;
    return WSTORE_OK;
}

void wstore_unlock_dir(int fd)
{
    if (fd >= 0)
        close(fd); /* releases the flock */
}

/* ---- in-memory state ------------------------------------------------------- */

static uint64_t ws_last(const wstore *ws)
{
    return ws->snap_index + ws->n_log;
}

static void ws_truncate(wstore *ws, uint64_t from)
{
    while (ws->n_log && ws_last(ws) >= from) {
        free(ws->log[ws->n_log - 1].data);
        ws->n_log--;
    }
}

static void ws_drop_prefix(wstore *ws, uint64_t upto)
{
    size_t k = 0;
    while (k < ws->n_log && ws->snap_index + 1 + k <= upto)
        free(ws->log[k++].data);
    if (k) {
        memmove(ws->log, ws->log + k, (ws->n_log - k) * sizeof(*ws->log));
        ws->n_log -= k;
    }
}

static int ws_push(wstore *ws, uint64_t term, uint8_t type, const uint8_t *data, size_t len)
{
    if (ws->n_log == ws->cap_log) {
        size_t cap = ws->cap_log ? ws->cap_log * 2 : 64;
        ws_entry *p = realloc(ws->log, cap * sizeof(*p));
        if (!p)
            return WSTORE_ERR_NOMEM;
        ws->log = p;
        ws->cap_log = cap;
    }
    ws_entry *e = &ws->log[ws->n_log];
    e->term = term;
    e->type = type;
    e->len = len;
    e->data = NULL;
    if (len) {
        e->data = malloc(len);
        if (!e->data)
            return WSTORE_ERR_NOMEM;
        memcpy(e->data, data, len);
    }
    ws->n_log++;
    return WSTORE_OK;
}

static uint64_t ws_term_at(const wstore *ws, uint64_t index)
{
    if (index == ws->snap_index)
        return ws->snap_term;
    return ws->log[index - ws->snap_index - 1].term;
}

/* ---- decoding and applying records ---------------------------------------------- */

typedef struct ws_reader {
    const uint8_t *p;
    size_t n;
    bool bad;
} ws_reader;

static uint64_t ws_rd_u64(ws_reader *r)
{
    uint64_t v = 0;
    size_t k = r->bad ? 0 : varint_get(r->p, r->n, &v);
    if (!k) {
        r->bad = true;
        return 0;
    }
    r->p += k;
    r->n -= k;
    return v;
}

/* Applies one record (checksum already verified). Returns WSTORE_OK or
 * WSTORE_ERR_CORRUPT (impossible contents), WSTORE_ERR_NOMEM. */
static int ws_apply(wstore *ws, uint8_t type, const uint8_t *p, size_t n)
{
    ws_reader r = {p, n, false};
    switch (type) {
    case WS_REC_HARD: {
        raft_hard_state hs;
        hs.term = ws_rd_u64(&r);
        hs.vote = ws_rd_u64(&r);
        hs.commit = ws_rd_u64(&r);
        if (r.bad || r.n || hs.term < ws->hs.term || hs.term >= RAFT_INDEX_MAX ||
            hs.vote >= RAFT_INDEX_MAX || hs.commit >= RAFT_INDEX_MAX)
            return ws_fail(ws, WSTORE_ERR_CORRUPT, "impossible hard state record");
        ws->hs = hs;
        return WSTORE_OK;
    }
    case WS_REC_ENTRIES: {
        uint64_t first = ws_rd_u64(&r), count = ws_rd_u64(&r);
        if (r.bad || first <= ws->snap_index || first > ws_last(ws) + 1 ||
            count > RAFT_INDEX_MAX - first)
            return ws_fail(ws, WSTORE_ERR_CORRUPT, "entries record at %llu does not follow the log",
                           (unsigned long long)first);
        ws_truncate(ws, first);
        for (uint64_t i = 0; i < count; i++) {
            uint64_t term = ws_rd_u64(&r), etype = ws_rd_u64(&r), len = ws_rd_u64(&r);
            if (r.bad || etype > RAFT_ENTRY_CONF || len > WS_MAX_ENTRY_DATA || len > r.n ||
                term == 0 || term >= RAFT_INDEX_MAX || term < ws_term_at(ws, ws_last(ws)))
                return ws_fail(ws, WSTORE_ERR_CORRUPT, "impossible entry at %llu",
                               (unsigned long long)(first + i));
            if (ws_push(ws, term, (uint8_t)etype, r.p, (size_t)len) != WSTORE_OK)
                return ws_fail(ws, WSTORE_ERR_NOMEM, "out of memory");
            r.p += len;
            r.n -= (size_t)len;
        }
        if (r.n)
            return ws_fail(ws, WSTORE_ERR_CORRUPT, "trailing bytes in an entries record");
        return WSTORE_OK;
    }
    case WS_REC_SNAP: {
        uint64_t mode = ws_rd_u64(&r), index = ws_rd_u64(&r), term = ws_rd_u64(&r);
        uint64_t nv = ws_rd_u64(&r);
        if (r.bad || mode > WS_SNAP_REPLACE || nv > RAFT_MAX_MEMBERS || index == 0 ||
            index >= RAFT_INDEX_MAX || term == 0 || term >= RAFT_INDEX_MAX)
            return ws_fail(ws, WSTORE_ERR_CORRUPT, "impossible snapshot record");
        uint64_t v[RAFT_MAX_MEMBERS], l[RAFT_MAX_MEMBERS];
        for (uint64_t i = 0; i < nv; i++)
            v[i] = ws_rd_u64(&r);
        uint64_t nl = ws_rd_u64(&r);
        if (r.bad || nl > RAFT_MAX_MEMBERS - nv)
            return ws_fail(ws, WSTORE_ERR_CORRUPT, "impossible snapshot membership");
        for (uint64_t i = 0; i < nl; i++)
            l[i] = ws_rd_u64(&r);
        if (r.bad || r.n)
            return ws_fail(ws, WSTORE_ERR_CORRUPT, "impossible snapshot membership");
        if (mode == WS_SNAP_COMPACT) {
            if (index < ws->snap_index || index > ws_last(ws) ||
                (index > ws->snap_index && ws_term_at(ws, index) != term))
                return ws_fail(ws, WSTORE_ERR_CORRUPT, "compaction record at %llu off the log",
                               (unsigned long long)index);
            ws_drop_prefix(ws, index);
        } else {
            ws_truncate(ws, ws->snap_index + 1);
        }
        ws->snap_index = index;
        ws->snap_term = term;
        memcpy(ws->voters, v, nv * sizeof(uint64_t));
        memcpy(ws->learners, l, nl * sizeof(uint64_t));
        ws->nv = (size_t)nv;
        ws->nl = (size_t)nl;
        return WSTORE_OK;
    }
    }
    return ws_fail(ws, WSTORE_ERR_CORRUPT, "unknown record type %u", type);
}

/* ---- writing ---------------------------------------------------------------- */

static bool ws_room(wstore *ws, size_t more)
{
    if (ws->n_buf + more <= ws->cap_buf)
        return true;
    size_t cap = ws->cap_buf ? ws->cap_buf : 256;
    while (cap < ws->n_buf + more)
        cap *= 2;
    uint8_t *p = realloc(ws->buf, cap);
    if (!p) {
        ws->nomem = true;
        return false;
    }
    ws->buf = p;
    ws->cap_buf = cap;
    return true;
}

static void ws_begin(wstore *ws, uint8_t type)
{
    ws->n_buf = 0;
    ws->nomem = false;
    if (ws_room(ws, WS_HEAD)) {
        ws->buf[4] = type;
        ws->n_buf = WS_HEAD;
    }
}

static void ws_add_u64(wstore *ws, uint64_t v)
{
    if (ws_room(ws, VARINT_MAX_LEN))
        ws->n_buf += varint_put(ws->buf + ws->n_buf, v);
}

static void ws_add_bytes(wstore *ws, const uint8_t *p, size_t n)
{
    if (n && ws_room(ws, n)) {
        memcpy(ws->buf + ws->n_buf, p, n);
        ws->n_buf += n;
    }
}

static int ws_write_all(wstore *ws, int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return ws_fail(ws, WSTORE_ERR_IO, "write %s: %s", ws->path, strerror(errno));
        p += w;
        n -= (size_t)w;
    }
    return WSTORE_OK;
}

/* Seals the record in buf (length, checksum), writes it to fd and applies
 * it to the in-memory state. */
static int ws_end(wstore *ws, int fd, bool apply)
{
    if (ws->nomem || !ws_room(ws, WS_TAIL))
        return ws_fail(ws, WSTORE_ERR_NOMEM, "out of memory");
    size_t payload = ws->n_buf - WS_HEAD;
    if (payload > WSTORE_MAX_RECORD)
        return ws_fail(ws, WSTORE_ERR_INVALID, "record over %u bytes", WSTORE_MAX_RECORD);
    ws_put_u32(ws->buf, (uint32_t)payload);
    ws_sum(ws->buf, ws->n_buf, ws->buf + ws->n_buf);
    ws->n_buf += WS_TAIL;
    int rc = ws_write_all(ws, fd, ws->buf, ws->n_buf);
    if (rc != WSTORE_OK)
        return rc;
    if (fd == ws->fd)
        ws->file_bytes += ws->n_buf;
    if (!apply)
        return WSTORE_OK;
    return ws_apply(ws, ws->buf[4], ws->buf + WS_HEAD, payload);
}

static void ws_add_snap(wstore *ws, uint64_t mode, uint64_t index, uint64_t term, const uint64_t *v,
                        size_t nv, const uint64_t *l, size_t nl)
{
    ws_begin(ws, WS_REC_SNAP);
    ws_add_u64(ws, mode);
    ws_add_u64(ws, index);
    ws_add_u64(ws, term);
    ws_add_u64(ws, nv);
    for (size_t i = 0; i < nv; i++)
        ws_add_u64(ws, v[i]);
    ws_add_u64(ws, nl);
    for (size_t i = 0; i < nl; i++)
        ws_add_u64(ws, l[i]);
}

static void ws_add_hard(wstore *ws, const raft_hard_state *hs)
{
    ws_begin(ws, WS_REC_HARD);
    ws_add_u64(ws, hs->term);
    ws_add_u64(ws, hs->vote);
    ws_add_u64(ws, hs->commit);
}

int wstore_write_ready(wstore *ws, const raft_ready_t *rd)
{
    int rc;
    /* The hard state first: all of it is synced together, and a crash
     * before the sync then never leaves entries of a term newer than the
     * recorded term (which raft_new would refuse); a commit index ahead of
     * the surviving log is clamped at open. */
    if (rd->hard_state_changed) {
        ws_add_hard(ws, &rd->hard_state);
        if ((rc = ws_end(ws, ws->fd, true)) != WSTORE_OK)
            return rc;
    }
    if (rd->snapshot) {
        const raft_snapshot *s = rd->snapshot;
        ws_add_snap(ws, WS_SNAP_REPLACE, s->index, s->term, s->voters, s->n_voters, s->learners,
                    s->n_learners);
        if ((rc = ws_end(ws, ws->fd, true)) != WSTORE_OK)
            return rc;
    }
    if (rd->n_entries) {
        uint64_t first = rd->entries[0].index;
        if (first <= ws->snap_index || first > ws_last(ws) + 1)
            return ws_fail(ws, WSTORE_ERR_INVALID, "entries from %llu do not follow the log",
                           (unsigned long long)first);
        ws_begin(ws, WS_REC_ENTRIES);
        ws_add_u64(ws, first);
        ws_add_u64(ws, rd->n_entries);
        for (size_t i = 0; i < rd->n_entries; i++) {
            const raft_entry *e = &rd->entries[i];
            /* a witness keeps the bytes of conf entries only (raft.c drops
             * the others); anything else is written without its bytes */
            size_t len = e->type == RAFT_ENTRY_CONF ? e->len : 0;
            if (e->index != first + i || len > WS_MAX_ENTRY_DATA)
                return ws_fail(ws, WSTORE_ERR_INVALID, "entry %zu of a Ready is not writable", i);
            ws_add_u64(ws, e->term);
            ws_add_u64(ws, e->type);
            ws_add_u64(ws, len);
            ws_add_bytes(ws, e->data, len);
        }
        if ((rc = ws_end(ws, ws->fd, true)) != WSTORE_OK)
            return rc;
    }
    return WSTORE_OK;
}

int wstore_sync(wstore *ws)
{
    if (fdatasync(ws->fd) != 0)
        return ws_fail(ws, WSTORE_ERR_IO, "fdatasync %s: %s", ws->path, strerror(errno));
    return WSTORE_OK;
}

static int ws_sync_dir(wstore *ws)
{
    int d = open(ws->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d < 0)
        return ws_fail(ws, WSTORE_ERR_IO, "open %s: %s", ws->dir, strerror(errno));
    int rc = fsync(d);
    close(d);
    if (rc != 0)
        return ws_fail(ws, WSTORE_ERR_IO, "fsync %s: %s", ws->dir, strerror(errno));
    return WSTORE_OK;
}

static uint64_t ws_live_bytes(const wstore *ws)
{
    uint64_t n = WS_MAGIC_LEN + 3 * (WS_HEAD + WS_TAIL) + 40 + (ws->nv + ws->nl) * 10;
    for (size_t i = 0; i < ws->n_log; i++)
        n += 12 + ws->log[i].len;
    return n;
}

uint64_t wstore_file_bytes(const wstore *ws)
{
    return ws->file_bytes;
}

/* Writes the live state to a new file and renames it over the old one. */
static int ws_rewrite(wstore *ws)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", ws->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return ws_fail(ws, WSTORE_ERR_IO, "open %s: %s", tmp, strerror(errno));
    int rc = ws_write_all(ws, fd, (const uint8_t *)WS_MAGIC, WS_MAGIC_LEN);
    uint64_t bytes = WS_MAGIC_LEN;
    if (rc == WSTORE_OK && ws->snap_index) {
        ws_add_snap(ws, WS_SNAP_REPLACE, ws->snap_index, ws->snap_term, ws->voters, ws->nv,
                    ws->learners, ws->nl);
        rc = ws_end(ws, fd, false);
        bytes += ws->n_buf;
    }
    if (rc == WSTORE_OK && ws->n_log) {
        ws_begin(ws, WS_REC_ENTRIES);
        ws_add_u64(ws, ws->snap_index + 1);
        ws_add_u64(ws, ws->n_log);
        for (size_t i = 0; i < ws->n_log; i++) {
            ws_add_u64(ws, ws->log[i].term);
            ws_add_u64(ws, ws->log[i].type);
            ws_add_u64(ws, ws->log[i].len);
            ws_add_bytes(ws, ws->log[i].data, ws->log[i].len);
        }
        rc = ws_end(ws, fd, false);
        bytes += ws->n_buf;
    }
    if (rc == WSTORE_OK) {
        ws_add_hard(ws, &ws->hs);
        rc = ws_end(ws, fd, false);
        bytes += ws->n_buf;
    }
    if (rc == WSTORE_OK && fsync(fd) != 0)
        rc = ws_fail(ws, WSTORE_ERR_IO, "fsync %s: %s", tmp, strerror(errno));
    if (rc != WSTORE_OK) {
        close(fd);
        unlink(tmp);
        return rc;
    }
    if (rename(tmp, ws->path) != 0) {
        rc = ws_fail(ws, WSTORE_ERR_IO, "rename %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return rc;
    }
    close(ws->fd);
    ws->fd = fd; /* O_WRONLY at the end of the new file: appends go on */
    ws->file_bytes = bytes;
    return ws_sync_dir(ws);
}

int wstore_compact(wstore *ws, const raft_snapshot *snap)
{
    if (snap->index <= ws->snap_index)
        return WSTORE_OK;
    if (snap->index > ws_last(ws) || ws_term_at(ws, snap->index) != snap->term)
        return ws_fail(ws, WSTORE_ERR_INVALID, "compaction to %llu is off the log",
                       (unsigned long long)snap->index);
    ws_add_snap(ws, WS_SNAP_COMPACT, snap->index, snap->term, snap->voters, snap->n_voters,
                snap->learners, snap->n_learners);
    int rc = ws_end(ws, ws->fd, true);
    if (rc == WSTORE_OK && ws->file_bytes > 4 * ws_live_bytes(ws) + 65536)
        return ws_rewrite(ws);
    if (rc == WSTORE_OK)
        rc = wstore_sync(ws);
    return rc;
}

/* ---- opening ------------------------------------------------------------------ */

static int ws_read_file(wstore *ws, uint8_t **out, size_t *len)
{
    struct stat st;
    if (fstat(ws->fd, &st) != 0)
        return ws_fail(ws, WSTORE_ERR_IO, "stat %s: %s", ws->path, strerror(errno));
    size_t n = (size_t)st.st_size;
    uint8_t *p = malloc(n + 1);
    if (!p)
        return ws_fail(ws, WSTORE_ERR_NOMEM, "out of memory reading %s", ws->path);
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(ws->fd, p + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(p);
            return ws_fail(ws, WSTORE_ERR_IO, "read %s: %s", ws->path,
                           r < 0 ? strerror(errno) : "short read");
        }
        got += (size_t)r;
    }
    *out = p;
    *len = n;
    return WSTORE_OK;
}

static bool ws_all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Whether a complete record with a good checksum starts anywhere in
 * [from, n): tells a damaged length from a torn last record. */
static bool ws_record_after(const uint8_t *p, size_t from, size_t n)
{
    for (size_t j = from; j + WS_HEAD + WS_TAIL <= n; j++) {
        uint32_t payload = ws_get_u32(p + j);
        if (payload > WSTORE_MAX_RECORD || (size_t)WS_HEAD + payload + WS_TAIL > n - j)
            continue;
        if (p[j + 4] < WS_REC_HARD || p[j + 4] > WS_REC_SNAP)
            continue;
        uint8_t sum[WS_TAIL];
        ws_sum(p + j, WS_HEAD + payload, sum);
        if (memcmp(sum, p + j + WS_HEAD + payload, WS_TAIL) == 0)
            return true;
    }
    return false;
}

static int ws_replay(wstore *ws)
{
    uint8_t *p = NULL;
    size_t n = 0;
    int rc = ws_read_file(ws, &p, &n);
    if (rc != WSTORE_OK)
        return rc;
    size_t good;
    if (n < WS_MAGIC_LEN) {
        good = 0; /* new, or torn while writing the magic */
    } else if (memcmp(p, WS_MAGIC, WS_MAGIC_LEN) != 0) {
        free(p);
        return ws_fail(ws, WSTORE_ERR_CORRUPT, "%s is not a witness log (bad magic)", ws->path);
    } else {
        good = WS_MAGIC_LEN;
        while (good < n) {
            size_t left = n - good;
            if (ws_all_zero(p + good, left))
                break; /* a crash after the file grew, before its bytes landed */
            uint32_t payload = left >= WS_HEAD ? ws_get_u32(p + good) : 0;
            size_t rec = (size_t)WS_HEAD + payload + WS_TAIL;
            if (left < WS_HEAD)
                break; /* torn inside the header */
            if (payload > WSTORE_MAX_RECORD) {
                free(p);
                return ws_fail(ws, WSTORE_ERR_CORRUPT, "%s: impossible record length at byte %zu",
                               ws->path, good);
            }
            if (rec > left) {
                /* the last record, cut short; unless a whole good record
                 * follows, which means this length was damaged */
                if (ws_record_after(p, good + 1, n)) {
                    free(p);
                    return ws_fail(ws, WSTORE_ERR_CORRUPT, "%s: damaged record length at byte %zu",
                                   ws->path, good);
                }
                break;
            }
            uint8_t sum[WS_TAIL];
            ws_sum(p + good, WS_HEAD + payload, sum);
            if (memcmp(sum, p + good + WS_HEAD + payload, WS_TAIL) != 0) {
                if (rec == left)
                    break; /* the last record, written only in part */
                free(p);
                return ws_fail(ws, WSTORE_ERR_CORRUPT,
                               "%s: checksum mismatch at byte %zu with %zu bytes after it",
                               ws->path, good, left - rec);
            }
            rc = ws_apply(ws, p[good + 4], p + good + WS_HEAD, payload);
            if (rc != WSTORE_OK) {
                char msg[sizeof ws->err];
                snprintf(msg, sizeof msg, "%s", ws->err);
                free(p);
                return ws_fail(ws, rc, "%s: byte %zu: %s", ws->path, good, msg);
            }
            good += rec;
        }
    }
    free(p);
    if (ws->hs.commit > ws_last(ws))
        ws->hs.commit = ws_last(ws); /* written before its entries were synced? never
                                       beyond the durable log (raft.h) */
    if (good < n || n < WS_MAGIC_LEN) {
        ws->torn = n - good;
        if (ftruncate(ws->fd, (off_t)good) != 0)
            return ws_fail(ws, WSTORE_ERR_IO, "truncate %s: %s", ws->path, strerror(errno));
        if (good == 0 &&
            (pwrite(ws->fd, WS_MAGIC, WS_MAGIC_LEN, 0) != WS_MAGIC_LEN || fsync(ws->fd) != 0))
            return ws_fail(ws, WSTORE_ERR_IO, "write %s: %s", ws->path, strerror(errno));
        if (good && fdatasync(ws->fd) != 0)
            return ws_fail(ws, WSTORE_ERR_IO, "fdatasync %s: %s", ws->path, strerror(errno));
        if (good == 0)
            good = WS_MAGIC_LEN;
    }
    ws->file_bytes = good;
    if (lseek(ws->fd, (off_t)good, SEEK_SET) < 0)
        return ws_fail(ws, WSTORE_ERR_IO, "seek %s: %s", ws->path, strerror(errno));
    return WSTORE_OK;
}

static char *ws_file_name(const char *dir, const char *group)
{
    size_t gl = strlen(group), dl = strlen(dir);
    char *path = malloc(dl + 1 + 3 * gl + 5);
    if (!path)
        return NULL;
    char *q = path;
    memcpy(q, dir, dl);
    q += dl;
    *q++ = '/';
    for (size_t i = 0; i < gl; i++) {
        unsigned char c = (unsigned char)group[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '-' || (c == '.' && i > 0)) {
            *q++ = (char)c;
        } else {
            q += sprintf(q, "%%%02X", c);
        }
    }
    memcpy(q, ".wal", 5);
    return path;
}

int wstore_open(const char *dir, const char *group, wstore **out, char *why, size_t whylen)
{
    *out = NULL;
    size_t gl = strlen(group);
    if (gl == 0 || gl > 255 || strlen(dir) > 3000) {
        snprintf(why, whylen, "group name must be 1..255 bytes");
        return WSTORE_ERR_INVALID;
    }
    wstore *ws = calloc(1, sizeof(*ws));
    if (!ws) {
        snprintf(why, whylen, "out of memory");
        return WSTORE_ERR_NOMEM;
    }
    ws->fd = -1;
    ws->path = ws_file_name(dir, group);
    ws->dir = strdup(dir);
    if (!ws->path || !ws->dir) {
        wstore_close(ws);
        snprintf(why, whylen, "out of memory");
        return WSTORE_ERR_NOMEM;
    }
    int existed = access(ws->path, F_OK) == 0;
    ws->fd = open(ws->path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int rc = ws->fd < 0 ? ws_fail(ws, WSTORE_ERR_IO, "open %s: %s", ws->path, strerror(errno))
                        : ws_replay(ws);
    if (rc == WSTORE_OK && !existed)
        rc = ws_sync_dir(ws);
    if (rc != WSTORE_OK) {
        snprintf(why, whylen, "%s", ws->err);
        wstore_close(ws);
        return rc;
    }
    *out = ws;
    return WSTORE_OK;
}

void wstore_close(wstore *ws)
{
    if (!ws)
        return;
    if (ws->fd >= 0)
        close(ws->fd);
    ws_truncate(ws, 0);
    free(ws->log);
    free(ws->view);
    free(ws->buf);
    free(ws->path);
    free(ws->dir);
    free(ws);
}

const char *wstore_error(const wstore *ws)
{
    return ws->err;
}

size_t wstore_torn(const wstore *ws)
{
    return ws->torn;
}

void wstore_state(const wstore *ws, raft_hard_state *hs, raft_snapshot *snap,
                  const raft_entry **entries, size_t *n_entries)
{
    wstore *w = (wstore *)ws;
    *hs = ws->hs;
    memset(snap, 0, sizeof(*snap));
    snap->index = ws->snap_index;
    snap->term = ws->snap_term;
    snap->voters = ws->voters;
    snap->n_voters = ws->nv;
    snap->learners = ws->learners;
    snap->n_learners = ws->nl;
    *entries = NULL;
    *n_entries = 0;
    if (ws->n_log > w->cap_view) {
        raft_entry *v = realloc(w->view, ws->n_log * sizeof(*v));
        if (!v)
            return; /* the caller sees no entries and raft_new refuses the
                       hard state's commit: a clear failure, not a silent one */
        w->view = v;
        w->cap_view = ws->n_log;
    }
    for (size_t i = 0; i < ws->n_log; i++) {
        w->view[i].index = ws->snap_index + 1 + i;
        w->view[i].term = ws->log[i].term;
        w->view[i].type = ws->log[i].type;
        w->view[i].data = ws->log[i].data;
        w->view[i].len = ws->log[i].len;
    }
    *entries = w->view;
    *n_entries = ws->n_log;
}
