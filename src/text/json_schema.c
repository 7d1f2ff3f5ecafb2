/* json_schema.c: JSON Schema -> grammar rules, and the type queries the chat parser uses.
 *
 * One compile walks the schema recursively; each schema node becomes a rule whose sentences
 * are the JSON texts it admits. Shared pieces (whitespace, string characters, numbers, any
 * value) are made once per compile. $ref targets are memoised by node, and the rule is created
 * before its body is compiled, so recursive schemas become recursive rules (left recursion
 * such as {"$ref": "#"} is caught later by grammar_finish). "Never" (a false schema, an empty
 * enum) is the rule id NEVER and propagates: an optional property or an anyOf branch that can
 * never match is left out, a required one makes its object impossible.
 */
#include "json_schema.h"

#include "../base/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEVER             (-3) /* not -1: a failed grammar_rule_add gives -1 */
#define FAILED            (-2)
#define MAX_COMPILE_DEPTH 400
#define MAX_REF_HOPS      32

struct ref_memo {
    const struct jval *target; /* resolved schema node */
    int32_t rule;
};

struct jsc {
    struct grammar *g;
    const struct jval *root;
    struct error *err;
    int code;       /* first error, 0 if none */
    int depth;      /* compile recursion */
    char path[256]; /* location for messages, "#/properties/x" */
    size_t path_len;
    struct ref_memo *refs;
    size_t n_refs, cap_refs;
    /* shared rules, -1 until made */
    int32_t ws, chr, esc, mb, str, num, unum, intg, uint, any, any_obj;
};

static int32_t fail(struct jsc *c, int code, const char *what) {
    if (!c->code) {
        c->code = code;
        error_set(c->err, code, "json schema: %s at %s", what, c->path_len ? c->path : "#");
    }
    return FAILED;
}

static size_t path_push(struct jsc *c, const char *seg) {
    size_t old = c->path_len;
    if (old == 0) {
        c->path[0] = '#';
        c->path_len = old = 1;
        c->path[1] = 0;
    }
    int n = snprintf(c->path + c->path_len, sizeof(c->path) - c->path_len, "/%s", seg);
    if (n > 0) c->path_len += (size_t)n < sizeof(c->path) - c->path_len ? (size_t)n : 0;
    return old;
}

static void path_pop(struct jsc *c, size_t old) {
    c->path_len = old;
    c->path[old] = 0;
}

/* ============================================================================================
 * Shared pieces: whitespace, strings, numbers, any value
 * ============================================================================================ */

static int32_t rule_ws(struct jsc *c) {
    if (c->ws >= 0) return c->ws;
    struct grammar *g = c->g;
    int32_t blank = grammar_rule_add(g, "blank");
    grammar_alt_begin(g, blank);
    grammar_alt_str(g, " ");
    grammar_alt_end(g);
    grammar_alt_begin(g, blank);
    grammar_alt_str(g, "\t");
    grammar_alt_end(g);
    int32_t indent = grammar_rule_repeat(g, blank, 0, 32);
    int32_t ws = grammar_rule_add(g, "ws");
    grammar_alt_begin(g, ws);
    grammar_alt_end(g);
    grammar_alt_begin(g, ws);
    grammar_alt_str(g, " ");
    grammar_alt_end(g);
    grammar_alt_begin(g, ws);
    grammar_alt_str(g, "\n");
    grammar_alt_ref(g, indent);
    grammar_alt_end(g);
    return c->ws = ws;
}

/* One character of a JSON string, as UTF-8 bytes (RFC 3629 ranges) or an escape, split into
 * plain ASCII (PLAIN_SET), escapes (c->esc) and multi-byte characters (c->mb). */
static void plain_set(uint8_t set[32]) {
    memset(set, 0, 32);
    for (unsigned b = 0x20; b < 0x80; b++)
        if (b != '"' && b != '\\') set[b >> 3] |= (uint8_t)(1u << (b & 7));
}

static int32_t rule_char(struct jsc *c) {
    if (c->chr >= 0) return c->chr;
    struct grammar *g = c->g;
    int32_t hex = grammar_rule_add(g, "hex");
    grammar_alt_begin(g, hex);
    grammar_alt_range(g, '0', '9');
    grammar_alt_end(g);
    grammar_alt_begin(g, hex);
    grammar_alt_range(g, 'a', 'f');
    grammar_alt_end(g);
    grammar_alt_begin(g, hex);
    grammar_alt_range(g, 'A', 'F');
    grammar_alt_end(g);
    c->esc = grammar_rule_add(g, "escape");
    uint8_t esc[32] = {0};
    for (const char *e = "\"\\/bfnrt"; *e; e++) esc[(uint8_t)*e >> 3] |= (uint8_t)(1u << (*e & 7));
    grammar_alt_begin(g, c->esc);
    grammar_alt_str(g, "\\");
    grammar_alt_set(g, esc);
    grammar_alt_end(g);
    grammar_alt_begin(g, c->esc);
    grammar_alt_str(g, "\\u");
    for (int i = 0; i < 4; i++) grammar_alt_ref(g, hex);
    grammar_alt_end(g);
    static const uint8_t seq[][4][2] = {
        /* lead range, then continuation ranges; {0,0} ends */
        {{0xC2, 0xDF}, {0x80, 0xBF}, {0, 0}, {0, 0}},
        {{0xE0, 0xE0}, {0xA0, 0xBF}, {0x80, 0xBF}, {0, 0}},
        {{0xE1, 0xEC}, {0x80, 0xBF}, {0x80, 0xBF}, {0, 0}},
        {{0xED, 0xED}, {0x80, 0x9F}, {0x80, 0xBF}, {0, 0}},
        {{0xEE, 0xEF}, {0x80, 0xBF}, {0x80, 0xBF}, {0, 0}},
        {{0xF0, 0xF0}, {0x90, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF1, 0xF3}, {0x80, 0xBF}, {0x80, 0xBF}, {0x80, 0xBF}},
        {{0xF4, 0xF4}, {0x80, 0x8F}, {0x80, 0xBF}, {0x80, 0xBF}},
    };
    c->mb = grammar_rule_add(g, "utf8");
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
        grammar_alt_begin(g, c->mb);
        for (int k = 0; k < 4 && seq[i][k][0]; k++)
            grammar_alt_range(g, seq[i][k][0], seq[i][k][1]);
        grammar_alt_end(g);
    }
    int32_t r = grammar_rule_add(g, "char");
    uint8_t plain[32];
    plain_set(plain);
    grammar_alt_begin(g, r);
    grammar_alt_set(g, plain);
    grammar_alt_end(g);
    grammar_alt_begin(g, r);
    grammar_alt_ref(g, c->esc);
    grammar_alt_end(g);
    grammar_alt_begin(g, r);
    grammar_alt_ref(g, c->mb);
    grammar_alt_end(g);
    return c->chr = r;
}

static int32_t rule_string_len(struct jsc *c, int min, int max) {
    if (min == 0 && max < 0 && c->str >= 0) return c->str;
    int32_t chars = grammar_rule_repeat(c->g, rule_char(c), min, max);
    int32_t r = grammar_rule_add(c->g, "string");
    grammar_alt_begin(c->g, r);
    grammar_alt_str(c->g, "\"");
    grammar_alt_ref(c->g, chars);
    grammar_alt_str(c->g, "\"");
    grammar_alt_end(c->g);
    if (min == 0 && max < 0) c->str = r;
    return r;
}

static int32_t rule_digits(struct jsc *c, int min, int max) {
    int32_t d = grammar_rule_add(c->g, "digit");
    grammar_alt_begin(c->g, d);
    grammar_alt_range(c->g, '0', '9');
    grammar_alt_end(c->g);
    return grammar_rule_repeat(c->g, d, min, max);
}

/* unsigned integer: 0 | [1-9][0-9]{0,15} */
static int32_t rule_uint(struct jsc *c) {
    if (c->uint >= 0) return c->uint;
    int32_t rest = rule_digits(c, 0, 15);
    int32_t r = grammar_rule_add(c->g, "uint");
    grammar_alt_begin(c->g, r);
    grammar_alt_str(c->g, "0");
    grammar_alt_end(c->g);
    grammar_alt_begin(c->g, r);
    grammar_alt_range(c->g, '1', '9');
    grammar_alt_ref(c->g, rest);
    grammar_alt_end(c->g);
    return c->uint = r;
}

static int32_t rule_int(struct jsc *c) {
    if (c->intg >= 0) return c->intg;
    int32_t u = rule_uint(c);
    int32_t r = grammar_rule_add(c->g, "integer");
    grammar_alt_begin(c->g, r);
    grammar_alt_ref(c->g, u);
    grammar_alt_end(c->g);
    grammar_alt_begin(c->g, r);
    grammar_alt_str(c->g, "-");
    grammar_alt_ref(c->g, u);
    grammar_alt_end(c->g);
    return c->intg = r;
}

/* unsigned number: uint ("." digit{1,16})? ([eE] [+-]? digit{1,3})? */
static int32_t rule_unumber(struct jsc *c) {
    if (c->unum >= 0) return c->unum;
    struct grammar *g = c->g;
    int32_t u = rule_uint(c);
    int32_t fd = rule_digits(c, 1, 16), ed = rule_digits(c, 1, 3);
    int32_t frac = grammar_rule_add(g, "frac");
    grammar_alt_begin(g, frac);
    grammar_alt_end(g);
    grammar_alt_begin(g, frac);
    grammar_alt_str(g, ".");
    grammar_alt_ref(g, fd);
    grammar_alt_end(g);
    int32_t exp = grammar_rule_add(g, "exp");
    grammar_alt_begin(g, exp);
    grammar_alt_end(g);
    const char *heads[] = {"e", "E", "e+", "E+", "e-", "E-"};
    for (int i = 0; i < 6; i++) {
        grammar_alt_begin(g, exp);
        grammar_alt_str(g, heads[i]);
        grammar_alt_ref(g, ed);
        grammar_alt_end(g);
    }
    int32_t r = grammar_rule_add(g, "unumber");
    grammar_alt_begin(g, r);
    grammar_alt_ref(g, u);
    grammar_alt_ref(g, frac);
    grammar_alt_ref(g, exp);
    grammar_alt_end(g);
    return c->unum = r;
}

static int32_t rule_number(struct jsc *c) {
    if (c->num >= 0) return c->num;
    int32_t u = rule_unumber(c);
    int32_t r = grammar_rule_add(c->g, "number");
    grammar_alt_begin(c->g, r);
    grammar_alt_ref(c->g, u);
    grammar_alt_end(c->g);
    grammar_alt_begin(c->g, r);
    grammar_alt_str(c->g, "-");
    grammar_alt_ref(c->g, u);
    grammar_alt_end(c->g);
    return c->num = r;
}

static int32_t rule_words(struct jsc *c, const char *name, const char *const *words, int n) {
    int32_t r = grammar_rule_add(c->g, name);
    for (int i = 0; i < n; i++) {
        grammar_alt_begin(c->g, r);
        grammar_alt_str(c->g, words[i]);
        grammar_alt_end(c->g);
    }
    return r;
}

/* "[" ws (elem ws ("," ws elem ws)*)? "]" or the object form with string keys. */
static int32_t rule_any(struct jsc *c, int object_only) {
    if (!object_only && c->any >= 0) return c->any;
    if (object_only && c->any_obj >= 0) return c->any_obj;
    struct grammar *g = c->g;
    int32_t ws = rule_ws(c), str = rule_string_len(c, 0, -1);
    int32_t value = c->any >= 0 ? c->any : grammar_rule_add(g, "value");
    int32_t kv = grammar_rule_add(g, "member");
    grammar_alt_begin(g, kv);
    grammar_alt_ref(g, str);
    grammar_alt_ref(g, ws);
    grammar_alt_str(g, ":");
    grammar_alt_ref(g, ws);
    grammar_alt_ref(g, value);
    grammar_alt_ref(g, ws);
    grammar_alt_end(g);
    int32_t obj = grammar_rule_add(g, "object");
    int32_t more_kv = grammar_rule_add(g, "members");
    grammar_alt_begin(g, more_kv);
    grammar_alt_end(g);
    grammar_alt_begin(g, more_kv);
    grammar_alt_str(g, ",");
    grammar_alt_ref(g, ws);
    grammar_alt_ref(g, kv);
    grammar_alt_ref(g, more_kv);
    grammar_alt_end(g);
    grammar_alt_begin(g, obj);
    grammar_alt_str(g, "{");
    grammar_alt_ref(g, ws);
    grammar_alt_str(g, "}");
    grammar_alt_end(g);
    grammar_alt_begin(g, obj);
    grammar_alt_str(g, "{");
    grammar_alt_ref(g, ws);
    grammar_alt_ref(g, kv);
    grammar_alt_ref(g, more_kv);
    grammar_alt_str(g, "}");
    grammar_alt_end(g);
    if (c->any < 0) {
        int32_t el = grammar_rule_add(g, "element");
        grammar_alt_begin(g, el);
        grammar_alt_ref(g, value);
        grammar_alt_ref(g, ws);
        grammar_alt_end(g);
        int32_t more = grammar_rule_add(g, "elements");
        grammar_alt_begin(g, more);
        grammar_alt_end(g);
        grammar_alt_begin(g, more);
        grammar_alt_str(g, ",");
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, el);
        grammar_alt_ref(g, more);
        grammar_alt_end(g);
        int32_t arr = grammar_rule_add(g, "array");
        grammar_alt_begin(g, arr);
        grammar_alt_str(g, "[");
        grammar_alt_ref(g, ws);
        grammar_alt_str(g, "]");
        grammar_alt_end(g);
        grammar_alt_begin(g, arr);
        grammar_alt_str(g, "[");
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, el);
        grammar_alt_ref(g, more);
        grammar_alt_str(g, "]");
        grammar_alt_end(g);
        static const char *const lits[] = {"true", "false", "null"};
        int32_t parts[5] = {obj, arr, str, rule_number(c), rule_words(c, "literal", lits, 3)};
        for (int i = 0; i < 5; i++) {
            grammar_alt_begin(g, value);
            grammar_alt_ref(g, parts[i]);
            grammar_alt_end(g);
        }
        c->any = value;
    }
    c->any_obj = obj;
    return object_only ? obj : value;
}

static int32_t rule_never(struct jsc *c) {
    static const uint8_t none[32];
    int32_t r = grammar_rule_add(c->g, "never");
    grammar_alt_begin(c->g, r);
    grammar_alt_set(c->g, none);
    grammar_alt_end(c->g);
    return r;
}

/* ============================================================================================
 * Schema queries: $ref resolution, types, properties
 * ============================================================================================ */

/* Resolves a local JSON pointer ("#", "#/a/b~1c/0"). */
static const struct jval *resolve_pointer(const struct jval *root, const char *ref) {
    if (ref[0] != '#') return NULL;
    const char *p = ref + 1;
    const struct jval *cur = root;
    char seg[256];
    while (*p) {
        if (*p != '/') return NULL;
        p++;
        size_t n = 0;
        while (*p && *p != '/') {
            char ch = *p++;
            if (ch == '~') {
                if (*p == '0')
                    ch = '~';
                else if (*p == '1')
                    ch = '/';
                else
                    return NULL;
                p++;
            }
            if (n + 1 >= sizeof(seg)) return NULL;
            seg[n++] = ch;
        }
        seg[n] = 0;
        if (cur->type == JVAL_OBJECT) {
            cur = jval_get(cur, seg);
        } else if (cur->type == JVAL_ARRAY) {
            char *end;
            unsigned long i = strtoul(seg, &end, 10);
            if (!n || *end || i >= cur->n) return NULL;
            cur = &cur->items[i];
        } else {
            return NULL;
        }
        if (!cur) return NULL;
    }
    return cur;
}

const struct jval *json_schema_resolve(const struct jval *root, const struct jval *schema) {
    for (int hop = 0; hop < MAX_REF_HOPS; hop++) {
        const char *ref = schema ? jval_get_str(schema, "$ref") : NULL;
        if (!ref) return schema;
        schema = resolve_pointer(root, ref);
    }
    return NULL;
}

static unsigned value_type(const struct jval *v) {
    switch (v->type) {
    case JVAL_NULL:
        return JSON_SCHEMA_T_NULL;
    case JVAL_BOOL:
        return JSON_SCHEMA_T_BOOLEAN;
    case JVAL_NUMBER:
        return v->is_integer ? JSON_SCHEMA_T_INTEGER | JSON_SCHEMA_T_NUMBER : JSON_SCHEMA_T_NUMBER;
    case JVAL_STRING:
        return JSON_SCHEMA_T_STRING;
    case JVAL_ARRAY:
        return JSON_SCHEMA_T_ARRAY;
    case JVAL_OBJECT:
        return JSON_SCHEMA_T_OBJECT;
    }
    return 0;
}

static unsigned type_bit(const char *name) {
    static const struct {
        const char *name;
        unsigned bit;
    } t[] = {{"null", JSON_SCHEMA_T_NULL},       {"boolean", JSON_SCHEMA_T_BOOLEAN},
             {"integer", JSON_SCHEMA_T_INTEGER}, {"number", JSON_SCHEMA_T_NUMBER},
             {"string", JSON_SCHEMA_T_STRING},   {"array", JSON_SCHEMA_T_ARRAY},
             {"object", JSON_SCHEMA_T_OBJECT}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        if (strcmp(name, t[i].name) == 0) return t[i].bit;
    return 0;
}

/* Types named by "type" (+ nullable); 0 if the schema has no usable "type". */
static unsigned declared_types(const struct jval *s) {
    const struct jval *t = jval_get(s, "type");
    unsigned bits = 0;
    if (t && t->type == JVAL_STRING)
        bits = type_bit(t->str);
    else if (t && t->type == JVAL_ARRAY)
        for (size_t i = 0; i < t->n; i++)
            if (t->items[i].type == JVAL_STRING) bits |= type_bit(t->items[i].str);
    if (bits) {
        const struct jval *nl = jval_get(s, "nullable");
        if (nl && nl->type == JVAL_BOOL && nl->boolean) bits |= JSON_SCHEMA_T_NULL;
    }
    return bits;
}

static int has_any(const struct jval *s, const char *const *keys) {
    for (; *keys; keys++)
        if (jval_get(s, *keys)) return 1;
    return 0;
}

static const char *const OBJECT_KEYS[] = {"properties", "required", "additionalProperties",
                                          "patternProperties", NULL};
static const char *const ARRAY_KEYS[] = {"items", "prefixItems", "minItems", "maxItems", NULL};
static const char *const STRING_KEYS[] = {"minLength", "maxLength", "pattern", "format", NULL};

static unsigned types_rec(const struct jval *root, const struct jval *s, int depth) {
    if (depth > MAX_REF_HOPS) return JSON_SCHEMA_T_ANY;
    if (!s) return JSON_SCHEMA_T_ANY;
    if (s->type == JVAL_BOOL) return s->boolean ? JSON_SCHEMA_T_ANY : 0;
    if (s->type != JVAL_OBJECT) return JSON_SCHEMA_T_ANY;
    if (jval_get_str(s, "$ref")) return types_rec(root, json_schema_resolve(root, s), depth + 1);
    const struct jval *any = jval_get(s, "anyOf");
    if (!any || any->type != JVAL_ARRAY) any = jval_get(s, "oneOf");
    if (any && any->type == JVAL_ARRAY) {
        unsigned bits = 0;
        for (size_t i = 0; i < any->n; i++) bits |= types_rec(root, &any->items[i], depth + 1);
        return bits;
    }
    const struct jval *en = jval_get(s, "enum");
    if (en && en->type == JVAL_ARRAY) {
        unsigned bits = 0;
        for (size_t i = 0; i < en->n; i++) bits |= value_type(&en->items[i]);
        return bits;
    }
    const struct jval *cn = jval_get(s, "const");
    if (cn) return value_type(cn);
    unsigned bits = declared_types(s);
    if (!bits) {
        if (has_any(s, OBJECT_KEYS))
            bits = JSON_SCHEMA_T_OBJECT;
        else if (has_any(s, ARRAY_KEYS))
            bits = JSON_SCHEMA_T_ARRAY;
        else if (has_any(s, STRING_KEYS))
            bits = JSON_SCHEMA_T_STRING;
        else
            bits = JSON_SCHEMA_T_ANY;
    }
    const struct jval *all = jval_get(s, "allOf");
    if (all && all->type == JVAL_ARRAY)
        for (size_t i = 0; i < all->n; i++) {
            unsigned b = types_rec(root, &all->items[i], depth + 1);
            if (b & bits) bits &= b;
        }
    return bits;
}

unsigned json_schema_types(const struct jval *root, const struct jval *schema) {
    return types_rec(root, schema, 0);
}

static const struct jval *property_rec(const struct jval *root, const struct jval *s,
                                       const char *key, int depth) {
    s = json_schema_resolve(root, s);
    if (!s || s->type != JVAL_OBJECT || depth > MAX_REF_HOPS) return NULL;
    const struct jval *p = jval_get(jval_get(s, "properties"), key);
    if (p) return p;
    const struct jval *all = jval_get(s, "allOf");
    if (all && all->type == JVAL_ARRAY)
        for (size_t i = 0; i < all->n; i++)
            if ((p = property_rec(root, &all->items[i], key, depth + 1))) return p;
    const struct jval *ap = jval_get(s, "additionalProperties");
    if (ap && ap->type == JVAL_OBJECT) return ap;
    return NULL;
}

const struct jval *json_schema_property(const struct jval *root, const struct jval *schema,
                                        const char *key) {
    return property_rec(root, schema, key, 0);
}

/* ============================================================================================
 * Compiling
 * ============================================================================================ */

static int32_t compile(struct jsc *c, const struct jval *s);

/* A non-negative integer keyword, -1 if absent; *bad set for a negative or non-integer one. */
static long count_kw(const struct jval *s, const char *key, int *bad) {
    const struct jval *v = jval_get(s, key);
    if (!v) return -1;
    if (v->type != JVAL_NUMBER || v->number < 0 || v->number != floor(v->number)) {
        *bad = 1;
        return -1;
    }
    return v->number > 1e9 ? 1000000000L : (long)v->number;
}

static int32_t literal_rule(struct jsc *c, const struct jval *const *vals, size_t n) {
    int32_t r = grammar_rule_add(c->g, "enum");
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        buf_clear(&b);
        jval_write(vals[i], &b);
        grammar_alt_begin(c->g, r);
        grammar_alt_lit(c->g, b.data ? b.data : "", b.len);
        grammar_alt_end(c->g);
    }
    int failed = b.failed;
    buf_free(&b);
    if (failed) return fail(c, ERR_NOMEM, "out of memory");
    return r;
}

static int32_t compile_string(struct jsc *c, const struct jval *s) {
    int bad = 0;
    long min = count_kw(s, "minLength", &bad), max = count_kw(s, "maxLength", &bad);
    if (bad) return fail(c, ERR_INVALID, "minLength/maxLength must be non-negative integers");
    if (min > JSON_SCHEMA_MAX_COUNT) return fail(c, ERR_UNSUPPORTED, "minLength above 2048");
    if (max > JSON_SCHEMA_MAX_COUNT) max = -1;
    if (min < 0) min = 0;
    if (max >= 0 && max < min) return NEVER;
    return rule_string_len(c, (int)min, (int)max);
}

static int non_negative(const struct jval *s) {
    const struct jval *mn = jval_get(s, "minimum"), *ex = jval_get(s, "exclusiveMinimum");
    return (mn && mn->type == JVAL_NUMBER && mn->number >= 0) ||
           (ex && ex->type == JVAL_NUMBER && ex->number >= 0);
}

/* Object members collected from a schema and its allOf parts. */
struct members {
    const char **keys; /* [n] */
    const struct jval **schemas;
    int *required;
    size_t n, cap;
    const struct jval *additional; /* additionalProperties, NULL if absent */
    int any_properties;            /* some part had "properties" */
};

static int members_add(struct members *m, const char *key, const struct jval *schema, int req) {
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->keys[i], key) == 0) {
            if (req) m->required[i] = 1;
            if (!m->schemas[i] && schema) m->schemas[i] = schema;
            return 0;
        }
    if (m->n == m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 8;
        const char **k = mem_realloc(m->keys, ncap * sizeof(*k));
        if (!k) return -1;
        m->keys = k;
        const struct jval **sc = mem_realloc(m->schemas, ncap * sizeof(*sc));
        if (!sc) return -1;
        m->schemas = sc;
        int *rq = mem_realloc(m->required, ncap * sizeof(*rq));
        if (!rq) return -1;
        m->required = rq;
        m->cap = ncap;
    }
    m->keys[m->n] = key;
    m->schemas[m->n] = schema;
    m->required[m->n] = req;
    m->n++;
    return 0;
}

static int collect_members(struct jsc *c, const struct jval *s, struct members *m, int depth) {
    s = json_schema_resolve(c->root, s);
    if (!s || s->type != JVAL_OBJECT || depth > MAX_REF_HOPS) return 0;
    const struct jval *props = jval_get(s, "properties");
    if (props && props->type == JVAL_OBJECT) {
        m->any_properties = 1;
        for (size_t i = 0; i < props->n; i++)
            if (members_add(m, props->keys[i], &props->items[i], 0)) return -1;
    }
    const struct jval *req = jval_get(s, "required");
    if (req && req->type == JVAL_ARRAY)
        for (size_t i = 0; i < req->n; i++)
            if (req->items[i].type == JVAL_STRING && members_add(m, req->items[i].str, NULL, 1))
                return -1;
    const struct jval *ap = jval_get(s, "additionalProperties");
    if (ap && !m->additional) m->additional = ap;
    const struct jval *all = jval_get(s, "allOf");
    if (all && all->type == JVAL_ARRAY)
        for (size_t i = 0; i < all->n; i++)
            if (collect_members(c, &all->items[i], m, depth + 1)) return -1;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A member name that is none of keys[] (so an extra member cannot repeat a declared one): a
 * trie of the names, where leaving the trie at any character frees the rest of the string.
 * Only names of plain printable ASCII are excluded (others are too rare to be worth it). */
static int32_t rule_key_except(struct jsc *c, const char *const *keys, size_t n) {
    struct grammar *g = c->g;
    int32_t str = rule_string_len(c, 0, -1);
    const char **ks = mem_alloc((n ? n : 1) * sizeof(char *));
    if (!ks) return fail(c, ERR_NOMEM, "out of memory");
    size_t nk = 0, total = 1;
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i];
        int ok = 1;
        for (const char *p = k; *p && ok; p++)
            ok = (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7F && *p != '"' && *p != '\\';
        if (ok) {
            ks[nk++] = k;
            total += strlen(k);
        }
    }
    if (nk == 0) {
        mem_free(ks);
        return str;
    }
    qsort(ks, nk, sizeof(*ks), cmp_str);
    /* trie nodes in preorder: parent, byte, terminal; children found through parent links */
    int32_t *parent = mem_alloc(total * sizeof(int32_t)),
            *rule = mem_alloc(total * sizeof(int32_t));
    int32_t *first = mem_alloc(total * sizeof(int32_t)),
            *sibling = mem_alloc(total * sizeof(int32_t));
    uint8_t *byte = mem_alloc(total), *term = mem_calloc(total, 1);
    int32_t *path = mem_alloc(total * sizeof(int32_t));
    int32_t result = FAILED;
    if (!parent || !rule || !first || !sibling || !byte || !term || !path) {
        fail(c, ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t n_nodes = 1, depth = 0;
    path[0] = 0;
    parent[0] = first[0] = sibling[0] = -1;
    const char *prev = "";
    for (size_t i = 0; i < nk; i++) {
        size_t common = 0;
        while (prev[common] && prev[common] == ks[i][common]) common++;
        if (common > depth) common = depth;
        depth = common;
        for (const char *p = ks[i] + common; *p; p++) {
            int32_t k = (int32_t)n_nodes++, up = path[depth];
            parent[k] = up;
            byte[k] = (uint8_t)*p;
            first[k] = -1;
            sibling[k] = first[up]; /* children end up in reverse order: fine */
            first[up] = k;
            path[++depth] = k;
        }
        term[path[depth]] = 1;
        prev = ks[i];
    }
    int32_t chars = grammar_rule_repeat(g, rule_char(c), 0, -1);
    int32_t free_rest = grammar_rule_add(g, "key_rest"); /* any characters, then the quote */
    grammar_alt_begin(g, free_rest);
    grammar_alt_ref(g, chars);
    grammar_alt_str(g, "\"");
    grammar_alt_end(g);
    for (size_t k = 0; k < n_nodes; k++) rule[k] = grammar_rule_add(g, "key_except");
    for (size_t k = 0; k < n_nodes; k++) {
        uint8_t others[32];
        plain_set(others);
        for (int32_t j = first[k]; j >= 0; j = sibling[j]) {
            others[byte[j] >> 3] &= (uint8_t) ~(1u << (byte[j] & 7));
            grammar_alt_begin(g, rule[k]);
            grammar_alt_range(g, byte[j], byte[j]);
            grammar_alt_ref(g, rule[j]);
            grammar_alt_end(g);
        }
        if (!term[k]) {
            grammar_alt_begin(g, rule[k]);
            grammar_alt_str(g, "\"");
            grammar_alt_end(g);
        }
        grammar_alt_begin(g, rule[k]);
        grammar_alt_set(g, others);
        grammar_alt_ref(g, free_rest);
        grammar_alt_end(g);
        grammar_alt_begin(g, rule[k]);
        grammar_alt_ref(g, c->esc);
        grammar_alt_ref(g, free_rest);
        grammar_alt_end(g);
        grammar_alt_begin(g, rule[k]);
        grammar_alt_ref(g, c->mb);
        grammar_alt_ref(g, free_rest);
        grammar_alt_end(g);
    }
    result = grammar_rule_add(g, "extra_key");
    grammar_alt_begin(g, result);
    grammar_alt_str(g, "\"");
    grammar_alt_ref(g, rule[0]);
    grammar_alt_end(g);
done:
    mem_free(ks);
    mem_free(parent);
    mem_free(first);
    mem_free(sibling);
    mem_free(rule);
    mem_free(byte);
    mem_free(term);
    mem_free(path);
    return result;
}

/* "{" ws first[0] "}" with first[i] / rest[i] chains over the members in order (see the
 * header: required members always, optional ones may be skipped, extra keys last). */
static int32_t compile_object(struct jsc *c, const struct jval *s) {
    struct grammar *g = c->g;
    struct members m = {0};
    int32_t result = FAILED;
    int32_t *kv = NULL;
    if (collect_members(c, s, &m, 0)) {
        fail(c, ERR_NOMEM, "out of memory");
        goto done;
    }
    int extras_any = !m.additional ? !m.any_properties
                                   : m.additional->type != JVAL_BOOL || m.additional->boolean;
    if (m.n == 0 && extras_any && (!m.additional || m.additional->type == JVAL_BOOL)) {
        result = rule_any(c, 1);
        goto done;
    }
    int32_t ws = rule_ws(c);
    kv = mem_calloc(m.n ? m.n : 1, sizeof(int32_t));
    if (!kv) {
        fail(c, ERR_NOMEM, "out of memory");
        goto done;
    }
    struct buf lit;
    buf_init(&lit);
    for (size_t i = 0; i < m.n; i++) {
        size_t old = path_push(c, m.keys[i]);
        int32_t v = m.schemas[i] ? compile(c, m.schemas[i]) : rule_any(c, 0);
        path_pop(c, old);
        if (v == FAILED) {
            buf_free(&lit);
            goto done;
        }
        if (v == NEVER) {
            kv[i] = NEVER;
            if (m.required[i]) {
                buf_free(&lit);
                result = NEVER;
                goto done;
            }
            continue;
        }
        buf_clear(&lit);
        jval_write_string(m.keys[i], strlen(m.keys[i]), &lit);
        kv[i] = grammar_rule_add(g, "member");
        grammar_alt_begin(g, kv[i]);
        grammar_alt_lit(g, lit.data ? lit.data : "", lit.len);
        grammar_alt_ref(g, ws);
        grammar_alt_str(g, ":");
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, v);
        grammar_alt_end(g);
    }
    if (lit.failed) {
        buf_free(&lit);
        fail(c, ERR_NOMEM, "out of memory");
        goto done;
    }
    buf_free(&lit);
    int32_t kvx = NEVER;
    if (extras_any) {
        int32_t v = m.additional && m.additional->type == JVAL_OBJECT ? compile(c, m.additional)
                                                                      : rule_any(c, 0);
        if (v == FAILED) goto done;
        int32_t key = v == NEVER ? NEVER : rule_key_except(c, m.keys, m.n);
        if (key == FAILED) goto done;
        if (v != NEVER) {
            kvx = grammar_rule_add(g, "extra");
            grammar_alt_begin(g, kvx);
            grammar_alt_ref(g, key);
            grammar_alt_ref(g, ws);
            grammar_alt_str(g, ":");
            grammar_alt_ref(g, ws);
            grammar_alt_ref(g, v);
            grammar_alt_end(g);
        }
    }
    /* build from the end: rest = after something was written, first = nothing yet */
    int32_t rest = grammar_rule_add(g, "rest"), first = grammar_rule_add(g, "first");
    grammar_alt_begin(g, rest);
    grammar_alt_end(g);
    grammar_alt_begin(g, first);
    grammar_alt_end(g);
    if (kvx != NEVER) {
        grammar_alt_begin(g, rest);
        grammar_alt_str(g, ",");
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, kvx);
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, rest);
        grammar_alt_end(g);
        grammar_alt_begin(g, first);
        grammar_alt_ref(g, kvx);
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, rest);
        grammar_alt_end(g);
    }
    for (size_t i = m.n; i-- > 0;) {
        if (kv[i] == NEVER) continue;
        int32_t nrest = grammar_rule_add(g, "rest"), nfirst = grammar_rule_add(g, "first");
        grammar_alt_begin(g, nrest);
        grammar_alt_str(g, ",");
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, kv[i]);
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, rest);
        grammar_alt_end(g);
        grammar_alt_begin(g, nfirst);
        grammar_alt_ref(g, kv[i]);
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, rest);
        grammar_alt_end(g);
        if (!m.required[i]) {
            grammar_alt_begin(g, nrest);
            grammar_alt_ref(g, rest);
            grammar_alt_end(g);
            grammar_alt_begin(g, nfirst);
            grammar_alt_ref(g, first);
            grammar_alt_end(g);
        }
        rest = nrest;
        first = nfirst;
    }
    result = grammar_rule_add(g, "object");
    grammar_alt_begin(g, result);
    grammar_alt_str(g, "{");
    grammar_alt_ref(g, ws);
    grammar_alt_ref(g, first);
    grammar_alt_str(g, "}");
    grammar_alt_end(g);
done:
    mem_free(kv);
    mem_free(m.keys);
    mem_free(m.schemas);
    mem_free(m.required);
    return result;
}

/* "[" ws body "]": element j follows prefixItems[j], then items; after[j] is what may follow j
 * elements. Beyond the prefix and the minimum, an unbounded tail is one self-recursive rule. */
static int32_t compile_array(struct jsc *c, const struct jval *s) {
    struct grammar *g = c->g;
    int bad = 0;
    long min = count_kw(s, "minItems", &bad), max = count_kw(s, "maxItems", &bad);
    if (bad) return fail(c, ERR_INVALID, "minItems/maxItems must be non-negative integers");
    if (min > JSON_SCHEMA_MAX_COUNT) return fail(c, ERR_UNSUPPORTED, "minItems above 2048");
    if (max > JSON_SCHEMA_MAX_COUNT) max = -1;
    if (min < 0) min = 0;
    if (max >= 0 && max < min) return NEVER;
    const struct jval *prefix = jval_get(s, "prefixItems");
    const struct jval *items = jval_get(s, "items");
    if (!prefix && items && items->type == JVAL_ARRAY) { /* draft-04 tuple form */
        prefix = items;
        items = jval_get(s, "additionalItems");
    }
    size_t n_prefix = prefix && prefix->type == JVAL_ARRAY ? prefix->n : 0;
    if (n_prefix > JSON_SCHEMA_MAX_COUNT) return fail(c, ERR_UNSUPPORTED, "too many prefixItems");
    int32_t item;
    if (!items || (items->type == JVAL_BOOL && items->boolean))
        item = rule_any(c, 0);
    else {
        size_t old = path_push(c, "items");
        item = compile(c, items);
        path_pop(c, old);
        if (item == FAILED) return FAILED;
    }
    /* elements past this count are impossible */
    long limit = max;
    if (item == NEVER && (limit < 0 || limit > (long)n_prefix)) limit = (long)n_prefix;
    int32_t *el = mem_calloc(n_prefix + 1, sizeof(int32_t));
    if (!el) return fail(c, ERR_NOMEM, "out of memory");
    for (size_t j = 0; j < n_prefix; j++) {
        char seg[32];
        snprintf(seg, sizeof(seg), "prefixItems/%zu", j);
        size_t old = path_push(c, seg);
        el[j] = compile(c, &prefix->items[j]);
        path_pop(c, old);
        if (el[j] == FAILED) {
            mem_free(el);
            return FAILED;
        }
        if (el[j] == NEVER && (limit < 0 || limit > (long)j)) limit = (long)j;
    }
    if (limit >= 0 && limit < min) {
        mem_free(el);
        return NEVER;
    }
    int32_t ws = rule_ws(c);
    /* the last chain position we need explicitly: beyond it, after[] repeats */
    long top = limit >= 0 ? limit : (min > (long)n_prefix ? min : (long)n_prefix);
    int32_t after = grammar_rule_add(g, "after"); /* after[top] */
    grammar_alt_begin(g, after);
    grammar_alt_end(g);
    if (limit < 0) { /* unbounded tail: after ::= "" | "," ws item ws after */
        grammar_alt_begin(g, after);
        grammar_alt_str(g, ",");
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, item);
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, after);
        grammar_alt_end(g);
    }
    for (long j = top - 1; j >= 1; j--) { /* after[j]: j elements written */
        int32_t e = j < (long)n_prefix ? el[j] : item;
        int32_t r = grammar_rule_add(g, "after");
        if (j >= min) {
            grammar_alt_begin(g, r);
            grammar_alt_end(g);
        }
        grammar_alt_begin(g, r);
        grammar_alt_str(g, ",");
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, e);
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, after);
        grammar_alt_end(g);
        after = r;
    }
    int32_t r = grammar_rule_add(g, "array");
    if (min == 0) {
        grammar_alt_begin(g, r);
        grammar_alt_str(g, "[");
        grammar_alt_ref(g, ws);
        grammar_alt_str(g, "]");
        grammar_alt_end(g);
    }
    if (top >= 1 || limit < 0) {
        grammar_alt_begin(g, r);
        grammar_alt_str(g, "[");
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, n_prefix > 0 ? el[0] : item);
        grammar_alt_ref(g, ws);
        grammar_alt_ref(g, after);
        grammar_alt_str(g, "]");
        grammar_alt_end(g);
    }
    mem_free(el);
    return r;
}

static int32_t compile_type(struct jsc *c, const struct jval *s, unsigned bit) {
    static const char *const bools[] = {"true", "false"}, *const nul[] = {"null"};
    switch (bit) {
    case JSON_SCHEMA_T_NULL:
        return rule_words(c, "null", nul, 1);
    case JSON_SCHEMA_T_BOOLEAN:
        return rule_words(c, "boolean", bools, 2);
    case JSON_SCHEMA_T_INTEGER:
        return non_negative(s) ? rule_uint(c) : rule_int(c);
    case JSON_SCHEMA_T_NUMBER:
        return non_negative(s) ? rule_unumber(c) : rule_number(c);
    case JSON_SCHEMA_T_STRING:
        return compile_string(c, s);
    case JSON_SCHEMA_T_ARRAY:
        return compile_array(c, s);
    case JSON_SCHEMA_T_OBJECT:
        return compile_object(c, s);
    }
    return fail(c, ERR_INVALID, "unknown type");
}

static int32_t compile_ref(struct jsc *c, const struct jval *s, const char *ref) {
    if (ref[0] != '#') return fail(c, ERR_UNSUPPORTED, "only local $ref (\"#...\") is supported");
    const struct jval *target = resolve_pointer(c->root, ref);
    if (!target) return fail(c, ERR_INVALID, "unresolvable $ref");
    for (size_t i = 0; i < c->n_refs; i++)
        if (c->refs[i].target == target) return c->refs[i].rule;
    if (c->n_refs == c->cap_refs) {
        size_t ncap = c->cap_refs ? c->cap_refs * 2 : 8;
        struct ref_memo *nr = mem_realloc(c->refs, ncap * sizeof(*nr));
        if (!nr) return fail(c, ERR_NOMEM, "out of memory");
        c->refs = nr;
        c->cap_refs = ncap;
    }
    int32_t r = grammar_rule_add(c->g, "ref");
    c->refs[c->n_refs].target = target;
    c->refs[c->n_refs].rule = r;
    c->n_refs++;
    char seg[300];
    snprintf(seg, sizeof(seg), "($ref %s)", ref);
    size_t old = path_push(c, seg);
    int32_t body = compile(c, target);
    path_pop(c, old);
    if (body == FAILED) return FAILED;
    grammar_alt_begin(c->g, r);
    grammar_alt_ref(c->g, body == NEVER ? rule_never(c) : body);
    grammar_alt_end(c->g);
    (void)s;
    return r;
}

static int32_t compile_inner(struct jsc *c, const struct jval *s) {
    if (s->type == JVAL_BOOL) return s->boolean ? rule_any(c, 0) : NEVER;
    if (s->type != JVAL_OBJECT)
        return fail(c, ERR_INVALID, "a schema must be an object or a boolean");
    const struct jval *ref = jval_get(s, "$ref");
    if (ref) {
        if (ref->type != JVAL_STRING) return fail(c, ERR_INVALID, "$ref must be a string");
        return compile_ref(c, s, ref->str);
    }
    const char *alt_key = "anyOf";
    const struct jval *any = jval_get(s, alt_key);
    if (!any) any = jval_get(s, alt_key = "oneOf");
    if (any) {
        if (any->type != JVAL_ARRAY) return fail(c, ERR_INVALID, "anyOf/oneOf must be an array");
        int32_t r = grammar_rule_add(c->g, alt_key);
        int n = 0;
        for (size_t i = 0; i < any->n; i++) {
            char seg[32];
            snprintf(seg, sizeof(seg), "%s/%zu", alt_key, i);
            size_t old = path_push(c, seg);
            int32_t b = compile(c, &any->items[i]);
            path_pop(c, old);
            if (b == FAILED) return FAILED;
            if (b == NEVER) continue;
            grammar_alt_begin(c->g, r);
            grammar_alt_ref(c->g, b);
            grammar_alt_end(c->g);
            n++;
        }
        if (n == 0) {
            grammar_alt_begin(c->g, r); /* keep the rule well-formed; nothing refers to it */
            grammar_alt_ref(c->g, rule_never(c));
            grammar_alt_end(c->g);
            return NEVER;
        }
        return r;
    }
    const struct jval *en = jval_get(s, "enum");
    if (en) {
        if (en->type != JVAL_ARRAY) return fail(c, ERR_INVALID, "enum must be an array");
        if (en->n == 0) return NEVER;
        const struct jval **vals = mem_alloc(en->n * sizeof(*vals));
        if (!vals) return fail(c, ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < en->n; i++) vals[i] = &en->items[i];
        int32_t r = literal_rule(c, vals, en->n);
        mem_free(vals);
        return r;
    }
    const struct jval *cn = jval_get(s, "const");
    if (cn) return literal_rule(c, &cn, 1);
    const struct jval *all = jval_get(s, "allOf");
    if (all && all->type != JVAL_ARRAY) return fail(c, ERR_INVALID, "allOf must be an array");
    unsigned bits = declared_types(s);
    const struct jval *t = jval_get(s, "type");
    if (t && !bits) {
        if (t->type == JVAL_STRING) return fail(c, ERR_INVALID, "unknown type");
        if (t->type != JVAL_ARRAY) return fail(c, ERR_INVALID, "type must be a string or array");
        if (t->n == 0) return NEVER;
        return fail(c, ERR_INVALID, "unknown type");
    }
    if (!bits && all && all->n > 0) {
        /* allOf without a type of its own: objects merge; otherwise the first part decides */
        unsigned tb = json_schema_types(c->root, s);
        if (tb == JSON_SCHEMA_T_OBJECT || has_any(s, OBJECT_KEYS)) return compile_object(c, s);
        size_t old = path_push(c, "allOf/0");
        int32_t r = compile(c, &all->items[0]);
        path_pop(c, old);
        return r;
    }
    if (!bits) {
        if (has_any(s, OBJECT_KEYS))
            bits = JSON_SCHEMA_T_OBJECT;
        else if (has_any(s, ARRAY_KEYS))
            bits = JSON_SCHEMA_T_ARRAY;
        else if (has_any(s, STRING_KEYS))
            bits = JSON_SCHEMA_T_STRING;
        else
            return rule_any(c, 0);
    }
    if (bits & JSON_SCHEMA_T_NUMBER) bits &= ~(unsigned)JSON_SCHEMA_T_INTEGER;
    int32_t parts[7];
    int n = 0;
    for (unsigned bit = 1; bit < 128; bit <<= 1) {
        if (!(bits & bit)) continue;
        int32_t r = compile_type(c, s, bit);
        if (r == FAILED) return FAILED;
        if (r != NEVER) parts[n++] = r;
    }
    if (n == 0) return NEVER;
    if (n == 1) return parts[0];
    int32_t r = grammar_rule_add(c->g, "types");
    for (int i = 0; i < n; i++) {
        grammar_alt_begin(c->g, r);
        grammar_alt_ref(c->g, parts[i]);
        grammar_alt_end(c->g);
    }
    return r;
}

static int32_t compile(struct jsc *c, const struct jval *s) {
    if (c->code) return FAILED;
    if (++c->depth > MAX_COMPILE_DEPTH) {
        c->depth--;
        return fail(c, ERR_UNSUPPORTED, "schema nested too deeply");
    }
    int32_t r = compile_inner(c, s);
    c->depth--;
    if (c->code) return FAILED;
    return r;
}

static void jsc_init(struct jsc *c, struct grammar *g, const struct jval *root, struct error *err) {
    memset(c, 0, sizeof(*c));
    c->g = g;
    c->root = root;
    c->err = err;
    c->ws = c->chr = c->esc = c->mb = c->str = c->num = c->unum = c->intg = c->uint = c->any =
        c->any_obj = -1;
}

int json_schema_compile(struct grammar *g, const struct jval *root, const struct jval *schema,
                        int32_t *rule, struct error *err) {
    struct jsc c;
    jsc_init(&c, g, root, err);
    int32_t r = compile(&c, schema);
    mem_free(c.refs);
    if (r == FAILED) return c.code;
    if (r == NEVER) return JSON_SCHEMA_NEVER;
    *rule = r;
    return 0;
}

int32_t json_schema_any_value(struct grammar *g, int object_only) {
    struct jsc c;
    jsc_init(&c, g, NULL, NULL);
    return rule_any(&c, object_only);
}

int json_schema_grammar(struct grammar **out, const char *schema_text, size_t len,
                        struct error *err) {
    *out = NULL;
    struct jval *schema = NULL;
    struct grammar *g = NULL;
    int rc = jval_parse(&schema, schema_text, len, err);
    if (rc) {
        error_prefix(err, "json schema");
        return rc == ERR_NOMEM ? rc : ERR_INVALID;
    }
    int32_t root;
    if ((rc = grammar_create(&g, err)) == 0 &&
        (rc = json_schema_compile(g, schema, schema, &root, err)) == JSON_SCHEMA_NEVER)
        rc = error_set(err, ERR_INVALID, "json schema: no value can match it");
    if (rc || (rc = grammar_finish(g, root, err))) {
        grammar_free(g);
        jval_free(schema);
        return rc;
    }
    jval_free(schema);
    *out = g;
    return 0;
}
