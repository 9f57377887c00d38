/*
 * fuzz_etf_check.c — libFuzzer harness for c_src/etf.c, the validator every
 * term the C node receives goes through before ei decodes it. Any input must
 * be accepted or refused without reading out of bounds (ASan) or undefined
 * behaviour (UBSan); an accepted input must stay accepted when re-checked as
 * a bare term, and must end exactly where the message ends.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "etf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (etf_check_message(data, size, ETF_DEFAULT_MAX_DEPTH) == ETF_OK) {
        size_t at = 1;
        if (etf_check_term(data, size, &at, ETF_DEFAULT_MAX_DEPTH) != ETF_OK || at != size)
            abort();
    }
    return 0;
}
