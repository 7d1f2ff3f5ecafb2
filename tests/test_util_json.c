/* test_util_json.c: json_mini implementation (test-only helper, no tests of its own here). */
#include "json_mini.h"

#include "../src/base/mem.h"

#include <stdlib.h>
#include <string.h>

struct jp {
    const char *s, *end;
    int depth;
};

static void ws(struct jp *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\n' || *p->s == '\r' || *p->s == '\t'))
        p->s++;
}

static int parse_value(struct jp *p, struct jm *out);

static void put_utf8(char *dst, size_t *n, unsigned cp) {
    if (cp < 0x80)
        dst[(*n)++] = (char)cp;
    else if (cp < 0x800) {
        dst[(*n)++] = (char)(0xC0 | (cp >> 6));
        dst[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        dst[(*n)++] = (char)(0xE0 | (cp >> 12));
        dst[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        dst[(*n)++] = (char)(0xF0 | (cp >> 18));
        dst[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        dst[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static int parse_string(struct jp *p, char **out, size_t *out_len) {
    if (p->s >= p->end || *p->s != '"') return -1;
    p->s++;
    char *buf = mem_alloc((size_t)(p->end - p->s) + 1);
    if (!buf) return -1;
    size_t n = 0;
    while (p->s < p->end && *p->s != '"') {
        char c = *p->s++;
        if (c != '\\') {
            buf[n++] = c;
            continue;
        }
        if (p->s >= p->end) break;
        c = *p->s++;
        switch (c) {
        case 'n':
            buf[n++] = '\n';
            break;
        case 't':
            buf[n++] = '\t';
            break;
        case 'r':
            buf[n++] = '\r';
            break;
        case 'b':
            buf[n++] = '\b';
            break;
        case 'f':
            buf[n++] = '\f';
            break;
        case 'u': {
            unsigned cp, lo;
            if (p->end - p->s < 4 || hex4(p->s, &cp)) goto bad;
            p->s += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p->end - p->s >= 6 && p->s[0] == '\\' &&
                p->s[1] == 'u' && !hex4(p->s + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p->s += 6;
            }
            put_utf8(buf, &n, cp);
            break;
        }
        default:
            buf[n++] = c;
            break;
        }
    }
    if (p->s >= p->end) goto bad;
    p->s++;
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return 0;
bad:
    mem_free(buf);
    return -1;
}

static int push(struct jm *v, size_t *cap) {
    if (v->len == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        struct jm *items = mem_realloc(v->items, *cap * sizeof(struct jm));
        if (!items) return -1;
        v->items = items;
        if (v->type == JM_OBJ) {
            char **keys = mem_realloc(v->keys, *cap * sizeof(char *));
            if (!keys) return -1;
            v->keys = keys;
        }
    }
    memset(&v->items[v->len], 0, sizeof(struct jm));
    return 0;
}

static int parse_value(struct jp *p, struct jm *out) {
    memset(out, 0, sizeof(*out));
    ws(p);
    if (p->s >= p->end || ++p->depth > 200) return -1;
    int rc = 0;
    char c = *p->s;
    if (c == '{' || c == '[') {
        out->type = c == '{' ? JM_OBJ : JM_ARR;
        char close = c == '{' ? '}' : ']';
        p->s++;
        size_t cap = 0;
        ws(p);
        if (p->s < p->end && *p->s == close) {
            p->s++;
        } else {
            for (;;) {
                if (push(out, &cap)) return -1;
                ws(p);
                if (out->type == JM_OBJ) {
                    size_t kl;
                    if (parse_string(p, &out->keys[out->len], &kl)) return -1;
                    ws(p);
                    if (p->s >= p->end || *p->s++ != ':') {
                        out->len++;
                        return -1;
                    }
                }
                if (parse_value(p, &out->items[out->len++])) return -1;
                ws(p);
                if (p->s < p->end && *p->s == ',') {
                    p->s++;
                    continue;
                }
                if (p->s < p->end && *p->s == close) {
                    p->s++;
                    break;
                }
                return -1;
            }
        }
    } else if (c == '"') {
        out->type = JM_STR;
        rc = parse_string(p, &out->str, &out->len);
    } else if (p->end - p->s >= 4 && !memcmp(p->s, "null", 4)) {
        out->type = JM_NULL;
        p->s += 4;
    } else if (p->end - p->s >= 4 && !memcmp(p->s, "true", 4)) {
        out->type = JM_BOOL;
        out->num = 1;
        p->s += 4;
    } else if (p->end - p->s >= 5 && !memcmp(p->s, "false", 5)) {
        out->type = JM_BOOL;
        p->s += 5;
    } else {
        char tmp[64];
        size_t n = 0;
        while (p->s + n < p->end && n < sizeof(tmp) - 1 && strchr("+-0123456789.eE", p->s[n])) n++;
        if (n == 0) return -1;
        memcpy(tmp, p->s, n);
        tmp[n] = 0;
        out->type = JM_NUM;
        out->num = strtod(tmp, NULL);
        p->s += n;
    }
    p->depth--;
    return rc;
}

static void free_inner(struct jm *v) {
    if (v->type == JM_ARR || v->type == JM_OBJ) {
        for (size_t i = 0; i < v->len; i++) {
            free_inner(&v->items[i]);
            if (v->keys) mem_free(v->keys[i]);
        }
        mem_free(v->items);
        mem_free(v->keys);
    }
    mem_free(v->str);
}

struct jm *jm_parse(const char *text, size_t len) {
    struct jp p = {text, text + len, 0};
    struct jm *v = mem_calloc(1, sizeof(*v));
    if (!v) return NULL;
    if (parse_value(&p, v)) {
        jm_free(v);
        return NULL;
    }
    return v;
}

void jm_free(struct jm *v) {
    if (!v) return;
    free_inner(v);
    mem_free(v);
}

const struct jm *jm_get(const struct jm *obj, const char *key) {
    if (!obj || obj->type != JM_OBJ) return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (obj->keys[i] && !strcmp(obj->keys[i], key)) return &obj->items[i];
    return NULL;
}

const struct jm *jm_at(const struct jm *arr, size_t i) {
    if (!arr || (arr->type != JM_ARR && arr->type != JM_OBJ) || i >= arr->len) return NULL;
    return &arr->items[i];
}
