/* Framed messages: records of header + bytes + descriptors, any size, with
 * partial progress kept in the channel so that a non-blocking caller can
 * come back later without losing or duplicating anything. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

enum { F_MORE = 1, F_CONT = 2 };
static const unsigned char MAGIC[4] = { 'F', 'D', 'P', 'S' };

typedef struct header {
    unsigned flags, nfds;
    uint32_t len, total_len, total_fds;
} header;

/* Progress through one outgoing message. */
typedef struct progress {
    size_t data_off, fd_off; /* start of the current record */
    size_t rec_off;          /* bytes of the current record already sent */
    int started;             /* at least one record sent: an empty message has one */
} progress;

/* A message that could not be sent at once: a private copy. Descriptors
 * already sent are -1, the others are duplicates we own. */
typedef struct queued {
    struct queued *next;
    unsigned char *data;
    size_t len, nfds;
    int *fds;
    progress p;
} queued;

struct fdpass_chan {
    int sock, stream;
    fdpass_limits lim;
    int tx_error, rx_error; /* sticky: the direction is unusable */
    queued *q_head, *q_tail;
    size_t q_count;
    /* receive side */
    int in_message;          /* a first record was accepted */
    unsigned char hdr[FDPASS_HEADER_SIZE];
    size_t hdr_got;          /* stream: header bytes of the current record */
    header cur, first;       /* current record, first record of the message */
    size_t rec_got, rec_fds; /* payload bytes / descriptors of current record */
    unsigned char *buf;
    size_t buf_cap, data_got;
    int *fds;
    size_t fds_cap, fds_got;
    char detail[160];
};

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}

static uint32_t get32(const unsigned char *p)
{
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void encode(unsigned char *p, const header *h)
{
    memcpy(p, MAGIC, 4);
    p[4] = FDPASS_PROTOCOL;
    p[5] = h->flags;
    p[6] = h->nfds; p[7] = h->nfds >> 8;
    put32(p + 8, h->len);
    put32(p + 12, h->total_len);
    put32(p + 16, h->total_fds);
}

static int fail(fdpass_chan *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(fdpass_chan *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
    return err;
}

fdpass_chan *fdpass_chan_new(int sock, const fdpass_limits *lim)
{
    int type;
    socklen_t tl = sizeof type;
    if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &tl) < 0)
        return NULL;
    if (type != SOCK_STREAM && type != SOCK_SEQPACKET) {
        errno = EPROTOTYPE;
        return NULL;
    }
    fdpass_chan *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->sock = sock;
    c->stream = type == SOCK_STREAM;
    c->lim.max_payload = 16u << 20;
    c->lim.max_fds = 4096;
    fdpass_chan_limits(c, NULL, lim);
    return c;
}

static void drop_queue(fdpass_chan *c)
{
    while (c->q_head) {
        queued *q = c->q_head;
        c->q_head = q->next;
        for (size_t i = 0; i < q->nfds; i++)
            if (q->fds[i] >= 0)
                close(q->fds[i]);
        free(q->fds);
        free(q->data);
        free(q);
    }
    c->q_tail = NULL;
    c->q_count = 0;
}

static void drop_partial_rx(fdpass_chan *c)
{
    close_all(c->fds, c->fds_got);
    c->fds_got = c->data_got = c->hdr_got = c->rec_got = c->rec_fds = 0;
    c->in_message = 0;
}

void fdpass_chan_free(fdpass_chan *c)
{
    if (!c)
        return;
    drop_queue(c);
    drop_partial_rx(c);
    free(c->buf);
    free(c->fds);
    free(c);
}

void fdpass_chan_limits(fdpass_chan *c, fdpass_limits *get, const fdpass_limits *set)
{
    if (get)
        *get = c->lim;
    if (set) {
        if (set->max_payload)
            c->lim.max_payload = set->max_payload > 0xffffffffu ? 0xffffffffu : set->max_payload;
        if (set->max_fds)
            c->lim.max_fds = set->max_fds > 0xffffffffu ? 0xffffffffu : set->max_fds;
    }
}

const char *fdpass_chan_detail(const fdpass_chan *c)
{
    return c->detail[0] ? c->detail : NULL;
}

size_t fdpass_chan_pending(const fdpass_chan *c)
{
    return c->q_count;
}

/* ---- sending ------------------------------------------------------------ */

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

/* Sends what is left of one message. 0 when done, -EAGAIN/-ETIMEDOUT with
 * *p updated, or another error. */
static int send_message(fdpass_chan *c, const unsigned char *data, size_t len,
                        const int *fds, size_t nfds, progress *p, deadline *d)
{
    while (!p->started || p->data_off < len || p->fd_off < nfds) {
        size_t dn = min_sz(len - p->data_off, FDPASS_RECORD_MAX);
        size_t fn = min_sz(nfds - p->fd_off, FDPASS_MAX_FDS_PER_SENDMSG);
        header h = { .nfds = fn, .len = dn, .total_len = len, .total_fds = nfds };
        h.flags = (p->data_off || p->fd_off ? F_CONT : 0) |
                  (p->data_off + dn < len || p->fd_off + fn < nfds ? F_MORE : 0);
        unsigned char hb[FDPASS_HEADER_SIZE];
        encode(hb, &h);
        size_t total = FDPASS_HEADER_SIZE + dn;
        struct iovec iov[2];
        int n = 0;
        if (p->rec_off < FDPASS_HEADER_SIZE)
            iov[n++] = (struct iovec){ hb + p->rec_off, FDPASS_HEADER_SIZE - p->rec_off };
        size_t skip = p->rec_off > FDPASS_HEADER_SIZE ? p->rec_off - FDPASS_HEADER_SIZE : 0;
        if (dn > skip)
            iov[n++] = (struct iovec){ (void *)(data + p->data_off + skip), dn - skip };
        /* Descriptors ride on the first byte of their record only. */
        ssize_t r = raw_send(c->sock, iov, n, fds + p->fd_off, p->rec_off ? 0 : fn,
                             deadline_flags(d));
        if (r == -EAGAIN) {
            int w = deadline_wait(d, c->sock, POLLOUT);
            if (w < 0)
                return w;
            continue;
        }
        if (r < 0)
            return fail(c, (int)r, "sendmsg failed");
        p->rec_off += (size_t)r;
        if (p->rec_off < total)
            continue; /* a stream took part of it: the rest goes without fds */
        p->started = 1;
        p->data_off += dn;
        p->fd_off += fn;
        p->rec_off = 0;
    }
    return 0;
}

/* Sends queued messages in order. */
static int flush_queue(fdpass_chan *c, deadline *d)
{
    while (c->q_head) {
        queued *q = c->q_head;
        int r = send_message(c, q->data, q->len, q->fds, q->nfds, &q->p, d);
        /* Descriptors that went are no longer ours to hold. */
        for (size_t i = 0; i < q->p.fd_off && i < q->nfds; i++)
            if (q->fds[i] >= 0) {
                close(q->fds[i]);
                q->fds[i] = -1;
            }
        if (r < 0)
            return r;
        c->q_head = q->next;
        if (!c->q_head)
            c->q_tail = NULL;
        free(q->fds);
        free(q->data);
        free(q);
        c->q_count--;
    }
    return 0;
}

/* Keeps the rest of a message that could not go at once. */
static int enqueue(fdpass_chan *c, const unsigned char *data, size_t len,
                   const int *fds, size_t nfds, const progress *p)
{
    queued *q = calloc(1, sizeof *q);
    if (!q)
        return -ENOMEM;
    q->len = len;
    q->nfds = nfds;
    q->p = *p;
    q->data = malloc(len ? len : 1);
    q->fds = malloc((nfds ? nfds : 1) * sizeof(int));
    if (!q->data || !q->fds)
        goto nomem;
    memcpy(q->data, data, len);
    /* The current record's descriptors are gone already if it started. */
    size_t sent = p->fd_off + (p->rec_off ? min_sz(nfds - p->fd_off, FDPASS_MAX_FDS_PER_SENDMSG) : 0);
    for (size_t i = 0; i < nfds; i++) {
        q->fds[i] = -1;
        if (i >= sent && (q->fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0)) < 0) {
            int e = -errno;
            for (size_t j = sent; j < i; j++)
                close(q->fds[j]);
            free(q->fds);
            free(q->data);
            free(q);
            return e;
        }
    }
    c->q_count++;
    if (c->q_tail)
        c->q_tail->next = q;
    else
        c->q_head = q;
    c->q_tail = q;
    return 0;
nomem:
    free(q->data);
    free(q->fds);
    free(q);
    return -ENOMEM;
}

static int broken_tx(fdpass_chan *c, int err)
{
    drop_queue(c);
    c->tx_error = err;
    return err;
}

int fdpass_chan_send(fdpass_chan *c, const void *data, size_t len,
                const int *fds, size_t nfds, int timeout_ms)
{
    c->detail[0] = 0;
    if ((len && !data) || (nfds && !fds))
        return -EINVAL;
    if (len > 0xffffffffu || nfds > 0xffffffffu)
        return fail(c, -EMSGSIZE, "message over 4 GiB or 2^32 descriptors");
    if (c->tx_error)
        return fail(c, FDPASS_EBROKEN, "an earlier send failed: %s", fdpass_strerror(c->tx_error));
    deadline d = deadline_from(timeout_ms);
    progress p = { 0 };
    int r = c->q_head ? flush_queue(c, &d) : 0;
    if (r == 0)
        r = send_message(c, data, len, fds, nfds, &p, &d);
    if (r == -EAGAIN || r == -ETIMEDOUT) {
        int e = enqueue(c, data, len, fds, nfds, &p);
        return e < 0 ? broken_tx(c, e) : r;
    }
    return r < 0 ? broken_tx(c, r) : 0;
}

int fdpass_chan_flush(fdpass_chan *c, int timeout_ms)
{
    c->detail[0] = 0;
    if (c->tx_error)
        return fail(c, FDPASS_EBROKEN, "an earlier send failed: %s", fdpass_strerror(c->tx_error));
    deadline d = deadline_from(timeout_ms);
    int r = flush_queue(c, &d);
    if (r == -EAGAIN || r == -ETIMEDOUT || r == 0)
        return r;
    return broken_tx(c, r);
}

/* ---- receiving ---------------------------------------------------------- */

static int reserve(fdpass_chan *c, size_t bytes, size_t nfds)
{
    if (bytes > c->buf_cap) {
        size_t cap = c->buf_cap ? c->buf_cap : 4096;
        while (cap < bytes)
            cap *= 2;
        unsigned char *b = realloc(c->buf, cap);
        if (!b)
            return -ENOMEM;
        c->buf = b;
        c->buf_cap = cap;
    }
    if (nfds > c->fds_cap) {
        size_t cap = c->fds_cap ? c->fds_cap : 256;
        while (cap < nfds)
            cap *= 2;
        int *f = realloc(c->fds, cap * sizeof(int));
        if (!f)
            return -ENOMEM;
        c->fds = f;
        c->fds_cap = cap;
    }
    return 0;
}

/* Checks a complete header against the protocol, the limits and the
 * message so far. */
static int check_header(fdpass_chan *c)
{
    const unsigned char *p = c->hdr;
    if (memcmp(p, MAGIC, 4) != 0)
        return fail(c, -EPROTO, "bad magic %02x%02x%02x%02x: not an fdpass record",
                    p[0], p[1], p[2], p[3]);
    if (p[4] != FDPASS_PROTOCOL)
        return fail(c, -EPROTO, "record version %u, this side speaks %u", p[4], FDPASS_PROTOCOL);
    header h = { .flags = p[5], .nfds = p[6] | (unsigned)p[7] << 8, .len = get32(p + 8),
                 .total_len = get32(p + 12), .total_fds = get32(p + 16) };
    if (h.flags & ~(unsigned)(F_MORE | F_CONT))
        return fail(c, -EPROTO, "unknown record flags %#x", h.flags);
    if (h.nfds > FDPASS_MAX_FDS_PER_SENDMSG || h.len > FDPASS_RECORD_MAX)
        return fail(c, -EPROTO, "record announces %u bytes and %u descriptors", h.len, h.nfds);
    if (!c->in_message) {
        if (h.flags & F_CONT)
            return fail(c, -EPROTO, "continuation record without a first record");
        if (h.total_len > c->lim.max_payload)
            return fail(c, -EMSGSIZE, "message of %u bytes, the limit is %zu",
                        h.total_len, c->lim.max_payload);
        if (h.total_fds > c->lim.max_fds)
            return fail(c, -EMSGSIZE, "message with %u descriptors, the limit is %zu",
                        h.total_fds, c->lim.max_fds);
        c->first = h;
    } else if (!(h.flags & F_CONT) || h.total_len != c->first.total_len ||
               h.total_fds != c->first.total_fds) {
        return fail(c, -EPROTO, "record does not continue the message it follows");
    }
    if (c->data_got + h.len > h.total_len || c->fds_got + h.nfds > h.total_fds)
        return fail(c, -EPROTO, "records carry more than the message announced");
    if (!(h.flags & F_MORE) && c->data_got + h.len != h.total_len)
        return fail(c, -EPROTO, "last record leaves the message short of the %u bytes it announced",
                    h.total_len);
    if (!(h.flags & F_MORE) && c->fds_got + h.nfds != h.total_fds)
        return fail(c, FDPASS_EFDCOUNT, "last record leaves the message short of the %u descriptors it announced",
                    h.total_fds);
    c->cur = h;
    c->in_message = 1;
    return 0;
}

/* After a record's bytes are all in: are its descriptors? */
static int finish_record(fdpass_chan *c, fdpass_msg *msg)
{
    if (c->rec_fds != c->cur.nfds)
        return fail(c, FDPASS_EFDCOUNT, "record announced %u descriptors, %zu arrived",
                    c->cur.nfds, c->rec_fds);
    c->hdr_got = c->rec_got = c->rec_fds = 0;
    if (c->cur.flags & F_MORE)
        return 1; /* more records to come */
    msg->data = c->buf;
    msg->len = c->data_got;
    msg->fds = c->fds;
    msg->nfds = c->fds_got;
    c->data_got = c->fds_got = 0; /* the descriptors are the caller's now */
    c->in_message = 0;
    return 0;
}

/* One recvmsg of a seqpacket record. 0: message complete, 1: record done,
 * more to come, < 0: error (-EAGAIN: nothing there). */
static int recv_seqpacket(fdpass_chan *c, fdpass_msg *msg, int flags)
{
    int r = reserve(c, c->data_got + FDPASS_RECORD_MAX, c->fds_got + FDPASS_MAX_FDS_PER_SENDMSG);
    if (r < 0)
        return r;
    struct iovec iov[2] = { { c->hdr, FDPASS_HEADER_SIZE },
                            { c->buf + c->data_got, FDPASS_RECORD_MAX } };
    size_t nfds;
    int truncated;
    ssize_t n = raw_recv(c->sock, iov, 2, c->fds + c->fds_got, FDPASS_MAX_FDS_PER_SENDMSG,
                         &nfds, flags, &truncated);
    if (n < 0)
        return n == FDPASS_ECTRUNC ? fail(c, FDPASS_ECTRUNC, "record's descriptors were dropped by the kernel") : (int)n;
    c->fds_got += nfds; /* counted at once, so an error below closes them */
    c->rec_fds = nfds;
    if (n == 0 && nfds == 0)
        return c->in_message ? fail(c, FDPASS_ETRUNC, "peer closed between records of a message") : FDPASS_EOF;
    if (truncated)
        return fail(c, -EMSGSIZE, "record larger than %d bytes", FDPASS_HEADER_SIZE + FDPASS_RECORD_MAX);
    if (n < FDPASS_HEADER_SIZE)
        return fail(c, -EPROTO, "record of %zd bytes is shorter than a header", n);
    c->fds_got -= nfds; /* check_header compares against the message so far */
    r = check_header(c);
    c->fds_got += nfds;
    if (r < 0)
        return r;
    if ((size_t)n - FDPASS_HEADER_SIZE != c->cur.len)
        return fail(c, -EPROTO, "record announces %u bytes, carries %zd",
                    c->cur.len, n - FDPASS_HEADER_SIZE);
    c->data_got += c->cur.len;
    return finish_record(c, msg);
}

/* One recvmsg on a stream: header bytes first, then exactly the record's
 * payload, never a byte of the next record (its descriptors ride on it). */
static int recv_stream(fdpass_chan *c, fdpass_msg *msg, int flags)
{
    int r = reserve(c, 1, c->fds_got + FDPASS_MAX_FDS_PER_SENDMSG);
    if (r < 0)
        return r;
    struct iovec iov;
    int in_header = c->hdr_got < FDPASS_HEADER_SIZE;
    if (in_header)
        iov = (struct iovec){ c->hdr + c->hdr_got, FDPASS_HEADER_SIZE - c->hdr_got };
    else
        iov = (struct iovec){ c->buf + c->data_got, c->cur.len - c->rec_got };
    size_t room = FDPASS_MAX_FDS_PER_SENDMSG - c->rec_fds, nfds;
    ssize_t n = raw_recv(c->sock, &iov, 1, c->fds + c->fds_got, room, &nfds, flags, NULL);
    if (n < 0)
        return n == FDPASS_ECTRUNC ? fail(c, FDPASS_ECTRUNC, "record's descriptors were dropped by the kernel") : (int)n;
    c->fds_got += nfds;
    c->rec_fds += nfds;
    if (n == 0) {
        if (nfds)
            return fail(c, -EPROTO, "descriptors arrived without data");
        if (!c->in_message && c->hdr_got == 0)
            return FDPASS_EOF;
        return fail(c, FDPASS_ETRUNC, "peer closed in the middle of a message");
    }
    if (in_header) {
        c->hdr_got += n;
        if (c->hdr_got < FDPASS_HEADER_SIZE)
            return 1;
        c->fds_got -= c->rec_fds;
        r = check_header(c);
        c->fds_got += c->rec_fds;
        if (r < 0)
            return r;
        r = reserve(c, c->data_got + c->cur.len, 0);
        if (r < 0)
            return r;
        if (c->cur.len > 0)
            return 1;
    } else {
        c->rec_got += n;
        c->data_got += n;
        if (c->rec_got < c->cur.len)
            return 1;
    }
    return finish_record(c, msg);
}

int fdpass_chan_recv(fdpass_chan *c, fdpass_msg *msg, int timeout_ms)
{
    c->detail[0] = 0;
    if (c->rx_error)
        return fail(c, FDPASS_EBROKEN, "an earlier receive failed: %s", fdpass_strerror(c->rx_error));
    deadline d = deadline_from(timeout_ms);
    for (;;) {
        int r = c->stream ? recv_stream(c, msg, deadline_flags(&d))
                          : recv_seqpacket(c, msg, deadline_flags(&d));
        if (r == 0)
            return 0;
        if (r == 1)
            continue;
        if (r == -EAGAIN) {
            int w = deadline_wait(&d, c->sock, POLLIN);
            if (w < 0)
                return w; /* a partial message stays for the next call */
            continue;
        }
        /* Every other failure: nothing half-delivered, nothing leaked. */
        drop_partial_rx(c);
        if (r != FDPASS_EOF)
            c->rx_error = r;
        return r;
    }
}
