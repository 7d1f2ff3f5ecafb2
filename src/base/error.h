/* error.h: the two kinds of failure.
 *
 * A bug (broken invariant) hits CHECK(cond): always compiled in, prints file:line and aborts.
 * The outside world (bad file, bad request, failed allocation) is reported by returning a
 * negative ERR_* code and writing one line into a caller-owned struct error (which may be NULL).
 * Only main() exits; library code never does.
 */
#ifndef HEARTH_ERROR_H
#define HEARTH_ERROR_H

#include <stdarg.h>
#include <stddef.h>

enum err_code {
    ERR_OK = 0,
    ERR_IO = -1,          /* open/read/mmap failed */
    ERR_FORMAT = -2,      /* malformed input bytes */
    ERR_UNSUPPORTED = -3, /* valid input we do not handle (arch, dtype, version) */
    ERR_NOMEM = -4,       /* allocation failed */
    ERR_INVALID = -5,     /* bad argument or parameter from the caller/user */
    ERR_RANGE = -6,       /* a size or count out of bounds (context full, prompt too long) */
    ERR_NOT_FOUND = -7,   /* missing key, tensor or file */
    ERR_CANCELLED = -8,   /* stopped by the caller */
};

struct error {
    int code;      /* last ERR_* written, 0 if none */
    char msg[512]; /* one line, NUL terminated */
};

/* Writes code and a formatted message into err (if non-NULL); returns code, so callers can
 * `return error_set(err, ERR_FORMAT, "...")`. Keeps the first message if one is already set
 * and keep_first is requested via error_setk. */
int error_set(struct error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int error_setv(struct error *err, int code, const char *fmt, va_list ap);

/* Prepends "prefix: " to the message already in err (for adding context on the way up). */
void error_prefix(struct error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Name of an ERR_* code, e.g. "format". */
const char *error_name(int code);

void check_failed(const char *file, int line, const char *cond) __attribute__((noreturn));

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) check_failed(__FILE__, __LINE__, #cond);                                      \
    } while (0)

#endif
