/* support_hex.c — see support_hex.h. */
#include "support_hex.h"

#include <string.h>

static int nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t support_unhex(const char *hex, uint8_t *out, size_t cap)
{
    if (strcmp(hex, "-") == 0)
        return 0;
    size_t len = strlen(hex);
    if (len % 2 != 0 || len / 2 > cap)
        return SIZE_MAX;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return SIZE_MAX;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return len / 2;
}
