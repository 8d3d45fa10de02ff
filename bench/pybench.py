"""The Python peer of `make bench`: socket.send_fds / socket.recv_fds (3.9+)
doing the floor's work. usage: python3 bench/pybench.py 1|253|5000|64k SECONDS|=COUNT
prints "messages descriptors seconds".

One process, one seqpacket socketpair: send, receive, os.close() every
descriptor that arrived. 5000 descriptors are 20 send_fds of at most 253
(all sent, then all received); 64k is one send of 65536 bytes."""
import os
import resource
import socket
import sys
import time

MAXF = 253


def main():
    work = sys.argv[1]
    count = int(sys.argv[2][1:]) if sys.argv[2].startswith("=") else 0
    secs = 0 if count else float(sys.argv[2])
    nfds = 0 if work == "64k" else int(work)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    send_fds, recv_fds, close = socket.send_fds, socket.recv_fds, os.close

    if nfds == 0:
        payload = b"x" * 65536

        def it():
            a.send(payload)
            if len(b.recv(65536)) != 65536:
                raise SystemExit("short read")
            return 0
    else:
        parts = [[null] * min(MAXF, nfds - off) for off in range(0, nfds, MAXF)]
        msg = [b"x"]

        def it():
            for p in parts:
                send_fds(a, msg, p)
            n = 0
            for _ in parts:
                _, fds, _, _ = recv_fds(b, 1, MAXF)
                for fd in fds:
                    close(fd)
                n += len(fds)
            return n

    if count:  # exact iterations, no warm-up (callgrind)
        fds, start = 0, time.process_time()
        for _ in range(count):
            fds += it()
        print("%d %d %.6f" % (count, fds, time.process_time() - start))
        return
    batch = 1 if nfds == 5000 else 8 if nfds >= MAXF else 128 if nfds else 64
    now = time.process_time  # CPU time (user + system), as in cbench.c
    warm = now() + 0.05
    while now() < warm:
        for _ in range(batch):
            it()
    msgs = fds = 0
    start = now()
    while True:
        for _ in range(batch):
            fds += it()
        msgs += batch
        t = now()
        if t - start >= secs:
            break
    assert fds == msgs * nfds
    print("%d %d %.6f" % (msgs, fds, t - start))


main()
