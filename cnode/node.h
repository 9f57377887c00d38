/*
 * node.h — the C node's event loop: accepts and opens distribution
 * connections, answers ticks, reconnects to --connect nodes with backoff, and
 * answers requests (request.h). Single-threaded; poll(2) over every fd.
 */
#ifndef SYNOD_CNODE_NODE_H
#define SYNOD_CNODE_NODE_H

#include <ei.h>

#include "options.h"
#include "witness.h"

/* Runs until SIGTERM/SIGINT (or stdin closing with --watch-stdin). Returns an
 * exit code. */
int node_run(ei_cnode *ec, int listen_fd, const cnode_options *opts);

/* The witness (witness.h) that node_run feeds, or NULL; and the transport
 * it sends through (witness_send_fn; ctx unused). A send to a node not
 * connected yet asks for a connection and fails: Raft retries. */
void node_set_witness(witness *w);
int node_witness_send(void *ctx, const char *node, const char *name, const ei_x_buff *x);

/* Installs the SIGTERM/SIGINT handlers and ignores SIGPIPE. Returns 0 or -1. */
int node_install_signals(void);

#endif
