/* hubview.c — see hubview.h. Pure. */
#include "hubview.h"

#include <stdlib.h>
#include <string.h>

void hubview_init(hubview *v)
{
    memset(v, 0, sizeof *v);
}

void hubview_free(hubview *v)
{
    ring_free(v->ring);
    free(v->names);
    hubview_init(v);
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int same(const hubview *v, const char (*sorted)[MAXATOMLEN_UTF8], size_t count,
                uint32_t vnodes, const uint8_t seed[RING_SEED_BYTES], unsigned rf)
{
    if (!v->ring || v->count != count || v->vnodes != vnodes || v->rf != rf ||
        memcmp(v->seed, seed, RING_SEED_BYTES) != 0)
        return 0;
    for (size_t i = 0; i < count; i++)
        if (strcmp(v->names[i], sorted[i]) != 0)
            return 0;
    return 1;
}

int hubview_set(hubview *v, const char (*names)[MAXATOMLEN_UTF8], size_t count, uint32_t vnodes,
                const uint8_t seed[RING_SEED_BYTES], unsigned rf)
{
    if (count == 0 || count > RING_MAX_MEMBERS || rf == 0)
        return -1;
    char(*sorted)[MAXATOMLEN_UTF8] = malloc(count * sizeof *sorted);
    ring_member_spec *specs = malloc(count * sizeof *specs);
    if (!sorted || !specs) {
        free(sorted);
        free(specs);
        return -1;
    }
    memcpy(sorted, names, count * sizeof *sorted);
    qsort(sorted, count, sizeof *sorted, cmp_names);
    if (same(v, (const char(*)[MAXATOMLEN_UTF8])sorted, count, vnodes, seed, rf)) {
        free(sorted);
        free(specs);
        return 0;
    }
    for (size_t i = 0; i < count; i++)
        specs[i] =
            (ring_member_spec){(const uint8_t *)sorted[i], strlen(sorted[i]), 1, (uint32_t)i};
    ring_t *ring = NULL;
    ring_error e = ring_build(&ring, specs, count, vnodes, seed, NULL);
    free(specs);
    if (e != RING_OK) {
        free(sorted);
        return -1;
    }
    ring_free(v->ring);
    free(v->names);
    v->ring = ring;
    v->names = sorted;
    v->count = count;
    v->vnodes = vnodes;
    memcpy(v->seed, seed, RING_SEED_BYTES);
    v->rf = rf;
    return 1;
}

int hubview_find(const hubview *v, const char *node)
{
    if (!v->names)
        return -1;
    const char(*hit)[MAXATOMLEN_UTF8] =
        bsearch(node, v->names, v->count, sizeof *v->names, cmp_names);
    return hit ? (int)(hit - v->names) : -1;
}

size_t hubview_owners(const hubview *v, const uint8_t *key, size_t len, uint32_t *out)
{
    if (!v->ring)
        return 0;
    size_t n = ring_owners(v->ring, key, len, out, v->rf);
    for (size_t i = 0; i < n; i++)
        out[i] = ring_member_tag(v->ring, out[i]);
    return n;
}

int hubview_active(const hubview *v, size_t rank)
{
    return v->model != MODEL_ACTIVE_PASSIVE || rank == 0;
}
