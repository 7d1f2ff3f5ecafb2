/* jval.c: strict JSON reader (bounded cursor, recursive descent) and compact writer.
 *
 * The reader keeps one cursor over the input; every read checks the remaining length first and
 * the first error (with its byte offset) is kept. Depth is bounded so that hostile nesting
 * cannot exhaust the C stack. Arrays and objects grow by doubling while they are read.
 */
#include "jval.h"

#include "../base/mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct jcur {
    const char *s;     /* input start */
    size_t len, pos;   /* input length, read position */
    int depth;         /* current nesting */
    int code;          /* first error code, 0 if none */
    struct error *err; /* caller's, may be NULL */
};

static int fail(struct jcur *c, int code, const char *what) {
    if (!c->code) {
        c->code = code;
        error_set(c->err, code, "JSON: %s at byte %zu", what, c->pos);
    }
    return code;
}

static void skip_ws(struct jcur *c) {
    while (c->pos < c->len) {
        char ch = c->s[c->pos];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') break;
        c->pos++;
    }
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid (overlong, surrogate, > U+10FFFF,
 * truncated). */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char b = s[0];
    if (b < 0x80) return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (n < need) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < need; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return need;
}

static void put_utf8(struct buf *b, unsigned cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    buf_append(b, t, n);
}

static int hex4(struct jcur *c, unsigned *out) {
    if (c->len - c->pos < 4) return fail(c, ERR_FORMAT, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char ch = c->s[c->pos + (size_t)i];
        v <<= 4;
        if (ch >= '0' && ch <= '9')
            v |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            v |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            v |= (unsigned)(ch - 'A' + 10);
        else
            return fail(c, ERR_FORMAT, "bad hex digit in \\u escape");
    }
    c->pos += 4;
    *out = v;
    return 0;
}

/* Reads a string literal (cursor on the opening quote) into a new allocation. */
static int read_string(struct jcur *c, char **out, size_t *out_len) {
    struct buf b;
    buf_init(&b);
    c->pos++; /* opening quote */
    for (;;) {
        if (c->pos >= c->len) {
            buf_free(&b);
            return fail(c, ERR_FORMAT, "unterminated string");
        }
        unsigned char ch = (unsigned char)c->s[c->pos];
        if (ch == '"') {
            c->pos++;
            break;
        }
        if (ch < 0x20) {
            buf_free(&b);
            return fail(c, ERR_FORMAT, "control character in string");
        }
        if (ch == '\\') {
            if (c->len - c->pos < 2) {
                buf_free(&b);
                return fail(c, ERR_FORMAT, "truncated escape");
            }
            char e = c->s[c->pos + 1];
            c->pos += 2;
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e && simple) {
                static const char map[] = "\"\\/\b\f\n\r\t";
                buf_append_char(&b, map[simple - "\"\\/bfnrt"]);
                continue;
            }
            if (e != 'u') {
                c->pos -= 1;
                buf_free(&b);
                return fail(c, ERR_FORMAT, "invalid escape");
            }
            unsigned cp;
            if (hex4(c, &cp)) {
                buf_free(&b);
                return c->code;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (c->len - c->pos < 2 || c->s[c->pos] != '\\' || c->s[c->pos + 1] != 'u') {
                    buf_free(&b);
                    return fail(c, ERR_FORMAT, "unpaired surrogate escape");
                }
                c->pos += 2;
                if (hex4(c, &lo)) {
                    buf_free(&b);
                    return c->code;
                }
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    buf_free(&b);
                    return fail(c, ERR_FORMAT, "unpaired surrogate escape");
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                buf_free(&b);
                return fail(c, ERR_FORMAT, "unpaired surrogate escape");
            }
            put_utf8(&b, cp);
            continue;
        }
        size_t n = utf8_len((const unsigned char *)c->s + c->pos, c->len - c->pos);
        if (n == 0) {
            buf_free(&b);
            return fail(c, ERR_FORMAT, "invalid UTF-8");
        }
        buf_append(&b, c->s + c->pos, n);
        c->pos += n;
    }
    if (b.failed) {
        buf_free(&b);
        return fail(c, ERR_NOMEM, "out of memory");
    }
    *out_len = b.len;
    *out = buf_detach(&b);
    if (!*out) return fail(c, ERR_NOMEM, "out of memory");
    return 0;
}

static int read_number(struct jcur *c, struct jval *v) {
    size_t start = c->pos;
    const char *s = c->s;
    int is_int = 1;
    if (c->pos < c->len && s[c->pos] == '-') c->pos++;
    if (c->pos >= c->len) return fail(c, ERR_FORMAT, "truncated number");
    if (s[c->pos] == '0')
        c->pos++;
    else if (s[c->pos] >= '1' && s[c->pos] <= '9')
        while (c->pos < c->len && s[c->pos] >= '0' && s[c->pos] <= '9') c->pos++;
    else
        return fail(c, ERR_FORMAT, "invalid number");
    if (c->pos < c->len && s[c->pos] == '.') {
        is_int = 0;
        c->pos++;
        if (c->pos >= c->len || s[c->pos] < '0' || s[c->pos] > '9')
            return fail(c, ERR_FORMAT, "invalid number fraction");
        while (c->pos < c->len && s[c->pos] >= '0' && s[c->pos] <= '9') c->pos++;
    }
    if (c->pos < c->len && (s[c->pos] == 'e' || s[c->pos] == 'E')) {
        is_int = 0;
        c->pos++;
        if (c->pos < c->len && (s[c->pos] == '+' || s[c->pos] == '-')) c->pos++;
        if (c->pos >= c->len || s[c->pos] < '0' || s[c->pos] > '9')
            return fail(c, ERR_FORMAT, "invalid number exponent");
        while (c->pos < c->len && s[c->pos] >= '0' && s[c->pos] <= '9') c->pos++;
    }
    v->type = JVAL_NUMBER;
    v->is_integer = is_int;
    v->len = c->pos - start;
    v->str = mem_strndup(s + start, v->len);
    if (!v->str) return fail(c, ERR_NOMEM, "out of memory");
    v->number = strtod(v->str, NULL);
    return 0;
}

static int read_value(struct jcur *c, struct jval *v);

/* Grows a parallel items/keys array pair to hold one more element. */
static int grow(struct jcur *c, struct jval *v, size_t *cap, int with_keys) {
    if (v->n < *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 4;
    struct jval *items = mem_realloc(v->items, ncap * sizeof(*items));
    if (!items) return fail(c, ERR_NOMEM, "out of memory");
    v->items = items;
    if (with_keys) {
        char **keys = mem_realloc(v->keys, ncap * sizeof(*keys));
        if (!keys) return fail(c, ERR_NOMEM, "out of memory");
        v->keys = keys;
        size_t *lens = mem_realloc(v->key_lens, ncap * sizeof(*lens));
        if (!lens) return fail(c, ERR_NOMEM, "out of memory");
        v->key_lens = lens;
    }
    *cap = ncap;
    return 0;
}

static int read_container(struct jcur *c, struct jval *v, int is_obj) {
    if (++c->depth > JVAL_MAX_DEPTH) return fail(c, ERR_FORMAT, "nesting too deep");
    char close = is_obj ? '}' : ']';
    v->type = is_obj ? JVAL_OBJECT : JVAL_ARRAY;
    size_t cap = 0;
    c->pos++;
    skip_ws(c);
    if (c->pos < c->len && c->s[c->pos] == close) {
        c->pos++;
        c->depth--;
        return 0;
    }
    for (;;) {
        if (grow(c, v, &cap, is_obj)) return c->code;
        struct jval *item = &v->items[v->n];
        memset(item, 0, sizeof(*item));
        if (is_obj) {
            skip_ws(c);
            if (c->pos >= c->len || c->s[c->pos] != '"')
                return fail(c, ERR_FORMAT, "expected a member name");
            if (read_string(c, &v->keys[v->n], &v->key_lens[v->n])) return c->code;
            skip_ws(c);
            if (c->pos >= c->len || c->s[c->pos] != ':') {
                mem_free(v->keys[v->n]);
                return fail(c, ERR_FORMAT, "expected ':'");
            }
            c->pos++;
        }
        v->n++; /* counted now so that jval_free releases a partly read member */
        if (read_value(c, item)) return c->code;
        skip_ws(c);
        if (c->pos >= c->len) return fail(c, ERR_FORMAT, "unterminated container");
        char ch = c->s[c->pos++];
        if (ch == close) break;
        if (ch != ',') {
            c->pos--;
            return fail(c, ERR_FORMAT, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    c->depth--;
    return 0;
}

static int match_word(struct jcur *c, const char *w) {
    size_t n = strlen(w);
    if (c->len - c->pos < n || memcmp(c->s + c->pos, w, n) != 0)
        return fail(c, ERR_FORMAT, "invalid literal");
    c->pos += n;
    return 0;
}

static int read_value(struct jcur *c, struct jval *v) {
    skip_ws(c);
    if (c->pos >= c->len) return fail(c, ERR_FORMAT, "expected a value");
    char ch = c->s[c->pos];
    switch (ch) {
    case '{':
        return read_container(c, v, 1);
    case '[':
        return read_container(c, v, 0);
    case '"':
        v->type = JVAL_STRING;
        return read_string(c, &v->str, &v->len);
    case 't':
        v->type = JVAL_BOOL;
        v->boolean = 1;
        return match_word(c, "true");
    case 'f':
        v->type = JVAL_BOOL;
        return match_word(c, "false");
    case 'n':
        v->type = JVAL_NULL;
        return match_word(c, "null");
    default:
        if (ch == '-' || (ch >= '0' && ch <= '9')) return read_number(c, v);
        return fail(c, ERR_FORMAT, "unexpected character");
    }
}

static void free_members(struct jval *v) {
    if (v->type == JVAL_ARRAY || v->type == JVAL_OBJECT) {
        for (size_t i = 0; i < v->n; i++) {
            free_members(&v->items[i]);
            if (v->type == JVAL_OBJECT) mem_free(v->keys[i]);
        }
        mem_free(v->items);
        mem_free(v->keys);
        mem_free(v->key_lens);
    } else {
        mem_free(v->str);
    }
}

void jval_free(struct jval *v) {
    if (!v) return;
    free_members(v);
    mem_free(v);
}

int jval_parse_prefix(struct jval **out, const char *text, size_t len, size_t *consumed,
                      struct error *err) {
    *out = NULL;
    struct jcur c = {.s = text, .len = text ? len : 0, .err = err};
    struct jval *v = mem_calloc(1, sizeof(*v));
    if (!v) return error_set(err, ERR_NOMEM, "out of memory");
    if (read_value(&c, v)) {
        jval_free(v);
        return c.code;
    }
    if (consumed) *consumed = c.pos;
    *out = v;
    return 0;
}

int jval_parse(struct jval **out, const char *text, size_t len, struct error *err) {
    size_t used = 0;
    int rc = jval_parse_prefix(out, text, len, &used, err);
    if (rc) return rc;
    struct jcur c = {.s = text, .len = len, .pos = used, .err = err};
    skip_ws(&c);
    if (c.pos != len) {
        jval_free(*out);
        *out = NULL;
        return fail(&c, ERR_FORMAT, "trailing characters after the value");
    }
    return 0;
}

const struct jval *jval_get(const struct jval *v, const char *key) {
    if (!v || v->type != JVAL_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < v->n; i++)
        if (v->key_lens[i] == n && memcmp(v->keys[i], key, n) == 0) return &v->items[i];
    return NULL;
}

const char *jval_get_str(const struct jval *v, const char *key) {
    const struct jval *m = jval_get(v, key);
    return m && m->type == JVAL_STRING ? m->str : NULL;
}

int jval_equal(const struct jval *a, const struct jval *b) {
    if (a->type != b->type) return 0;
    switch (a->type) {
    case JVAL_NULL:
        return 1;
    case JVAL_BOOL:
        return a->boolean == b->boolean;
    case JVAL_NUMBER:
        return a->number == b->number;
    case JVAL_STRING:
        return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
    case JVAL_ARRAY:
        if (a->n != b->n) return 0;
        for (size_t i = 0; i < a->n; i++)
            if (!jval_equal(&a->items[i], &b->items[i])) return 0;
        return 1;
    case JVAL_OBJECT:
        if (a->n != b->n) return 0;
        for (size_t i = 0; i < a->n; i++) {
            size_t j = 0;
            while (j < b->n && !(b->key_lens[j] == a->key_lens[i] &&
                                 memcmp(b->keys[j], a->keys[i], a->key_lens[i]) == 0))
                j++;
            if (j == b->n || !jval_equal(&a->items[i], &b->items[j])) return 0;
        }
        return 1;
    }
    return 0;
}

/* ---- writer ---- */

void jval_write_string(const char *s, size_t len, struct buf *out) {
    buf_append_char(out, '"');
    size_t run = 0; /* start of bytes not yet copied */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        buf_append(out, s + run, i - run);
        run = i + 1;
        switch (ch) {
        case '"':
            buf_append_str(out, "\\\"");
            break;
        case '\\':
            buf_append_str(out, "\\\\");
            break;
        case '\n':
            buf_append_str(out, "\\n");
            break;
        case '\r':
            buf_append_str(out, "\\r");
            break;
        case '\t':
            buf_append_str(out, "\\t");
            break;
        case '\b':
            buf_append_str(out, "\\b");
            break;
        case '\f':
            buf_append_str(out, "\\f");
            break;
        default:
            buf_printf(out, "\\u%04x", ch);
            break;
        }
    }
    buf_append(out, s + run, len - run);
    buf_append_char(out, '"');
}

void jval_write(const struct jval *v, struct buf *out) {
    switch (v->type) {
    case JVAL_NULL:
        buf_append_str(out, "null");
        break;
    case JVAL_BOOL:
        buf_append_str(out, v->boolean ? "true" : "false");
        break;
    case JVAL_NUMBER:
        buf_append(out, v->str, v->len);
        break;
    case JVAL_STRING:
        jval_write_string(v->str, v->len, out);
        break;
    case JVAL_ARRAY:
        buf_append_char(out, '[');
        for (size_t i = 0; i < v->n; i++) {
            if (i) buf_append_str(out, ", ");
            jval_write(&v->items[i], out);
        }
        buf_append_char(out, ']');
        break;
    case JVAL_OBJECT:
        buf_append_char(out, '{');
        for (size_t i = 0; i < v->n; i++) {
            if (i) buf_append_str(out, ", ");
            jval_write_string(v->keys[i], v->key_lens[i], out);
            buf_append_str(out, ": ");
            jval_write(&v->items[i], out);
        }
        buf_append_char(out, '}');
        break;
    }
}
