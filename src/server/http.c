/* http.c: libmicrohttpd glue (see http.h).
 *
 * Thread-per-connection mode: every connection has its own thread, so a handler may block while
 * the scheduler generates, and a stream producer may block waiting for the next tokens, without
 * holding up other clients. The cost (one thread per open connection) is irrelevant at the
 * scale of a local server; the connection limit bounds it. Disconnects are noticed two ways:
 * a failed write ends the response (the close callback reports completed = 0), and while
 * nothing is being written http_req_disconnected polls the socket for end-of-file.
 */
#include "http.h"

#include "../base/log.h"
#include "../base/mem.h"

#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct http_server {
    struct MHD_Daemon *d;
    http_handler_fn fn;
    void *ud;
    size_t max_body; /* bytes */
    int port;
};

struct http_header {
    char *name, *value;
};

struct http_req {
    struct http_server *h;
    struct MHD_Connection *conn;
    const char *method, *path; /* owned by MHD, valid during the request */
    struct buf body;
    int too_large;
    int replied; /* a response was prepared (resp, status) */
    int disconnected;
    struct MHD_Response *resp;
    int status;
    struct http_header headers[8]; /* extra response headers */
    int n_headers;
};

struct http_stream {
    http_stream_fn fn;
    http_stream_close_fn close_fn;
    void *ctx;
    struct http_req *r; /* valid while the reader is being called */
    struct buf pending; /* produced bytes not yet handed to MHD */
    size_t off;         /* bytes of pending already handed over */
    int ended;          /* the producer said it is done */
    int completed;      /* END_OF_STREAM was returned */
};

/* ============================================================================================
 * Requests
 * ============================================================================================ */

const char *http_req_method(const struct http_req *r) {
    return r->method;
}

const char *http_req_path(const struct http_req *r) {
    return r->path;
}

const char *http_req_header(const struct http_req *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_req_query(const struct http_req *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_req_body(const struct http_req *r, size_t *len) {
    if (len) *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

int http_req_too_large(const struct http_req *r) {
    return r->too_large;
}

int http_req_disconnected(struct http_req *r) {
    if (r->disconnected) return 1;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    int fd = ci->connect_fd;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLNVAL | POLLRDHUP)) {
        r->disconnected = 1;
    } else if (p.revents & POLLIN) {
        char c;
        if (recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) r->disconnected = 1;
    }
    return r->disconnected;
}

void http_req_add_header(struct http_req *r, const char *name, const char *value) {
    if (r->n_headers == (int)(sizeof(r->headers) / sizeof(r->headers[0]))) return;
    char *n = mem_strdup(name), *v = mem_strdup(value);
    if (!n || !v) {
        mem_free(n);
        mem_free(v);
        return;
    }
    r->headers[r->n_headers].name = n;
    r->headers[r->n_headers].value = v;
    r->n_headers++;
}

static void set_response(struct http_req *r, struct MHD_Response *resp, int status,
                         const char *content_type) {
    CHECK(!r->replied);
    r->replied = 1;
    if (!resp) return; /* out of memory: the connection is dropped */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (int i = 0; i < r->n_headers; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    r->resp = resp;
    r->status = status;
}

void http_reply(struct http_req *r, int status, const char *content_type, const char *body,
                size_t len) {
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    set_response(r, resp, status, content_type);
}

/* ============================================================================================
 * Streams
 * ============================================================================================ */

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    struct http_stream *st = cls;
    for (;;) {
        if (st->off < st->pending.len) {
            size_t n = st->pending.len - st->off < max ? st->pending.len - st->off : max;
            memcpy(out, st->pending.data + st->off, n);
            st->off += n;
            return (ssize_t)n;
        }
        buf_clear(&st->pending);
        st->off = 0;
        if (st->ended) {
            st->completed = 1;
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (http_req_disconnected(st->r)) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (!st->fn(st->ctx, st->r, &st->pending)) st->ended = 1;
        if (st->pending.failed) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls) {
    struct http_stream *st = cls;
    st->close_fn(st->ctx, st->completed);
    buf_free(&st->pending);
    mem_free(st);
}

void http_reply_stream(struct http_req *r, int status, const char *content_type, http_stream_fn fn,
                       http_stream_close_fn close_fn, void *ctx) {
    struct http_stream *st = mem_calloc(1, sizeof(*st));
    struct MHD_Response *resp = NULL;
    if (st) {
        st->fn = fn;
        st->close_fn = close_fn;
        st->ctx = ctx;
        st->r = r;
        buf_init(&st->pending);
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, st,
                                                 stream_free);
    }
    if (!resp) {
        mem_free(st);
        close_fn(ctx, 0);
    }
    set_response(r, resp, status, content_type);
}

/* ============================================================================================
 * Daemon
 * ============================================================================================ */

static enum MHD_Result dispatch(struct http_req *r) {
    r->h->fn(r->h->ud, r);
    if (!r->replied) /* a handler bug; never leave the client hanging */
        http_reply(r, 500, "text/plain", "no response\n", 12);
    if (!r->resp) return MHD_NO;
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)r->status, r->resp);
    MHD_destroy_response(r->resp);
    r->resp = NULL;
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    struct http_server *h = cls;
    struct http_req *r = *con_cls;
    if (!r) {
        r = mem_calloc(1, sizeof(*r));
        if (!r) return MHD_NO;
        r->h = h;
        r->conn = c;
        r->method = method;
        r->path = url;
        buf_init(&r->body);
        *con_cls = r;
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > h->max_body) {
            r->too_large = 1;
            return dispatch(r); /* answer now; the body is never read */
        }
        return MHD_YES;
    }
    if (r->replied) { /* answered early: drop whatever still arrives */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        if (!r->too_large && r->body.len + n > h->max_body) {
            r->too_large = 1;
            buf_free(&r->body);
        }
        if (!r->too_large) buf_append(&r->body, upload_data, n);
        *upload_data_size = 0;
        return r->body.failed ? MHD_NO : MHD_YES;
    }
    return dispatch(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    struct http_req *r = *con_cls;
    if (!r) return;
    if (r->resp) MHD_destroy_response(r->resp);
    buf_free(&r->body);
    for (int i = 0; i < r->n_headers; i++) {
        mem_free(r->headers[i].name);
        mem_free(r->headers[i].value);
    }
    mem_free(r);
    *con_cls = NULL;
}

static void on_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    LOG_DEBUG("http: %s", msg);
}

int http_open(struct http_server **out, const struct http_params *p, http_handler_fn fn, void *ud,
              struct error *err) {
    *out = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", p->port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(p->host, port, &hints, &ai);
    if (gai != 0 || !ai)
        return error_set(err, ERR_INVALID, "cannot resolve host '%s': %s", p->host,
                         gai_strerror(gai));
    struct http_server *h = mem_calloc(1, sizeof(*h));
    if (!h) {
        freeaddrinfo(ai);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    h->fn = fn;
    h->ud = ud;
    h->max_body = p->max_body_bytes;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(
        flags, (uint16_t)p->port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)(p->idle_timeout_s > 0 ? p->idle_timeout_s : 600), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(p->max_connections > 0 ? p->max_connections : 64),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)256 * 1024, MHD_OPTION_EXTERNAL_LOGGER, on_log,
        NULL, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        mem_free(h);
        return error_set(err, ERR_IO, "cannot listen on %s:%d (address in use or not allowed)",
                         p->host, p->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : p->port;
    *out = h;
    return 0;
}

int http_port(const struct http_server *h) {
    return h->port;
}

void http_close(struct http_server *h) {
    if (!h) return;
    MHD_stop_daemon(h->d);
    mem_free(h);
}
