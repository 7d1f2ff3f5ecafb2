/* buf.c: see buf.h. */
#include "buf.h"

#include "error.h"
#include "mem.h"

#include <stdio.h>
#include <string.h>

void buf_init(struct buf *b) {
    memset(b, 0, sizeof(*b));
}

void buf_free(struct buf *b) {
    mem_free(b->data);
    buf_init(b);
}

void buf_clear(struct buf *b) {
    b->len = 0;
    if (b->data) b->data[0] = 0;
}

int buf_reserve(struct buf *b, size_t extra) {
    if (b->failed) return ERR_NOMEM;
    size_t need;
    if (mem_add_size(b->len, extra, &need) || mem_add_size(need, 1, &need)) {
        b->failed = 1;
        return ERR_NOMEM;
    }
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = mem_realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return ERR_NOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void buf_append(struct buf *b, const void *data, size_t n) {
    if (buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
}

void buf_append_str(struct buf *b, const char *s) {
    buf_append(b, s, strlen(s));
}

void buf_append_char(struct buf *b, char c) {
    buf_append(b, &c, 1);
}

void buf_vprintf(struct buf *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || buf_reserve(b, (size_t)n)) return;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void buf_printf(struct buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

char *buf_detach(struct buf *b) {
    if (b->failed) {
        buf_free(b);
        return NULL;
    }
    if (!b->data && buf_reserve(b, 0)) return NULL;
    if (b->len == 0) b->data[0] = 0;
    char *p = b->data;
    buf_init(b);
    return p;
}
