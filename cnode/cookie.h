/*
 * cookie.h — reading the distribution cookie from a file, safely.
 *
 * The cookie is never taken from argv (other users can read a process's
 * arguments) and never logged. The file must be a regular file owned by us
 * and readable by nobody else (no group or other permission bits); its first
 * line is the cookie. The caller wipes the buffer with sodium_memzero as soon
 * as ei has taken its copy.
 */
#ifndef SYNOD_CNODE_COOKIE_H
#define SYNOD_CNODE_COOKIE_H

#include <stddef.h>

#define COOKIE_MAX 255

typedef enum cookie_status {
    COOKIE_OK = 0,
    COOKIE_EINPUT = -1,  /* missing, unreadable, empty or not one printable line */
    COOKIE_EUNSAFE = -2, /* a symbolic link, another owner, or group/other permissions */
} cookie_status;

/* Reads the cookie into out (COOKIE_MAX + 1 bytes, NUL-terminated). On error
 * *why is set to a reason that names no secret. */
cookie_status cookie_read(const char *path, char out[COOKIE_MAX + 1], const char **why);

#endif
