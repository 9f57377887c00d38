/* cookie.c — see cookie.h. */
#include "cookie.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

cookie_status cookie_read(const char *path, char out[COOKIE_MAX + 1], const char **why)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ELOOP) {
            *why = "cookie file is a symbolic link";
            return COOKIE_EUNSAFE;
        }
        *why = "cannot open cookie file";
        return COOKIE_EINPUT;
    }
    struct stat st;
    char buf[COOKIE_MAX + 2];
    cookie_status rc = COOKIE_EINPUT;
    ssize_t n = 0;
    if (fstat(fd, &st) != 0) {
        *why = "cannot stat cookie file";
    } else if (!S_ISREG(st.st_mode)) {
        *why = "cookie file is not a regular file";
    } else if (st.st_uid != geteuid()) {
        *why = "cookie file is owned by another user";
        rc = COOKIE_EUNSAFE;
    } else if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        *why = "cookie file is accessible by group or others (chmod 600 it)";
        rc = COOKIE_EUNSAFE;
    } else if ((n = read(fd, buf, sizeof buf)) < 0) {
        *why = "cannot read cookie file";
    } else {
        size_t len = 0;
        while (len < (size_t)n && buf[len] != '\n' && buf[len] != '\r')
            len++;
        int printable = 1;
        for (size_t i = 0; i < len; i++)
            printable &= buf[i] > ' ' && buf[i] < 0x7f;
        if (len == 0) {
            *why = "cookie file is empty";
        } else if (len > COOKIE_MAX) {
            *why = "cookie is longer than 255 bytes";
        } else if (!printable) {
            *why = "cookie holds characters other than printable ASCII";
        } else {
            memcpy(out, buf, len);
            out[len] = '\0';
            rc = COOKIE_OK;
        }
    }
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}
