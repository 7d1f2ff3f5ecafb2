/* unicode.c: codepoint classes (table lookup), UTF-8, the GPT-2 byte map. */
#include "unicode.h"

unsigned unicode_flags(uint32_t cpt) {
    if (cpt < 128) return unicode_ascii_flags[cpt];
    if (cpt > 0x10FFFF) return UNICODE_OTHER;
    /* last run whose start <= cpt; unicode_runs[0] starts at 0 */
    size_t lo = 0, hi = unicode_n_runs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((unicode_runs[mid] >> 8) <= cpt) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return unicode_runs[lo] & 0xFF;
}

static int is_cont(unsigned char c) {
    return (c & 0xC0) == 0x80;
}

size_t unicode_decode_utf8(const char *s, size_t n, uint32_t *cpt) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char c = u[0];
    if (c < 0x80) {
        *cpt = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0 && n >= 2 && is_cont(u[1])) {
        *cpt = ((uint32_t)(c & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if ((c & 0xF0) == 0xE0 && n >= 3 && is_cont(u[1]) && is_cont(u[2])) {
        *cpt = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    if ((c & 0xF8) == 0xF0 && n >= 4 && is_cont(u[1]) && is_cont(u[2]) && is_cont(u[3])) {
        *cpt = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
               ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
        return 4;
    }
    *cpt = 0xFFFD;
    return 1;
}

size_t unicode_encode_utf8(uint32_t cpt, char out[4]) {
    if (cpt < 0x80) {
        out[0] = (char)cpt;
        return 1;
    }
    if (cpt < 0x800) {
        out[0] = (char)(0xC0 | (cpt >> 6));
        out[1] = (char)(0x80 | (cpt & 0x3F));
        return 2;
    }
    if (cpt < 0x10000) {
        out[0] = (char)(0xE0 | (cpt >> 12));
        out[1] = (char)(0x80 | ((cpt >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cpt & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | ((cpt >> 18) & 0x07));
    out[1] = (char)(0x80 | ((cpt >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cpt >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cpt & 0x3F));
    return 4;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves; the 68 others, in byte
 * order (0x00..0x20, 0x7F..0xA0, 0xAD), map to U+0100..U+0143. */
uint32_t unicode_byte_to_cpt(uint8_t byte) {
    if (byte <= 0x20) return 0x100u + byte;
    if (byte >= 0x7F && byte <= 0xA0) return 0x100u + 33 + (byte - 0x7Fu);
    if (byte == 0xAD) return 0x100u + 67;
    return byte;
}

int unicode_cpt_to_byte(uint32_t cpt) {
    if (cpt < 0x100) {
        if (cpt <= 0x20 || (cpt >= 0x7F && cpt <= 0xA0) || cpt == 0xAD) return -1;
        return (int)cpt;
    }
    if (cpt < 0x100 + 33) return (int)(cpt - 0x100);
    if (cpt < 0x100 + 67) return (int)(cpt - 0x100 - 33 + 0x7F);
    if (cpt == 0x100 + 67) return 0xAD;
    return -1;
}
