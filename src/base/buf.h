/* buf.h: a growable byte buffer (also used as a string builder).
 *
 * The buffer owns its bytes; data is always NUL terminated after len bytes (so it can be used
 * as a C string) once anything was appended. On allocation failure the buffer records it in
 * `failed`, later appends become no-ops, and the owner checks `failed` once at the end.
 */
#ifndef HEARTH_BUF_H
#define HEARTH_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* len bytes + NUL; NULL until the first append */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
    int failed; /* 1 after an allocation failure */
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);                 /* releases data and re-inits */
void buf_clear(struct buf *b);                /* len = 0, keeps the allocation */
int buf_reserve(struct buf *b, size_t extra); /* 0 or ERR_NOMEM */
void buf_append(struct buf *b, const void *data, size_t n);
void buf_append_str(struct buf *b, const char *s);
void buf_append_char(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Takes ownership of the bytes (caller frees with mem_free); the buffer is re-inited. Returns
 * an empty allocated string if nothing was appended, NULL if the buffer failed. */
char *buf_detach(struct buf *b);

#endif
