/* fuzz_raft_decode.c -- libFuzzer harness for the Raft wire decoder.
 *
 * Property: raft_msg_decode never crashes, never reads outside the input
 * (ASan), and everything it accepts passes raft_msg_check and re-encodes to
 * exactly the input bytes (the encoding is canonical). Accepted messages are
 * also stepped into a small live instance so the state machine sees the
 * same hostile input a network could deliver. Crashers go to
 * fuzz/regressions/fuzz_raft_decode/ and are replayed by every test run. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "raft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    raft_msg m;
    int rc = raft_msg_decode(data, size, &m);
    if (rc != RAFT_OK) {
        if (m.mem || m.type || m.n_entries)
            abort(); /* a failed decode leaves nothing behind */
        return 0;
    }
    if (raft_msg_check(&m) != RAFT_OK)
        abort();
    size_t need = raft_msg_encoded_size(&m), len = 0;
    uint8_t *again = malloc(need ? need : 1);
    if (!again)
        abort();
    if (raft_msg_encode(&m, again, need, &len) != RAFT_OK || len != size ||
        memcmp(again, data, size) != 0)
        abort();
    free(again);

    /* Step it into member m.to of a three-member group (ids 1..3). */
    if (m.to >= 1 && m.to <= 3) {
        uint64_t voters[] = {1, 2, 3};
        raft_config cfg;
        raft_config_init(&cfg, m.to, 42);
        cfg.voters = voters;
        cfg.n_voters = 3;
        raft_t *r = raft_new(&cfg, NULL);
        if (!r)
            abort();
        raft_ready_t rd;
        while (raft_has_ready(r) && raft_ready(r, &rd) == RAFT_OK)
            raft_advance(r, &rd);
        rc = raft_step(r, &m);
        if (rc != RAFT_OK && rc != RAFT_ERR_INVALID)
            abort();
        /* A whole snapshot in one chunk: the driver's check passes or fails
         * (by the low bit of the checksum), and the core must take either. */
        bool last = false;
        uint64_t si = 0, st = 0;
        while (raft_has_ready(r) && raft_ready(r, &rd) == RAFT_OK) {
            for (size_t i = 0; i < rd.n_chunks; i++)
                if (rd.chunks[i].last) {
                    last = true;
                    si = rd.chunks[i].index;
                    st = rd.chunks[i].term;
                }
            raft_advance(r, &rd);
        }
        if (last && raft_snapshot_received(r, si, st, !(m.snapshot.checksum & 1)) != RAFT_OK)
            abort();
        while (raft_has_ready(r) && raft_ready(r, &rd) == RAFT_OK)
            raft_advance(r, &rd);
        raft_free(r);
    }
    raft_msg_release(&m);
    return 0;
}
