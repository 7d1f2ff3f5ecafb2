/* log.c: see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static enum log_level g_level = LOG_LEVEL_WARN;

void log_set_level(enum log_level level) {
    g_level = level;
}

enum log_level log_get_level(void) {
    return g_level;
}

void log_msg(enum log_level level, const char *fmt, ...) {
    if (level > g_level) return;
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "hearth %s: %s\n", names[level], line);
}
