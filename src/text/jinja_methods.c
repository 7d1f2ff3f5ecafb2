/* jinja_methods.c: Python's str, dict and list methods as templates call them
 * (`content.split('</think>')[-1].lstrip('\n')`, `d.get('k')`), the string algorithms the
 * filters share, and UTF-8 helpers.
 *
 * Strings are UTF-8 but Python counts characters, so every index, width and slice here is in
 * code points (ASCII strings take a byte fast path). Whitespace is Python's str.isspace() set,
 * which decides what strip()/split() remove and thus output bytes. Case mapping covers ASCII,
 * Latin, Greek and Cyrillic (documented gap: the rest of Unicode keeps its case).
 * The sandbox (ImmutableSandboxedEnvironment) forbids methods that mutate lists and dicts:
 * they resolve to an undefined value whose use fails, as in Jinja.
 */
#include "jinja_internal.h"

#include "../base/mem.h"
#include "unicode.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================
 * UTF-8
 * ============================================================================================
 * Invalid bytes decode to U+DC80+byte (Python's surrogateescape): every byte sequence decodes,
 * one step at a time, without reading past the end.
 */

uint32_t jinja_utf8_next(const char *s, size_t n, size_t *i) {
    const unsigned char *p = (const unsigned char *)s + *i;
    size_t left = n - *i;
    unsigned char c = p[0];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    int len = c >= 0xc2 && c <= 0xdf   ? 2
              : c >= 0xe0 && c <= 0xef ? 3
              : c >= 0xf0 && c <= 0xf4 ? 4
                                       : 0;
    if (len && (size_t)len <= left) {
        uint32_t cp = c & (0x7f >> len);
        int ok = 1;
        for (int k = 1; k < len; k++) {
            if ((p[k] & 0xc0) != 0x80) {
                ok = 0;
                break;
            }
            cp = (cp << 6) | (p[k] & 0x3f);
        }
        if (ok && ((len == 3 && cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff)) ||
                   (len == 4 && cp >= 0x10000 && cp <= 0x10ffff) || len == 2)) {
            *i += (size_t)len;
            return cp;
        }
    }
    (*i)++;
    return 0xdc00 | c; /* like Python's surrogateescape */
}

void jinja_utf8_put(struct buf *b, uint32_t cp) {
    char t[4];
    if (cp < 0x80) {
        buf_append_char(b, (char)cp);
    } else if (cp < 0x800) {
        t[0] = (char)(0xc0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3f));
        buf_append(b, t, 2);
    } else if (cp < 0x10000) {
        t[0] = (char)(0xe0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        t[2] = (char)(0x80 | (cp & 0x3f));
        buf_append(b, t, 3);
    } else {
        t[0] = (char)(0xf0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        t[3] = (char)(0x80 | (cp & 0x3f));
        buf_append(b, t, 4);
    }
}

size_t jinja_utf8_count(const char *s, size_t n) {
    size_t count = 0, i = 0;
    while (i < n) {
        jinja_utf8_next(s, n, &i);
        count++;
    }
    return count;
}

size_t jinja_utf8_offset(const char *s, size_t n, size_t idx) {
    size_t i = 0;
    while (idx > 0 && i < n) {
        jinja_utf8_next(s, n, &i);
        idx--;
    }
    return i;
}

size_t tpl_string_len(const struct tpl_value *v) {
    return v->flags & TPL_F_ASCII ? v->u.s.n : jinja_utf8_count(v->u.s.p, v->u.s.n);
}

int jinja_is_pyspace(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Simple case mappings of the scripts chat text commonly uses: ASCII, Latin-1, Latin
 * Extended-A and Additional, Greek and Cyrillic. Other characters keep their case (documented
 * gap: Python knows all of Unicode's mappings). Special expansions (ß -> SS) are handled by
 * the caller. */
static uint32_t cp_upper(uint32_t c) {
    if (c < 0x80) return c >= 'a' && c <= 'z' ? c - 32 : c;
    if (c == 0xb5) return 0x39c;
    if (c >= 0xe0 && c <= 0xfe && c != 0xf7) return c - 32;
    if (c == 0xff) return 0x178;
    if (c >= 0x100 && c <= 0x17f) {
        if (c == 0x131) return 'I';
        if (c == 0x17f) return 'S';
        if (c == 0x130 || c == 0x138 || c == 0x149 || c == 0x178) return c;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return c & 1 ? c : c - 1;
        return c & 1 ? c - 1 : c;
    }
    if (c >= 0x3b1 && c <= 0x3cb) return c == 0x3c2 ? 0x3a3 : c - 32;
    if (c == 0x3ac) return 0x386;
    if (c >= 0x3ad && c <= 0x3af) return c - 37;
    if (c == 0x3cc) return 0x38c;
    if (c == 0x3cd || c == 0x3ce) return c - 63;
    if (c >= 0x430 && c <= 0x44f) return c - 32;
    if (c >= 0x450 && c <= 0x45f) return c - 80;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf) || (c >= 0x4d0 && c <= 0x52f))
        return c & 1 ? c - 1 : c;
    if (c >= 0x4c1 && c <= 0x4ce) return c & 1 ? c : c - 1;
    if (c == 0x4cf) return 0x4c0;
    if ((c >= 0x1e00 && c <= 0x1e95) || (c >= 0x1ea0 && c <= 0x1eff)) return c & 1 ? c - 1 : c;
    return c;
}

static uint32_t cp_lower(uint32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 32;
    if (c == 0x178) return 0xff;
    if (c >= 0x100 && c <= 0x17f) {
        if (c == 0x130 || c == 0x131 || c == 0x138 || c == 0x149 || c == 0x17f) return c;
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return c & 1 ? c + 1 : c;
        return c & 1 ? c : c + 1;
    }
    if (c >= 0x391 && c <= 0x3ab && c != 0x3a2) return c + 32;
    if (c == 0x386) return 0x3ac;
    if (c >= 0x388 && c <= 0x38a) return c + 37;
    if (c == 0x38c) return 0x3cc;
    if (c == 0x38e || c == 0x38f) return c + 63;
    if (c >= 0x410 && c <= 0x42f) return c + 32;
    if (c >= 0x400 && c <= 0x40f) return c + 80;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf) || (c >= 0x4d0 && c <= 0x52f))
        return c & 1 ? c : c + 1;
    if (c >= 0x4c1 && c <= 0x4ce) return c & 1 ? c + 1 : c;
    if (c == 0x4c0) return 0x4cf;
    if ((c >= 0x1e00 && c <= 0x1e95) || (c >= 0x1ea0 && c <= 0x1eff)) return c & 1 ? c : c + 1;
    return c;
}

/* Cased letters (Lu/Ll/Lt) for title() and capitalize(): those with a mapping, plus the few
 * lowercase letters without an uppercase form in these blocks. */
static int is_cased(uint32_t c) {
    return cp_upper(c) != c || cp_lower(c) != c || c == 0xdf || c == 0x138 || c == 0x149;
}

/* ============================================================================================
 * String algorithms shared with the filters
 * ============================================================================================
 * strip with Python's whitespace set, case mapping, replace, slicing by character and HTML
 * escaping, used by both filters and methods.
 */

static struct tpl_value *take_buf(struct jinja_render *st, struct buf *b, uint8_t flags) {
    struct tpl_value *v = jinja_buf_to_string(st, b);
    if (v) v->flags |= flags & TPL_F_SAFE;
    return v;
}

/* Character c in the set of characters of `chars` (NULL: Python whitespace). */
static int in_charset(uint32_t c, const struct tpl_value *chars) {
    if (!chars) return jinja_is_pyspace(c);
    size_t i = 0;
    while (i < chars->u.s.n)
        if (jinja_utf8_next(chars->u.s.p, chars->u.s.n, &i) == c) return 1;
    return 0;
}

struct tpl_value *jinja_str_strip(struct jinja_render *st, struct tpl_value *s,
                                  struct tpl_value *chars, int left, int right) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, start = 0, end = n;
    if (chars && chars->kind == TPL_NONE) chars = NULL;
    if (left) {
        while (start < n) {
            size_t i = start;
            if (!in_charset(jinja_utf8_next(p, n, &i), chars)) break;
            start = i;
        }
    }
    if (right) {
        while (end > start) {
            size_t b = end - 1;
            while (b > start && ((unsigned char)p[b] & 0xc0) == 0x80 && end - b < 4) b--;
            size_t i = b;
            uint32_t c = jinja_utf8_next(p, end, &i);
            if (i != end) { /* not a whole character: treat the last byte alone */
                b = end - 1;
                i = b;
                c = jinja_utf8_next(p, end, &i);
            }
            if (!in_charset(c, chars)) break;
            end = b;
        }
    }
    if (start == 0 && end == n) return s;
    struct tpl_value *v = jinja_new_string(st, p + start, end - start);
    if (v) v->flags |= s->flags & TPL_F_SAFE;
    return v;
}

/* Python's lower() turns a capital sigma into a final sigma at the end of a word. */
static int sigma_is_final(const char *p, size_t n, size_t end, int prev_cased) {
    size_t j = end;
    return prev_cased && (j >= n || !is_cased(jinja_utf8_next(p, n, &j)));
}

int jinja_str_is_case(const struct tpl_value *s, int want_lower) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    int cased = 0;
    while (i < n) {
        uint32_t c = jinja_utf8_next(p, n, &i);
        int lower = cp_upper(c) != c || c == 0xdf || c == 0x138 || c == 0x149;
        int upper = cp_lower(c) != c;
        if (want_lower ? upper : lower) return 0;
        cased |= want_lower ? lower : upper;
    }
    return cased;
}

struct tpl_value *jinja_str_case(struct jinja_render *st, struct tpl_value *s, int how) {
    struct buf b;
    buf_init(&b);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    int prev_cased = 0, first = 1, word_start = 1;
    while (i < n) {
        size_t start = i;
        uint32_t c = jinja_utf8_next(p, n, &i);
        int to = -1; /* -1 keep, 1 upper, 0 lower, 2 title */
        switch (how) {
        case JINJA_CASE_UPPER:
            to = 1;
            break;
        case JINJA_CASE_LOWER:
            to = 0;
            break;
        case JINJA_CASE_CAPITALIZE:
            to = first ? 2 : 0;
            break;
        case JINJA_CASE_TITLE_METHOD:
            to = prev_cased ? 0 : 2;
            break;
        case JINJA_CASE_TITLE_FILTER: {
            /* Jinja: split on runs of [-\s({[<], then piece[0].upper() + piece[1:].lower() */
            int sep =
                c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || jinja_is_pyspace(c);
            to = sep ? -1 : word_start ? 1 : 0;
            word_start = sep;
            break;
        }
        case JINJA_CASE_SWAP:
            to = cp_lower(c) != c ? 0 : cp_upper(c) != c || c == 0xdf ? 1 : -1;
            break;
        }
        uint32_t m = c;
        if (to == 1 || to == 2) {
            if (c == 0xdf) { /* ß */
                buf_append_str(&b, to == 1 ? "SS" : "Ss");
                prev_cased = 1;
                first = 0;
                continue;
            }
            m = cp_upper(c);
        } else if (to == 0) {
            if (c == 0x130) { /* İ lowers to i + combining dot above */
                buf_append_str(&b, "i\xcc\x87");
                prev_cased = 1;
                first = 0;
                continue;
            }
            m = c == 0x3a3 && sigma_is_final(p, n, i, prev_cased) ? 0x3c2 : cp_lower(c);
        }
        prev_cased = is_cased(c);
        first = 0;
        if (m == c)
            buf_append(&b, p + start, i - start);
        else
            jinja_utf8_put(&b, m);
    }
    return take_buf(st, &b, s->flags);
}

struct tpl_value *jinja_str_replace(struct jinja_render *st, struct tpl_value *s,
                                    struct tpl_value *old, struct tpl_value *new_, int64_t count) {
    struct buf b;
    buf_init(&b);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    if (count < 0) count = INT64_MAX;
    if (old->u.s.n == 0) { /* 'abc'.replace('', '-') == '-a-b-c-' */
        while (count > 0) {
            buf_append(&b, new_->u.s.p, new_->u.s.n);
            count--;
            if (i >= n) break;
            size_t start = i;
            jinja_utf8_next(p, n, &i);
            buf_append(&b, p + start, i - start);
            if (b.len > st->max_output) break;
        }
        buf_append(&b, p + i, n - i);
        return take_buf(st, &b, 0);
    }
    while (count > 0 && i < n) {
        const char *hit = memmem(p + i, n - i, old->u.s.p, old->u.s.n);
        if (!hit) break;
        buf_append(&b, p + i, (size_t)(hit - (p + i)));
        buf_append(&b, new_->u.s.p, new_->u.s.n);
        i = (size_t)(hit - p) + old->u.s.n;
        count--;
        if (b.len > st->max_output) break;
    }
    buf_append(&b, p + i, n - i);
    return take_buf(st, &b, 0);
}

struct tpl_value *jinja_str_slice(struct jinja_render *st, struct tpl_value *s, int64_t start,
                                  int64_t step, size_t count) {
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    if (s->flags & TPL_F_ASCII) {
        if (step == 1) return jinja_new_string(st, p + start, count);
        char *out = tpl_arena_alloc(st->arena, count + 1);
        if (!out) return jinja_oom(st);
        for (size_t k = 0; k < count; k++) out[k] = p[start + (int64_t)k * step];
        out[count] = 0;
        struct tpl_value *v = tpl_value_string_take(st->arena, out, count, 0);
        return v ? v : jinja_oom(st);
    }
    size_t chars = jinja_utf8_count(p, n);
    size_t *off = tpl_arena_alloc(st->arena, (chars + 1) * sizeof(size_t));
    if (!off) return jinja_oom(st);
    size_t i = 0;
    for (size_t k = 0; k < chars; k++) {
        off[k] = i;
        jinja_utf8_next(p, n, &i);
    }
    off[chars] = n;
    if (step == 1)
        return jinja_new_string(st, p + off[start], off[start + (int64_t)count] - off[start]);
    struct buf b;
    buf_init(&b);
    for (size_t k = 0; k < count; k++) {
        int64_t c = start + (int64_t)k * step;
        buf_append(&b, p + off[c], off[c + 1] - off[c]);
    }
    return take_buf(st, &b, 0);
}

struct tpl_value *jinja_html_escape(struct jinja_render *st, struct tpl_value *v) {
    if (v->kind == TPL_STRING && (v->flags & TPL_F_SAFE)) return v;
    struct tpl_value *s = jinja_to_string(st, v);
    if (!s) return NULL;
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < s->u.s.n; i++) {
        char c = s->u.s.p[i];
        switch (c) {
        case '&':
            buf_append_str(&b, "&amp;");
            break;
        case '<':
            buf_append_str(&b, "&lt;");
            break;
        case '>':
            buf_append_str(&b, "&gt;");
            break;
        case '"':
            buf_append_str(&b, "&#34;");
            break;
        case '\'':
            buf_append_str(&b, "&#39;");
            break;
        default:
            buf_append_char(&b, c);
            break;
        }
    }
    return take_buf(st, &b, TPL_F_SAFE);
}

/* ============================================================================================
 * Method table
 * ============================================================================================
 * Attribute lookup on a str, dict or list finds a bound method here; the sandbox's mutating
 * methods resolve to an undefined value that fails when called.
 */

enum method_id {
    M_STRIP,
    M_LSTRIP,
    M_RSTRIP,
    M_SPLIT,
    M_RSPLIT,
    M_SPLITLINES,
    M_STARTSWITH,
    M_ENDSWITH,
    M_REPLACE,
    M_UPPER,
    M_LOWER,
    M_TITLE,
    M_CAPITALIZE,
    M_SWAPCASE,
    M_CASEFOLD,
    M_FIND,
    M_RFIND,
    M_INDEX,
    M_RINDEX,
    M_COUNT,
    M_JOIN,
    M_FORMAT,
    M_CENTER,
    M_LJUST,
    M_RJUST,
    M_ZFILL,
    M_ISALNUM,
    M_ISALPHA,
    M_ISDIGIT,
    M_ISDECIMAL,
    M_ISNUMERIC,
    M_ISSPACE,
    M_ISLOWER,
    M_ISUPPER,
    M_PARTITION,
    M_RPARTITION,
    M_REMOVEPREFIX,
    M_REMOVESUFFIX,
    /* dict */
    M_GET,
    M_ITEMS,
    M_KEYS,
    M_VALUES,
    M_COPY,
    /* list / tuple: M_COUNT, M_INDEX, M_COPY */
    M_UNSAFE,
};

struct method_def {
    const char *name;
    uint8_t id;
};

static const struct method_def k_str_methods[] = {
    {"strip", M_STRIP},
    {"lstrip", M_LSTRIP},
    {"rstrip", M_RSTRIP},
    {"split", M_SPLIT},
    {"rsplit", M_RSPLIT},
    {"splitlines", M_SPLITLINES},
    {"startswith", M_STARTSWITH},
    {"endswith", M_ENDSWITH},
    {"replace", M_REPLACE},
    {"upper", M_UPPER},
    {"lower", M_LOWER},
    {"title", M_TITLE},
    {"capitalize", M_CAPITALIZE},
    {"swapcase", M_SWAPCASE},
    {"casefold", M_CASEFOLD},
    {"find", M_FIND},
    {"rfind", M_RFIND},
    {"index", M_INDEX},
    {"rindex", M_RINDEX},
    {"count", M_COUNT},
    {"join", M_JOIN},
    {"format", M_FORMAT},
    {"center", M_CENTER},
    {"ljust", M_LJUST},
    {"rjust", M_RJUST},
    {"zfill", M_ZFILL},
    {"isalnum", M_ISALNUM},
    {"isalpha", M_ISALPHA},
    {"isdigit", M_ISDIGIT},
    {"isdecimal", M_ISDECIMAL},
    {"isnumeric", M_ISNUMERIC},
    {"isspace", M_ISSPACE},
    {"islower", M_ISLOWER},
    {"isupper", M_ISUPPER},
    {"partition", M_PARTITION},
    {"rpartition", M_RPARTITION},
    {"removeprefix", M_REMOVEPREFIX},
    {"removesuffix", M_REMOVESUFFIX},
    {NULL, 0},
};

static const struct method_def k_dict_methods[] = {
    {"get", M_GET},           {"items", M_ITEMS},  {"keys", M_KEYS},       {"values", M_VALUES},
    {"copy", M_COPY},         {"pop", M_UNSAFE},   {"popitem", M_UNSAFE},  {"update", M_UNSAFE},
    {"setdefault", M_UNSAFE}, {"clear", M_UNSAFE}, {"fromkeys", M_UNSAFE}, {NULL, 0},
};

static const struct method_def k_list_methods[] = {
    {"count", M_COUNT},    {"index", M_INDEX},   {"copy", M_COPY},    {"append", M_UNSAFE},
    {"extend", M_UNSAFE},  {"insert", M_UNSAFE}, {"pop", M_UNSAFE},   {"remove", M_UNSAFE},
    {"reverse", M_UNSAFE}, {"sort", M_UNSAFE},   {"clear", M_UNSAFE}, {NULL, 0},
};

static const struct method_def k_tuple_methods[] = {
    {"count", M_COUNT},
    {"index", M_INDEX},
    {NULL, 0},
};

static const struct method_def k_loop_methods[] = {
    {"cycle", 0},
    {"changed", 1},
    {NULL, 0},
};

struct tpl_value *jinja_method_lookup(struct jinja_render *st, struct tpl_value *v,
                                      const char *name, size_t n) {
    const struct method_def *table;
    switch (v->kind) {
    case TPL_STRING:
        table = k_str_methods;
        break;
    case TPL_OBJECT:
        table = k_dict_methods;
        break;
    case TPL_ARRAY:
        if (v->flags & TPL_F_GEN) return NULL;
        table = v->flags & TPL_F_TUPLE ? k_tuple_methods : k_list_methods;
        break;
    case TPL_LOOP:
        table = k_loop_methods;
        break;
    default:
        return NULL;
    }
    for (const struct method_def *m = table; m->name; m++) {
        if (strlen(m->name) != n || memcmp(m->name, name, n) != 0) continue;
        if (v->kind != TPL_LOOP && m->id == M_UNSAFE) {
            /* the sandbox's unsafe_undefined: using it fails */
            struct tpl_value *u =
                tpl_value_undef(st->arena, TPL_UNDEF_HINT,
                                "access to a method that modifies a value is unsafe", 50, NULL);
            return u ? u : jinja_oom(st);
        }
        struct jinja_func *fn = tpl_arena_alloc(st->arena, sizeof(*fn));
        struct tpl_value *fv = fn ? tpl_arena_alloc(st->arena, sizeof(*fv)) : NULL;
        if (!fv) return jinja_oom(st);
        memset(fv, 0, sizeof(*fv));
        fn->id = m->id;
        fn->name = m->name;
        fn->self = v;
        fn->is_method = v->kind != TPL_LOOP;
        fv->kind = TPL_FUNC;
        fv->u.fn = fn;
        return fv;
    }
    return NULL;
}

/* ============================================================================================
 * Method bodies
 * ============================================================================================
 * Arguments bind like Python's; indices and widths count characters.
 */

static struct tpl_value *need_str(struct jinja_render *st, uint32_t line, const char *fname,
                                  struct tpl_value *v, int allow_none) {
    if (v && (v->kind == TPL_STRING || (allow_none && v->kind == TPL_NONE))) return v;
    jinja_fail(st, line, ERR_INVALID, "%s() argument must be str%s, not %s", fname,
               allow_none ? " or None" : "", v ? tpl_type_name(v) : "nothing");
    return NULL;
}

static int need_int(struct jinja_render *st, uint32_t line, struct tpl_value *v, int64_t *out) {
    if (v->kind == TPL_INT || v->kind == TPL_BOOL) {
        *out = v->u.i;
        return 0;
    }
    return jinja_fail(st, line, ERR_INVALID, "'%s' object cannot be interpreted as an integer",
                      tpl_type_name(v));
}

static struct tpl_value *push_piece(struct jinja_render *st, struct tpl_value *list, const char *p,
                                    size_t n) {
    struct tpl_value *s = jinja_new_string(st, p, n);
    if (!s) return NULL;
    if (tpl_array_push(st->arena, list, s)) return jinja_oom(st);
    return list;
}

/* str.split / rsplit: sep NULL splits on whitespace runs. */
static struct tpl_value *str_split(struct jinja_render *st, uint32_t line, struct tpl_value *s,
                                   struct tpl_value *sep, int64_t maxsplit, int from_right) {
    struct tpl_value *list = tpl_value_array(st->arena);
    if (!list) return jinja_oom(st);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    if (maxsplit < 0) maxsplit = INT64_MAX;
    if (sep && sep->u.s.n == 0) {
        jinja_fail(st, line, ERR_INVALID, "empty separator");
        return NULL;
    }
    if (sep) {
        size_t k = sep->u.s.n;
        if (!from_right) {
            size_t i = 0;
            while (maxsplit-- > 0) {
                const char *hit = memmem(p + i, n - i, sep->u.s.p, k);
                if (!hit) break;
                if (!push_piece(st, list, p + i, (size_t)(hit - p) - i)) return NULL;
                i = (size_t)(hit - p) + k;
            }
            return push_piece(st, list, p + i, n - i);
        }
        /* from the right: collect pieces backwards, then reverse */
        size_t end = n;
        while (maxsplit-- > 0 && end >= k) {
            size_t j = end - k + 1, found = SIZE_MAX;
            while (j-- > 0)
                if (memcmp(p + j, sep->u.s.p, k) == 0) {
                    found = j;
                    break;
                }
            if (found == SIZE_MAX) break;
            if (!push_piece(st, list, p + found + k, end - found - k)) return NULL;
            end = found;
        }
        if (!push_piece(st, list, p, end)) return NULL;
    } else if (!from_right) {
        size_t i = 0;
        for (;;) {
            while (i < n) { /* skip whitespace */
                size_t j = i;
                if (!jinja_is_pyspace(jinja_utf8_next(p, n, &j))) break;
                i = j;
            }
            if (i >= n) break;
            if (maxsplit-- <= 0) { /* the rest as is, trailing whitespace included */
                if (!push_piece(st, list, p + i, n - i)) return NULL;
                break;
            }
            size_t start = i;
            while (i < n) {
                size_t j = i;
                if (jinja_is_pyspace(jinja_utf8_next(p, n, &j))) break;
                i = j;
            }
            if (!push_piece(st, list, p + start, i - start)) return NULL;
        }
        return list;
    } else {
        struct tpl_value tmp = {.kind = TPL_STRING, .u.s = {p, n}};
        struct tpl_value *t = jinja_str_strip(st, &tmp, NULL, 0, 1);
        if (!t) return NULL;
        size_t end = t->u.s.n;
        while (end > 0) {
            size_t start = end;
            while (start > 0) {
                size_t b = start - 1;
                while (b > 0 && ((unsigned char)p[b] & 0xc0) == 0x80 && start - b < 4) b--;
                size_t j = b;
                if (jinja_is_pyspace(jinja_utf8_next(p, start, &j)) && j == start) break;
                start = b;
            }
            if (maxsplit-- <= 0) { /* the rest as is, leading whitespace included */
                if (!push_piece(st, list, p, end)) return NULL;
                break;
            }
            if (!push_piece(st, list, p + start, end - start)) return NULL;
            end = start;
            while (end > 0) {
                size_t b = end - 1;
                while (b > 0 && ((unsigned char)p[b] & 0xc0) == 0x80 && end - b < 4) b--;
                size_t j = b;
                if (!(jinja_is_pyspace(jinja_utf8_next(p, end, &j)) && j == end)) break;
                end = b;
            }
        }
    }
    /* reverse (from_right pieces were collected last-first) */
    struct tpl_array *r = list->u.arr;
    for (size_t a = 0, b = r->n ? r->n - 1 : 0; a < b; a++, b--) {
        struct tpl_value *t = r->items[a];
        r->items[a] = r->items[b];
        r->items[b] = t;
    }
    return list;
}

static int is_line_break(uint32_t c) {
    return c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d ||
           c == 0x1e || c == 0x85 || c == 0x2028 || c == 0x2029;
}

/* str.splitlines(keepends) */
static struct tpl_value *str_splitlines(struct jinja_render *st, struct tpl_value *s,
                                        int keepends) {
    struct tpl_value *list = tpl_value_array(st->arena);
    if (!list) return jinja_oom(st);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0, start = 0;
    while (i < n) {
        size_t j = i;
        uint32_t c = jinja_utf8_next(p, n, &j);
        if (!is_line_break(c)) {
            i = j;
            continue;
        }
        size_t eol = j;
        if (c == '\r' && j < n && p[j] == '\n') eol = j + 1;
        if (!push_piece(st, list, p + start, (keepends ? eol : i) - start)) return NULL;
        i = start = eol;
    }
    if (start < n && !push_piece(st, list, p + start, n - start)) return NULL;
    return list;
}

/* Character offsets [start, end) of s from Python-style optional start/end arguments. */
static void char_range(struct tpl_value *s, struct tpl_value *a, struct tpl_value *b, size_t *bs,
                       size_t *be, size_t *char_start) {
    int64_t len = (int64_t)tpl_string_len(s), lo = 0, hi = len;
    if (a && (a->kind == TPL_INT || a->kind == TPL_BOOL)) lo = a->u.i;
    if (b && (b->kind == TPL_INT || b->kind == TPL_BOOL)) hi = b->u.i;
    if (lo < 0) lo = lo + len < 0 ? 0 : lo + len;
    if (hi < 0) hi = hi + len < 0 ? 0 : hi + len;
    if (lo > len) lo = len;
    if (hi > len) hi = len;
    if (hi < lo) hi = lo;
    *char_start = (size_t)lo;
    *bs = jinja_utf8_offset(s->u.s.p, s->u.s.n, (size_t)lo);
    *be = jinja_utf8_offset(s->u.s.p, s->u.s.n, (size_t)hi);
}

static int matches_at(const struct tpl_value *s, size_t bs, size_t be,
                      const struct tpl_value *affix, int at_end) {
    size_t k = affix->u.s.n;
    if (be - bs < k) return 0;
    return memcmp(s->u.s.p + (at_end ? be - k : bs), affix->u.s.p, k) == 0;
}

static struct tpl_value *str_method(struct jinja_render *st, uint32_t line, struct jinja_func *fn,
                                    struct jinja_args *args) {
    struct tpl_value *s = fn->self, *a[3] = {NULL, NULL, NULL};
    const char *name = fn->name;
    switch (fn->id) {
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        static const char *const names[] = {"chars"};
        if (jinja_bind(st, line, name, args, names, 1, a)) return NULL;
        if (a[0] && !need_str(st, line, name, a[0], 1)) return NULL;
        return jinja_str_strip(st, s, a[0], fn->id != M_RSTRIP, fn->id != M_LSTRIP);
    }
    case M_SPLIT:
    case M_RSPLIT: {
        static const char *const names[] = {"sep", "maxsplit"};
        int64_t maxsplit = -1;
        if (jinja_bind(st, line, name, args, names, 2, a)) return NULL;
        if (a[0] && !need_str(st, line, name, a[0], 1)) return NULL;
        if (a[1] && need_int(st, line, a[1], &maxsplit)) return NULL;
        if (a[0] && a[0]->kind == TPL_NONE) a[0] = NULL;
        if (jinja_charge(st, s->u.s.n / 256)) return NULL;
        return str_split(st, line, s, a[0], maxsplit, fn->id == M_RSPLIT);
    }
    case M_SPLITLINES: {
        static const char *const names[] = {"keepends"};
        if (jinja_bind(st, line, name, args, names, 1, a)) return NULL;
        return str_splitlines(st, s, a[0] && tpl_is_truthy(a[0]));
    }
    case M_STARTSWITH:
    case M_ENDSWITH: {
        static const char *const names[] = {"prefix", "start", "end"};
        if (jinja_bind(st, line, name, args, names, 3, a)) return NULL;
        if (!a[0]) {
            jinja_fail(st, line, ERR_INVALID, "%s() takes at least 1 argument (0 given)", name);
            return NULL;
        }
        size_t bs, be, cs;
        char_range(s, a[1], a[2], &bs, &be, &cs);
        int at_end = fn->id == M_ENDSWITH;
        if (a[0]->kind == TPL_ARRAY && (a[0]->flags & TPL_F_TUPLE)) {
            for (size_t i = 0; i < a[0]->u.arr->n; i++) {
                struct tpl_value *x = a[0]->u.arr->items[i];
                if (!need_str(st, line, name, x, 0)) return NULL;
                if (matches_at(s, bs, be, x, at_end)) return tpl_value_bool(1);
            }
            return tpl_value_bool(0);
        }
        if (a[0]->kind != TPL_STRING) {
            jinja_fail(st, line, ERR_INVALID, "%s first arg must be str or a tuple of str, not %s",
                       name, tpl_type_name(a[0]));
            return NULL;
        }
        return tpl_value_bool(matches_at(s, bs, be, a[0], at_end));
    }
    case M_REPLACE: {
        static const char *const names[] = {"old", "new", "count"};
        int64_t count = -1;
        if (jinja_bind(st, line, name, args, names, 3, a)) return NULL;
        if (!need_str(st, line, name, a[0], 0) || !need_str(st, line, name, a[1], 0)) return NULL;
        if (a[2] && need_int(st, line, a[2], &count)) return NULL;
        return jinja_str_replace(st, s, a[0], a[1], count);
    }
    case M_UPPER:
        return jinja_str_case(st, s, JINJA_CASE_UPPER);
    case M_LOWER:
    case M_CASEFOLD:
        return jinja_str_case(st, s, JINJA_CASE_LOWER);
    case M_TITLE:
        return jinja_str_case(st, s, JINJA_CASE_TITLE_METHOD);
    case M_CAPITALIZE: {
        struct tpl_value *low = jinja_str_case(st, s, JINJA_CASE_LOWER);
        return low ? jinja_str_case(st, low, JINJA_CASE_CAPITALIZE) : NULL;
    }
    case M_SWAPCASE:
        return jinja_str_case(st, s, JINJA_CASE_SWAP);
    case M_FIND:
    case M_RFIND:
    case M_INDEX:
    case M_RINDEX:
    case M_COUNT: {
        static const char *const names[] = {"sub", "start", "end"};
        if (jinja_bind(st, line, name, args, names, 3, a)) return NULL;
        if (!need_str(st, line, name, a[0], 0)) return NULL;
        size_t bs, be, cs;
        char_range(s, a[1], a[2], &bs, &be, &cs);
        const char *p = s->u.s.p;
        size_t k = a[0]->u.s.n;
        if (fn->id == M_COUNT) {
            int64_t count = 0;
            if (k == 0) return jinja_new_int(st, (int64_t)jinja_utf8_count(p + bs, be - bs) + 1);
            for (size_t i = bs; i + k <= be;) {
                const char *hit = memmem(p + i, be - i, a[0]->u.s.p, k);
                if (!hit) break;
                count++;
                i = (size_t)(hit - p) + k;
            }
            return jinja_new_int(st, count);
        }
        size_t found = SIZE_MAX;
        if (be - bs >= k) {
            if (fn->id == M_FIND || fn->id == M_INDEX) {
                const char *hit = k ? memmem(p + bs, be - bs, a[0]->u.s.p, k) : p + bs;
                if (hit) found = (size_t)(hit - p);
            } else {
                for (size_t j = be - k + 1; j-- > bs;)
                    if (memcmp(p + j, a[0]->u.s.p, k) == 0) {
                        found = j;
                        break;
                    }
            }
        }
        if (found == SIZE_MAX) {
            if (fn->id == M_INDEX || fn->id == M_RINDEX) {
                jinja_fail(st, line, ERR_INVALID, "substring not found");
                return NULL;
            }
            return jinja_new_int(st, -1);
        }
        return jinja_new_int(st, (int64_t)(cs + jinja_utf8_count(p + bs, found - bs)));
    }
    case M_JOIN: {
        if (args->n_pos != 1 || args->n_kw) {
            jinja_fail(st, line, ERR_INVALID, "join() takes exactly one argument");
            return NULL;
        }
        struct tpl_value **items;
        size_t n;
        if (jinja_iterate(st, line, args->pos[0], &items, &n)) return NULL;
        struct buf b;
        buf_init(&b);
        for (size_t i = 0; i < n; i++) {
            if (items[i]->kind != TPL_STRING) {
                buf_free(&b);
                jinja_fail(st, line, ERR_INVALID,
                           "sequence item %zu: expected str instance, %s found", i,
                           tpl_type_name(items[i]));
                return NULL;
            }
            if (i) buf_append(&b, s->u.s.p, s->u.s.n);
            buf_append(&b, items[i]->u.s.p, items[i]->u.s.n);
            if (b.len > st->max_output) break;
        }
        return jinja_buf_to_string(st, &b);
    }
    case M_FORMAT:
        return jinja_str_format(st, line, s, args);
    case M_CENTER:
    case M_LJUST:
    case M_RJUST:
    case M_ZFILL: {
        static const char *const names[] = {"width", "fillchar"};
        int64_t width = 0;
        if (jinja_bind(st, line, name, args, names, fn->id == M_ZFILL ? 1 : 2, a)) return NULL;
        if (!a[0]) {
            jinja_fail(st, line, ERR_INVALID, "%s() takes at least 1 argument", name);
            return NULL;
        }
        if (need_int(st, line, a[0], &width)) return NULL;
        if (width > (int64_t)st->max_output) width = (int64_t)st->max_output;
        const char *fill = " ";
        size_t fill_n = 1;
        if (a[1]) {
            if (!need_str(st, line, name, a[1], 0)) return NULL;
            if (jinja_utf8_count(a[1]->u.s.p, a[1]->u.s.n) != 1) {
                jinja_fail(st, line, ERR_INVALID,
                           "The fill character must be exactly one character long");
                return NULL;
            }
            fill = a[1]->u.s.p;
            fill_n = a[1]->u.s.n;
        }
        int64_t len = (int64_t)tpl_string_len(s);
        if (width <= len) return s;
        int64_t marg = width - len, left;
        if (fn->id == M_CENTER)
            left = marg / 2 + (marg & width & 1);
        else if (fn->id == M_LJUST)
            left = 0;
        else
            left = marg;
        struct buf b;
        buf_init(&b);
        const char *p = s->u.s.p;
        size_t skip = 0;
        if (fn->id == M_ZFILL) {
            fill = "0";
            if (s->u.s.n && (p[0] == '+' || p[0] == '-')) {
                buf_append_char(&b, p[0]);
                skip = 1;
            }
        }
        for (int64_t k = 0; k < left; k++) buf_append(&b, fill, fill_n);
        buf_append(&b, p + skip, s->u.s.n - skip);
        for (int64_t k = left; k < marg; k++) buf_append(&b, fill, fill_n);
        return jinja_buf_to_string(st, &b);
    }
    case M_ISALNUM:
    case M_ISALPHA:
    case M_ISDIGIT:
    case M_ISDECIMAL:
    case M_ISNUMERIC:
    case M_ISSPACE:
    case M_ISLOWER:
    case M_ISUPPER: {
        const char *p = s->u.s.p;
        size_t n = s->u.s.n, i = 0;
        int any = 0, ok = n > 0;
        while (i < n && ok) {
            uint32_t c = jinja_utf8_next(p, n, &i);
            unsigned fl = c >= 0x80 ? unicode_flags(c) : 0;
            int digit = (c >= '0' && c <= '9') || (fl & UNICODE_NUMBER);
            int lower = cp_upper(c) != c || c == 0xdf, upper = cp_lower(c) != c;
            int alpha = (c < 0x80 && (lower || upper)) || (fl & UNICODE_LETTER);
            switch (fn->id) {
            case M_ISALNUM:
                ok = alpha || digit;
                break;
            case M_ISALPHA:
                ok = alpha;
                break;
            case M_ISDIGIT:
            case M_ISDECIMAL:
            case M_ISNUMERIC:
                ok = digit;
                break;
            case M_ISSPACE:
                ok = jinja_is_pyspace(c);
                break;
            case M_ISLOWER:
            case M_ISUPPER:
                break;
            }
            any = 1;
        }
        if (fn->id == M_ISLOWER || fn->id == M_ISUPPER)
            ok = jinja_str_is_case(s, fn->id == M_ISLOWER);
        return tpl_value_bool(ok && any);
    }
    case M_PARTITION:
    case M_RPARTITION: {
        if (args->n_pos != 1 || !need_str(st, line, name, args->pos[0], 0)) return NULL;
        struct tpl_value *sep = args->pos[0];
        if (!sep->u.s.n) {
            jinja_fail(st, line, ERR_INVALID, "empty separator");
            return NULL;
        }
        const char *p = s->u.s.p, *hit = NULL;
        size_t n = s->u.s.n, k = sep->u.s.n;
        if (fn->id == M_PARTITION) {
            hit = memmem(p, n, sep->u.s.p, k);
        } else if (n >= k) {
            for (size_t j = n - k + 1; j-- > 0;)
                if (memcmp(p + j, sep->u.s.p, k) == 0) {
                    hit = p + j;
                    break;
                }
        }
        struct tpl_value *t = tpl_value_tuple(st->arena, 3), *empty = jinja_new_string(st, "", 0);
        if (!t || !empty) return jinja_oom(st);
        if (!hit) {
            t->u.arr->items[0] = fn->id == M_PARTITION ? s : empty;
            t->u.arr->items[1] = empty;
            t->u.arr->items[2] = fn->id == M_PARTITION ? empty : s;
            return t;
        }
        size_t at = (size_t)(hit - p);
        if (!(t->u.arr->items[0] = jinja_new_string(st, p, at))) return NULL;
        t->u.arr->items[1] = sep;
        if (!(t->u.arr->items[2] = jinja_new_string(st, p + at + k, n - at - k))) return NULL;
        return t;
    }
    case M_REMOVEPREFIX:
    case M_REMOVESUFFIX: {
        if (args->n_pos != 1 || !need_str(st, line, name, args->pos[0], 0)) return NULL;
        struct tpl_value *x = args->pos[0];
        int at_end = fn->id == M_REMOVESUFFIX;
        if (!x->u.s.n || !matches_at(s, 0, s->u.s.n, x, at_end)) return s;
        return jinja_new_string(st, s->u.s.p + (at_end ? 0 : x->u.s.n), s->u.s.n - x->u.s.n);
    }
    }
    jinja_fail(st, line, ERR_INVALID, "'str' object has no method '%s'", name);
    return NULL;
}

static struct tpl_value *items_list(struct jinja_render *st, const struct tpl_object *o, int what) {
    struct tpl_value *list = tpl_value_tuple(st->arena, o->n);
    if (!list) return jinja_oom(st);
    list->flags = 0;
    for (size_t i = 0; i < o->n; i++) {
        if (what == M_KEYS) {
            list->u.arr->items[i] = o->entries[i].key;
        } else if (what == M_VALUES) {
            list->u.arr->items[i] = o->entries[i].val;
        } else {
            struct tpl_value *pair = tpl_value_tuple(st->arena, 2);
            if (!pair) return jinja_oom(st);
            pair->u.arr->items[0] = o->entries[i].key;
            pair->u.arr->items[1] = o->entries[i].val;
            list->u.arr->items[i] = pair;
        }
    }
    return list;
}

struct tpl_value *jinja_dict_items(struct jinja_render *st, const struct tpl_object *o) {
    return items_list(st, o, M_ITEMS);
}

struct tpl_value *jinja_method_call(struct jinja_render *st, uint32_t line, struct jinja_func *fn,
                                    struct jinja_args *args) {
    struct tpl_value *self = fn->self;
    if (jinja_charge(st, jinja_weight(self))) return NULL;
    if (self->kind == TPL_STRING) return str_method(st, line, fn, args);
    if (self->kind == TPL_OBJECT) {
        struct tpl_value *a[2];
        switch (fn->id) {
        case M_GET: {
            static const char *const names[] = {"key", "default"};
            if (jinja_bind(st, line, "get", args, names, 2, a)) return NULL;
            if (!a[0]) {
                jinja_fail(st, line, ERR_INVALID, "get expected at least 1 argument, got 0");
                return NULL;
            }
            struct tpl_value *v = a[0]->kind == TPL_STRING
                                      ? tpl_object_find(self->u.obj, a[0]->u.s.p, a[0]->u.s.n)
                                      : NULL;
            return v ? v : a[1] ? a[1] : tpl_value_none();
        }
        case M_ITEMS:
        case M_KEYS:
        case M_VALUES:
            if (args->n_pos || args->n_kw) break;
            return items_list(st, self->u.obj, fn->id);
        case M_COPY:
            return self;
        }
    } else if (self->kind == TPL_ARRAY) {
        switch (fn->id) {
        case M_COPY:
            return tpl_array_copy(st->arena, self, self->flags);
        case M_COUNT:
        case M_INDEX: {
            if (args->n_pos < 1) break;
            int64_t count = 0;
            for (size_t i = 0; i < self->u.arr->n; i++) {
                int eq = jinja_equal(st, self->u.arr->items[i], args->pos[0]);
                if (eq < 0) return NULL;
                if (!eq) continue;
                if (fn->id == M_INDEX) return jinja_new_int(st, (int64_t)i);
                count++;
            }
            if (fn->id == M_INDEX) {
                jinja_fail(st, line, ERR_INVALID, "list.index(x): x not in list");
                return NULL;
            }
            return jinja_new_int(st, count);
        }
        }
    }
    jinja_fail(st, line, ERR_INVALID, "bad call of %s.%s()", tpl_type_name(self), fn->name);
    return NULL;
}
