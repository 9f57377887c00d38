/*
 * synod_nif_guard.h — no VM crash from a core (see synod_nif_guard.c).
 *
 * Included by synod_nif.h, after erl_nif.h: work a NIF reschedules with
 * enif_schedule_nif runs guarded too.
 */
#ifndef SYNOD_NIF_GUARD_H
#define SYNOD_NIF_GUARD_H

#include <erl_nif.h>

/* enif_schedule_nif, with fp run inside the guard. */
ERL_NIF_TERM synod_guard_schedule(ErlNifEnv *env, const char *name, int flags,
                                  ERL_NIF_TERM (*fp)(ErlNifEnv *, int, const ERL_NIF_TERM[]),
                                  int argc, const ERL_NIF_TERM argv[]);

#define enif_schedule_nif(env, name, flags, fp, argc, argv)                                        \
    synod_guard_schedule(env, name, flags, fp, argc, argv)

#endif
