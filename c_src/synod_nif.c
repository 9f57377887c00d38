/*
 * synod_nif.c — the NIF library behind synod_nif.erl.
 *
 * Loading (the version check, the atom table, each subsystem's loader),
 * the function table, the helpers every glue file shares, and fsync_dir.
 * The subsystems' glue is synod_nif_ring.c, synod_nif_raft.c and
 * synod_nif_store.c. Rules every glue file keeps:
 *   - every argument is checked before any work; a bad one raises
 *     error({badarg, Message}) naming the problem, never crashes the VM;
 *   - calls return within about a millisecond: bulk work yields
 *     (enif_consume_timeslice + enif_schedule_nif) or runs on a dirty
 *     scheduler;
 *   - resource destructors free unconditionally;
 *   - atoms with fixed names come from the load-time table (ATOM(env,
 *     name)); error names come from the cores (raft_err_name,
 *     store_err_name), never from a table that mirrors an enum.
 * The library is loaded with a version number (load_info) that load() checks,
 * so a stale .so fails loudly instead of misbehaving.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <erl_nif.h>
#include <sodium.h>

#include "synod_nif.h"

#define SYNOD_NIF_VERSION 4

nif_priv *synod_priv(ErlNifEnv *env)
{
    return enif_priv_data(env);
}

ERL_NIF_TERM synod_binary(ErlNifEnv *env, const void *data, size_t len)
{
    ERL_NIF_TERM term;
    unsigned char *buf = enif_make_new_binary(env, len, &term);
    if (len)
        memcpy(buf, data, len);
    return term;
}

ERL_NIF_TERM synod_boolean(ErlNifEnv *env, bool b)
{
    return b ? ATOM(env, true_) : ATOM(env, false_);
}

ERL_NIF_TERM synod_raise_badarg(ErlNifEnv *env, const char *message)
{
    ERL_NIF_TERM msg = synod_binary(env, message, strlen(message));
    return enif_raise_exception(env, enif_make_tuple2(env, ATOM(env, badarg), msg));
}

/* ---- fsync_dir(Path) ---- */

/* Makes a directory's entries durable (a created, renamed or removed file).
 * OTP's file module cannot open a directory, so the Raft storage asks here.
 * Runs on a dirty I/O scheduler. Returns ok or {error, Errno :: atom()}. */
static ERL_NIF_TERM errno_error(ErlNifEnv *env, int err)
{
    const char *name;
    switch (err) {
    case ENOENT:
        name = "enoent";
        break;
    case ENOTDIR:
        name = "enotdir";
        break;
    case EACCES:
        name = "eacces";
        break;
    case EIO:
        name = "eio";
        break;
    case EROFS:
        name = "erofs";
        break;
    case ENOSPC:
        name = "enospc";
        break;
    default:
        name = "eunknown";
        break;
    }
    return enif_make_tuple2(env, ATOM(env, error), enif_make_atom(env, name));
}

static ERL_NIF_TERM fsync_dir_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    ErlNifBinary path;
    char buf[4096];
    if (!enif_inspect_iolist_as_binary(env, argv[0], &path) || path.size == 0 ||
        path.size >= sizeof buf || memchr(path.data, 0, path.size) != NULL)
        return synod_raise_badarg(env,
                                  "path must be a non-empty iodata of at most 4095 bytes, no NUL");
    memcpy(buf, path.data, path.size);
    buf[path.size] = '\0';
    int fd = open(buf, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno_error(env, errno);
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0)
        return errno_error(env, saved);
    return ATOM(env, ok);
}

/* ---- loading ---- */

/* Each subsystem (synod_nif_<name>.c) opens its resource types and atoms here. */
static int (*const synod_nif_loaders[])(ErlNifEnv *, nif_priv *) = {
    synod_nif_ring_load,
    synod_nif_raft_load,
    synod_nif_store_load,
};

static int load(ErlNifEnv *env, void **priv_data, ERL_NIF_TERM load_info)
{
    int version;
    if (!enif_get_int(env, load_info, &version) || version != SYNOD_NIF_VERSION)
        return 1;
    if (sodium_init() < 0)
        return 2;
    nif_priv *priv = enif_alloc(sizeof *priv);
    if (!priv)
        return 3;
#define SYNOD_NIF_ATOM_MAKE(name) priv->atoms.name = enif_make_atom(env, #name);
    SYNOD_NIF_ATOMS(SYNOD_NIF_ATOM_MAKE)
#undef SYNOD_NIF_ATOM_MAKE
    priv->atoms.true_ = enif_make_atom(env, "true");
    priv->atoms.false_ = enif_make_atom(env, "false");
    for (size_t i = 0; i < sizeof synod_nif_loaders / sizeof *synod_nif_loaders; i++) {
        if (synod_nif_loaders[i](env, priv) != 0) {
            enif_free(priv);
            return 5;
        }
    }
    *priv_data = priv;
    return 0;
}

static int upgrade(ErlNifEnv *env, void **priv_data, void **old_priv_data, ERL_NIF_TERM load_info)
{
    (void)old_priv_data;
    return load(env, priv_data, load_info);
}

static void unload(ErlNifEnv *env, void *priv_data)
{
    (void)env;
    enif_free(priv_data);
}

static ErlNifFunc nif_funcs[] = {
    SYNOD_NIF_RING_FUNCS,
    {"fsync_dir", 1, fsync_dir_nif, ERL_NIF_DIRTY_JOB_IO_BOUND},
    SYNOD_NIF_RAFT_FUNCS,
    SYNOD_NIF_STORE_FUNCS,
};

ERL_NIF_INIT(synod_nif, nif_funcs, load, NULL, upgrade, unload)
