/* Starting a process with chosen descriptors, no shell, and waiting for it
 * with a timeout: what an upgrade needs to start the new copy. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "internal.h"

extern char **environ;

int fdpass_spawn(pid_t *pid, const char *file, char *const argv[],
                 char *const envp[], const int (*map)[2], size_t nmap)
{
    posix_spawn_file_actions_t fa;
    int r = posix_spawn_file_actions_init(&fa);
    if (r)
        return -r;
    /* dup2 clears close-on-exec on the target. A parent descriptor that is
     * also a target of another entry is first moved out of the way, so that
     * a permutation ({3<-4},{4<-3}) comes out right. */
    int *tmp = calloc(nmap ? nmap : 1, sizeof(int));
    if (!tmp) {
        posix_spawn_file_actions_destroy(&fa);
        return -ENOMEM;
    }
    int above = 0; /* temporaries must not land on a target */
    for (size_t i = 0; i < nmap; i++)
        if (map[i][0] >= above)
            above = map[i][0] + 1;
    for (size_t i = 0; i < nmap; i++)
        tmp[i] = -1;
    for (size_t i = 0; i < nmap && !r; i++) {
        tmp[i] = fcntl(map[i][1], F_DUPFD_CLOEXEC, above);
        if (tmp[i] < 0) {
            r = errno;
            break;
        }
    }
    for (size_t i = 0; i < nmap && !r; i++)
        r = posix_spawn_file_actions_adddup2(&fa, tmp[i], map[i][0]);
    /* The child gets 0-2 and the map, nothing else: a descriptor the app
     * opened without close-on-exec (LuaSocket's sockets, for one) would
     * otherwise live on in the new copy, and a connection the old process
     * closes would stay open there. Below the highest target, each gap is
     * closed one by one (glibc ignores EBADF for a close action); above
     * it, closefrom. */
    for (int fd = 3; fd < above && !r; fd++) {
        int target = 0;
        for (size_t i = 0; i < nmap; i++)
            target |= map[i][0] == fd;
        if (!target)
            r = posix_spawn_file_actions_addclose(&fa, fd);
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    if (!r)
        r = posix_spawn_file_actions_addclosefrom_np(&fa, above > 3 ? above : 3);
#else
#error "fdpass_spawn needs posix_spawn_file_actions_addclosefrom_np (glibc 2.34)"
#endif
    /* A fresh process: no signal blocked (a parent that takes its signals
     * through a signalfd blocks them) and every handled signal back to its
     * default; an ignored one stays ignored, as across exec. */
    posix_spawnattr_t at;
    int at_ok = !r && posix_spawnattr_init(&at) == 0;
    if (at_ok) {
        sigset_t none, dfl;
        sigemptyset(&none);
        sigemptyset(&dfl);
        for (int sig = 1; sig < NSIG; sig++) {
            struct sigaction sa;
            if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &sa) == 0 &&
                sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL)
                sigaddset(&dfl, sig);
        }
        posix_spawnattr_setsigmask(&at, &none);
        posix_spawnattr_setsigdefault(&at, &dfl);
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    }
    if (!r)
        r = posix_spawnp(pid, file, &fa, at_ok ? &at : NULL, argv, envp ? envp : environ);
    if (at_ok)
        posix_spawnattr_destroy(&at);
    for (size_t i = 0; i < nmap; i++)
        if (tmp[i] >= 0)
            close(tmp[i]);
    free(tmp);
    posix_spawn_file_actions_destroy(&fa);
    return -r;
}

int fdpass_wait(pid_t pid, int timeout_ms, int *status)
{
    int st = 0;
    pid_t r;
    if (timeout_ms < 0) {
        do
            r = waitpid(pid, &st, 0);
        while (r < 0 && errno == EINTR);
    } else {
        /* A pidfd becomes readable when the process exits: poll it, no
         * sleeping loop. Without pidfd_open (Linux < 5.3, valgrind, some
         * sandboxes: ENOSYS), naps of 1 to 16 ms instead. */
        int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pfd < 0 && errno != ENOSYS) /* no such process: not a child to wait for, as waitpid says */
            return errno == ESRCH ? -ECHILD : -errno;
        int64_t until = deadline_now_ms() + timeout_ms, nap = 1;
        for (;;) {
            r = waitpid(pid, &st, WNOHANG);
            if (r < 0 && errno == EINTR)
                continue;
            if (r != 0)
                break;
            int64_t left = until - deadline_now_ms();
            if (left <= 0) {
                if (pfd >= 0)
                    close(pfd);
                return -ETIMEDOUT;
            }
            if (pfd >= 0) {
                struct pollfd p = { .fd = pfd, .events = POLLIN };
                poll(&p, 1, (int)left);
            } else {
                nap = nap < left ? nap : left;
                struct timespec ts = { nap / 1000, (long)(nap % 1000) * 1000000 };
                nanosleep(&ts, NULL);
                nap = nap < 16 ? nap * 2 : 16;
            }
        }
        int e = errno;
        if (pfd >= 0)
            close(pfd);
        errno = e;
    }
    if (r < 0)
        return -errno;
    if (status)
        *status = st;
    return 0;
}
