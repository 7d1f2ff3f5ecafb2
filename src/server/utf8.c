/* utf8.c: see utf8.h. */
#include "utf8.h"

/* Length of the valid sequence starting at s[0] (1..4), 0 if invalid, or -k when s[0..n) is a
 * valid but incomplete start of a k-byte sequence. */
static int utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) {
        len = 2;
    } else if (c < 0xF0) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c < 0xF5) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return -len;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
    }
    return len;
}

void utf8_repair(const char *s, size_t n, struct buf *out) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* run: start of the pending valid stretch */
    while (i < n) {
        int k = utf8_seq(p + i, n - i);
        if (k > 0 && !(k == 1 && p[i] == 0)) {
            i += (size_t)k;
            continue;
        }
        buf_append(out, s + run, i - run);
        buf_append(out, "\xEF\xBF\xBD", 3);
        i = k < 0 ? n : i + 1; /* a truncated sequence at the end is one character */
        run = i;
    }
    buf_append(out, s + run, n - run);
}

size_t utf8_complete(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    /* only the last 3 bytes can start an incomplete sequence */
    size_t start = n > 3 ? n - 3 : 0;
    for (size_t i = start; i < n; i++) {
        if ((p[i] & 0xC0) == 0x80) continue;
        if (utf8_seq(p + i, n - i) < 0) return i;
    }
    return n;
}

int utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        int k = utf8_seq(p + i, n - i);
        if (k <= 0 || (k == 1 && p[i] == 0)) return 0;
        i += (size_t)k;
    }
    return 1;
}
