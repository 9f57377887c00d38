/*
 * options.h — the C node's command line. See docs/cnode.md for the options
 * and exit codes. The cookie is deliberately not an option: only a file.
 */
#ifndef SYNOD_CNODE_OPTIONS_H
#define SYNOD_CNODE_OPTIONS_H

#include <stddef.h>

#define OPTIONS_MAX_CONNECT 32
#define OPTIONS_MAX_WITNESS 16

/* Exit codes (sysexits.h values). */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 64,       /* bad command line */
    EXIT_DATAERR = 65,     /* witness: a data file is corrupt (mid-file damage) */
    EXIT_NOINPUT = 66,     /* cookie file missing or unreadable */
    EXIT_UNAVAILABLE = 69, /* cannot listen, or epmd refused to publish us */
    EXIT_SOFTWARE = 70,    /* internal error */
    EXIT_IOERR = 74,       /* witness: cannot read, write or fsync its data */
    EXIT_TEMPFAIL = 75,    /* witness: another process holds the data directory */
    EXIT_NOPERM = 77,      /* cookie file unsafe: permissions, owner or a symlink */
};

typedef struct cnode_options {
    const char *name;        /* alive@a.b.c.d */
    const char *cookie_file; /* required */
    const char *connect[OPTIONS_MAX_CONNECT];
    size_t nconnect;
    const char *hub;    /* the hub this node serves */
    const char *server; /* registered name GenServer calls go to */
    int log_level;
    /* witness (docs/cnode.md "Witness"): groups to join and where */
    const char *witness[OPTIONS_MAX_WITNESS];
    size_t nwitness;
    const char *data_dir;
    unsigned raft_tick_ms, election_tick;
    int watch_stdin; /* exit when stdin closes (set when run as a port) */
    int help, version;
} cnode_options;

/* Fills opts; returns 0, or -1 with *why naming the problem. */
int options_parse(int argc, char **argv, cnode_options *opts, const char **why);
void options_usage(const char *prog);

#endif
