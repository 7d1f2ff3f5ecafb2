/* tpl_value.c: the values chat templates compute with, and how Python would print them.
 *
 * Values are tagged unions allocated from an arena (struct tpl_arena): the caller's context in
 * the caller's arena, everything a render makes in the render's arena. Nothing is freed one by
 * one, so values may share parts freely (a slice of a list points at the same items).
 */
#include "jinja_internal.h"

#include "../base/mem.h"
#include "unicode.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TPL_MAX_NESTING 200 /* printing, JSON, == and < recurse at most this deep */

/* ============================================================================================
 * Arena
 * ============================================================================================
 * A chain of chunks; allocation bumps a pointer. Big requests get a chunk of their own. The
 * byte bound turns runaway templates (string doubling in a loop) into a clean error.
 */

struct tpl_chunk {
    struct tpl_chunk *next;
    size_t used, cap; /* bytes of data[] */
    _Alignas(16) unsigned char data[];
};

#define TPL_CHUNK_BYTES (64 * 1024)

struct tpl_arena *tpl_arena_create(size_t max_bytes) {
    struct tpl_arena *a = mem_calloc(1, sizeof(*a));
    if (a) a->max_bytes = max_bytes;
    return a;
}

void tpl_arena_free(struct tpl_arena *a) {
    if (!a) return;
    struct tpl_chunk *c = a->chunk;
    while (c) {
        struct tpl_chunk *next = c->next;
        mem_free(c);
        c = next;
    }
    mem_free(a);
}

int tpl_arena_failed(const struct tpl_arena *a) {
    return !a || a->failed;
}

void *tpl_arena_alloc(struct tpl_arena *a, size_t n) {
    if (a->failed) return NULL;
    if (n > SIZE_MAX / 2) {
        a->failed = 1;
        return NULL;
    }
    n = n ? (n + 15) & ~(size_t)15 : 16;
    struct tpl_chunk *c = a->chunk;
    if (c && c->cap - c->used >= n) {
        void *p = c->data + c->used;
        c->used += n;
        return p;
    }
    size_t cap = n > TPL_CHUNK_BYTES / 4 ? n : TPL_CHUNK_BYTES;
    size_t total;
    if (mem_add_size(cap, sizeof(struct tpl_chunk), &total) ||
        (a->max_bytes && (total > a->max_bytes || a->used_bytes > a->max_bytes - total))) {
        a->failed = 1;
        return NULL;
    }
    struct tpl_chunk *nc = mem_alloc(total);
    if (!nc) {
        a->failed = 1;
        return NULL;
    }
    a->used_bytes += total;
    nc->cap = cap;
    nc->used = n;
    if (cap == n && c) { /* a private big chunk: keep bumping in the current one */
        nc->next = c->next;
        c->next = nc;
    } else {
        nc->next = c;
        a->chunk = nc;
    }
    return nc->data;
}

/* ============================================================================================
 * Constructors
 * ============================================================================================
 * None and the booleans are static singletons shared by everyone; the rest comes from an arena.
 */

static struct tpl_value g_none = {.kind = TPL_NONE};
static struct tpl_value g_true = {.kind = TPL_BOOL, .u.i = 1};
static struct tpl_value g_false = {.kind = TPL_BOOL, .u.i = 0};
struct tpl_value tpl_undefined_value = {.kind = TPL_UNDEFINED, .why = TPL_UNDEF_HINT};

struct tpl_value *tpl_value_none(void) {
    return &g_none;
}

struct tpl_value *tpl_value_bool(int b) {
    return b ? &g_true : &g_false;
}

static struct tpl_value *new_value(struct tpl_arena *a, uint8_t kind) {
    if (!a) return NULL;
    struct tpl_value *v = tpl_arena_alloc(a, sizeof(*v));
    if (v) {
        memset(v, 0, sizeof(*v));
        v->kind = kind;
    }
    return v;
}

struct tpl_value *tpl_value_int(struct tpl_arena *a, int64_t x) {
    struct tpl_value *v = new_value(a, TPL_INT);
    if (v) v->u.i = x;
    return v;
}

struct tpl_value *tpl_value_float(struct tpl_arena *a, double x) {
    struct tpl_value *v = new_value(a, TPL_FLOAT);
    if (v) v->u.f = x;
    return v;
}

static int is_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80) return 0;
    return 1;
}

struct tpl_value *tpl_value_string_take(struct tpl_arena *a, char *p, size_t n, uint8_t flags) {
    struct tpl_value *v = new_value(a, TPL_STRING);
    if (!v) return NULL;
    v->u.s.p = p;
    v->u.s.n = n;
    v->flags = (uint8_t)(flags & ~TPL_F_ASCII);
    if (is_ascii(p, n)) v->flags |= TPL_F_ASCII;
    return v;
}

struct tpl_value *tpl_value_string(struct tpl_arena *a, const char *s, size_t n) {
    if (!a || n == SIZE_MAX) return NULL;
    char *p = tpl_arena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return tpl_value_string_take(a, p, n, 0);
}

struct tpl_value *tpl_value_undef(struct tpl_arena *a, enum tpl_undef_why why, const char *name,
                                  size_t n, const char *owner) {
    struct tpl_value *v = new_value(a, TPL_UNDEFINED);
    if (!v) return NULL;
    v->why = (uint8_t)why;
    v->u.undef.name = name;
    v->u.undef.n = n;
    v->u.undef.owner = owner;
    return v;
}

struct tpl_value *tpl_value_array(struct tpl_arena *a) {
    struct tpl_value *v = new_value(a, TPL_ARRAY);
    if (!v) return NULL;
    v->u.arr = tpl_arena_alloc(a, sizeof(struct tpl_array));
    if (!v->u.arr) return NULL;
    memset(v->u.arr, 0, sizeof(struct tpl_array));
    return v;
}

struct tpl_value *tpl_value_tuple(struct tpl_arena *a, size_t n) {
    struct tpl_value *v = tpl_value_array(a);
    if (!v) return NULL;
    v->flags = TPL_F_TUPLE;
    if (n) {
        size_t bytes;
        if (mem_mul_size(n, sizeof(struct tpl_value *), &bytes)) return NULL;
        v->u.arr->items = tpl_arena_alloc(a, bytes);
        if (!v->u.arr->items) return NULL;
        memset(v->u.arr->items, 0, bytes);
        v->u.arr->n = v->u.arr->cap = n;
    }
    return v;
}

struct tpl_value *tpl_array_copy(struct tpl_arena *a, const struct tpl_value *arr, uint8_t flags) {
    size_t n = arr->u.arr->n;
    struct tpl_value *v = tpl_value_tuple(a, n);
    if (!v) return NULL;
    v->flags = flags;
    if (n) memcpy(v->u.arr->items, arr->u.arr->items, n * sizeof(struct tpl_value *));
    return v;
}

int tpl_array_push(struct tpl_arena *a, struct tpl_value *arr, struct tpl_value *v) {
    if (!v || !a) {
        if (a) a->failed = 1;
        return ERR_NOMEM;
    }
    if (!arr || arr->kind != TPL_ARRAY) return ERR_INVALID;
    struct tpl_array *r = arr->u.arr;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4, bytes;
        if (mem_mul_size(cap, sizeof(struct tpl_value *), &bytes)) {
            a->failed = 1;
            return ERR_NOMEM;
        }
        struct tpl_value **items = tpl_arena_alloc(a, bytes);
        if (!items) return ERR_NOMEM;
        if (r->n) memcpy(items, r->items, r->n * sizeof(*items));
        r->items = items;
        r->cap = cap;
    }
    r->items[r->n++] = v;
    return 0;
}

struct tpl_value *tpl_value_object(struct tpl_arena *a) {
    struct tpl_value *v = new_value(a, TPL_OBJECT);
    if (!v) return NULL;
    v->u.obj = tpl_arena_alloc(a, sizeof(struct tpl_object));
    if (!v->u.obj) return NULL;
    memset(v->u.obj, 0, sizeof(struct tpl_object));
    return v;
}

/* ---- insertion-ordered map --------------------------------------------------------------- */

#define TPL_OBJECT_LINEAR 8 /* below this many keys, lookups scan */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int key_is(const struct tpl_entry *e, const char *key, size_t n, uint64_t h) {
    return e->hash == h && e->key->u.s.n == n && memcmp(e->key->u.s.p, key, n) == 0;
}

static void slots_insert(struct tpl_object *o, size_t idx) {
    size_t mask = o->n_slots - 1, j = (size_t)o->entries[idx].hash & mask;
    while (o->slots[j]) j = (j + 1) & mask;
    o->slots[j] = (uint32_t)(idx + 1);
}

static int slots_rebuild(struct tpl_arena *a, struct tpl_object *o, size_t n_slots) {
    size_t bytes;
    if (n_slots > UINT32_MAX || mem_mul_size(n_slots, sizeof(uint32_t), &bytes)) return ERR_NOMEM;
    uint32_t *slots = tpl_arena_alloc(a, bytes);
    if (!slots) return ERR_NOMEM;
    memset(slots, 0, bytes);
    o->slots = slots;
    o->n_slots = n_slots;
    for (size_t i = 0; i < o->n; i++) slots_insert(o, i);
    return 0;
}

static struct tpl_entry *object_find_entry(const struct tpl_object *o, const char *key, size_t n) {
    uint64_t h = hash_bytes(key, n);
    if (!o->slots) {
        for (size_t i = 0; i < o->n; i++)
            if (key_is(&o->entries[i], key, n, h)) return &o->entries[i];
        return NULL;
    }
    size_t mask = o->n_slots - 1, j = (size_t)h & mask;
    while (o->slots[j]) {
        struct tpl_entry *e = &o->entries[o->slots[j] - 1];
        if (key_is(e, key, n, h)) return e;
        j = (j + 1) & mask;
    }
    return NULL;
}

struct tpl_value *tpl_object_find(const struct tpl_object *o, const char *key, size_t n) {
    struct tpl_entry *e = object_find_entry(o, key, n);
    return e ? e->val : NULL;
}

int tpl_object_put(struct tpl_arena *a, struct tpl_object *o, struct tpl_value *key,
                   struct tpl_value *v) {
    if (!key || !v) {
        a->failed = 1;
        return ERR_NOMEM;
    }
    struct tpl_entry *e = object_find_entry(o, key->u.s.p, key->u.s.n);
    if (e) {
        e->val = v;
        return 0;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 4, bytes;
        if (mem_mul_size(cap, sizeof(struct tpl_entry), &bytes)) return ERR_NOMEM;
        struct tpl_entry *entries = tpl_arena_alloc(a, bytes);
        if (!entries) return ERR_NOMEM;
        if (o->n) memcpy(entries, o->entries, o->n * sizeof(*entries));
        o->entries = entries;
        o->cap = cap;
    }
    o->entries[o->n].key = key;
    o->entries[o->n].val = v;
    o->entries[o->n].hash = hash_bytes(key->u.s.p, key->u.s.n);
    o->n++;
    if (o->n >= TPL_OBJECT_LINEAR && o->n * 2 > o->n_slots) {
        size_t n_slots = 16;
        while (n_slots < o->n * 4) n_slots *= 2;
        return slots_rebuild(a, o, n_slots);
    }
    if (o->slots) slots_insert(o, o->n - 1);
    return 0;
}

int tpl_object_set(struct tpl_arena *a, struct tpl_value *obj, const char *key, size_t key_len,
                   struct tpl_value *v) {
    if (!a) return ERR_NOMEM;
    if (!v) {
        a->failed = 1;
        return ERR_NOMEM;
    }
    if (!obj || (obj->kind != TPL_OBJECT && obj->kind != TPL_NAMESPACE)) return ERR_INVALID;
    struct tpl_entry *e = object_find_entry(obj->u.obj, key, key_len);
    if (e) {
        e->val = v;
        return 0;
    }
    struct tpl_value *k = tpl_value_string(a, key, key_len);
    if (!k) return ERR_NOMEM;
    return tpl_object_put(a, obj->u.obj, k, v);
}

const struct tpl_value *tpl_object_get(const struct tpl_value *obj, const char *key,
                                       size_t key_len) {
    if (!obj || (obj->kind != TPL_OBJECT && obj->kind != TPL_NAMESPACE)) return NULL;
    return tpl_object_find(obj->u.obj, key, key_len);
}

/* ============================================================================================
 * Python semantics: truth, types, numbers
 * ============================================================================================
 * Python's truth: empty containers, 0, 0.0, '' and None are false; Undefined is false too.
 */

int tpl_is_truthy(const struct tpl_value *v) {
    switch (v->kind) {
    case TPL_UNDEFINED:
    case TPL_NONE:
        return 0;
    case TPL_BOOL:
    case TPL_INT:
        return v->u.i != 0;
    case TPL_FLOAT:
        return v->u.f != 0.0;
    case TPL_STRING:
        return v->u.s.n != 0;
    case TPL_ARRAY:
        return (v->flags & TPL_F_GEN) || v->u.arr->n != 0;
    case TPL_OBJECT:
        return v->u.obj->n != 0;
    default:
        return 1;
    }
}

int tpl_is_number(const struct tpl_value *v) {
    return v->kind == TPL_BOOL || v->kind == TPL_INT || v->kind == TPL_FLOAT;
}

double tpl_to_double(const struct tpl_value *v) {
    return v->kind == TPL_FLOAT ? v->u.f : (double)v->u.i;
}

const char *tpl_type_name(const struct tpl_value *v) {
    switch (v->kind) {
    case TPL_UNDEFINED:
        return "Undefined";
    case TPL_NONE:
        return "NoneType";
    case TPL_BOOL:
        return "bool";
    case TPL_INT:
        return "int";
    case TPL_FLOAT:
        return "float";
    case TPL_STRING:
        return v->flags & TPL_F_SAFE ? "Markup" : "str";
    case TPL_ARRAY:
        return v->flags & TPL_F_GEN ? "generator" : v->flags & TPL_F_TUPLE ? "tuple" : "list";
    case TPL_OBJECT:
        return "dict";
    case TPL_NAMESPACE:
        return "Namespace";
    case TPL_FUNC:
        return "builtin_function_or_method";
    case TPL_MACRO:
        return "Macro";
    case TPL_LOOP:
        return "LoopContext";
    }
    return "object";
}

/* ============================================================================================
 * str() and repr()
 * ============================================================================================
 * Python prints floats as the shortest text that reads back to the same double, switching to
 * exponent form below 1e-4 or from 1e16 on (Objects/floatobject.c, float_repr with 'r'). We
 * find the shortest digits by trying %.*e precisions until strtod round-trips, which glibc's
 * correctly rounded printf makes equal to Python's dtoa result.
 */

void tpl_format_float(struct buf *b, double x) {
    if (isnan(x)) {
        buf_append_str(b, "nan");
        return;
    }
    if (isinf(x)) {
        buf_append_str(b, x > 0 ? "inf" : "-inf");
        return;
    }
    if (x == 0) {
        buf_append_str(b, signbit(x) ? "-0.0" : "0.0");
        return;
    }
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, x);
        if (strtod(tmp, NULL) == x) break;
    }
    /* tmp: [-]d[.ddd]e[+-]xx */
    char digits[24];
    int nd = 0, neg = 0;
    const char *p = tmp;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    while (*p && *p != 'e') {
        if (*p >= '0' && *p <= '9' && nd < 20) digits[nd++] = *p;
        p++;
    }
    int exp10 = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int decpt = exp10 + 1;
    if (neg) buf_append_char(b, '-');
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            buf_append_str(b, "0.");
            for (int i = 0; i < -decpt; i++) buf_append_char(b, '0');
            buf_append(b, digits, (size_t)nd);
        } else if (decpt >= nd) {
            buf_append(b, digits, (size_t)nd);
            for (int i = nd; i < decpt; i++) buf_append_char(b, '0');
            buf_append_str(b, ".0");
        } else {
            buf_append(b, digits, (size_t)decpt);
            buf_append_char(b, '.');
            buf_append(b, digits + decpt, (size_t)(nd - decpt));
        }
    } else {
        buf_append_char(b, digits[0]);
        if (nd > 1) {
            buf_append_char(b, '.');
            buf_append(b, digits + 1, (size_t)(nd - 1));
        }
        int e = decpt - 1;
        buf_printf(b, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
}

/* str.isprintable() is false for separators other than the space and for "other" characters
 * (controls, format, surrogates, private use, unassigned): Unicode categories Z* and C*. */
static int is_unprintable(uint32_t c) {
    if (c < 0x80) return c < 0x20 || c == 0x7f;
    if (c >= 0xdc80 && c <= 0xdcff) return 1; /* an invalid byte, shown as Python shows it */
    return (unicode_flags(c) & (UNICODE_OTHER | UNICODE_SEPARATOR)) != 0;
}

void tpl_repr_string(struct buf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    buf_append_char(b, q);
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        uint32_t c = jinja_utf8_next(s, n, &i);
        if (c == (uint32_t)q || c == '\\') {
            buf_append_char(b, '\\');
            buf_append_char(b, (char)c);
        } else if (c == '\n') {
            buf_append_str(b, "\\n");
        } else if (c == '\r') {
            buf_append_str(b, "\\r");
        } else if (c == '\t') {
            buf_append_str(b, "\\t");
        } else if (is_unprintable(c)) {
            if (c < 0x100)
                buf_printf(b, "\\x%02x", c);
            else if (c < 0x10000)
                buf_printf(b, "\\u%04x", c);
            else
                buf_printf(b, "\\U%08x", c);
        } else {
            buf_append(b, s + start, i - start);
        }
    }
    buf_append_char(b, q);
}

static int value_print(struct buf *b, const struct tpl_value *v, int repr, int depth);

static int print_items(struct buf *b, const struct tpl_value *v, int depth) {
    const struct tpl_array *r = v->u.arr;
    int tuple = v->flags & TPL_F_TUPLE;
    buf_append_char(b, tuple ? '(' : '[');
    for (size_t i = 0; i < r->n; i++) {
        if (i) buf_append_str(b, ", ");
        int rc = value_print(b, r->items[i], 1, depth + 1);
        if (rc) return rc;
    }
    if (tuple && r->n == 1) buf_append_char(b, ',');
    buf_append_char(b, tuple ? ')' : ']');
    return 0;
}

static int print_dict(struct buf *b, const struct tpl_object *o, int depth) {
    buf_append_char(b, '{');
    for (size_t i = 0; i < o->n; i++) {
        if (i) buf_append_str(b, ", ");
        tpl_repr_string(b, o->entries[i].key->u.s.p, o->entries[i].key->u.s.n);
        buf_append_str(b, ": ");
        int rc = value_print(b, o->entries[i].val, 1, depth + 1);
        if (rc) return rc;
    }
    buf_append_char(b, '}');
    return 0;
}

static int value_print(struct buf *b, const struct tpl_value *v, int repr, int depth) {
    if (depth > TPL_MAX_NESTING) return ERR_RANGE;
    switch (v->kind) {
    case TPL_UNDEFINED:
        if (repr) buf_append_str(b, "Undefined");
        return 0;
    case TPL_NONE:
        buf_append_str(b, "None");
        return 0;
    case TPL_BOOL:
        buf_append_str(b, v->u.i ? "True" : "False");
        return 0;
    case TPL_INT:
        buf_printf(b, "%" PRId64, v->u.i);
        return 0;
    case TPL_FLOAT:
        tpl_format_float(b, v->u.f);
        return 0;
    case TPL_STRING:
        if (!repr) {
            buf_append(b, v->u.s.p, v->u.s.n);
        } else if (v->flags & TPL_F_SAFE) {
            buf_append_str(b, "Markup(");
            tpl_repr_string(b, v->u.s.p, v->u.s.n);
            buf_append_char(b, ')');
        } else {
            tpl_repr_string(b, v->u.s.p, v->u.s.n);
        }
        return 0;
    case TPL_ARRAY:
        if (v->flags & TPL_F_GEN) {
            buf_append_str(b, "<generator object>");
            return 0;
        }
        return print_items(b, v, depth);
    case TPL_OBJECT:
        return print_dict(b, v->u.obj, depth);
    case TPL_NAMESPACE: {
        buf_append_str(b, "<Namespace ");
        int rc = print_dict(b, v->u.obj, depth);
        buf_append_char(b, '>');
        return rc;
    }
    case TPL_FUNC:
        buf_printf(b, "<built-in function %s>", v->u.fn->name);
        return 0;
    case TPL_MACRO:
        buf_append_str(b, "<Macro>");
        return 0;
    case TPL_LOOP:
        buf_append_str(b, "<LoopContext>");
        return 0;
    }
    return 0;
}

int tpl_value_str(struct buf *b, const struct tpl_value *v) {
    return value_print(b, v, 0, 0);
}

int tpl_value_repr(struct buf *b, const struct tpl_value *v) {
    return value_print(b, v, 1, 0);
}

/* ============================================================================================
 * JSON (Python json.dumps with ensure_ascii=False)
 * ============================================================================================
 * Strings keep non-ASCII text as UTF-8 and escape only '"', '\\' and controls below 0x20
 * (\n \r \t \b \f by name, the rest as \u00xx); floats print as repr; inf/nan as Infinity/NaN.
 */

static void json_string(struct buf *b, const char *s, size_t n) {
    buf_append_char(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char tmp[8];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\b')
            esc = "\\b";
        else if (c == '\f')
            esc = "\\f";
        else if (c < 0x20) {
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
            esc = tmp;
        }
        if (esc) {
            buf_append(b, s + run, i - run);
            buf_append_str(b, esc);
            run = i + 1;
        }
    }
    buf_append(b, s + run, n - run);
    buf_append_char(b, '"');
}

static void json_newline(struct buf *b, const struct tpl_json_opts *o, int level) {
    buf_append_char(b, '\n');
    for (int i = 0; i < level; i++) buf_append(b, o->indent, o->indent_n);
}

struct sort_entry {
    const struct tpl_entry *e;
};

static int cmp_entry_keys(const void *x, const void *y) {
    const struct tpl_value *a = ((const struct sort_entry *)x)->e->key;
    const struct tpl_value *b = ((const struct sort_entry *)y)->e->key;
    size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int c = memcmp(a->u.s.p, b->u.s.p, n);
    if (c) return c;
    return a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n;
}

static int json_value(struct buf *b, const struct tpl_value *v, const struct tpl_json_opts *o,
                      int level, struct error *err) {
    if (level > TPL_MAX_NESTING)
        return error_set(err, ERR_RANGE, "tojson: value nested too deeply");
    switch (v->kind) {
    case TPL_NONE:
        buf_append_str(b, "null");
        return 0;
    case TPL_BOOL:
        buf_append_str(b, v->u.i ? "true" : "false");
        return 0;
    case TPL_INT:
        buf_printf(b, "%" PRId64, v->u.i);
        return 0;
    case TPL_FLOAT:
        if (isnan(v->u.f))
            buf_append_str(b, "NaN");
        else if (isinf(v->u.f))
            buf_append_str(b, v->u.f > 0 ? "Infinity" : "-Infinity");
        else
            tpl_format_float(b, v->u.f);
        return 0;
    case TPL_STRING:
        json_string(b, v->u.s.p, v->u.s.n);
        return 0;
    case TPL_ARRAY: {
        const struct tpl_array *r = v->u.arr;
        if (v->flags & TPL_F_GEN)
            return error_set(err, ERR_INVALID, "Object of type generator is not JSON serializable");
        if (r->n == 0) {
            buf_append_str(b, "[]");
            return 0;
        }
        buf_append_char(b, '[');
        for (size_t i = 0; i < r->n; i++) {
            if (i) buf_append(b, o->item_sep, o->item_sep_n);
            if (o->indent) json_newline(b, o, level + 1);
            int rc = json_value(b, r->items[i], o, level + 1, err);
            if (rc) return rc;
        }
        if (o->indent) json_newline(b, o, level);
        buf_append_char(b, ']');
        return 0;
    }
    case TPL_OBJECT: {
        const struct tpl_object *obj = v->u.obj;
        if (obj->n == 0) {
            buf_append_str(b, "{}");
            return 0;
        }
        struct sort_entry *order = NULL;
        if (o->sort_keys && obj->n > 1) {
            order = mem_alloc(obj->n * sizeof(*order));
            if (!order) return error_set(err, ERR_NOMEM, "tojson: out of memory");
            for (size_t i = 0; i < obj->n; i++) order[i].e = &obj->entries[i];
            qsort(order, obj->n, sizeof(*order), cmp_entry_keys);
        }
        buf_append_char(b, '{');
        int rc = 0;
        for (size_t i = 0; i < obj->n && !rc; i++) {
            const struct tpl_entry *e = order ? order[i].e : &obj->entries[i];
            if (i) buf_append(b, o->item_sep, o->item_sep_n);
            if (o->indent) json_newline(b, o, level + 1);
            json_string(b, e->key->u.s.p, e->key->u.s.n);
            buf_append(b, o->key_sep, o->key_sep_n);
            rc = json_value(b, e->val, o, level + 1, err);
        }
        mem_free(order);
        if (rc) return rc;
        if (o->indent) json_newline(b, o, level);
        buf_append_char(b, '}');
        return 0;
    }
    default:
        return error_set(err, ERR_INVALID, "Object of type %s is not JSON serializable",
                         tpl_type_name(v));
    }
}

int tpl_value_json(struct buf *b, const struct tpl_value *v, const struct tpl_json_opts *o,
                   struct error *err) {
    return json_value(b, v, o, 0, err);
}

int tpl_value_to_json(const struct tpl_value *v, struct buf *out, struct error *err) {
    struct tpl_json_opts o = {.item_sep = ", ", .item_sep_n = 2, .key_sep = ": ", .key_sep_n = 2};
    if (!v) return error_set(err, ERR_INVALID, "tojson: no value");
    return tpl_value_json(out, v, &o, err);
}

/* ============================================================================================
 * Equality and ordering
 * ============================================================================================
 * Python rules: bool, int and float compare as numbers (True == 1 == 1.0); a list never equals
 * a tuple; dicts are equal when they hold the same keys and equal values in any order;
 * Undefined equals only Undefined. Ordering exists between numbers, between strings (code
 * point order, which is UTF-8 byte order) and between lists (or tuples) element-wise.
 */

static int num_cmp(const struct tpl_value *a, const struct tpl_value *b) {
    if (a->kind != TPL_FLOAT && b->kind != TPL_FLOAT) return a->u.i < b->u.i ? -1 : a->u.i > b->u.i;
    long double x = a->kind == TPL_FLOAT ? (long double)a->u.f : (long double)a->u.i;
    long double y = b->kind == TPL_FLOAT ? (long double)b->u.f : (long double)b->u.i;
    if (isnan(x) || isnan(y)) return 2; /* unordered */
    return x < y ? -1 : x > y;
}

static int str_cmp(const struct tpl_value *a, const struct tpl_value *b) {
    size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int c = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
    if (c) return c < 0 ? -1 : 1;
    return a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n;
}

static int equal_depth(const struct tpl_value *a, const struct tpl_value *b, int depth,
                       uint64_t *work) {
    (*work)++;
    if (a == b) return 1;
    if (depth > TPL_MAX_NESTING) return 0;
    if (tpl_is_number(a) && tpl_is_number(b)) return num_cmp(a, b) == 0;
    if (a->kind != b->kind) return 0;
    switch (a->kind) {
    case TPL_UNDEFINED:
    case TPL_NONE:
        return 1;
    case TPL_STRING:
        *work += a->u.s.n;
        return a->u.s.n == b->u.s.n && memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0;
    case TPL_ARRAY: {
        if ((a->flags | b->flags) & TPL_F_GEN) return 0; /* identity, checked above */
        if ((a->flags & TPL_F_TUPLE) != (b->flags & TPL_F_TUPLE)) return 0;
        if (a->u.arr->n != b->u.arr->n) return 0;
        for (size_t i = 0; i < a->u.arr->n; i++)
            if (!equal_depth(a->u.arr->items[i], b->u.arr->items[i], depth + 1, work)) return 0;
        return 1;
    }
    case TPL_OBJECT: {
        const struct tpl_object *x = a->u.obj, *y = b->u.obj;
        if (x->n != y->n) return 0;
        for (size_t i = 0; i < x->n; i++) {
            const struct tpl_value *k = x->entries[i].key;
            const struct tpl_value *w = tpl_object_find(y, k->u.s.p, k->u.s.n);
            if (!w || !equal_depth(x->entries[i].val, w, depth + 1, work)) return 0;
        }
        return 1;
    }
    case TPL_FUNC:
        return a->u.fn->id == b->u.fn->id && a->u.fn->is_method == b->u.fn->is_method &&
               a->u.fn->self == b->u.fn->self;
    default:
        return 0; /* identity, checked above */
    }
}

int tpl_value_equal(const struct tpl_value *a, const struct tpl_value *b, uint64_t *work) {
    uint64_t dummy = 0;
    return equal_depth(a, b, 0, work ? work : &dummy);
}

static int compare_depth(const struct tpl_value *a, const struct tpl_value *b, int *out,
                         struct error *err, int depth, uint64_t *work) {
    (*work)++;
    if (depth > TPL_MAX_NESTING) return error_set(err, ERR_RANGE, "comparison nested too deeply");
    if (tpl_is_number(a) && tpl_is_number(b)) {
        *out = num_cmp(a, b);
        return 0;
    }
    if (a->kind == TPL_STRING && b->kind == TPL_STRING) {
        *work += a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        *out = str_cmp(a, b);
        return 0;
    }
    if (a->kind == TPL_ARRAY && b->kind == TPL_ARRAY && !((a->flags | b->flags) & TPL_F_GEN) &&
        (a->flags & TPL_F_TUPLE) == (b->flags & TPL_F_TUPLE)) {
        size_t n = a->u.arr->n < b->u.arr->n ? a->u.arr->n : b->u.arr->n;
        for (size_t i = 0; i < n; i++) {
            const struct tpl_value *x = a->u.arr->items[i], *y = b->u.arr->items[i];
            if (equal_depth(x, y, depth + 1, work)) continue;
            return compare_depth(x, y, out, err, depth + 1, work);
        }
        *out = a->u.arr->n < b->u.arr->n ? -1 : a->u.arr->n > b->u.arr->n;
        return 0;
    }
    return error_set(err, ERR_INVALID, "'<' not supported between instances of '%s' and '%s'",
                     tpl_type_name(a), tpl_type_name(b));
}

int tpl_value_compare(const struct tpl_value *a, const struct tpl_value *b, int *out,
                      struct error *err, uint64_t *work) {
    uint64_t dummy = 0;
    return compare_depth(a, b, out, err, 0, work ? work : &dummy);
}
