/* node.c — see node.h. */
#include "node.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "dispatch.h"
#include "log.h"
#include "proto.h"
#include "request.h"

#define MAX_CONNS 64
#define ACCEPT_TIMEOUT_MS 3000
#define CONNECT_TIMEOUT_MS 2000
#define RECEIVE_TIMEOUT_MS 1000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define VERSION "0.1.0"

typedef struct conn {
    int fd;
    char node[MAXNODELEN + 1];
} conn;

/* A node to keep connected, retried with backoff: one named by --connect,
 * or a member of the hub (the C node must reach every coordinator). */
typedef struct peer {
    char node[MAXNODELEN + 1];
    int connected;
    int from_options;
    long long next_attempt_ms;
    unsigned backoff_ms;
} peer;

#define MAX_PEERS (OPTIONS_MAX_CONNECT + MAX_CONNS)

typedef struct node_state {
    ei_cnode *ec;
    const cnode_options *opts;
    conn conns[MAX_CONNS];
    size_t nconns;
    peer peers[MAX_PEERS];
    size_t npeers;
    dispatcher disp;
} node_state;

static int signal_pipe[2] = {-1, -1};
static witness *the_witness;
static node_state *the_state;

void node_set_witness(witness *w)
{
    the_witness = w;
}

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(signal_pipe[1], &b, 1) < 0) {
        /* the pipe is full: a stop is already pending */
    }
    errno = saved;
}

int node_install_signals(void)
{
    if (pipe(signal_pipe) != 0)
        return -1;
    fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static peer *find_peer(node_state *s, const char *node)
{
    for (size_t i = 0; i < s->npeers; i++)
        if (strcmp(s->peers[i].node, node) == 0)
            return &s->peers[i];
    return NULL;
}

static conn *find_conn(node_state *s, const char *node)
{
    for (size_t i = 0; i < s->nconns; i++)
        if (strcmp(s->conns[i].node, node) == 0)
            return &s->conns[i];
    return NULL;
}

static void add_peer(node_state *s, const char *node, int from_options)
{
    if (find_peer(s, node) || s->npeers == MAX_PEERS || strlen(node) > MAXNODELEN)
        return;
    peer *p = &s->peers[s->npeers++];
    memset(p, 0, sizeof *p);
    strcpy(p->node, node);
    p->from_options = from_options;
    p->backoff_ms = BACKOFF_MIN_MS;
    p->connected = find_conn(s, node) != NULL;
}

/* Keeps a peer for every hub member (and every --connect node), and forgets
 * members that left. */
static void sync_member_peers(node_state *s)
{
    const hubview *v = &s->disp.view;
    for (size_t i = s->npeers; i-- > 0;)
        if (!s->peers[i].from_options && hubview_find(v, s->peers[i].node) < 0)
            s->peers[i] = s->peers[--s->npeers];
    for (size_t i = 0; i < v->count; i++)
        if (strcmp(v->names[i], s->opts->name) != 0)
            add_peer(s, v->names[i], 0);
    s->disp.view_changed = 0;
}

static void drop_conn(node_state *s, size_t i, const char *why);

static void add_conn(node_state *s, int fd, const char *node)
{
    conn *old = find_conn(s, node);
    if (old)
        drop_conn(s, (size_t)(old - s->conns), "replaced by a new connection");
    if (s->nconns == MAX_CONNS) {
        LOG_W("refusing %s: already %d connections", node, MAX_CONNS);
        ei_close_connection(fd);
        return;
    }
    conn *c = &s->conns[s->nconns++];
    c->fd = fd;
    strncpy(c->node, node, sizeof c->node - 1);
    c->node[sizeof c->node - 1] = '\0';
    peer *p = find_peer(s, node);
    if (p) {
        p->connected = 1;
        p->backoff_ms = BACKOFF_MIN_MS;
    }
    LOG_I("connected to %s", node);
    dispatcher_node_up(&s->disp, node);
}

static void drop_conn(node_state *s, size_t i, const char *why)
{
    char node[MAXNODELEN + 1];
    conn *c = &s->conns[i];
    LOG_I("lost %s: %s", c->node, why);
    ei_close_connection(c->fd);
    memcpy(node, c->node, sizeof node);
    peer *p = find_peer(s, node);
    if (p) {
        p->connected = 0;
        p->next_attempt_ms = monotonic_ms() + p->backoff_ms;
    }
    s->conns[i] = s->conns[--s->nconns];
    dispatcher_node_down(&s->disp, node);
    witness_node_down(the_witness, node);
}

static void accept_one(node_state *s, int listen_fd)
{
    ErlConnect who;
    int fd = ei_accept_tmo(s->ec, listen_fd, &who, ACCEPT_TIMEOUT_MS);
    if (fd < 0) {
        /* a failed handshake: wrong cookie, or a node that gave up */
        LOG_W("refused an incoming connection (handshake failed: wrong cookie?)");
        return;
    }
    add_conn(s, fd, who.nodename);
}

static void connect_due_peers(node_state *s)
{
    long long now = monotonic_ms();
    for (size_t i = 0; i < s->npeers; i++) {
        peer *p = &s->peers[i];
        if (p->connected || now < p->next_attempt_ms)
            continue;
        int fd = ei_connect_tmo(s->ec, p->node, CONNECT_TIMEOUT_MS);
        if (fd >= 0) {
            add_conn(s, fd, p->node);
            continue;
        }
        LOG_D("cannot reach %s yet; retrying in %u ms", p->node, p->backoff_ms);
        p->next_attempt_ms = now + p->backoff_ms;
        p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
    }
}

static int next_timeout_ms(const node_state *s)
{
    long long now = monotonic_ms(), best = 1000;
    for (size_t i = 0; i < s->npeers; i++) {
        const peer *p = &s->peers[i];
        if (!p->connected && p->next_attempt_ms - now < best)
            best = p->next_attempt_ms - now;
    }
    int t = dispatcher_timeout_ms(&s->disp, now, best < 0 ? 0 : (int)best);
    return witness_timeout_ms(the_witness, now, t);
}

static int encode_reply(node_state *s, ei_x_buff *x, request_kind kind)
{
    switch (kind) {
    case REQ_IS_AUTH:
        return ei_x_encode_atom(x, "yes");
    case REQ_PING:
        return ei_x_encode_atom(x, "pong");
    case REQ_VERSION:
        return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "ok") ||
               ei_x_encode_binary(x, VERSION, (long)strlen(VERSION));
    case REQ_NODES:
        for (size_t i = 0; i < s->nconns; i++)
            if (ei_x_encode_list_header(x, 1) || ei_x_encode_atom(x, s->conns[i].node))
                return -1;
        return ei_x_encode_empty_list(x);
    case REQ_HUB:
    case REQ_UNKNOWN:
        break;
    }
    return ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "error") ||
           ei_x_encode_tuple_header(x, 2) || ei_x_encode_atom(x, "bad_request") ||
           ei_x_encode_atom(x, "unknown_request");
}

/* Sends {Tag, Reply} to the caller: the refusal when there is one, else the
 * answer to req->kind. Returns 0 once sent. */
static int send_reply(node_state *s, int fd, const char *buf, request *req,
                      const proto_error *refusal)
{
    ei_x_buff reply;
    int rc = -1;
    if (request_reply_begin(&reply, buf, req) != 0)
        return -1;
    if ((refusal ? proto_encode_bad_request(&reply, buf, refusal)
                 : encode_reply(s, &reply, req->kind)) != 0)
        LOG_E("cannot encode a reply");
    else if (ei_send(fd, &req->from, reply.buff, reply.index) != 0)
        LOG_W("cannot reply to %s", req->from.node);
    else
        rc = 0;
    ei_x_free(&reply);
    return rc;
}

/* A message refused before decoding: a call whose head can be read is
 * answered {error, {bad_request, too_large | too_deep | bad_term}}; anything
 * else is dropped. Either way one rate-limited log line. */
static void refuse(node_state *s, int fd, const char *from, const ei_x_buff *x, request_refusal r,
                   const char *why)
{
    static const log_kind kinds[] = {
        [REFUSED_TOO_LARGE] = LOGK_TOO_LARGE,
        [REFUSED_TOO_DEEP] = LOGK_TOO_DEEP,
        [REFUSED_MALFORMED] = LOGK_MALFORMED,
    };
    request req;
    if (request_parse_head(x->buff, x->index, &req) != 0) {
        log_limited(kinds[r], LOG_WARN, "dropped a message from %s (%d bytes): %s", from, x->index,
                    why);
        return;
    }
    proto_error err = {request_refusal_atom(r), {0, 0}};
    send_reply(s, fd, x->buff, &req, &err);
    log_limited(kinds[r], LOG_WARN, "refused a call from %s (%d bytes) as %s: %s", req.from.node,
                x->index, err.why, why);
}

/* Messages to a registered name are calls; messages to the node's pid are
 * calls too, or answers and events for the dispatcher. Everything is
 * validated whole before anything decodes it. */
static void handle_message(node_state *s, int fd, const erlang_msg *msg, const ei_x_buff *x)
{
    if (msg->msgtype != ERL_REG_SEND && msg->msgtype != ERL_SEND) {
        LOG_D("ignoring control message of type %ld", msg->msgtype);
        return;
    }
    if (msg->msgtype == ERL_REG_SEND && witness_wants(the_witness, msg->toname)) {
        witness_handle(the_witness, msg->toname, x->buff, x->index); /* checks it all */
        return;
    }
    int to_pid = msg->msgtype == ERL_SEND;
    const char *from = to_pid ? "a node" : msg->from.node;
    request req;
    const char *why;
    request_refusal r =
        request_validate(x->buff, x->index, to_pid ? ANSWER_MAX_BYTES : REQUEST_MAX_BYTES, &why);
    if (r != REFUSED_NONE) {
        refuse(s, fd, from, x, r, why);
        return;
    }
    if (request_parse_valid(x->buff, &req, &why) != 0) {
        if (to_pid)
            dispatcher_answer(&s->disp, x->buff, x->index);
        else
            log_limited(LOGK_NOT_A_CALL, LOG_WARN, "dropped a message from %s (%d bytes): %s", from,
                        x->index, why);
        return;
    }
    if (x->index > REQUEST_MAX_BYTES) {
        refuse(s, fd, from, x, REFUSED_TOO_LARGE, "message too large");
        return;
    }
    int to_net_kernel = !to_pid && strcmp(msg->toname, "net_kernel") == 0;
    int to_server = to_pid || strcmp(msg->toname, s->opts->server) == 0;
    if (!to_net_kernel && !to_server)
        req.kind = REQ_UNKNOWN;
    if (to_net_kernel && req.kind != REQ_IS_AUTH)
        req.kind = REQ_UNKNOWN;
    if (req.kind == REQ_HUB) {
        dispatcher_call(&s->disp, x->buff, x->index, &req, monotonic_ms());
        return;
    }
    if (send_reply(s, fd, x->buff, &req, NULL) == 0 && req.kind == REQ_UNKNOWN)
        log_limited(LOGK_BAD_REQUEST, LOG_INFO,
                    "answered an unknown request from %s with bad_request", req.from.node);
}

/* Reads one message from conns[i]; returns 0, or -1 if the connection died. */
static int receive_one(node_state *s, size_t i)
{
    ei_x_buff x;
    erlang_msg msg;
    if (ei_x_new(&x) != 0)
        return 0;
    int got = ei_xreceive_msg_tmo(s->conns[i].fd, &msg, &x, RECEIVE_TIMEOUT_MS);
    int rc = 0;
    if (got == ERL_MSG) {
        handle_message(s, s->conns[i].fd, &msg, &x);
    } else if (got == ERL_ERROR && erl_errno != ETIMEDOUT) {
        rc = -1;
    }
    ei_x_free(&x);
    return rc;
}

/* ── the transport the dispatcher sends through ── */

static int send_reg(void *ctx, const char *node, const char *name, const ei_x_buff *x)
{
    node_state *s = ctx;
    conn *c = find_conn(s, node);
    return c && ei_reg_send(s->ec, c->fd, (char *)name, x->buff, x->index) == 0 ? 0 : -1;
}

static int send_pid(void *ctx, const erlang_pid *to, const ei_x_buff *x)
{
    node_state *s = ctx;
    conn *c = find_conn(s, to->node);
    return c && ei_send(c->fd, (erlang_pid *)to, x->buff, x->index) == 0 ? 0 : -1;
}

static int make_ref(void *ctx, erlang_ref *ref)
{
    node_state *s = ctx;
    return ei_make_ref(s->ec, ref);
}

int node_witness_send(void *ctx, const char *node, const char *name, const ei_x_buff *x)
{
    (void)ctx;
    node_state *s = the_state;
    if (!s)
        return -1;
    conn *c = find_conn(s, node);
    if (!c) {
        add_peer(s, node, 1); /* connect_due_peers tries it, with backoff */
        return -1;
    }
    return ei_reg_send(s->ec, c->fd, (char *)name, x->buff, x->index) == 0 ? 0 : -1;
}

static void tick(node_state *s)
{
    witness_tick(the_witness, monotonic_ms());
    const char *connected[MAX_CONNS];
    for (size_t i = 0; i < s->nconns; i++)
        connected[i] = s->conns[i].node;
    dispatcher_tick(&s->disp, monotonic_ms(), connected, s->nconns);
    log_flush_suppressed();
    if (s->disp.view_changed)
        sync_member_peers(s);
}

int node_run(ei_cnode *ec, int listen_fd, const cnode_options *opts)
{
    static node_state s;
    memset(&s, 0, sizeof s);
    s.ec = ec;
    s.opts = opts;
    the_state = &s;
    transport tr = {&s, send_reg, send_pid, make_ref, *ei_self(ec)};
    dispatcher_init(&s.disp, opts->hub, &tr);
    for (size_t i = 0; i < opts->nconnect; i++)
        add_peer(&s, opts->connect[i], 1);

    struct pollfd fds[3 + MAX_CONNS];
    int rc = EXIT_OK;
    for (;;) {
        connect_due_peers(&s);
        tick(&s);
        nfds_t n = 0;
        fds[n++] = (struct pollfd){signal_pipe[0], POLLIN, 0};
        fds[n++] = (struct pollfd){listen_fd, POLLIN, 0};
        fds[n++] = (struct pollfd){opts->watch_stdin ? STDIN_FILENO : -1, POLLIN, 0};
        for (size_t i = 0; i < s.nconns; i++)
            fds[n++] = (struct pollfd){s.conns[i].fd, POLLIN, 0};
        if (poll(fds, n, next_timeout_ms(&s)) < 0) {
            if (errno == EINTR)
                continue;
            LOG_E("poll failed: %s", strerror(errno));
            return EXIT_SOFTWARE;
        }
        if (fds[0].revents) {
            LOG_I("stopping on signal");
            break;
        }
        if (fds[2].revents) {
            char buf[256];
            if (read(STDIN_FILENO, buf, sizeof buf) <= 0) {
                LOG_I("stopping: standard input closed");
                break;
            }
        }
        /* connections first, from the back, so drop_conn's swap is safe */
        for (size_t i = s.nconns; i-- > 0;) {
            if (fds[3 + i].revents & (POLLIN | POLLHUP | POLLERR))
                if (receive_one(&s, i) != 0)
                    drop_conn(&s, i, "connection closed");
        }
        if (fds[1].revents & POLLIN)
            accept_one(&s, listen_fd);
        tick(&s);
        if (witness_failed(the_witness)) {
            rc = EXIT_IOERR;
            break;
        }
    }
    while (s.nconns > 0)
        drop_conn(&s, s.nconns - 1, "shutting down");
    dispatcher_free(&s.disp);
    the_state = NULL;
    return rc;
}
