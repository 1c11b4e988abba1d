/* relaygen: the relay and sessions workloads of bench/loadgen/loadgen.mjs, in C (one thread, epoll).
 *
 * Why it exists: the Node generator pauses for its own garbage collector (about 30 scavenges a
 * second at 60k msgs/s, some of them 3-7 ms) and costs about 10 us of CPU per message, so at high
 * open-loop rates its own pauses and queueing end up in the latency figures it reports. This
 * program allocates nothing while it measures and costs a few us per message, so the p99 it
 * prints belongs to the server. Started by relaygen.py, which presigns the URLs and writes the
 * config file this reads; the JSON events it prints are loadgen.mjs's (relay mode).
 *
 * Config, one item per line (fields separated by one space; a path has no spaces):
 *   proto kvs|peerjs        host A.B.C.D          master_port N       viewer_port N
 *   rate R (0: closed loop) window W              warmup S            duration S
 *   payload_len L           deadline S
 *   master C PATH           (one per channel C, in channel order)
 *   viewer C ID PATH        (a viewer of channel C with ClientId / PeerJS id ID)
 *   mode relay|sessions     concurrency N         offer_len L
 *   session C PATH          (sessions, KVS: one presigned viewer URL per session, each a new ClientId)
 * Closed loop: every viewer keeps `window` messages in flight to its master, which echoes each.
 * Open loop: viewers send rate/2 messages/s in total, round-robin, each stamped with its scheduled
 * time (a late generator makes the figure worse, never better); masters echo, stamped at once.
 * Latency is one-way, from the stamp (the first 16 payload characters, microseconds) to receipt.
 * Frames queued for a connection in one loop iteration leave in one write.
 * Sessions: `concurrency` loops each connect a new viewer, send an SDP offer of offer_len, wait for
 * the master's answer, close with the close handshake and wait for the server to hang up, then
 * start again; each channel's master answers every offer. Figures: sessions/s and their duration.
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
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { MASTER = 0, VIEWER = 1, SESSION = 2 };
enum { CONNECTING = 4 };
enum { HANDSHAKE = 0, OPEN = 1, CLOSING = 2, CLOSED = 3 };
#define HIST_US 1000000
#define MAX_LINE 16384

typedef struct {
    int fd, role, channel, state, dirty, answered;
    int64_t started;
    char id[128];
    char path[MAX_LINE];
    char *rbuf;
    size_t rlen, rcap;
    char *wbuf;
    size_t wlen, wcap;
} Conn;

static int kvs = 1, window_ = 16, payload_len = 300, sessions_mode = 0, concurrency = 50, offer_len = 2000;
static char **session_paths;
static int *session_channels, nsession_paths, session_cap;
static uint64_t sessions_done, sessions_failed, session_seq;
static char first_error[200];
static double rate = 0, warmup = 1, duration = 5, deadline = 120;
static char host[64] = "127.0.0.1", tag[64] = "";
static int master_port, viewer_port;
static Conn *conns;
static int nconns, nmasters;
static Conn **dirty_list;
static int ndirty;
static int measuring, sending = 1, running = 1;
static uint64_t delivered, closed_early, frame_errors, over, hist_count, hist_max;
static uint32_t *hist;
static double last_receive;
static char fill[70000];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("{\"event\":\"error\",\"error\":\"");
    for (char *p = msg; *p; p++) putchar(*p == '"' || *p == '\\' ? '\'' : *p);
    printf("\"}\n");
    fflush(stdout);
    exit(1);
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (!p) die("out of memory");
    return p;
}

/* -- writing ----------------------------------------------------------------------------------- */

static void reserve(Conn *c, size_t extra) {
    if (c->wlen + extra > c->wcap) {
        c->wcap = (c->wlen + extra) * 2;
        c->wbuf = xrealloc(c->wbuf, c->wcap);
    }
}

static void queue_bytes(Conn *c, const char *data, size_t n) {
    reserve(c, n);
    memcpy(c->wbuf + c->wlen, data, n);
    c->wlen += n;
    if (!c->dirty) {
        c->dirty = 1;
        dirty_list[ndirty++] = c;
    }
}

/* A masked client frame (masking key 0: legal, and XOR with 0 is the identity). */
static void queue_frame(Conn *c, int opcode, const char *text, size_t n) {
    if (c->state != OPEN) return;
    unsigned char hdr[14];
    size_t h;
    hdr[0] = 0x80 | opcode;
    if (n < 126) {
        hdr[1] = 0x80 | n;
        h = 2;
    } else if (n < 65536) {
        hdr[1] = 0x80 | 126;
        hdr[2] = n >> 8;
        hdr[3] = n & 0xff;
        h = 4;
    } else {
        hdr[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) hdr[2 + i] = (uint64_t)n >> (56 - 8 * i);
        h = 10;
    }
    memset(hdr + h, 0, 4);
    queue_bytes(c, (char *)hdr, h + 4);
    queue_bytes(c, text, n);
}

static void flush_all(void) {
    for (int i = 0; i < ndirty; i++) {
        Conn *c = dirty_list[i];
        c->dirty = 0;
        if (c->state == CLOSED) {
            c->wlen = 0;
            continue;
        }
        size_t off = 0;
        while (off < c->wlen) {
            ssize_t w = write(c->fd, c->wbuf + off, c->wlen - off);
            if (w > 0) {
                off += w;
            } else if (w < 0 && errno == EINTR) {
                continue;
            } else {
                break; /* EAGAIN (kept for the next iteration) or an error (the read side sees it) */
            }
        }
        memmove(c->wbuf, c->wbuf + off, c->wlen - off);
        c->wlen -= off;
    }
    int kept = 0;
    for (int i = 0; i < ndirty; i++) {
        Conn *c = dirty_list[i];
        if (c->wlen && c->state != CLOSED && !c->dirty) {
            c->dirty = 1;
            dirty_list[kept++] = c;
        }
    }
    ndirty = kept;
}

/* The payload: 16 digits of the stamp (us), then base64-alphabet filler; `out` holds payload_len. */
static void payload_of(char *out, int64_t stamp) {
    char digits[32];
    snprintf(digits, sizeof digits, "%016lld", (long long)stamp);
    memcpy(out, digits, 16);
    memcpy(out + 16, fill, payload_len - 16);
}

static char msgbuf[80000];

/* A message of `kvs_type` (PeerJS: `peer_type`) to `dst` (NULL: to the sender's master). */
static void send_typed(Conn *c, const char *kvs_type, const char *peer_type, const char *dst, size_t dstlen,
                       const char *payload, size_t plen) {
    int n;
    if (kvs && dst)
        n = snprintf(msgbuf, sizeof msgbuf, "{\"action\":\"%s\",\"recipientClientId\":\"%.*s\",\"messagePayload\":\"%.*s\"}",
                     kvs_type, (int)dstlen, dst, (int)plen, payload);
    else if (kvs)
        n = snprintf(msgbuf, sizeof msgbuf, "{\"action\":\"%s\",\"messagePayload\":\"%.*s\"}", kvs_type, (int)plen, payload);
    else if (dst)
        n = snprintf(msgbuf, sizeof msgbuf, "{\"type\":\"%s\",\"dst\":\"%.*s\",\"payload\":\"%.*s\"}", peer_type, (int)dstlen, dst,
                     (int)plen, payload);
    else
        n = snprintf(msgbuf, sizeof msgbuf, "{\"type\":\"%s\",\"dst\":\"m%d\",\"payload\":\"%.*s\"}", peer_type, c->channel,
                     (int)plen, payload);
    queue_frame(c, 1, msgbuf, n);
}

static char stamped[70000];

static void send_to_master(Conn *viewer, int64_t stamp) {
    payload_of(stamped, stamp);
    send_typed(viewer, "ICE_CANDIDATE", "CANDIDATE", NULL, 0, stamped, payload_len);
}

static void send_to_viewer(Conn *master, const char *id, size_t idlen, int64_t stamp) {
    payload_of(stamped, stamp);
    send_typed(master, "ICE_CANDIDATE", "CANDIDATE", id, idlen, stamped, payload_len);
}

/* -- reading ----------------------------------------------------------------------------------- */

static FILE *slow_log; /* RELAYGEN_SLOW_LOG=FILE: "<receipt us> <latency us>" per latency > 2 ms */

static void record(int64_t latency) {
    if (!measuring) return;
    if (slow_log && latency > 2000) fprintf(slow_log, "%lld %lld\n", (long long)now_us(), (long long)latency);
    delivered++;
    if (latency < 0) latency = 0;
    if (latency >= HIST_US) over++;
    else hist[latency]++;
    if ((uint64_t)latency > hist_max) hist_max = latency;
    hist_count++;
}

/* The string value of "key":"…" in a flat JSON object, or NULL (these servers escape nothing in it). */
static const char *member(const char *text, size_t n, const char *key, size_t *len) {
    size_t k = strlen(key);
    const char *p = memmem(text, n, key, k);
    if (!p) return NULL;
    p += k;
    const char *end = memchr(p, '"', text + n - p);
    if (!end) return NULL;
    *len = end - p;
    return p;
}

static const char CLOSE_1000[] = {(char)0x88, (char)0x82, 0, 0, 0, 0, 0x03, (char)0xe8};

/* A text frame in sessions mode: masters answer offers; a session closes once answered. */
static void on_session_text(Conn *c, const char *text, size_t n) {
    size_t tlen, slen;
    const char *type = member(text, n, kvs ? "\"messageType\":\"" : "\"type\":\"", &tlen);
    if (!type) return;
    if (c->role == MASTER) {
        int offer = kvs ? (tlen == 9 && !memcmp(type, "SDP_OFFER", 9)) : (tlen == 5 && !memcmp(type, "OFFER", 5));
        const char *sender = member(text, n, kvs ? "\"senderClientId\":\"" : "\"src\":\"", &slen);
        if (offer && sender) send_typed(c, "SDP_ANSWER", "ANSWER", sender, slen, fill + 1, offer_len);
        else if (offer) frame_errors++;
    } else if (c->role == SESSION && !c->answered) {
        int answer = kvs ? (tlen == 10 && !memcmp(type, "SDP_ANSWER", 10)) : (tlen == 6 && !memcmp(type, "ANSWER", 6));
        if (answer) {
            c->answered = 1;
            queue_bytes(c, CLOSE_1000, sizeof CLOSE_1000);
            c->state = CLOSING;
        }
    }
}

static void on_text(Conn *c, const char *text, size_t n) {
    if (sessions_mode) {
        on_session_text(c, text, n);
        return;
    }
    size_t plen, slen = 0, tlen;
    const char *payload, *sender;
    if (kvs) {
        if (!member(text, n, "\"messageType\":\"", &tlen)) return; /* a STATUS_RESPONSE, say */
        payload = member(text, n, "\"messagePayload\":\"", &plen);
        sender = member(text, n, "\"senderClientId\":\"", &slen);
    } else {
        const char *type = member(text, n, "\"type\":\"", &tlen);
        if (!type || tlen != 9 || memcmp(type, "CANDIDATE", 9) != 0) return; /* OPEN and the like */
        payload = member(text, n, "\"payload\":\"", &plen);
        sender = member(text, n, "\"src\":\"", &slen);
    }
    if (!payload || plen < 16) {
        frame_errors++;
        return;
    }
    int64_t stamp = 0;
    for (int i = 0; i < 16; i++) stamp = stamp * 10 + (payload[i] - '0');
    int64_t now = now_us();
    last_receive = now / 1e6;
    record(now - stamp);
    if (!sending) return;
    if (c->role == MASTER) {
        if (!sender) {
            frame_errors++;
            return;
        }
        send_to_viewer(c, sender, slen, now);
    } else if (rate == 0) {
        send_to_master(c, now);
    }
}

static void close_conn(Conn *c, int count) {
    if (c->state == CLOSED) return;
    if (count && running) closed_early++;
    c->state = CLOSED;
    close(c->fd);
}

/* Parse every whole frame in c->rbuf; keep the rest. */
static void parse_frames(Conn *c) {
    size_t off = 0;
    unsigned char *b = (unsigned char *)c->rbuf;
    while (c->state != CLOSED && c->rlen - off >= 2) {
        int fin = b[off] & 0x80, opcode = b[off] & 0x0f;
        uint64_t len = b[off + 1] & 0x7f;
        size_t h = 2;
        if (len == 126) {
            if (c->rlen - off < 4) break;
            len = (b[off + 2] << 8) | b[off + 3];
            h = 4;
        } else if (len == 127) {
            if (c->rlen - off < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | b[off + 2 + i];
            h = 10;
        }
        if (c->rlen - off < h + len) break;
        const char *data = c->rbuf + off + h;
        off += h + len;
        if (opcode == 1) {
            if (!fin) {
                frame_errors++;
                close_conn(c, 1);
                return;
            }
            if (c->state == OPEN) on_text(c, data, len);
        } else if (opcode == 8) {
            if (c->state == OPEN) {
                static const char close_1000[] = {(char)0x88, (char)0x82, 0, 0, 0, 0, 0x03, (char)0xe8};
                queue_bytes(c, close_1000, sizeof close_1000);
            }
            c->state = CLOSING;
        } else if (opcode == 9) {
            int was = c->state;
            c->state = OPEN;
            queue_frame(c, 0xA, data, len);
            c->state = was;
        }
    }
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
}

/* The upgrade request for `path` (Host names master_port for both roles, as loadgen.mjs's does). */
static int handshake_request(char *out, size_t size, const char *path) {
    return snprintf(out, size,
                    "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    path, host, master_port);
}

static int epfd;
static uint32_t *session_hist;
static uint64_t session_count, session_max;

static void start_session(Conn *c) {
    uint64_t seq = session_seq++;
    const char *path;
    char peer_path[160];
    if (kvs) {
        if (nsession_paths == 0) die("no session URLs");
        c->channel = session_channels[seq % nsession_paths];
        path = session_paths[seq % nsession_paths];
    } else {
        c->channel = seq % nmasters;
        snprintf(peer_path, sizeof peer_path, "/peerjs?key=peerjs&id=s%sx%llu&token=t", tag, (unsigned long long)seq);
        path = peer_path;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(viewer_port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->role = SESSION;
    c->started = now_us();
    c->answered = 0;
    c->rlen = c->wlen = 0;
    c->state = CONNECTING;
    snprintf(c->path, sizeof c->path, "%s", path);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS) die("connect: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void session_ended(Conn *c, const char *error) {
    if (measuring) {
        if (error == NULL && c->answered) {
            int64_t us = now_us() - c->started;
            sessions_done++;
            session_hist[us < HIST_US ? us : HIST_US - 1]++;
            session_count++;
            if ((uint64_t)us > session_max) session_max = us;
        } else {
            sessions_failed++;
            if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", error ? error : "closed before the answer");
        }
    }
    close(c->fd); /* (leaves the epoll set with it) */
    c->state = CLOSED;
    if (running) start_session(c);
}

static void session_connected(Conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        session_ended(c, strerror(err));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    char req[MAX_LINE + 512];
    int n = handshake_request(req, sizeof req, c->path);
    c->state = HANDSHAKE;
    queue_bytes(c, req, n);
}

/* The 101 (or a refusal) for a session's nonblocking handshake; 1 when the socket is open now. */
static int session_handshake(Conn *c) {
    c->rbuf[c->rlen] = 0;
    char *end = strstr(c->rbuf, "\r\n\r\n");
    if (!end) return 0;
    if (strncmp(c->rbuf, "HTTP/1.1 101", 12) != 0) {
        char *eol = strstr(c->rbuf, "\r\n");
        char line[120];
        snprintf(line, sizeof line, "%.*s", (int)(eol - c->rbuf), c->rbuf);
        session_ended(c, line);
        return 0;
    }
    size_t head = end + 4 - c->rbuf;
    memmove(c->rbuf, c->rbuf + head, c->rlen - head);
    c->rlen -= head;
    c->state = OPEN;
    send_typed(c, "SDP_OFFER", "OFFER", NULL, 0, fill, offer_len);
    return 1;
}

static void on_readable(Conn *c) {
    for (;;) {
        if (c->rcap - c->rlen < 65536) {
            c->rcap = c->rlen + 131072;
            c->rbuf = xrealloc(c->rbuf, c->rcap);
        }
        ssize_t r = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen - 1);
        if (r > 0) {
            c->rlen += r;
            if (c->state == HANDSHAKE && !session_handshake(c)) return;
            parse_frames(c);
            if (c->state == CLOSED) return;
            if ((size_t)r < 65536) return; /* drained; level-triggered epoll calls again if not */
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else if (r < 0 && errno == EAGAIN) {
            return;
        } else if (c->role == SESSION) {
            session_ended(c, c->answered ? NULL : r == 0 ? "closed before the answer" : strerror(errno));
            return;
        } else {
            close_conn(c, c->state != CLOSING);
            return;
        }
    }
}

/* -- connecting -------------------------------------------------------------------------------- */

static void connect_conn(Conn *c, int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) die("bad host %s", host);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect to port %d: %s", port, strerror(errno));
    char req[MAX_LINE + 512];
    int n = handshake_request(req, sizeof req, c->path);
    if (write(c->fd, req, n) != n) die("handshake write: %s", strerror(errno));
    c->rcap = 131072;
    c->rbuf = xrealloc(NULL, c->rcap);
    for (;;) {
        ssize_t r = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen - 1);
        if (r <= 0) die("handshake read on port %d: %s", port, r == 0 ? "closed" : strerror(errno));
        c->rlen += r;
        c->rbuf[c->rlen] = 0;
        char *end = strstr(c->rbuf, "\r\n\r\n");
        if (!end) continue;
        if (strncmp(c->rbuf, "HTTP/1.1 101", 12) != 0) {
            char *eol = strstr(c->rbuf, "\r\n");
            die("handshake refused: %.*s", (int)(eol - c->rbuf), c->rbuf);
        }
        size_t head = end + 4 - c->rbuf;
        memmove(c->rbuf, c->rbuf + head, c->rlen - head);
        c->rlen -= head;
        break;
    }
    c->state = OPEN;
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) != 0) die("nonblock: %s", strerror(errno));
}

/* -- main -------------------------------------------------------------------------------------- */

/* The p-th percentile in ms (the smallest value with at least p% of samples at or below it). */
static double pct_of(const uint32_t *h, uint64_t count, uint64_t max, double p) {
    if (count == 0) return -1;
    uint64_t rank = (uint64_t)((p / 100.0) * count + 0.999999999);
    uint64_t seen = 0;
    for (int i = 0; i < HIST_US; i++) {
        seen += h[i];
        if (seen >= rank) return i / 1000.0;
    }
    return max / 1000.0;
}
static double pct(double p) { return pct_of(hist, hist_count, hist_max, p); }

static void load_config(const char *file) {
    FILE *f = fopen(file, "r");
    if (!f) die("cannot open %s", file);
    static char line[MAX_LINE];
    int cap = 64;
    conns = xrealloc(NULL, sizeof(Conn) * cap);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char key[32], a[256], b[128];
        if (sscanf(line, "%31s", key) != 1) continue;
        char *rest = line + strlen(key) + 1;
        if (!strcmp(key, "proto")) kvs = !strcmp(rest, "kvs");
        else if (!strcmp(key, "host")) snprintf(host, sizeof host, "%s", rest);
        else if (!strcmp(key, "master_port")) master_port = atoi(rest);
        else if (!strcmp(key, "viewer_port")) viewer_port = atoi(rest);
        else if (!strcmp(key, "rate")) rate = atof(rest);
        else if (!strcmp(key, "window")) window_ = atoi(rest);
        else if (!strcmp(key, "warmup")) warmup = atof(rest);
        else if (!strcmp(key, "duration")) duration = atof(rest);
        else if (!strcmp(key, "payload_len")) payload_len = atoi(rest);
        else if (!strcmp(key, "deadline")) deadline = atof(rest);
        else if (!strcmp(key, "tag")) snprintf(tag, sizeof tag, "%s", rest);
        else if (!strcmp(key, "mode")) sessions_mode = !strcmp(rest, "sessions");
        else if (!strcmp(key, "concurrency")) concurrency = atoi(rest);
        else if (!strcmp(key, "offer_len")) offer_len = atoi(rest);
        else if (!strcmp(key, "session")) {
            if (sscanf(rest, "%255s", a) != 1) die("bad line: %s", line);
            if (nsession_paths == session_cap) {
                session_cap = session_cap ? session_cap * 2 : 1024;
                session_paths = xrealloc(session_paths, sizeof(char *) * session_cap);
                session_channels = xrealloc(session_channels, sizeof(int) * session_cap);
            }
            session_channels[nsession_paths] = atoi(a);
            session_paths[nsession_paths++] = strdup(rest + strlen(a) + 1);
        }
        else if (!strcmp(key, "master") || !strcmp(key, "viewer")) {
            if (nconns == cap) conns = xrealloc(conns, sizeof(Conn) * (cap *= 2));
            Conn *c = &conns[nconns];
            memset(c, 0, sizeof *c);
            c->role = key[0] == 'm' ? MASTER : VIEWER;
            char *path;
            if (c->role == MASTER) {
                if (sscanf(rest, "%255s", a) != 1) die("bad line: %s", line);
                path = rest + strlen(a) + 1;
                if (nconns != nmasters) die("masters must come first");
                nmasters++;
            } else {
                if (sscanf(rest, "%255s %127s", a, b) != 2) die("bad line: %s", line);
                snprintf(c->id, sizeof c->id, "%s", b);
                path = rest + strlen(a) + strlen(b) + 2;
            }
            c->channel = atoi(a);
            snprintf(c->path, sizeof c->path, "%s", path);
            nconns++;
        } else die("unknown config item %s", key);
    }
    fclose(f);
    if (payload_len < 16 || payload_len % 4 || payload_len > 65536) die("payload_len must be 16..65536, a multiple of 4");
    if (!master_port) die("no master_port");
    if (!viewer_port) viewer_port = master_port;
}

static void emit(const char *event) {
    printf("{\"event\":\"%s\"}\n", event);
    fflush(stdout);
}

/* One pass: wait for input at most `timeout_ms` (0: just look), handle it, send what was queued. */
static void poll_once(int timeout_ms) {
    struct epoll_event evs[256];
    int n = epoll_wait(epfd, evs, 256, timeout_ms);
    for (int i = 0; i < n; i++) {
        Conn *c = evs[i].data.ptr;
        if (c->state == CONNECTING) session_connected(c);
        else if (c->state != CLOSED) on_readable(c);
    }
    if (ndirty) flush_all();
}

static void check_timeouts(Conn *slots) {
    int64_t now = now_us();
    for (int i = 0; i < concurrency; i++)
        if (slots[i].state != CLOSED && now - slots[i].started > 10000000) session_ended(&slots[i], "session timed out");
}

static int run_sessions(void) {
    Conn *slots = calloc(concurrency, sizeof(Conn));
    session_hist = calloc(HIST_US, sizeof *session_hist);
    if (!slots || !session_hist) die("out of memory");
    double settle = now_s() + 0.2;
    while (now_s() < settle) poll_once(10);
    double t0 = now_s(), warm_end = t0 + warmup, end = warm_end + duration;
    for (int i = 0; i < concurrency; i++) start_session(&slots[i]);
    while (now_s() < warm_end) {
        poll_once(1);
        check_timeouts(slots);
    }
    emit("measure_start");
    measuring = 1;
    double cpu0 = cpu_s(), tm0 = now_s();
    while (now_s() < end) {
        poll_once(1);
        check_timeouts(slots);
    }
    measuring = 0;
    running = 0;
    emit("measure_end");
    double elapsed = now_s() - tm0, cpu = cpu_s() - cpu0;
    double drain_end = now_s() + 11;
    for (;;) {
        int open = 0;
        for (int i = 0; i < concurrency; i++) open += slots[i].state != CLOSED;
        if (!open || now_s() > drain_end) break;
        poll_once(1);
        check_timeouts(slots);
    }
    for (int i = 0; i < nmasters; i++) close_conn(&conns[i], 0);
    printf("{\"event\":\"result\",\"mode\":\"sessions\",\"generator\":\"c\",\"sessions\":%llu,\"failed\":%llu,\"first_error\":",
           (unsigned long long)sessions_done, (unsigned long long)sessions_failed);
    if (first_error[0]) {
        putchar('"');
        for (char *p = first_error; *p; p++) putchar(*p == '"' || *p == '\\' || (unsigned char)*p < 32 ? '\'' : *p);
        putchar('"');
    } else {
        printf("null");
    }
    printf(",\"frame_errors\":%llu,\"seconds\":%.6f,\"sessions_per_s\":%.3f,\"session_latency\":{\"samples\":%llu,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f},\"loadgen_cpu\":%.4f,\"concurrency\":%d}\n",
           (unsigned long long)frame_errors, elapsed, sessions_done / elapsed, (unsigned long long)session_count,
           pct_of(session_hist, session_count, session_max, 50), pct_of(session_hist, session_count, session_max, 99),
           pct_of(session_hist, session_count, session_max, 99.9), session_max / 1000.0, cpu / elapsed, concurrency);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--unlink") != 0)) {
        fprintf(stderr, "usage: relaygen CONFIG-FILE [--unlink] (written by bench/loadgen_c/relaygen.py)\n");
        return 2;
    }
    load_config(argv[1]);
    if (argc == 3) unlink(argv[1]);
    if (getenv("RELAYGEN_SLOW_LOG")) slow_log = fopen(getenv("RELAYGEN_SLOW_LOG"), "w");
    alarm((unsigned)deadline);
    static const char b64[] = "QWxsIHRoZSB3b3JsZCdzIGEgc3RhZ2UsIGFuZCBhbGwgdGhlIG1lbiBhbmQgd29tZW4gbWVyZWx5IHBsYXllcnM";
    for (size_t i = 0; i < sizeof fill; i++) fill[i] = b64[i % (sizeof b64 - 1)];
    hist = calloc(HIST_US, sizeof *hist);
    dirty_list = xrealloc(NULL, sizeof(Conn *) * (nconns + concurrency + 1));
    if (!hist) die("out of memory");
    epfd = epoll_create1(EPOLL_CLOEXEC);

    /* Masters first (all of them), then viewers, as loadgen.mjs does. */
    int masters_to_master_port = 0, viewers_to_viewer_port = 0;
    for (int i = 0; i < nconns; i++) {
        Conn *c = &conns[i];
        connect_conn(c, c->role == MASTER ? master_port : viewer_port);
        int named = strstr(c->path, "X-Amz-ClientId=") != NULL || (!kvs && c->role == VIEWER);
        if (c->role == MASTER && !named) masters_to_master_port++;
        if (c->role == VIEWER && named) viewers_to_viewer_port++;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);
        if (c->rlen) parse_frames(c); /* frames that came with the 101 (a PeerJS OPEN) */
    }
    fprintf(stderr, "{\"event\":\"split\",\"masters_to_master_port\":%d,\"viewers_to_viewer_port\":%d,\"mismatched\":%d,\"other\":0}\n",
            masters_to_master_port, viewers_to_viewer_port, nconns - masters_to_master_port - viewers_to_viewer_port);
    if (sessions_mode) return run_sessions();
    int nviewers = nconns - nmasters;
    if (nviewers == 0) die("no viewers");
    Conn **viewers = xrealloc(NULL, sizeof(Conn *) * nviewers);
    for (int i = 0; i < nviewers; i++) viewers[i] = &conns[nmasters + i];

    double settle = now_s() + 0.2; /* PeerJS OPEN frames, server-side bookkeeping */
    while (now_s() < settle) poll_once(10);

    double t0 = now_s(), warm_end = t0 + warmup, end = warm_end + duration, cpu0 = 0, tm0 = 0;
    if (rate == 0) {
        int64_t now = now_us();
        for (int i = 0; i < nviewers; i++)
            for (int w = 0; w < window_; w++) send_to_master(viewers[i], now);
        while (now_s() < warm_end) poll_once(1);
        emit("measure_start");
        measuring = 1;
        cpu0 = cpu_s();
        tm0 = now_s();
        while (now_s() < end) poll_once(1);
    } else {
        /* Busy: sends leave at their scheduled microsecond, as loadgen.mjs's setImmediate loop does. */
        double interval = 2e6 / rate;
        int64_t start = now_us();
        uint64_t sent = 0;
        int next = 0;
        for (;;) {
            double s = now_s();
            if (s >= end) break;
            if (!measuring && s >= warm_end) {
                emit("measure_start");
                measuring = 1;
                cpu0 = cpu_s();
                tm0 = now_s();
            }
            int64_t now = now_us();
            for (int burst = 0; start + (int64_t)(sent * interval) <= now && burst < 256; burst++) {
                send_to_master(viewers[next], start + (int64_t)(sent * interval));
                next = (next + 1) % nviewers;
                sent++;
            }
            poll_once(0);
        }
    }
    measuring = 0;
    sending = 0;
    emit("measure_end");
    double elapsed = now_s() - tm0, cpu = cpu_s() - cpu0;
    /* Drain what is in flight, then hang up viewers first, so nothing new is addressed to masters. */
    running = 0;
    double drain_end = now_s() + 2;
    while (now_s() < drain_end && now_s() - last_receive < 0.15) poll_once(20);
    for (int i = nmasters; i < nconns; i++) close_conn(&conns[i], 0);
    usleep(50000);
    for (int i = 0; i < nmasters; i++) close_conn(&conns[i], 0);
    printf("{\"event\":\"result\",\"mode\":\"relay\",\"generator\":\"c\",\"frame_errors\":%llu,\"connections\":%d,"
           "\"delivered\":%llu,\"seconds\":%.6f,\"msgs_per_s\":%.3f,\"latency\":{\"samples\":%llu,\"p50_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f},\"loadgen_cpu\":%.4f,\"in_flight\":",
           (unsigned long long)frame_errors, nconns, (unsigned long long)delivered, elapsed, delivered / elapsed,
           (unsigned long long)hist_count, pct(50), pct(99), pct(99.9), hist_max / 1000.0, cpu / elapsed);
    if (rate == 0) printf("%d", nviewers * window_);
    else printf("null");
    printf(",\"closed_by_server\":%llu,\"target_rate\":", (unsigned long long)closed_early);
    if (rate == 0) printf("null}\n");
    else printf("%.0f}\n", rate);
    fflush(stdout);
    return 0;
}
