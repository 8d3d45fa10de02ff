/* Timeouts as absolute deadlines, so EINTR retries never wait longer. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

/* The library's one clock: monotonic milliseconds. */
int64_t deadline_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

deadline deadline_from(int timeout_ms)
{
    deadline d = { timeout_ms < 0 ? -1 : timeout_ms == 0 ? 0 : 1, 0 };
    if (d.mode > 0)
        d.at_ms = deadline_now_ms() + timeout_ms;
    return d;
}

int deadline_flags(const deadline *d)
{
    return d->mode < 0 ? 0 : MSG_DONTWAIT;
}

int deadline_wait(const deadline *d, int fd, short events)
{
    /* "Never wait", or the socket's own mode said EAGAIN: it is non-blocking
     * (or has SO_RCVTIMEO/SO_SNDTIMEO), so the caller hears it. */
    if (d->mode <= 0)
        return -EAGAIN;
    for (;;) {
        int wait = -1;
        if (d->mode == 1) {
            int64_t left = d->at_ms - deadline_now_ms();
            if (left <= 0)
                return -ETIMEDOUT;
            wait = left > 0x7fffffff ? 0x7fffffff : (int)left;
        }
        struct pollfd p = { .fd = fd, .events = events };
        int r = poll(&p, 1, wait);
        if (r > 0)
            return 0; /* ready, or POLLERR/POLLHUP: the next call reports it */
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

void close_all(const int *fds, size_t n)
{
    int saved = errno;
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    errno = saved;
}
