/* varint.c -- canonical LEB128 varints; see varint.h. Pure. */
#include "varint.h"

size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

size_t varint_get(const uint8_t *p, size_t avail, uint64_t *v)
{
    uint64_t x = 0;
    for (size_t i = 0; i < 10 && i < avail; i++) {
        uint64_t b = p[i];
        if (i == 9 && b > 1)
            return 0; /* more than 64 bits */
        x |= (b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0)
                return 0; /* overlong: not canonical */
            *v = x;
            return i + 1;
        }
    }
    return 0;
}
