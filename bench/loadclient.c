/*
 * A closed-loop HTTP/1.1 load client in C, so that the client costs next to nothing on the two
 * cores it shares with the servers it measures. Driven by bench/nativeload.py, which builds every
 * request beforehand and judges every answer afterwards; this program only sends, times and reads.
 *
 * Input file (little-endian): "SKLC", u32 connections, u32 max_requests, u32 max_ms,
 * u32 timeout_ms, then per connection: u32 port, u32 requests, and per request: u32 length, bytes.
 *
 * One phase: connect every connection (before the clock starts), print "ready" and wait for a
 * line on stdin, then connection i sends its requests in order, one at a time, on keep-alive;
 * at most max_requests are started in all and none after max_ms; requests in flight at the
 * deadline are completed. A server that closes the connection (gunicorn's sync workers do after
 * every answer) is reconnected before the next request, within its timed span.
 *
 * Output file: "SKLR", u64 elapsed_ns, u64 cpu_ns (this program's, over the run), u32 records, then per request started, in completion
 * order: u32 connection, u32 ok (1) or failed (0), u64 latency_ns, u32 status, u32 length,
 * bytes (the response body, or why it failed).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const uint8_t *data;
    uint32_t length;
} request_t;

typedef struct {
    int fd;
    uint16_t port;
    uint32_t count, next;   /* requests, and the index of the next one to send */
    int busy;               /* a request is in flight */
    int connecting;         /* a non-blocking connect is pending */
    size_t sent;            /* bytes of the current request written */
    uint64_t started;       /* when the current request began */
    request_t *requests;
    uint8_t *buffer;        /* the response being read */
    size_t used, capacity;
} conn_t;

typedef struct {
    uint8_t *data;
    size_t used, capacity;
    uint32_t records;
} out_t;

static void die(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fputs("loadclient: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void out_put(out_t *out, const void *data, size_t length) {
    if (out->used + length > out->capacity) {
        while (out->used + length > out->capacity) out->capacity = out->capacity * 2 + 4096;
        out->data = realloc(out->data, out->capacity);
        if (!out->data) die("out of memory");
    }
    memcpy(out->data + out->used, data, length);
    out->used += length;
}

static void out_u32(out_t *out, uint32_t v) { out_put(out, &v, 4); }

static void record(out_t *out, uint32_t conn, int ok, uint64_t latency, uint32_t status,
                   const void *body, uint32_t length) {
    out_u32(out, conn);
    out_u32(out, (uint32_t)ok);
    out_put(out, &latency, 8);
    out_u32(out, status);
    out_u32(out, length);
    out_put(out, body, length);
    out->records++;
}

static uint32_t read_u32(const uint8_t **at, const uint8_t *end) {
    uint32_t v;
    if (end - *at < 4) die("input file is truncated");
    memcpy(&v, *at, 4);
    *at += 4;
    return v;
}

static uint64_t cpu_ns(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return ((uint64_t)usage.ru_utime.tv_sec + (uint64_t)usage.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)usage.ru_utime.tv_usec + (uint64_t)usage.ru_stime.tv_usec) * 1000u;
}

static int epoll_fd;

static int start_connect(conn_t *c) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(c->port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->connecting = 0;
    if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0) {
        if (errno != EINPROGRESS) {
            close(c->fd);
            c->fd = -1;
            return -1;
        }
        c->connecting = 1;
    }
    struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &event) < 0) die("epoll_ctl: %s", strerror(errno));
    return 0;
}

static void drop(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->connecting = 0;
    c->used = 0;
}

static void want(conn_t *c, uint32_t events) {
    struct epoll_event event = {.events = events, .data.ptr = c};
    epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &event);
}

/* Write what is left of the current request; -1 on a broken connection. */
static int push(conn_t *c) {
    request_t *r = &c->requests[c->next - 1];
    while (c->sent < r->length) {
        ssize_t n = send(c->fd, r->data + c->sent, r->length - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                want(c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->sent += (size_t)n;
    }
    want(c, EPOLLIN);
    return 0;
}

/* A whole response in the buffer: 1, and its parts; 0 if more is needed; -1 if malformed. */
static int parse(conn_t *c, uint32_t *status, size_t *body_at, size_t *body_length, int *closes) {
    uint8_t *end = memmem(c->buffer, c->used, "\r\n\r\n", 4);
    if (!end) return c->used > 65536 ? -1 : 0;
    size_t head = (size_t)(end - c->buffer) + 4;
    if (c->used < 12 || memcmp(c->buffer, "HTTP/1.", 7) != 0) return -1;
    *status = (uint32_t)strtoul((const char *)c->buffer + 9, NULL, 10);
    long length = -1;
    *closes = 0;
    for (uint8_t *line = memmem(c->buffer, head, "\r\n", 2) + 2; line < end;) {
        uint8_t *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        size_t n = (size_t)(eol - line);
        if (n > 15 && strncasecmp((const char *)line, "content-length:", 15) == 0)
            length = strtol((const char *)line + 15, NULL, 10);
        else if (n > 11 && strncasecmp((const char *)line, "connection:", 11) == 0) {
            const char *v = (const char *)line + 11;
            while (*v == ' ') v++;
            *closes = strncasecmp(v, "close", 5) == 0;
        } else if (n > 18 && strncasecmp((const char *)line, "transfer-encoding:", 18) == 0)
            return -1; /* neither server under test sends chunked answers here */
        line = eol + 2;
    }
    if (length < 0) return -1;
    if (c->used < head + (size_t)length) return 0;
    *body_at = head;
    *body_length = (size_t)length;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) die("usage: loadclient INPUT OUTPUT");
    FILE *in = fopen(argv[1], "rb");
    if (!in) die("%s: %s", argv[1], strerror(errno));
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    uint8_t *input = malloc((size_t)size);
    if (!input || fread(input, 1, (size_t)size, in) != (size_t)size) die("cannot read input");
    fclose(in);
    const uint8_t *at = input, *stop = input + size;
    if (size < 4 || memcmp(at, "SKLC", 4) != 0) die("not a loadclient input file");
    at += 4;
    uint32_t nconn = read_u32(&at, stop);
    uint32_t budget = read_u32(&at, stop);
    uint64_t max_ns = (uint64_t)read_u32(&at, stop) * 1000000u;
    uint64_t timeout_ns = (uint64_t)read_u32(&at, stop) * 1000000u;
    conn_t *conns = calloc(nconn, sizeof *conns);
    for (uint32_t i = 0; i < nconn; i++) {
        conns[i].port = (uint16_t)read_u32(&at, stop);
        conns[i].count = read_u32(&at, stop);
        conns[i].requests = calloc(conns[i].count + 1, sizeof(request_t));
        for (uint32_t j = 0; j < conns[i].count; j++) {
            conns[i].requests[j].length = read_u32(&at, stop);
            if ((size_t)(stop - at) < conns[i].requests[j].length) die("input file is truncated");
            conns[i].requests[j].data = at;
            at += conns[i].requests[j].length;
        }
        conns[i].capacity = 16384;
        conns[i].buffer = malloc(conns[i].capacity);
        conns[i].fd = -1;
    }
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    for (uint32_t i = 0; i < nconn; i++) { /* connected before the clock starts */
        if (start_connect(&conns[i]) < 0) die("cannot connect to port %u", conns[i].port);
    }
    struct epoll_event events[256];
    for (uint32_t pending = nconn; pending > 0;) {
        int n = epoll_wait(epoll_fd, events, 256, 10000);
        if (n <= 0) die("connecting timed out");
        for (int k = 0; k < n; k++) {
            conn_t *c = events[k].data.ptr;
            if (!c->connecting) continue;
            int error = 0;
            socklen_t length = sizeof error;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &length);
            if (error) die("cannot connect to port %u: %s", c->port, strerror(error));
            c->connecting = 0;
            want(c, EPOLLIN);
            pending--;
        }
    }
    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) die("no go-ahead on stdin");

    out_t out = {0};
    out_put(&out, "SKLR", 4);
    size_t header_at = out.used;
    uint64_t zero = 0;
    out_put(&out, &zero, 8);
    out_put(&out, &zero, 8);
    out_u32(&out, 0);

    uint64_t began = now_ns(), deadline = began + max_ns, cpu_began = cpu_ns();
    uint32_t in_flight = 0;
    for (;;) {
        uint64_t now = now_ns();
        for (uint32_t i = 0; i < nconn; i++) { /* idle connections take their next request */
            conn_t *c = &conns[i];
            if (c->busy || c->next >= c->count || budget == 0 || now >= deadline) continue;
            budget--;
            c->next++;
            c->busy = 1;
            c->sent = 0;
            c->used = 0;
            c->started = now;
            in_flight++;
            int broken = c->fd < 0 ? start_connect(c) : 0;
            if (!broken && !c->connecting) broken = push(c);
            if (broken) {
                static const char why[] = "cannot send: the connection failed";
                record(&out, i, 0, now_ns() - c->started, 0, why, sizeof why - 1);
                drop(c);
                c->busy = 0;
                in_flight--;
            }
        }
        if (in_flight == 0) break;
        int n = epoll_wait(epoll_fd, events, 256, 1000);
        if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
        now = now_ns();
        for (int k = 0; k < n; k++) {
            conn_t *c = events[k].data.ptr;
            uint32_t i = (uint32_t)(c - conns);
            const char *failed = NULL;
            if (c->connecting) {
                int error = 0;
                socklen_t length = sizeof error;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &length);
                if (error) failed = "cannot reconnect";
                else {
                    c->connecting = 0;
                    if (push(c) < 0) failed = "cannot send: the connection failed";
                }
            } else if ((events[k].events & EPOLLOUT) && c->sent < c->requests[c->next - 1].length) {
                if (push(c) < 0) failed = "cannot send: the connection failed";
            }
            if (!failed && (events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->connecting) {
                for (;;) {
                    if (c->used == c->capacity) {
                        c->capacity *= 2;
                        c->buffer = realloc(c->buffer, c->capacity);
                        if (!c->buffer) die("out of memory");
                    }
                    ssize_t got = recv(c->fd, c->buffer + c->used, c->capacity - c->used, 0);
                    if (got > 0) {
                        c->used += (size_t)got;
                        continue;
                    }
                    if (got < 0 && errno == EAGAIN) break;
                    failed = got == 0 ? "the server closed the connection mid-answer"
                                      : "the connection failed while reading";
                    break;
                }
                uint32_t status = 0;
                size_t body_at = 0, body_length = 0;
                int closes = 0;
                int whole = c->busy ? parse(c, &status, &body_at, &body_length, &closes) : 0;
                if (whole < 0) failed = "not an HTTP/1.x answer with a Content-Length";
                else if (whole > 0) {
                    record(&out, i, 1, now - c->started, status, c->buffer + body_at,
                           (uint32_t)body_length);
                    c->busy = 0;
                    in_flight--;
                    if (closes || failed) drop(c);
                    c->used = 0;
                    failed = NULL;
                    continue;
                } else if (!c->busy && !failed) continue;
            }
            if (failed && c->busy) {
                record(&out, i, 0, now - c->started, 0, failed, (uint32_t)strlen(failed));
                c->busy = 0;
                in_flight--;
            }
            if (failed) drop(c);
        }
        for (uint32_t i = 0; i < nconn; i++) { /* the per-request timeout */
            conn_t *c = &conns[i];
            if (c->busy && now - c->started > timeout_ns) {
                static const char why[] = "timed out";
                record(&out, i, 0, now - c->started, 0, why, sizeof why - 1);
                drop(c);
                c->busy = 0;
                in_flight--;
            }
        }
    }
    uint64_t elapsed = now_ns() - began, cpu = cpu_ns() - cpu_began;
    memcpy(out.data + header_at, &elapsed, 8);
    memcpy(out.data + header_at + 8, &cpu, 8);
    memcpy(out.data + header_at + 16, &out.records, 4);
    FILE *result = fopen(argv[2], "wb");
    if (!result || fwrite(out.data, 1, out.used, result) != out.used || fclose(result) != 0)
        die("cannot write %s", argv[2]);
    return 0;
}
