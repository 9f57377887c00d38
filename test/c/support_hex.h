/* support_hex.h — reading the hex fields of test/vectors/ files. */
#ifndef SYNOD_TEST_SUPPORT_HEX_H
#define SYNOD_TEST_SUPPORT_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Decodes `hex` ("-" stands for no bytes) into out; returns the byte count,
 * or SIZE_MAX if it is not hex or does not fit in cap bytes. */
size_t support_unhex(const char *hex, uint8_t *out, size_t cap);

#endif
