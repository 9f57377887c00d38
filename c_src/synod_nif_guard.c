/*
 * synod_nif_guard.c — what a failed invariant inside the NIF does: it stops
 * one instance, never the VM.
 *
 * The cores assert their internal invariants (c_src/raft.c's walk, the
 * store's checks). In the C tests and fuzzers a failed assert aborts. In the
 * NIF, whose cores run inside the BEAM, the NIF build's assert.h
 * (c_src/nif_assert/assert.h) calls synod_invariant_failed instead, and this
 * file turns that into:
 *
 *   1. an unwind (longjmp) to the NIF call that reached the core: every NIF
 *      function runs inside a guard frame set up by a trampoline;
 *   2. the instance the call was made on (its first argument: a raft, store
 *      or ring resource) is poisoned: it is kept alive for good (never
 *      freed: its memory may be half-way through a change, so neither the
 *      core nor its destructor touches it again), and every later call on
 *      it raises at once;
 *   3. error({invariant, <<"file:line: expression">>}) raised in the
 *      calling process, with one line on stderr.
 *
 * A raise, not {error, _}: callers pass {error, _} from the cores on as
 * ordinary outcomes (a store command's lease_not_found), while an invariant
 * failure must stop its owner. A Raft member whose NIF raises crashes, and
 * its supervisor starts it again from its files on disk, with a new
 * instance; the node's other members and processes go on.
 *
 * The trampolines are installed without touching the function table's
 * source: a constructor runs when the library is loaded, before the VM asks
 * for the table (nif_init), and replaces each entry's function with a
 * trampoline that remembers the real one. Work a NIF reschedules
 * (enif_schedule_nif, renamed by synod_nif_guard.h) gets a trampoline too.
 *
 * Test-only trigger: with SYNOD_TEST_INVARIANT=<nif name>:<n> in the
 * environment when the library loads, the n-th call of that NIF fails an
 * invariant inside the guard, as an assert in the core would. Nothing else
 * reads it.
 */
#include "synod_nif_guard.h"

#include <assert.h> /* the NIF build's: synod_invariant_failed */
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synod_nif.h"

#undef enif_schedule_nif

typedef ERL_NIF_TERM (*nif_fn)(ErlNifEnv *, int, const ERL_NIF_TERM[]);

typedef struct guard_frame {
    jmp_buf jump;
    struct guard_frame *prev;
} guard_frame;

#define WHERE_MAX 256
/* initial-exec: no __tls_get_addr call on every NIF call */
static _Thread_local guard_frame *current __attribute__((tls_model("initial-exec")));
static _Thread_local char failed_where[WHERE_MAX]; /* set just before the longjmp */

#define SLOTS 64
static nif_fn real[SLOTS];
static int table_slots; /* slots 0..table_slots-1 are the table's entries */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

/* the test trigger: the trip_at-th call of table slot trip_slot */
static int trip_slot = -1;
static unsigned long trip_at;
static unsigned long trip_calls;

void synod_invariant_failed(const char *expr, const char *file, int line)
{
    guard_frame *f = current;
    if (f == NULL) {
        /* not inside a NIF call (load, a destructor): nothing to unwind to */
        fprintf(stderr, "synod_nif: invariant failed outside a NIF call: %s:%d: %s\n", file, line,
                expr);
        abort();
    }
    snprintf(failed_where, sizeof failed_where, "%s:%d: %s", file, line, expr);
    longjmp(f->jump, 1);
}

/* ---- poisoned instances ---- */

typedef struct poisoned {
    void *obj;
    char where[WHERE_MAX];
    struct poisoned *next;
} poisoned;

static poisoned *poison_list;
static pthread_mutex_t poison_lock = PTHREAD_MUTEX_INITIALIZER;

/* The Synod resource `term` is, or NULL. */
static void *instance_of(ErlNifEnv *env, ERL_NIF_TERM term)
{
    nif_priv *priv = synod_priv(env);
    ErlNifResourceType *types[] = {priv->raft_type, priv->store_type, priv->ring_type};
    void *obj;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i] && enif_get_resource(env, term, types[i], &obj))
            return obj;
    return NULL;
}

static int poisoned_where(void *obj, char *out, size_t size)
{
    int found = 0;
    pthread_mutex_lock(&poison_lock);
    for (poisoned *p = poison_list; p && !found; p = p->next)
        if (p->obj == obj) {
            snprintf(out, size, "%s", p->where);
            found = 1;
        }
    pthread_mutex_unlock(&poison_lock);
    return found;
}

static void poison(void *obj, const char *where)
{
    poisoned *p = malloc(sizeof *p);
    if (p == NULL)
        return;
    enif_keep_resource(obj); /* never freed: see the top of this file */
    p->obj = obj;
    snprintf(p->where, sizeof p->where, "%s", where);
    pthread_mutex_lock(&poison_lock);
    p->next = poison_list;
    __atomic_store_n(&poison_list, p, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&poison_lock);
}

static ERL_NIF_TERM raise_invariant(ErlNifEnv *env, const char *where)
{
    ERL_NIF_TERM bin = synod_binary(env, where, strlen(where));
    return enif_raise_exception(env, enif_make_tuple2(env, enif_make_atom(env, "invariant"), bin));
}

/* ---- the guard ---- */

static int trips_now(int slot)
{
    return slot == trip_slot && __atomic_add_fetch(&trip_calls, 1, __ATOMIC_RELAXED) == trip_at;
}

static ERL_NIF_TERM guarded(int slot, ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    /* the fast path: nothing poisoned yet, no lookup, no lock */
    if (__atomic_load_n(&poison_list, __ATOMIC_ACQUIRE) != NULL && argc > 0) {
        void *obj = instance_of(env, argv[0]);
        char where[WHERE_MAX];
        if (obj && poisoned_where(obj, where, sizeof where))
            return raise_invariant(env, where);
    }

    guard_frame f;
    f.prev = current;
    current = &f;
    if (setjmp(f.jump) == 0) {
        if (trips_now(slot))
            synod_invariant_failed("SYNOD_TEST_INVARIANT trigger", __FILE__, __LINE__);
        ERL_NIF_TERM result = real[slot](env, argc, argv);
        current = f.prev;
        return result;
    }
    current = f.prev;
    fprintf(stderr, "synod_nif: invariant failed: %s (instance stopped)\n", failed_where);
    void *obj = argc > 0 ? instance_of(env, argv[0]) : NULL;
    if (obj)
        poison(obj, failed_where);
    return raise_invariant(env, failed_where);
}

/* 64 trampolines: tramp_<h>_<l> runs slot 8h + l. */
#define T(h, l)                                                                                    \
    static ERL_NIF_TERM tramp_##h##_##l(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])       \
    {                                                                                              \
        return guarded(8 * h + l, env, argc, argv);                                                \
    }
#define T8(h) T(h, 0) T(h, 1) T(h, 2) T(h, 3) T(h, 4) T(h, 5) T(h, 6) T(h, 7)
/* clang-format off */
T8(0) T8(1) T8(2) T8(3) T8(4) T8(5) T8(6) T8(7)
#undef T
#define T(h, l) tramp_##h##_##l,
static const nif_fn tramps[SLOTS] = {T8(0) T8(1) T8(2) T8(3) T8(4) T8(5) T8(6) T8(7)};
/* clang-format on */

/* The slot running fp, given one if it has none; -1 when all are taken. */
static int slot_of(nif_fn fp)
{
    int slot = -1;
    pthread_mutex_lock(&slots_lock);
    for (int i = 0; i < SLOTS && slot < 0; i++) {
        if (real[i] == fp)
            slot = i;
        else if (real[i] == NULL) {
            real[i] = fp;
            slot = i;
        }
    }
    pthread_mutex_unlock(&slots_lock);
    return slot;
}

ERL_NIF_TERM synod_guard_schedule(ErlNifEnv *env, const char *name, int flags, nif_fn fp, int argc,
                                  const ERL_NIF_TERM argv[])
{
    int slot = slot_of(fp);
    return enif_schedule_nif(env, name, flags, slot < 0 ? fp : tramps[slot], argc, argv);
}

/* NIFs left unguarded: ring_lookup, the hottest call (the guard costs about
 * 15% of it), reaches no assert (ring_lookup_hash checks nothing at run
 * time; the ring it reads was built and checked under the guard). */
static int unguarded(const char *name)
{
    return strcmp(name, "ring_lookup") == 0;
}

ErlNifEntry *nif_init(void);

/* Before the VM reads the function table (nif_init), route every entry
 * through its trampoline. */
__attribute__((constructor)) static void install_guard(void)
{
    ErlNifEntry *entry = nif_init();
    const char *trip = getenv("SYNOD_TEST_INVARIANT");
    const char *colon = trip ? strchr(trip, ':') : NULL;
    table_slots = entry->num_of_funcs < SLOTS ? entry->num_of_funcs : SLOTS;
    for (int i = 0; i < table_slots; i++) {
        real[i] = entry->funcs[i].fptr;
        if (!unguarded(entry->funcs[i].name))
            entry->funcs[i].fptr = tramps[i];
        if (colon && strlen(entry->funcs[i].name) == (size_t)(colon - trip) &&
            strncmp(entry->funcs[i].name, trip, (size_t)(colon - trip)) == 0) {
            trip_slot = i;
            trip_at = strtoul(colon + 1, NULL, 10);
        }
    }
}
