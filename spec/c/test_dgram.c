/* Datagrams with descriptors to a named socket (fdpass_dgram_*): what
 * sd_notify travels on. Real sockets, real processes: the sender's
 * credentials, descriptors that arrive whole or not at all, a full queue
 * that a bounded send waits for, and the errors of a receiver that is not
 * there. */
#include "testutil.h"
#include <stddef.h>
#include <sys/un.h>

static char dir[64];      /* a private directory for path sockets */
static char abs_base[64]; /* "@fdpass-ctest-dgram-<pid>" */

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static int mode_of(const char *path)
{
    struct stat st;
    return lstat(path, &st) < 0 ? -1 : (int)(st.st_mode & 07777);
}

static int socktype_of(int fd)
{
    int type = -1;
    socklen_t tl = sizeof type;
    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
    return type;
}

/* Binds abs_base-suffix, its name left in name. */
static int bind_abstract(char *name, size_t cap, const char *suffix)
{
    snprintf(name, cap, "%s-%s", abs_base, suffix);
    return fdpass_dgram_bind(name, 0);
}

/* One datagram with two descriptors to addr, received on s: bytes, tags,
 * close-on-exec on arrival, and the kernel's word on who sent it. */
static void roundtrip(const char *addr)
{
    int s = fdpass_dgram_bind(addr, 0);
    CHECK(s >= 0);
    CHECK_EQ(socktype_of(s), SOCK_DGRAM);
    CHECK_EQ(getfdflags(s) & FD_CLOEXEC, FD_CLOEXEC);
    CHECK_EQ(getfl(s) & O_NONBLOCK, O_NONBLOCK);
    int fds[2] = { tagged_fd(11), tagged_fd(22) };
    CHECK(fds[0] >= 0 && fds[1] >= 0);
    int before = ctest_fdcount();
    CHECK_EQ(fdpass_dgram_send(addr, "READY=1\n", 8, fds, 2, 1000), 8);
    CHECK_EQ(ctest_fdcount(), before); /* the sending socket went with the message */
    close_fds(fds, 2);
    char buf[64];
    int got[4] = { -1, -1, -1, -1 };
    size_t n = 99;
    fdpass_cred cred = { -1, (uid_t)-1, (gid_t)-1 };
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, got, 4, &n, &cred, 1000), 8);
    CHECK(memcmp(buf, "READY=1\n", 8) == 0);
    CHECK_EQ(n, 2);
    CHECK_EQ(tag_of(got[0]), 11);
    CHECK_EQ(tag_of(got[1]), 22);
    CHECK_EQ(getfdflags(got[0]) & FD_CLOEXEC, FD_CLOEXEC);
    CHECK_EQ(cred.pid, getpid());
    CHECK_EQ(cred.uid, getuid());
    CHECK_EQ(cred.gid, getgid());
    close_fds(got, 2);
    close(s);
}

static void dgram_path_roundtrip(void)
{
    char path[160];
    path_of(path, sizeof path, "notify");
    roundtrip(path);
    if (ctest_case_failed)
        return;
    unlink(path);
    /* and the file gets exactly the mode asked for, whatever the umask */
    mode_t old = umask(0);
    int s = fdpass_dgram_bind(path, 0620);
    umask(old);
    CHECK(s >= 0);
    CHECK_EQ(mode_of(path), 0620);
    close(s);
    unlink(path);
}

static void dgram_abstract_roundtrip(void)
{
    char name[96];
    snprintf(name, sizeof name, "%s-abs", abs_base);
    roundtrip(name);
}

/* The credentials are the sender's, not the receiver's: a child sends. */
static void dgram_cred_of_another_process(void)
{
    char name[96];
    int s = bind_abstract(name, sizeof name, "child");
    CHECK(s >= 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(fdpass_dgram_send(name, "MAINPID=1\n", 10, NULL, 0, 1000) == 10 ? 0 : 1);
    CHECK_EQ(wait_child(pid), 0);
    char buf[32];
    fdpass_cred cred;
    size_t n;
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, NULL, 0, &n, &cred, 1000), 10);
    CHECK_EQ(n, 0);
    CHECK_EQ(cred.pid, pid);
    close(s);
}

/* Nobody there: told at once, nothing left open. */
static void dgram_send_errors(void)
{
    char path[160], name[96];
    path_of(path, sizeof path, "nobody");
    CHECK_EQ(fdpass_dgram_send(path, "x", 1, NULL, 0, 1000), -ENOENT);
    snprintf(name, sizeof name, "%s-nobody", abs_base);
    CHECK_EQ(fdpass_dgram_send(name, "x", 1, NULL, 0, 1000), -ECONNREFUSED);
    /* a socket file whose socket is gone */
    path_of(path, sizeof path, "dead");
    int s = fdpass_dgram_bind(path, 0);
    CHECK(s >= 0);
    close(s);
    CHECK_EQ(fdpass_dgram_send(path, "x", 1, NULL, 0, 1000), -ECONNREFUSED);
    /* a stream listener is no datagram socket */
    path_of(name, sizeof name, "stream");
    int l = fdpass_listen(name, SOCK_STREAM, 1, 0);
    CHECK(l >= 0);
    ssize_t r = fdpass_dgram_send(name, "x", 1, NULL, 0, 1000);
    close(l);
    unlink(name);
    CHECK_EQ(r, -EPROTOTYPE);
    /* what the caller got wrong */
    int fd = tagged_fd(1);
    CHECK_EQ(fdpass_dgram_send(path, "", 0, &fd, 1, 1000), -EINVAL);
    int many[FDPASS_MAX_FDS_PER_SENDMSG + 1];
    for (size_t i = 0; i < NELEM(many); i++)
        many[i] = fd;
    CHECK_EQ(fdpass_dgram_send(path, "x", 1, many, NELEM(many), 1000), -EINVAL);
    close(fd);
    CHECK_EQ(fdpass_dgram_send("", "x", 1, NULL, 0, 1000), -EINVAL);
    CHECK_EQ(fdpass_dgram_send("@", "x", 1, NULL, 0, 1000), -EINVAL);
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK_EQ(fdpass_dgram_send(longname, "x", 1, NULL, 0, 1000), -ENAMETOOLONG);
    unlink(path);
}

/* bind follows listen's rules: a stale file is replaced, a live socket or
 * a regular file is not. */
static void dgram_bind_stale_live_and_regular(void)
{
    char path[160];
    path_of(path, sizeof path, "bindme");
    int s = fdpass_dgram_bind(path, 0);
    CHECK(s >= 0);
    CHECK_EQ(fdpass_dgram_bind(path, 0), -EADDRINUSE);
    close(s); /* the file stays, dead */
    s = fdpass_dgram_bind(path, 0);
    CHECK(s >= 0);
    CHECK_EQ(fdpass_dgram_send(path, "ok", 2, NULL, 0, 1000), 2);
    char buf[8];
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, NULL, 0, NULL, NULL, 1000), 2);
    close(s);
    unlink(path);
    int f = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(f >= 0);
    close(f);
    CHECK_EQ(fdpass_dgram_bind(path, 0), -EEXIST);
    unlink(path);
}

/* A datagram larger than the buffer, or with more descriptors than the
 * receiver takes: an error, and every descriptor that came is closed (RUN
 * counts them). */
static void dgram_truncated_and_too_many_fds(void)
{
    char name[96];
    int s = bind_abstract(name, sizeof name, "trunc");
    CHECK(s >= 0);
    int fds[3] = { tagged_fd(1), tagged_fd(2), tagged_fd(3) };
    char big[100];
    memset(big, 'x', sizeof big);
    CHECK_EQ(fdpass_dgram_send(name, big, sizeof big, fds, 3, 1000), (ssize_t)sizeof big);
    CHECK_EQ(fdpass_dgram_send(name, "x", 1, fds, 3, 1000), 1);
    close_fds(fds, 3);
    char buf[10];
    int got[3] = { -1, -1, -1 };
    size_t n = 7;
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, got, 3, &n, NULL, 1000), -EMSGSIZE);
    CHECK_EQ(n, 0);
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, got, 1, &n, NULL, 1000), FDPASS_ECTRUNC);
    CHECK_EQ(n, 0);
    /* the queue is empty now: nothing was left behind either */
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, got, 3, &n, NULL, 0), -EAGAIN);
    close(s);
}

/* An empty datagram is a datagram, not an end of file; a socket bound
 * without SO_PASSCRED hears no credentials. */
static void dgram_empty_and_no_credentials(void)
{
    char name[96];
    snprintf(name, sizeof name, "%s-plain", abs_base);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t len = strlen(name);
    memcpy(sa.sun_path + 1, name + 1, len - 1);
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0);
    CHECK_EQ(bind(s, (struct sockaddr *)&sa, sl), 0);
    int c = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(c >= 0);
    CHECK_EQ(sendto(c, "", 0, 0, (struct sockaddr *)&sa, sl), 0);
    close(c);
    CHECK_EQ(fdpass_dgram_send(name, "hi", 2, NULL, 0, 1000), 2);
    char buf[8];
    fdpass_cred cred = { 42, 42, 42 };
    size_t n;
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, NULL, 0, &n, &cred, 1000), 0);
    CHECK_EQ(cred.pid, 0);
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, NULL, 0, &n, &cred, 1000), 2);
    CHECK_EQ(cred.pid, 0);
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, NULL, 0, &n, &cred, 0), -EAGAIN);
    long long t0 = now_ms();
    CHECK_EQ(fdpass_dgram_recv(s, buf, sizeof buf, NULL, 0, &n, &cred, 50), -ETIMEDOUT);
    CHECK(now_ms() - t0 >= 45);
    close(s);
}

/* A receiver that does not read: a send that never waits says EAGAIN, one
 * with a timeout says ETIMEDOUT after it, and one that waits goes through
 * as soon as the receiver makes room. Nothing ever blocks unbounded. */
static void dgram_full_queue(void)
{
    char name[96];
    int s = bind_abstract(name, sizeof name, "full");
    CHECK(s >= 0);
    int sent = 0;
    ssize_t r = 0;
    while (sent < 100000 && (r = fdpass_dgram_send(name, "WATCHDOG=1\n", 11, NULL, 0, 0)) == 11)
        sent++;
    CHECK_EQ(r, -EAGAIN);
    CHECK(sent > 0);
    long long t0 = now_ms();
    CHECK_EQ(fdpass_dgram_send(name, "WATCHDOG=1\n", 11, NULL, 0, 100), -ETIMEDOUT);
    CHECK(now_ms() - t0 >= 90);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) { /* makes room after a while */
        sleep_ms(150);
        char b[16];
        _exit(fdpass_dgram_recv(s, b, sizeof b, NULL, 0, NULL, NULL, 1000) == 11 ? 0 : 1);
    }
    t0 = now_ms();
    r = fdpass_dgram_send(name, "STATUS=late\n", 12, NULL, 0, 5000);
    long long waited = now_ms() - t0;
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(r, 12);
    CHECK(waited >= 100);
    /* everything queued is there, the late one last */
    char buf[16];
    int n = 0;
    ssize_t got;
    while ((got = fdpass_dgram_recv(s, buf, sizeof buf, NULL, 0, NULL, NULL, 0)) > 0) {
        n++;
        if (n == sent)
            CHECK(got == 12 && memcmp(buf, "STATUS=late\n", 12) == 0);
    }
    CHECK_EQ(got, -EAGAIN);
    CHECK_EQ(n, sent); /* sent, minus the one the child read, plus the late one */
    close(s);
}

/* No timeout (< 0) waits for the next datagram, as fdpass_accept waits on
 * a listener: the socket fdpass_dgram_bind makes is non-blocking, so
 * "the socket's own mode" would never wait at all. */
static void dgram_recv_without_timeout_waits(void)
{
    char name[96];
    int s = bind_abstract(name, sizeof name, "wait");
    CHECK(s >= 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        sleep_ms(100);
        _exit(fdpass_dgram_send(name, "READY=1\n", 8, NULL, 0, 1000) == 8 ? 0 : 1);
    }
    char buf[16];
    fdpass_cred cred;
    long long t0 = now_ms();
    ssize_t r = fdpass_dgram_recv(s, buf, sizeof buf, NULL, 0, NULL, &cred, -1);
    long long waited = now_ms() - t0;
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(r, 8);
    CHECK(waited >= 90);
    CHECK_EQ(cred.pid, pid);
    CHECK_EQ(getfl(s) & O_NONBLOCK, O_NONBLOCK); /* waited by poll, the flag untouched */
    close(s);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (make_tmpdir(dir, sizeof dir) < 0)
        return 1;
    snprintf(abs_base, sizeof abs_base, "@fdpass-ctest-dgram-%d", (int)getpid());
    RUN(dgram_path_roundtrip);
    RUN(dgram_abstract_roundtrip);
    RUN(dgram_cred_of_another_process);
    RUN(dgram_send_errors);
    RUN(dgram_bind_stale_live_and_regular);
    RUN(dgram_truncated_and_too_many_fds);
    RUN(dgram_empty_and_no_credentials);
    RUN(dgram_full_queue);
    RUN(dgram_recv_without_timeout_waits);
    remove_tmpdir(dir);
    CTEST_END();
}
