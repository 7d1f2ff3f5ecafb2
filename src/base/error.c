/* error.c: struct error helpers and the CHECK failure path. */
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int error_setv(struct error *err, int code, const char *fmt, va_list ap) {
    if (err) {
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    }
    return code;
}

int error_set(struct error *err, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_setv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void error_prefix(struct error *err, const char *fmt, ...) {
    if (!err) return;
    char old[sizeof(err->msg)];
    memcpy(old, err->msg, sizeof(old));
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(err->msg) - 2) return; /* prefix alone fills the line */
    size_t used = (size_t)n;
    memcpy(err->msg + used, ": ", 2);
    used += 2;
    size_t room = sizeof(err->msg) - used - 1, len = strlen(old);
    if (len > room) len = room;
    memcpy(err->msg + used, old, len);
    err->msg[used + len] = 0;
}

const char *error_name(int code) {
    switch (code) {
    case ERR_OK:
        return "ok";
    case ERR_IO:
        return "io";
    case ERR_FORMAT:
        return "format";
    case ERR_UNSUPPORTED:
        return "unsupported";
    case ERR_NOMEM:
        return "out of memory";
    case ERR_INVALID:
        return "invalid";
    case ERR_RANGE:
        return "range";
    case ERR_NOT_FOUND:
        return "not found";
    case ERR_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

void check_failed(const char *file, int line, const char *cond) {
    fprintf(stderr, "hearth: CHECK failed at %s:%d: %s\n", file, line, cond);
    fflush(stderr);
    abort();
}
