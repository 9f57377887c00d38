/*
 * main.c — synod_cnode: a C node that joins a Synod cluster over Erlang
 * distribution (erl_interface). Usage and exit codes: --help, docs/cnode.md.
 *
 * Start-up order: parse options, read the cookie file, give ei its copy and
 * wipe ours, listen on the node's address, publish to epmd, then serve.
 */
#include <arpa/inet.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <ei.h>

#include "cookie.h"
#include "log.h"
#include "node.h"
#include "options.h"
#include "witness.h"
#include "witness_store.h"

static int split_name(const char *name, char *alive, size_t alive_cap, char *host, size_t host_cap,
                      struct in_addr *addr)
{
    const char *at = strchr(name, '@');
    if (!at || at == name || strchr(at + 1, '@'))
        return -1;
    size_t alen = (size_t)(at - name), hlen = strlen(at + 1);
    if (alen >= alive_cap || hlen == 0 || hlen >= host_cap)
        return -1;
    memcpy(alive, name, alen);
    alive[alen] = '\0';
    memcpy(host, at + 1, hlen + 1);
    return inet_pton(AF_INET, host, addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    cnode_options opts;
    const char *why = NULL;
    if (options_parse(argc, argv, &opts, &why) != 0) {
        fprintf(stderr, "synod_cnode: %s (try --help)\n", why);
        return EXIT_USAGE;
    }
    if (opts.help) {
        options_usage(argv[0]);
        return EXIT_OK;
    }
    if (opts.version) {
        printf("synod_cnode 0.1.0\n");
        return EXIT_OK;
    }
    log_set_level((log_level)opts.log_level);

    char alive[EI_MAXALIVELEN + 1], host[EI_MAXHOSTNAMELEN + 1];
    struct in_addr addr;
    if (split_name(opts.name, alive, sizeof alive, host, sizeof host, &addr) != 0) {
        fprintf(stderr, "synod_cnode: --name must be ALIVE@IPV4, for example synod_c@127.0.0.1\n");
        return EXIT_USAGE;
    }
    if (sodium_init() < 0 || node_install_signals() != 0 || ei_init() != 0) {
        LOG_E("cannot initialise libsodium, signals or erl_interface");
        return EXIT_SOFTWARE;
    }

    /* The witness's data first: a held, corrupt or unreadable directory is
     * refused before the node shows up on the network. */
    witness *wit = NULL;
    if (opts.nwitness) {
        char wwhy[512];
        witness_config wc = {.data_dir = opts.data_dir,
                             .groups = opts.witness,
                             .n_groups = opts.nwitness,
                             .self = opts.name,
                             .tick_ms = opts.raft_tick_ms,
                             .election_tick = opts.election_tick,
                             .heartbeat_tick = 1,
                             .send = node_witness_send};
        int wrc = witness_open(&wit, &wc, wwhy, sizeof wwhy);
        if (wrc != WSTORE_OK) {
            LOG_E("witness: %s", wwhy);
            return wrc == WSTORE_ERR_LOCKED    ? EXIT_TEMPFAIL
                   : wrc == WSTORE_ERR_CORRUPT ? EXIT_DATAERR
                   : wrc == WSTORE_ERR_IO      ? EXIT_IOERR
                   : wrc == WSTORE_ERR_INVALID ? EXIT_USAGE
                                               : EXIT_SOFTWARE;
        }
        node_set_witness(wit);
    }

    char cookie[COOKIE_MAX + 1];
    cookie_status status = cookie_read(opts.cookie_file, cookie, &why);
    if (status != COOKIE_OK) {
        LOG_E("%s: %s", opts.cookie_file, why);
        witness_close(wit);
        return status == COOKIE_EUNSAFE ? EXIT_NOPERM : EXIT_NOINPUT;
    }
    static ei_cnode ec;
    int rc = ei_connect_xinit(&ec, host, alive, opts.name, &addr, cookie, 0);
    sodium_memzero(cookie, sizeof cookie);
    if (rc < 0) {
        LOG_E("ei_connect_xinit failed for %s", opts.name);
        witness_close(wit);
        return EXIT_SOFTWARE;
    }

    int port = 0;
    int listen_fd = ei_xlisten(&ec, &addr, &port, 16);
    if (listen_fd < 0) {
        LOG_E("cannot listen on %s", host);
        sodium_memzero(&ec, sizeof ec);
        witness_close(wit);
        return EXIT_UNAVAILABLE;
    }
    int epmd_fd = ei_publish(&ec, port);
    if (epmd_fd < 0) {
        LOG_E("epmd refused to publish %s (is epmd running? is the name taken?)", opts.name);
        close(listen_fd);
        sodium_memzero(&ec, sizeof ec);
        witness_close(wit);
        return EXIT_UNAVAILABLE;
    }
    LOG_I("ready as %s on port %d, serving hub %s as %s", opts.name, port, opts.hub, opts.server);

    rc = node_run(&ec, listen_fd, &opts);
    node_set_witness(NULL);
    witness_close(wit);

    close(epmd_fd); /* epmd forgets us when this closes */
    close(listen_fd);
    sodium_memzero(&ec, sizeof ec);
    LOG_I("stopped");
    return rc;
}
