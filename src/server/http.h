/* http.h: the HTTP transport, over libmicrohttpd (one thread per connection).
 *
 * The server gives one handler; it is called on the connection's thread once a request's body
 * has arrived (bodies over max_body_bytes are not read: the handler sees http_req_too_large and
 * answers 413). The handler answers with exactly one http_reply (a whole body, sent after the
 * handler returns) or http_reply_stream (a producer called repeatedly on the same thread until
 * it says the stream ended: server-sent events). A handler may block (the non-streaming
 * generation waits for its result); while it waits it polls http_req_disconnected so a client
 * that hangs up stops its work. This layer knows nothing about JSON or the API.
 */
#ifndef HEARTH_SERVER_HTTP_H
#define HEARTH_SERVER_HTTP_H

#include "../base/buf.h"
#include "../base/error.h"

#include <stddef.h>

struct http_server;
struct http_req;

struct http_params {
    const char *host;      /* address to bind ("127.0.0.1", "0.0.0.0", "::1", a name) */
    int port;              /* 0: any free port (see http_port) */
    size_t max_body_bytes; /* larger bodies get 413 without being read */
    int max_connections;   /* concurrent connections (each has a thread) */
    int idle_timeout_s;    /* an idle keep-alive connection is closed after this */
};

/* Called once per request on its connection thread. */
typedef void (*http_handler_fn)(void *ud, struct http_req *req);

/* Appends the next bytes of a stream to out. Returns 1 while more will follow, 0 when the
 * stream is complete. It may block, but should return within ~100 ms (with or without bytes) so
 * the caller keeps noticing disconnects. */
typedef int (*http_stream_fn)(void *ctx, struct http_req *req, struct buf *out);
/* Called exactly once when a stream's response is done with: completed = 1 if the producer
 * reached its end and everything was handed to the socket, 0 if the client went away first. */
typedef void (*http_stream_close_fn)(void *ctx, int completed);

int http_open(struct http_server **out, const struct http_params *p, http_handler_fn fn, void *ud,
              struct error *err);
int http_port(const struct http_server *h); /* the bound port */
/* Stops accepting, closes connections and joins their threads (handlers must be able to
 * finish: the caller cancels its work first). h may be NULL. */
void http_close(struct http_server *h);

const char *http_req_method(const struct http_req *r);
const char *http_req_path(const struct http_req *r); /* without the query string */
/* Header value (case-insensitive name) or NULL; valid during the request. */
const char *http_req_header(const struct http_req *r, const char *name);
/* Query-string argument or NULL. */
const char *http_req_query(const struct http_req *r, const char *name);
/* The body (NUL-terminated after len bytes; "" when empty). */
const char *http_req_body(const struct http_req *r, size_t *len);
int http_req_too_large(const struct http_req *r);
/* 1 once the peer has closed its side of the connection. */
int http_req_disconnected(struct http_req *r);

/* Extra response header for the next reply (e.g. "Cache-Control"); copied. */
void http_req_add_header(struct http_req *r, const char *name, const char *value);
void http_reply(struct http_req *r, int status, const char *content_type, const char *body,
                size_t len);
void http_reply_stream(struct http_req *r, int status, const char *content_type, http_stream_fn fn,
                       http_stream_close_fn close_fn, void *ctx);

#endif
