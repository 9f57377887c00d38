/*
 * node.h — the C node's event loop: accepts and opens distribution
 * connections, answers ticks, reconnects to --connect nodes with backoff, and
 * answers requests (request.h). Single-threaded; poll(2) over every fd.
 */
#ifndef SYNOD_CNODE_NODE_H
#define SYNOD_CNODE_NODE_H

#include <ei.h>

#include "options.h"

/* Runs until SIGTERM/SIGINT (or stdin closing with --watch-stdin). Returns an
 * exit code. */
int node_run(ei_cnode *ec, int listen_fd, const cnode_options *opts);

/* Installs the SIGTERM/SIGINT handlers and ignores SIGPIPE. Returns 0 or -1. */
int node_install_signals(void);

#endif
