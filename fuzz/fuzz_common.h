/* What the fuzz targets share: descriptor counting (every input must leave
 * the process holding exactly the descriptors it held before), the
 * descriptors they pass (/dev/null), and a loud abort for a broken
 * invariant. */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((noreturn, format(printf, 1, 2)))
static void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: invariant broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* Descriptors held by this process (the directory's own is not counted). */
static inline int fuzz_fdcount(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        fuzz_fail("cannot open /proc/self/fd");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

/* One /dev/null descriptor for the whole run: what the targets attach. */
static inline int fuzz_devnull(void)
{
    static int fd = -1;
    if (fd < 0 && (fd = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0)
        fuzz_fail("cannot open /dev/null");
    return fd;
}

/* A received descriptor must be a new, close-on-exec /dev/null. */
static inline void fuzz_check_devnull(int fd)
{
    struct stat a, b;
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0)
        fuzz_fail("received descriptor %d is not open", fd);
    if (!(fl & FD_CLOEXEC))
        fuzz_fail("received descriptor %d is not close-on-exec", fd);
    if (fd == fuzz_devnull())
        fuzz_fail("received descriptor %d is the sender's own", fd);
    if (fstat(fd, &a) < 0 || fstat(fuzz_devnull(), &b) < 0 || a.st_rdev != b.st_rdev ||
        !S_ISCHR(a.st_mode))
        fuzz_fail("received descriptor %d is not /dev/null", fd);
}

#endif
