/*
 * hubview.h — what the C node knows of the hub it serves: the members, the
 * ring built from them with the same C core as the NIF (c_src/ring.c), the
 * replication factor and model. Placement is therefore identical to
 * Synod.Hub.Placement's for the same membership.
 *
 * Pure: no I/O. A view is replaced whole when a coordinator answers
 * ring_info; hubview_set rebuilds the ring only when something changed.
 */
#ifndef SYNOD_CNODE_HUBVIEW_H
#define SYNOD_CNODE_HUBVIEW_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "ring.h"

typedef enum hub_model { MODEL_UNKNOWN, MODEL_ACTIVE_ACTIVE, MODEL_ACTIVE_PASSIVE } hub_model;

typedef struct hubview {
    char (*names)[MAXATOMLEN_UTF8]; /* members, sorted bytewise (= term order for node atoms) */
    size_t count;
    uint32_t vnodes;
    uint8_t seed[RING_SEED_BYTES];
    unsigned rf;
    hub_model model;
    ring_t *ring; /* NULL until the first ring_info answer */
} hubview;

void hubview_init(hubview *v);
void hubview_free(hubview *v);

/* Adopts a membership. Returns 1 if it changed (and the ring was rebuilt),
 * 0 if it is the same, -1 on error (the old view stays). */
int hubview_set(hubview *v, const char (*names)[MAXATOMLEN_UTF8], size_t count, uint32_t vnodes,
                const uint8_t seed[RING_SEED_BYTES], unsigned rf);

/* Index of a member by name, or -1. */
int hubview_find(const hubview *v, const char *node);

/* The owners of a ring key: min(rf, count) member indexes, first owner
 * first, into out (at least v->rf entries). Returns how many. */
size_t hubview_owners(const hubview *v, const uint8_t *key, size_t len, uint32_t *out);

/* Whether the replica on the rank-th owner (0 = first) runs active. */
int hubview_active(const hubview *v, size_t rank);

#endif
