/*
 * synod_nif_ring.c — the consistent-hash ring (ring.h) as NIF functions.
 *
 * A ring is an immutable resource, so processes share it without locks; its
 * destructor frees unconditionally. Calls return within about a
 * millisecond: bulk calls (lookup_many, diff) yield with
 * enif_consume_timeslice + enif_schedule_nif, and building a large ring runs
 * on a dirty CPU scheduler. Bad arguments raise {badarg, Message}.
 */
#include <string.h>

#include "ring.h"
#include "synod_nif.h"

/* Rings with more points than this are built on a dirty scheduler. */
#define RING_DIRTY_POINTS 16384
/* How many keys a bulk call handles between looks at the clock. */
#define BULK_CHUNK 256
/* An atom's name holds at most 255 Latin-1 characters, 510 bytes as UTF-8. */
#define MAX_ATOM_UTF8 510

/* A ring plus the Erlang terms of its members, indexed like the core's
 * members. The terms live in a process-independent env owned by the ring. */
typedef struct nif_ring {
    ring_t *ring;
    ErlNifEnv *env;
    ERL_NIF_TERM *member_terms;
} nif_ring;

static void ring_resource_dtor(ErlNifEnv *env, void *obj)
{
    (void)env;
    nif_ring *res = obj;
    ring_free(res->ring);
    if (res->env)
        enif_free_env(res->env);
    enif_free(res->member_terms);
}

/* ---- term conversion ---- */

/* The bytes that name an atom or a binary. Atoms are taken as their UTF-8
 * text, so the atom 'a' and the binary <<"a">> are the same name and the C
 * node, which sees atoms as UTF-8, hashes them alike. `scratch` holds the
 * converted atom text. Returns 0 if the term is neither. */
static int name_bytes(ErlNifEnv *env, ERL_NIF_TERM term, uint8_t scratch[MAX_ATOM_UTF8],
                      const uint8_t **bytes, size_t *len)
{
    ErlNifBinary bin;
    if (enif_inspect_binary(env, term, &bin)) {
        *bytes = bin.data;
        *len = bin.size;
        return 1;
    }
    char latin1[256];
    int n = enif_get_atom(env, term, latin1, sizeof latin1, ERL_NIF_LATIN1);
    if (n <= 0)
        return 0;
    size_t out = 0;
    for (int i = 0; i < n - 1; i++) {
        uint8_t c = (uint8_t)latin1[i];
        if (c < 0x80) {
            scratch[out++] = c;
        } else {
            scratch[out++] = (uint8_t)(0xC0 | (c >> 6));
            scratch[out++] = (uint8_t)(0x80 | (c & 0x3F));
        }
    }
    *bytes = scratch;
    *len = out;
    return 1;
}

static nif_ring *get_ring(ErlNifEnv *env, ERL_NIF_TERM term)
{
    nif_ring *res;
    if (!enif_get_resource(env, term, synod_priv(env)->ring_type, (void **)&res))
        return NULL;
    return res;
}

static ERL_NIF_TERM member_term(ErlNifEnv *env, const nif_ring *res, uint32_t index)
{
    ERL_NIF_TERM t = res->member_terms[index];
    return enif_is_atom(env, t) ? t : enif_make_copy(env, t);
}

/* ---- ring_new(Members, Vnodes, Seed) ---- */

typedef struct member_list {
    ring_member_spec *specs;
    ERL_NIF_TERM *terms;
    uint8_t *atom_text; /* count * MAX_ATOM_UTF8 bytes for atom names */
    unsigned count;
} member_list;

static void member_list_free(member_list *ml)
{
    enif_free(ml->specs);
    enif_free(ml->terms);
    enif_free(ml->atom_text);
}

/* Parses [Name | {Name, Weight}]; returns NULL or an error message. */
static const char *parse_members(ErlNifEnv *env, ERL_NIF_TERM list, member_list *ml)
{
    memset(ml, 0, sizeof *ml);
    if (!enif_get_list_length(env, list, &ml->count))
        return "members must be a proper list";
    if (ml->count == 0)
        return "the member list is empty";
    if (ml->count > RING_MAX_MEMBERS)
        return "too many members (at most 4096)";
    ml->specs = enif_alloc(ml->count * sizeof *ml->specs);
    ml->terms = enif_alloc(ml->count * sizeof *ml->terms);
    ml->atom_text = enif_alloc((size_t)ml->count * MAX_ATOM_UTF8);
    if (!ml->specs || !ml->terms || !ml->atom_text)
        return "out of memory";
    ERL_NIF_TERM head, tail = list;
    for (unsigned i = 0; enif_get_list_cell(env, tail, &head, &tail); i++) {
        const ERL_NIF_TERM *tuple;
        int arity;
        unsigned weight = 1;
        ERL_NIF_TERM name = head;
        if (enif_get_tuple(env, head, &arity, &tuple)) {
            if (arity != 2)
                return "a member must be a name or a {name, weight} tuple";
            name = tuple[0];
            if (!enif_get_uint(env, tuple[1], &weight) || weight == 0 || weight > RING_MAX_WEIGHT)
                return "a weight must be an integer in 1..1024";
        }
        const uint8_t *bytes;
        size_t len;
        if (!name_bytes(env, name, ml->atom_text + (size_t)i * MAX_ATOM_UTF8, &bytes, &len))
            return "a member name must be an atom or a binary";
        if (len == 0 || len > RING_MAX_NAME)
            return "a member name must be 1..255 bytes";
        ml->specs[i] = (ring_member_spec){bytes, len, weight, i};
        ml->terms[i] = name;
    }
    return NULL;
}

static ERL_NIF_TERM ring_new_build(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    unsigned vnodes;
    ErlNifBinary seed;
    member_list ml;
    enif_get_uint(env, argv[1], &vnodes);
    enif_inspect_binary(env, argv[2], &seed);
    const char *why = parse_members(env, argv[0], &ml);
    if (why) {
        member_list_free(&ml);
        return synod_raise_badarg(env, why);
    }
    ring_t *ring = NULL;
    size_t bad = 0;
    ring_error err = ring_build(&ring, ml.specs, ml.count, vnodes, seed.data, &bad);
    if (err != RING_OK) {
        char message[600];
        if (err == RING_EDUPLICATE)
            enif_snprintf(message, sizeof message, "duplicate member: %T", ml.terms[bad]);
        else
            enif_snprintf(message, sizeof message, "%s", ring_strerror(err));
        member_list_free(&ml);
        if (err == RING_ENOMEM)
            return enif_raise_exception(env, ATOM(env, enomem));
        return synod_raise_badarg(env, message);
    }
    nif_ring *res = enif_alloc_resource(synod_priv(env)->ring_type, sizeof *res);
    res->ring = ring;
    res->env = enif_alloc_env();
    res->member_terms = enif_alloc(ml.count * sizeof *res->member_terms);
    for (uint32_t m = 0; m < ml.count; m++)
        res->member_terms[m] = enif_make_copy(res->env, ml.terms[ring_member_tag(ring, m)]);
    member_list_free(&ml);
    ERL_NIF_TERM term = enif_make_resource(env, res);
    enif_release_resource(res);
    return term;
}

ERL_NIF_TERM synod_ring_new(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    unsigned vnodes, length;
    ErlNifBinary seed;
    if (!enif_get_list_length(env, argv[0], &length))
        return synod_raise_badarg(env, "members must be a proper list");
    if (!enif_get_uint(env, argv[1], &vnodes) || vnodes == 0 || vnodes > RING_MAX_VNODES)
        return synod_raise_badarg(env, "vnodes must be an integer in 1..16384");
    if (!enif_inspect_binary(env, argv[2], &seed) || seed.size != RING_SEED_BYTES)
        return synod_raise_badarg(env, "seed must be a 16-byte binary");
    /* A rough size: members without weights get one share each. */
    if ((uint64_t)length * vnodes > RING_DIRTY_POINTS)
        return enif_schedule_nif(env, "ring_new", ERL_NIF_DIRTY_JOB_CPU_BOUND, ring_new_build, argc,
                                 argv);
    return ring_new_build(env, argc, argv);
}

/* ---- lookups ---- */

ERL_NIF_TERM synod_ring_lookup(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_ring *res = get_ring(env, argv[0]);
    uint8_t scratch[MAX_ATOM_UTF8];
    const uint8_t *key;
    size_t len;
    if (!res)
        return synod_raise_badarg(env, "not a ring");
    if (!name_bytes(env, argv[1], scratch, &key, &len))
        return synod_raise_badarg(env, "a key must be a binary or an atom");
    return member_term(env, res, ring_lookup(res->ring, key, len));
}

ERL_NIF_TERM synod_ring_owners(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_ring *res = get_ring(env, argv[0]);
    uint8_t scratch[MAX_ATOM_UTF8];
    const uint8_t *key;
    size_t len;
    ErlNifUInt64 n;
    if (!res)
        return synod_raise_badarg(env, "not a ring");
    if (!name_bytes(env, argv[1], scratch, &key, &len))
        return synod_raise_badarg(env, "a key must be a binary or an atom");
    /* Any positive integer: one too big for 64 bits still means "all". */
    if (!enif_get_uint64(env, argv[2], &n)) {
        if (enif_term_type(env, argv[2]) != ERL_NIF_TERM_TYPE_INTEGER ||
            enif_compare(argv[2], enif_make_int(env, 0)) < 0)
            return synod_raise_badarg(env, "n must be a positive integer");
        n = UINT64_MAX; /* a positive bignum */
    }
    if (n == 0)
        return synod_raise_badarg(env, "n must be a positive integer");
    uint32_t count = ring_member_count(res->ring);
    size_t want = n < count ? (size_t)n : count;
    uint32_t stack[64];
    uint32_t *out = want <= 64 ? stack : enif_alloc(want * sizeof *out);
    size_t got = ring_owners(res->ring, key, len, out, want);
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = got; i > 0; i--)
        list = enif_make_list_cell(env, member_term(env, res, out[i - 1]), list);
    if (out != stack)
        enif_free(out);
    return list;
}

/* ---- bulk calls that yield ---- */

/* Runs `step` over the list argv[keys_at], BULK_CHUNK keys between looks at
 * the clock, and reschedules itself (with the rest of the list and the
 * accumulator) when the timeslice is used up. Each step conses onto the
 * accumulator, so the result comes back reversed; the Erlang side reverses. */
typedef int (*bulk_step)(ErlNifEnv *env, const ERL_NIF_TERM argv[], ERL_NIF_TERM key,
                         ERL_NIF_TERM *acc);
typedef ERL_NIF_TERM (*nif_fun)(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]);

static ERL_NIF_TERM bulk_run(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[], int keys_at,
                             const char *name, nif_fun self, bulk_step step)
{
    ERL_NIF_TERM rest = argv[keys_at], acc = argv[keys_at + 1], head;
    ErlNifTime start = enif_monotonic_time(ERL_NIF_USEC);
    for (;;) {
        for (int i = 0; i < BULK_CHUNK; i++) {
            if (!enif_get_list_cell(env, rest, &head, &rest)) {
                if (!enif_is_empty_list(env, rest))
                    return synod_raise_badarg(env, "keys must be a proper list");
                return acc;
            }
            if (!step(env, argv, head, &acc))
                return synod_raise_badarg(env, "a key must be a binary or an atom");
        }
        ErlNifTime elapsed = enif_monotonic_time(ERL_NIF_USEC) - start;
        /* 1 ms is a full timeslice; round up so the slice is never overrun */
        int percent = (int)((elapsed + 9) / 10);
        if (enif_consume_timeslice(env, percent > 100 ? 100 : (percent < 1 ? 1 : percent))) {
            ERL_NIF_TERM next[4];
            memcpy(next, argv, (size_t)argc * sizeof *next);
            next[keys_at] = rest;
            next[keys_at + 1] = acc;
            return enif_schedule_nif(env, name, 0, self, argc, next);
        }
        start = enif_monotonic_time(ERL_NIF_USEC);
    }
}

static int lookup_step(ErlNifEnv *env, const ERL_NIF_TERM argv[], ERL_NIF_TERM key,
                       ERL_NIF_TERM *acc)
{
    nif_ring *res = get_ring(env, argv[0]);
    uint8_t scratch[MAX_ATOM_UTF8];
    const uint8_t *bytes;
    size_t len;
    if (!name_bytes(env, key, scratch, &bytes, &len))
        return 0;
    *acc =
        enif_make_list_cell(env, member_term(env, res, ring_lookup(res->ring, bytes, len)), *acc);
    return 1;
}

static ERL_NIF_TERM ring_lookup_many_cont(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return bulk_run(env, argc, argv, 1, "ring_lookup_many", ring_lookup_many_cont, lookup_step);
}

/* ring_lookup_many(Ring, Keys, Acc) -> reversed owners ++ Acc */
ERL_NIF_TERM synod_ring_lookup_many(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    if (!get_ring(env, argv[0]))
        return synod_raise_badarg(env, "not a ring");
    if (!enif_is_list(env, argv[1]))
        return synod_raise_badarg(env, "keys must be a list");
    return ring_lookup_many_cont(env, argc, argv);
}

static int diff_step(ErlNifEnv *env, const ERL_NIF_TERM argv[], ERL_NIF_TERM key, ERL_NIF_TERM *acc)
{
    nif_ring *old = get_ring(env, argv[0]), *new = get_ring(env, argv[1]);
    uint8_t scratch[MAX_ATOM_UTF8];
    const uint8_t *bytes;
    size_t len;
    if (!name_bytes(env, key, scratch, &bytes, &len))
        return 0;
    uint64_t h = ring_hash(old->ring, bytes, len);
    uint64_t h2 = memcmp(ring_seed(old->ring), ring_seed(new->ring), RING_SEED_BYTES) == 0
                      ? h
                      : ring_hash(new->ring, bytes, len);
    uint32_t a = ring_lookup_hash(old->ring, h), b = ring_lookup_hash(new->ring, h2);
    size_t alen, blen;
    const uint8_t *aname = ring_member_name(old->ring, a, &alen);
    const uint8_t *bname = ring_member_name(new->ring, b, &blen);
    if (alen != blen || memcmp(aname, bname, alen) != 0)
        *acc = enif_make_list_cell(
            env, enif_make_tuple3(env, key, member_term(env, old, a), member_term(env, new, b)),
            *acc);
    return 1;
}

static ERL_NIF_TERM ring_diff_cont(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    return bulk_run(env, argc, argv, 2, "ring_diff", ring_diff_cont, diff_step);
}

/* ring_diff(Old, New, Keys, Acc) -> reversed [{Key, OldOwner, NewOwner}] ++ Acc */
ERL_NIF_TERM synod_ring_diff(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    if (!get_ring(env, argv[0]) || !get_ring(env, argv[1]))
        return synod_raise_badarg(env, "not a ring");
    if (!enif_is_list(env, argv[2]))
        return synod_raise_badarg(env, "keys must be a list");
    return ring_diff_cont(env, argc, argv);
}

/* ---- ring_info(Ring) ---- */

ERL_NIF_TERM synod_ring_info(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[])
{
    (void)argc;
    nif_ring *res = get_ring(env, argv[0]);
    if (!res)
        return synod_raise_badarg(env, "not a ring");
    ERL_NIF_TERM members = enif_make_list(env, 0), seed;
    for (uint32_t m = ring_member_count(res->ring); m > 0; m--) {
        ERL_NIF_TERM pair =
            enif_make_tuple2(env, member_term(env, res, m - 1),
                             enif_make_uint(env, ring_member_weight(res->ring, m - 1)));
        members = enif_make_list_cell(env, pair, members);
    }
    memcpy(enif_make_new_binary(env, RING_SEED_BYTES, &seed), ring_seed(res->ring),
           RING_SEED_BYTES);
    ERL_NIF_TERM keys[] = {ATOM(env, members), ATOM(env, vnodes), ATOM(env, seed),
                           ATOM(env, points)};
    ERL_NIF_TERM values[] = {members, enif_make_uint(env, ring_vnodes(res->ring)), seed,
                             enif_make_uint(env, ring_point_count(res->ring))};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, 4, &map);
    return map;
}

int synod_nif_ring_load(ErlNifEnv *env, nif_priv *priv)
{
    priv->ring_type = enif_open_resource_type(env, NULL, "synod_ring", ring_resource_dtor,
                                              ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    return priv->ring_type ? 0 : 1;
}
