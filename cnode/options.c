/* options.c — see options.h. */
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Matches "--flag value" or "--flag=value"; advances *i past what it used. */
static int take(int argc, char **argv, int *i, const char *flag, const char **value)
{
    size_t n = strlen(flag);
    if (strncmp(argv[*i], flag, n) != 0)
        return 0;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        *value = NULL;
        return 1;
    }
    *value = argv[++*i];
    return 1;
}

/* The options that take a value, and where each one goes. */
static int take_any(int argc, char **argv, int *i, cnode_options *opts, const char **why)
{
    static const char *const flags[] = {
        "--name",    "--cookie-file", "--hub",      "--server",       "--log-level",
        "--connect", "--witness",     "--data-dir", "--raft-tick-ms", "--election-tick"};
    for (size_t f = 0; f < sizeof flags / sizeof *flags; f++) {
        const char *v;
        if (!take(argc, argv, i, flags[f], &v))
            continue;
        if (v == NULL || *v == '\0') {
            *why = "an option is missing its value";
            return -1;
        }
        switch (f) {
        case 0:
            opts->name = v;
            break;
        case 1:
            opts->cookie_file = v;
            break;
        case 2:
            opts->hub = v;
            break;
        case 3:
            opts->server = v;
            break;
        case 4:
            if ((opts->log_level = log_parse_level(v)) < 0) {
                *why = "--log-level must be error, warn, info or debug";
                return -1;
            }
            break;
        case 5:
            if (opts->nconnect == OPTIONS_MAX_CONNECT) {
                *why = "too many --connect nodes (at most 32)";
                return -1;
            }
            opts->connect[opts->nconnect++] = v;
            break;
        case 6:
            if (opts->nwitness == OPTIONS_MAX_WITNESS) {
                *why = "too many --witness groups (at most 16)";
                return -1;
            }
            if (strlen(v) > 255) {
                *why = "a --witness group name must be at most 255 characters";
                return -1;
            }
            opts->witness[opts->nwitness++] = v;
            break;
        case 7:
            opts->data_dir = v;
            break;
        case 8:
        case 9: {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (*end || n < 1 || n > 100000) {
                *why = "--raft-tick-ms and --election-tick take a number in 1..100000";
                return -1;
            }
            if (f == 8)
                opts->raft_tick_ms = (unsigned)n;
            else
                opts->election_tick = (unsigned)n;
            break;
        }
        }
        return 1;
    }
    return 0;
}

int options_parse(int argc, char **argv, cnode_options *opts, const char **why)
{
    memset(opts, 0, sizeof *opts);
    opts->server = "synod_cnode";
    opts->hub = "synod";
    opts->log_level = LOG_INFO;
    opts->raft_tick_ms = 25; /* Synod.Raft's tick_ms and election_tick defaults */
    opts->election_tick = 10;
    for (int i = 1; i < argc; i++) {
        int taken;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            opts->help = 1;
        } else if (strcmp(argv[i], "--version") == 0) {
            opts->version = 1;
        } else if (strcmp(argv[i], "--watch-stdin") == 0) {
            opts->watch_stdin = 1;
        } else if (strncmp(argv[i], "--cookie", 8) == 0 &&
                   strncmp(argv[i], "--cookie-file", 13) != 0) {
            *why = "the cookie is never taken from the command line: use --cookie-file";
            return -1;
        } else if ((taken = take_any(argc, argv, &i, opts, why)) < 0) {
            return -1;
        } else if (taken == 0) {
            *why = "unknown option";
            return -1;
        }
    }
    if (opts->help || opts->version)
        return 0;
    if (!opts->name) {
        *why = "--name is required (for example synod_c@127.0.0.1)";
        return -1;
    }
    if (!opts->cookie_file) {
        *why = "--cookie-file is required";
        return -1;
    }
    if (opts->nwitness && !opts->data_dir) {
        *why = "--witness needs --data-dir";
        return -1;
    }
    if (opts->data_dir && !opts->nwitness) {
        *why = "--data-dir is only for --witness";
        return -1;
    }
    if (opts->election_tick < 2) {
        *why = "--election-tick must be at least 2";
        return -1;
    }
    if (strlen(opts->hub) > 255 || strlen(opts->server) > 255) {
        *why = "--hub and --server must be at most 255 characters";
        return -1;
    }
    return 0;
}

void options_usage(const char *prog)
{
    printf("usage: %s --name ALIVE@IPV4 --cookie-file FILE [options]\n"
           "\n"
           "Joins a Synod cluster as a C node (erl_interface).\n"
           "\n"
           "  --name NAME          full long node name, e.g. synod_c@127.0.0.1\n"
           "  --cookie-file FILE   file holding the cookie; mode 600, owned by you\n"
           "  --connect NODE       a node to join (repeatable); reconnects with backoff\n"
           "  --hub NAME           the hub this node serves (default synod)\n"
           "  --server NAME        registered name for GenServer calls (default synod_cnode)\n"
           "  --log-level LEVEL    error, warn, info (default) or debug\n"
           "  --watch-stdin        exit when standard input closes (for ports)\n"
           "  --witness GROUP      join Raft group GROUP as a witness (repeatable, at most 16)\n"
           "  --data-dir DIR       the witness's data directory (required with --witness)\n"
           "  --raft-tick-ms N     the groups' tick_ms (default 25)\n"
           "  --election-tick N    the groups' election_tick (default 10)\n"
           "  --help, --version\n"
           "\n"
           "Exit codes: 0 clean stop, 64 usage, 66 cookie file unreadable,\n"
           "69 cannot listen or publish to epmd, 70 internal error,\n"
           "77 cookie file with unsafe permissions; witness: 65 corrupt data file,\n"
           "74 cannot read, write or fsync its data, 75 data directory held by another\n"
           "witness. EI_TRACELEVEL=1..5 traces the wire.\n",
           prog);
}
