/* jinja_filters.c: Jinja2's builtin filters, tests and global functions (jinja2/filters.py,
 * jinja2/tests.py, jinja2/defaults.py), plus transformers' tojson, raise_exception and
 * strftime_now.
 *
 * Filters that return generators in Jinja (map, select, reject, selectattr, rejectattr,
 * unique, items, reverse, batch, slice) return lists here: iterating, joining, |list and
 * |first behave the same; only printing such a value unconverted differs. Random-valued and
 * HTML-only filters (random, urlize, urlencode, wordwrap, xmlattr, filesizeformat, pprint,
 * striptags) are not provided and fail as unknown filters when used.
 */
#include "jinja_internal.h"

#include "../base/mem.h"
#include "unicode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ============================================================================================
 * Argument binding
 * ============================================================================================
 * Python call rules for builtins: positionals in order, keywords by name; too many arguments or
 * an unknown keyword is an error, as Python's TypeError would be.
 */

int jinja_bind(struct jinja_render *st, uint32_t line, const char *fname,
               const struct jinja_args *args, const char *const *names, size_t n_names,
               struct tpl_value **out) {
    for (size_t i = 0; i < n_names; i++) out[i] = NULL;
    if (args->n_pos > n_names)
        return jinja_fail(st, line, ERR_INVALID, "%s() takes at most %zu argument(s) (%zu given)",
                          fname, n_names, args->n_pos);
    for (size_t i = 0; i < args->n_pos; i++) out[i] = args->pos[i];
    for (size_t k = 0; k < args->n_kw; k++) {
        size_t i = 0;
        for (; i < n_names; i++)
            if (strlen(names[i]) == args->kw[k].n &&
                memcmp(names[i], args->kw[k].name, args->kw[k].n) == 0)
                break;
        if (i == n_names)
            return jinja_fail(st, line, ERR_INVALID,
                              "%s() got an unexpected keyword argument '%.*s'", fname,
                              (int)args->kw[k].n, args->kw[k].name);
        if (out[i])
            return jinja_fail(st, line, ERR_INVALID, "%s() got multiple values for argument '%s'",
                              fname, names[i]);
        out[i] = args->kw[k].v;
    }
    return 0;
}

int jinja_arg_int(struct jinja_render *st, uint32_t line, struct tpl_value *v, int64_t dflt,
                  int64_t *out) {
    if (!v || v->kind == TPL_NONE) {
        *out = dflt;
        return 0;
    }
    if (v->kind == TPL_INT || v->kind == TPL_BOOL) {
        *out = v->u.i;
        return 0;
    }
    return jinja_fail(st, line, ERR_INVALID, "'%s' object cannot be interpreted as an integer",
                      tpl_type_name(v));
}

static int arg_bool(struct tpl_value *v) {
    return v && tpl_is_truthy(v);
}

static struct tpl_value *str_of(struct jinja_render *st, struct tpl_value *v) {
    return jinja_to_string(st, v);
}

/* ============================================================================================
 * Attribute paths (`attribute='a.b.0'`) and comparisons for sort/min/max/unique/groupby
 * ============================================================================================
 * Like Jinja's make_attrgetter, each dotted part is looked up with getitem semantics (digits
 * index). Sorting is a stable merge sort with Python ordering, so equal keys keep their order.
 */

/* Looks up a dotted attribute path with getitem semantics; integer parts index. */
static struct tpl_value *get_path(struct jinja_render *st, uint32_t line, struct tpl_value *item,
                                  struct tpl_value *attr, struct tpl_value *dflt) {
    if (!attr || attr->kind == TPL_NONE) return item;
    if (attr->kind == TPL_INT) return jinja_getitem(st, line, item, attr);
    if (attr->kind != TPL_STRING) {
        jinja_fail(st, line, ERR_INVALID, "attribute must be a string or an integer");
        return NULL;
    }
    const char *p = attr->u.s.p, *end = p + attr->u.s.n;
    while (item) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *part_end = dot ? dot : end;
        size_t n = (size_t)(part_end - p);
        int digits = n > 0;
        for (size_t i = 0; i < n; i++) digits &= p[i] >= '0' && p[i] <= '9';
        struct tpl_value *key =
            digits ? jinja_new_int(st, strtoll(p, NULL, 10)) : jinja_new_string(st, p, n);
        if (!key || !(item = jinja_getitem(st, line, item, key))) return NULL;
        if (dflt && item->kind == TPL_UNDEFINED) item = dflt;
        if (!dot) break;
        p = dot + 1;
    }
    return item;
}

struct sort_item {
    struct tpl_value *value; /* the element */
    struct tpl_value *key;   /* what it sorts by */
    size_t index;            /* stability */
};

struct sort_ctx {
    struct jinja_render *st;
    uint32_t line;
    int reverse;
    int failed;
};

static struct tpl_value *fold_case(struct jinja_render *st, struct tpl_value *v,
                                   int case_sensitive) {
    if (case_sensitive || v->kind != TPL_STRING) return v;
    return jinja_str_case(st, v, JINJA_CASE_LOWER);
}

static int compare_keys(struct sort_ctx *c, struct tpl_value *a, struct tpl_value *b) {
    int r;
    if (c->failed) return 0;
    if (jinja_charge(c->st, 1)) {
        c->failed = 1;
        return 0;
    }
    if (a->kind == TPL_UNDEFINED || b->kind == TPL_UNDEFINED) {
        jinja_undefined_error(c->st, c->line, a->kind == TPL_UNDEFINED ? a : b);
        c->failed = 1;
        return 0;
    }
    if (jinja_order(c->st, c->line, a, b, &r)) {
        c->failed = 1;
        return 0;
    }
    return r == 2 ? 0 : r;
}

/* Stable merge sort (Python's sort is stable and compares with <). */
static void merge_sort(struct sort_ctx *c, struct sort_item *v, struct sort_item *tmp, size_t n) {
    if (n < 2 || c->failed) return;
    size_t h = n / 2;
    merge_sort(c, v, tmp, h);
    merge_sort(c, v + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int cmp = compare_keys(c, v[j].key, v[i].key);
        if (c->reverse) cmp = -cmp;
        tmp[k++] = cmp < 0 ? v[j++] : v[i++];
    }
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof(*v));
}

/* Sorted copy of items by key (attribute path, case folding). Returns a list or NULL. */
static struct tpl_value *sorted(struct jinja_render *st, uint32_t line, struct tpl_value **items,
                                size_t n, struct tpl_value *attr, int case_sensitive, int reverse) {
    struct sort_item *v = tpl_arena_alloc(st->arena, (n + 1) * sizeof(*v));
    struct sort_item *tmp = tpl_arena_alloc(st->arena, (n + 1) * sizeof(*tmp));
    if (!v || !tmp) return jinja_oom(st);
    for (size_t i = 0; i < n; i++) {
        struct tpl_value *key;
        if (attr && attr->kind == TPL_STRING && memchr(attr->u.s.p, ',', attr->u.s.n)) {
            /* "age,name": a tuple of keys */
            size_t parts = 1;
            for (size_t k = 0; k < attr->u.s.n; k++) parts += attr->u.s.p[k] == ',';
            key = tpl_value_tuple(st->arena, parts);
            if (!key) return jinja_oom(st);
            const char *p = attr->u.s.p, *end = p + attr->u.s.n;
            for (size_t k = 0; k < parts; k++) {
                const char *comma = memchr(p, ',', (size_t)(end - p));
                const char *pe = comma ? comma : end;
                struct tpl_value *name = jinja_new_string(st, p, (size_t)(pe - p)), *x;
                if (!name || !(x = get_path(st, line, items[i], name, NULL)) ||
                    !(x = fold_case(st, x, case_sensitive)))
                    return NULL;
                key->u.arr->items[k] = x;
                p = pe + 1;
            }
        } else {
            if (!(key = get_path(st, line, items[i], attr, NULL)) ||
                !(key = fold_case(st, key, case_sensitive)))
                return NULL;
        }
        v[i].value = items[i];
        v[i].key = key;
        v[i].index = i;
    }
    struct sort_ctx c = {.st = st, .line = line, .reverse = reverse};
    merge_sort(&c, v, tmp, n);
    if (c.failed) return NULL;
    struct tpl_value *out = tpl_value_tuple(st->arena, n);
    if (!out) return jinja_oom(st);
    out->flags = 0;
    for (size_t i = 0; i < n; i++) out->u.arr->items[i] = v[i].value;
    return out;
}

struct tpl_value *jinja_new_list(struct jinja_render *st, size_t n) {
    struct tpl_value *l = tpl_value_tuple(st->arena, n);
    if (!l) return jinja_oom(st);
    l->flags = 0;
    l->u.arr->n = 0;
    return l;
}

static struct tpl_value *undef_hint(struct jinja_render *st, const char *hint) {
    struct tpl_value *u = tpl_value_undef(st->arena, TPL_UNDEF_HINT, hint, strlen(hint), NULL);
    return u ? u : jinja_oom(st);
}

/* Applies the test named by args (select/reject style: name, then its arguments), or plain
 * truthiness when no name is given. */
static int apply_named_test(struct jinja_render *st, uint32_t line, struct tpl_value *item,
                            struct tpl_value *name, struct tpl_value **rest, size_t n_rest,
                            int *out) {
    if (!name) {
        *out = tpl_is_truthy(item);
        return 0;
    }
    if (name->kind != TPL_STRING)
        return jinja_fail(st, line, ERR_INVALID, "test name must be a string");
    int id = jinja_test_lookup(name->u.s.p, name->u.s.n);
    if (id < 0)
        return jinja_fail(st, line, ERR_INVALID, "No test named '%.*s'", (int)name->u.s.n,
                          name->u.s.p);
    struct jinja_args targs = {.pos = rest, .n_pos = n_rest};
    return jinja_test_apply(st, line, id, item, &targs, out);
}

/* ============================================================================================
 * Filters
 * ============================================================================================
 * One switch over the filter id; names (with the aliases d, e, count) resolve to ids when the
 * template is parsed.
 */

enum filter_id {
    F_ABS,
    F_ATTR,
    F_BATCH,
    F_CAPITALIZE,
    F_CENTER,
    F_COUNT,
    F_DEFAULT,
    F_DICTSORT,
    F_ESCAPE,
    F_FIRST,
    F_FLOAT,
    F_FORCEESCAPE,
    F_FORMAT,
    F_GROUPBY,
    F_INDENT,
    F_INT,
    F_ITEMS,
    F_JOIN,
    F_LAST,
    F_LENGTH,
    F_LIST,
    F_LOWER,
    F_MAP,
    F_MAX,
    F_MIN,
    F_REJECT,
    F_REJECTATTR,
    F_REPLACE,
    F_REVERSE,
    F_ROUND,
    F_SAFE,
    F_SELECT,
    F_SELECTATTR,
    F_SLICE,
    F_SORT,
    F_STRING,
    F_SUM,
    F_TITLE,
    F_TOJSON,
    F_TRIM,
    F_TRUNCATE,
    F_UNIQUE,
    F_UPPER,
    F_WORDCOUNT,
};

static const struct {
    const char *name;
    uint8_t id;
} k_filters[] = {
    {"abs", F_ABS},
    {"attr", F_ATTR},
    {"batch", F_BATCH},
    {"capitalize", F_CAPITALIZE},
    {"center", F_CENTER},
    {"count", F_COUNT},
    {"d", F_DEFAULT},
    {"default", F_DEFAULT},
    {"dictsort", F_DICTSORT},
    {"e", F_ESCAPE},
    {"escape", F_ESCAPE},
    {"first", F_FIRST},
    {"float", F_FLOAT},
    {"forceescape", F_FORCEESCAPE},
    {"format", F_FORMAT},
    {"groupby", F_GROUPBY},
    {"indent", F_INDENT},
    {"int", F_INT},
    {"items", F_ITEMS},
    {"join", F_JOIN},
    {"last", F_LAST},
    {"length", F_LENGTH},
    {"list", F_LIST},
    {"lower", F_LOWER},
    {"map", F_MAP},
    {"max", F_MAX},
    {"min", F_MIN},
    {"reject", F_REJECT},
    {"rejectattr", F_REJECTATTR},
    {"replace", F_REPLACE},
    {"reverse", F_REVERSE},
    {"round", F_ROUND},
    {"safe", F_SAFE},
    {"select", F_SELECT},
    {"selectattr", F_SELECTATTR},
    {"slice", F_SLICE},
    {"sort", F_SORT},
    {"string", F_STRING},
    {"sum", F_SUM},
    {"title", F_TITLE},
    {"tojson", F_TOJSON},
    {"trim", F_TRIM},
    {"truncate", F_TRUNCATE},
    {"unique", F_UNIQUE},
    {"upper", F_UPPER},
    {"wordcount", F_WORDCOUNT},
};

int jinja_filter_lookup(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof(k_filters) / sizeof(k_filters[0]); i++)
        if (strlen(k_filters[i].name) == n && memcmp(k_filters[i].name, name, n) == 0)
            return (int)i;
    return -1;
}

/* Python int(str, base) / float(str), the way |int and |float try them. */
static int parse_py_int(const char *s, size_t n, int base, int64_t *out) {
    size_t i = 0;
    while (i < n && jinja_is_pyspace((unsigned char)s[i])) i++;
    while (n > i && jinja_is_pyspace((unsigned char)s[n - 1])) n--;
    int neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    if (i + 1 < n && s[i] == '0') {
        char c = (char)(s[i + 1] | 0x20);
        int b = c == 'x' ? 16 : c == 'o' ? 8 : c == 'b' ? 2 : 0;
        if (b && (base == b || base == 0)) {
            base = b;
            i += 2;
            if (i < n && s[i] == '_') i++;
        }
    }
    if (base == 0) base = 10;
    if (i >= n) return -1;
    uint64_t v = 0;
    int prev_us = 1;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '_') {
            if (prev_us) return -1;
            prev_us = 1;
            continue;
        }
        int d = c >= '0' && c <= '9'                     ? c - '0'
                : (c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? (c | 0x20) - 'a' + 10
                                                         : 99;
        if (d >= base) return -1;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base) return -2;
        v = v * (uint64_t)base + (uint64_t)d;
        prev_us = 0;
    }
    if (prev_us) return -1;
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg) return -2;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int parse_py_float(const char *s, size_t n, double *out) {
    char tmp[128];
    size_t i = 0, k = 0;
    while (i < n && jinja_is_pyspace((unsigned char)s[i])) i++;
    while (n > i && jinja_is_pyspace((unsigned char)s[n - 1])) n--;
    if (i >= n || n - i >= sizeof(tmp)) return -1;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '_') {
            if (k == 0 || i + 1 >= n || !(tmp[k - 1] >= '0' && tmp[k - 1] <= '9') ||
                !(s[i + 1] >= '0' && s[i + 1] <= '9'))
                return -1;
            continue;
        }
        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' ||
              (c | 0x20) == 'i' || (c | 0x20) == 'n' || (c | 0x20) == 'f' || (c | 0x20) == 't' ||
              (c | 0x20) == 'y' || (c | 0x20) == 'a'))
            return -1;
        tmp[k++] = c;
    }
    tmp[k] = 0;
    /* strtod also takes hex floats and "nan(...)", which Python does not */
    const char *t = tmp + (tmp[0] == '+' || tmp[0] == '-');
    int word = (t[0] | 0x20) == 'i' || (t[0] | 0x20) == 'n';
    if (word && strcasecmp(t, "inf") && strcasecmp(t, "infinity") && strcasecmp(t, "nan"))
        return -1;
    if (!word && (strchr(tmp, 'x') || strchr(tmp, 'X'))) return -1;
    char *end;
    *out = strtod(tmp, &end);
    return *end ? -1 : 0;
}

static struct tpl_value *f_int(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                               struct tpl_value *dflt, struct tpl_value *base_v) {
    int64_t base = 10, r;
    if (jinja_arg_int(st, line, base_v, 10, &base)) return NULL;
    switch (v->kind) {
    case TPL_UNDEFINED:
        return jinja_undefined_error(st, line, v);
    case TPL_BOOL:
    case TPL_INT:
        return jinja_new_int(st, v->u.i);
    case TPL_FLOAT:
        if (isnan(v->u.f) || isinf(v->u.f)) {
            jinja_fail(st, line, ERR_INVALID, "cannot convert float %s to integer",
                       isnan(v->u.f) ? "NaN" : "infinity");
            return NULL;
        }
        if (!(fabs(v->u.f) < 9.2233720368547758e18)) {
            jinja_fail(st, line, ERR_UNSUPPORTED, "integer beyond 64 bits");
            return NULL;
        }
        return jinja_new_int(st, (int64_t)v->u.f);
    case TPL_STRING: {
        int rc = parse_py_int(v->u.s.p, v->u.s.n, (int)base, &r);
        if (rc == 0) return jinja_new_int(st, r);
        if (rc == -2) {
            jinja_fail(st, line, ERR_UNSUPPORTED, "integer beyond 64 bits");
            return NULL;
        }
        double d;
        if (parse_py_float(v->u.s.p, v->u.s.n, &d) == 0) {
            struct tpl_value fv = {.kind = TPL_FLOAT, .u.f = d};
            return f_int(st, line, &fv, dflt, NULL);
        }
        break;
    }
    default:
        break;
    }
    return dflt ? dflt : jinja_new_int(st, 0);
}

static struct tpl_value *f_float(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                 struct tpl_value *dflt) {
    double d;
    switch (v->kind) {
    case TPL_UNDEFINED:
        return jinja_undefined_error(st, line, v);
    case TPL_BOOL:
    case TPL_INT:
        return jinja_new_float(st, (double)v->u.i);
    case TPL_FLOAT:
        return v;
    case TPL_STRING:
        if (parse_py_float(v->u.s.p, v->u.s.n, &d) == 0) return jinja_new_float(st, d);
        break;
    default:
        break;
    }
    return dflt ? dflt : jinja_new_float(st, 0.0);
}

/* Python round(x, n) for floats: correctly rounded, ties to even, via printf. */
static double py_round(double x, int64_t ndigits) {
    if (isnan(x) || isinf(x)) return x;
    if (ndigits > 300) return x;
    if (ndigits < -308) return 0.0 * x;
    char tmp[512];
    if (ndigits >= 0) {
        snprintf(tmp, sizeof(tmp), "%.*f", (int)ndigits, x);
        return strtod(tmp, NULL);
    }
    double p = pow(10.0, (double)-ndigits), y = x / p, r = nearbyint(y);
    return r * p;
}

static struct tpl_value *f_round(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                 struct jinja_args *args) {
    static const char *const names[] = {"precision", "method"};
    struct tpl_value *a[2];
    int64_t prec = 0;
    if (jinja_bind(st, line, "round", args, names, 2, a) || jinja_arg_int(st, line, a[0], 0, &prec))
        return NULL;
    const char *method = "common";
    if (a[1]) {
        if (a[1]->kind != TPL_STRING) {
            jinja_fail(st, line, ERR_INVALID, "method must be common, ceil or floor");
            return NULL;
        }
        method = a[1]->u.s.p;
    }
    int common = strcmp(method, "common") == 0;
    if (!common && strcmp(method, "ceil") && strcmp(method, "floor")) {
        jinja_fail(st, line, ERR_INVALID, "method must be common, ceil or floor");
        return NULL;
    }
    if (v->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, v);
    if (!tpl_is_number(v)) {
        jinja_fail(st, line, ERR_INVALID, "type %s doesn't define __round__ method",
                   tpl_type_name(v));
        return NULL;
    }
    if (common) {
        if (v->kind != TPL_FLOAT) {
            if (prec >= 0) return jinja_new_int(st, v->u.i);
            struct tpl_value fv = {.kind = TPL_FLOAT, .u.f = (double)v->u.i};
            return jinja_new_int(st, (int64_t)py_round(fv.u.f, prec));
        }
        return jinja_new_float(st, py_round(v->u.f, prec));
    }
    double scale = pow(10.0, (double)prec), x = tpl_to_double(v) * scale;
    x = method[0] == 'c' ? ceil(x) : floor(x);
    return jinja_new_float(st, x / scale);
}

static struct tpl_value *f_tojson(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                  struct jinja_args *args) {
    static const char *const names[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    struct tpl_value *a[4];
    if (jinja_bind(st, line, "tojson", args, names, 4, a)) return NULL;
    struct tpl_json_opts o = {.item_sep = ", ",
                              .item_sep_n = 2,
                              .key_sep = ": ",
                              .key_sep_n = 2,
                              .sort_keys = arg_bool(a[3])};
    char spaces[64];
    if (a[1] && a[1]->kind != TPL_NONE) {
        if (a[1]->kind == TPL_STRING) {
            o.indent = a[1]->u.s.p;
            o.indent_n = a[1]->u.s.n;
        } else if (a[1]->kind == TPL_INT || a[1]->kind == TPL_BOOL) {
            int64_t k = a[1]->u.i < 0 ? 0 : a[1]->u.i > 63 ? 63 : a[1]->u.i;
            memset(spaces, ' ', (size_t)k);
            spaces[k] = 0;
            o.indent = spaces;
            o.indent_n = (size_t)k;
        } else {
            jinja_fail(st, line, ERR_INVALID, "tojson: indent must be an int or a string");
            return NULL;
        }
        o.item_sep = ",";
        o.item_sep_n = 1;
    }
    if (a[2] && a[2]->kind != TPL_NONE) {
        if (a[2]->kind != TPL_ARRAY || a[2]->u.arr->n != 2 ||
            a[2]->u.arr->items[0]->kind != TPL_STRING ||
            a[2]->u.arr->items[1]->kind != TPL_STRING) {
            jinja_fail(st, line, ERR_INVALID, "tojson: separators must be a pair of strings");
            return NULL;
        }
        o.item_sep = a[2]->u.arr->items[0]->u.s.p;
        o.item_sep_n = a[2]->u.arr->items[0]->u.s.n;
        o.key_sep = a[2]->u.arr->items[1]->u.s.p;
        o.key_sep_n = a[2]->u.arr->items[1]->u.s.n;
    }
    struct buf b;
    struct error e = {0};
    buf_init(&b);
    if (tpl_value_json(&b, v, &o, &e) || jinja_charge(st, b.len >> 8)) {
        buf_free(&b);
        if (e.code) jinja_fail(st, line, e.code, "%s", e.msg);
        return NULL;
    }
    if (arg_bool(a[0])) { /* ensure_ascii: \uXXXX (surrogate pairs above the BMP) */
        struct buf t;
        buf_init(&t);
        size_t i = 0;
        while (i < b.len) {
            size_t start = i;
            uint32_t c = jinja_utf8_next(b.data, b.len, &i);
            if (c < 0x80) {
                buf_append(&t, b.data + start, 1);
            } else if (c < 0x10000) {
                buf_printf(&t, "\\u%04x", c);
            } else {
                c -= 0x10000;
                buf_printf(&t, "\\u%04x\\u%04x", 0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
            }
        }
        buf_free(&b);
        b = t;
    }
    return jinja_buf_to_string(st, &b);
}

static struct tpl_value *f_indent(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                  struct jinja_args *args) {
    static const char *const names[] = {"width", "first", "blank"};
    struct tpl_value *a[3], *s;
    if (jinja_bind(st, line, "indent", args, names, 3, a)) return NULL;
    if (v->kind != TPL_STRING) { /* Jinja appends "\n" to the value itself */
        if (v->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, v);
        jinja_fail(st, line, ERR_INVALID, "unsupported operand type(s) for +=: '%s' and 'str'",
                   tpl_type_name(v));
        return NULL;
    }
    s = v;
    struct buf ind, out;
    buf_init(&ind);
    buf_init(&out);
    if (a[0] && a[0]->kind == TPL_STRING) {
        buf_append(&ind, a[0]->u.s.p, a[0]->u.s.n);
    } else {
        int64_t w = 0;
        if (jinja_arg_int(st, line, a[0], 4, &w)) return NULL;
        for (int64_t k = 0; k < w && k < 4096; k++) buf_append_char(&ind, ' ');
    }
    /* s + "\n", then splitlines(); lines joined with "\n", indenting per first/blank */
    struct tpl_value *nl = jinja_new_string(st, "\n", 1), *lines;
    struct tpl_value *sn = nl ? jinja_binop(st, line, OP_ADD, s, nl) : NULL;
    struct tpl_value *fn_args[1];
    struct jinja_args sa = {.pos = fn_args, .n_pos = 0};
    struct tpl_value *m = sn ? jinja_method_lookup(st, sn, "splitlines", 10) : NULL;
    if (!m || !(lines = jinja_method_call(st, line, m->u.fn, &sa))) {
        buf_free(&ind);
        return NULL;
    }
    int blank = arg_bool(a[2]), first = arg_bool(a[1]);
    const char *ip = ind.data ? ind.data : "";
    for (size_t i = 0; i < lines->u.arr->n; i++) {
        struct tpl_value *l = lines->u.arr->items[i];
        if (i) buf_append_char(&out, '\n');
        if ((i > 0 && (blank || l->u.s.n)) || (i == 0 && first)) buf_append(&out, ip, ind.len);
        buf_append(&out, l->u.s.p, l->u.s.n);
    }
    buf_free(&ind);
    return jinja_buf_to_string(st, &out);
}

static struct tpl_value *f_truncate(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                    struct jinja_args *args) {
    static const char *const names[] = {"length", "killwords", "end", "leeway"};
    struct tpl_value *a[4], *s, *end;
    int64_t length = 0, leeway = 0;
    if (jinja_bind(st, line, "truncate", args, names, 4, a) ||
        jinja_arg_int(st, line, a[0], 255, &length) || jinja_arg_int(st, line, a[3], 5, &leeway))
        return NULL;
    if (v->kind != TPL_STRING) { /* Jinja takes len() of the value itself */
        int64_t len = v->kind == TPL_UNDEFINED                          ? 0
                      : v->kind == TPL_ARRAY && !(v->flags & TPL_F_GEN) ? (int64_t)v->u.arr->n
                      : v->kind == TPL_OBJECT                           ? (int64_t)v->u.obj->n
                                                                        : -1;
        if (len >= 0 && len <= length + leeway) return v;
        jinja_fail(st, line, ERR_INVALID,
                   len < 0 ? "object of type '%s' has no len()"
                           : "'%s' object has no attribute 'rsplit'",
                   tpl_type_name(v));
        return NULL;
    }
    s = v;
    end = a[2] ? str_of(st, a[2]) : jinja_new_string(st, "...", 3);
    if (!end) return NULL;
    int64_t end_len = (int64_t)tpl_string_len(end), len = (int64_t)tpl_string_len(s);
    if (length < end_len || leeway < 0) {
        jinja_fail(st, line, ERR_INVALID, "expected length >= %lld, got %lld", (long long)end_len,
                   (long long)length);
        return NULL;
    }
    if (len <= length + leeway) return s;
    struct tpl_value *head = jinja_str_slice(st, s, 0, 1, (size_t)(length - end_len));
    if (!head) return NULL;
    if (!arg_bool(a[1])) { /* rsplit(" ", 1)[0] */
        const char *sp = NULL;
        for (size_t i = head->u.s.n; i-- > 0;)
            if (head->u.s.p[i] == ' ') {
                sp = head->u.s.p + i;
                break;
            }
        if (sp && !(head = jinja_new_string(st, head->u.s.p, (size_t)(sp - head->u.s.p))))
            return NULL;
    }
    return jinja_binop(st, line, OP_ADD, head, end);
}

static struct tpl_value *f_join(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                struct jinja_args *args) {
    static const char *const names[] = {"d", "attribute"};
    struct tpl_value *a[2], **items, *sep = NULL;
    size_t n;
    if (jinja_bind(st, line, "join", args, names, 2, a)) return NULL;
    if (a[0] && !(sep = str_of(st, a[0]))) return NULL;
    if (jinja_iterate(st, line, v, &items, &n) || jinja_charge(st, n / 16)) return NULL;
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        struct tpl_value *x = get_path(st, line, items[i], a[1], NULL);
        if (!x) {
            buf_free(&b);
            return NULL;
        }
        if (i && sep) buf_append(&b, sep->u.s.p, sep->u.s.n);
        if (tpl_value_str(&b, x)) {
            buf_free(&b);
            jinja_fail(st, line, ERR_RANGE, "value nested too deeply to print");
            return NULL;
        }
        if (b.len > st->max_output) break;
    }
    return jinja_buf_to_string(st, &b);
}

/* select/reject/selectattr/rejectattr/map share the iteration. */
static struct tpl_value *f_select(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                  struct jinja_args *args, int by_attr, int keep) {
    struct tpl_value **items;
    size_t n;
    if (jinja_iterate(st, line, v, &items, &n)) return NULL;
    struct tpl_value *attr = NULL, *test = NULL, **rest = NULL;
    size_t n_rest = 0, p = 0;
    if (by_attr) {
        if (args->n_pos < 1) {
            jinja_fail(st, line, ERR_INVALID, "Missing parameter for attribute name");
            return NULL;
        }
        attr = args->pos[p++];
    }
    if (p < args->n_pos) test = args->pos[p++];
    rest = p < args->n_pos ? args->pos + p : NULL;
    n_rest = args->n_pos - p;
    if (args->n_kw) {
        jinja_fail(st, line, ERR_INVALID, "unexpected keyword argument");
        return NULL;
    }
    struct tpl_value *out = jinja_new_list(st, n);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        struct tpl_value *x = by_attr ? get_path(st, line, items[i], attr, NULL) : items[i];
        int ok;
        if (!x || jinja_charge(st, 1) || apply_named_test(st, line, x, test, rest, n_rest, &ok))
            return NULL;
        if (ok == keep) out->u.arr->items[out->u.arr->n++] = items[i];
    }
    return out;
}

static struct tpl_value *f_map(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                               struct jinja_args *args) {
    struct tpl_value **items;
    size_t n;
    if (jinja_iterate(st, line, v, &items, &n)) return NULL;
    struct tpl_value *attr = NULL, *dflt = NULL;
    for (size_t k = 0; k < args->n_kw; k++) {
        if (args->kw[k].n == 9 && memcmp(args->kw[k].name, "attribute", 9) == 0)
            attr = args->kw[k].v;
        else if (args->kw[k].n == 7 && memcmp(args->kw[k].name, "default", 7) == 0)
            dflt = args->kw[k].v;
    }
    int fid = -1;
    struct jinja_args fargs = {0};
    if (!attr) {
        if (!args->n_pos || args->pos[0]->kind != TPL_STRING) {
            jinja_fail(st, line, ERR_INVALID, "map requires a filter argument");
            return NULL;
        }
        fid = jinja_filter_lookup(args->pos[0]->u.s.p, args->pos[0]->u.s.n);
        if (fid < 0) {
            jinja_fail(st, line, ERR_INVALID, "No filter named '%.*s'", (int)args->pos[0]->u.s.n,
                       args->pos[0]->u.s.p);
            return NULL;
        }
        fargs.pos = args->n_pos > 1 ? args->pos + 1 : NULL;
        fargs.n_pos = args->n_pos - 1;
        fargs.kw = args->kw;
        fargs.n_kw = args->n_kw;
    }
    struct tpl_value *out = jinja_new_list(st, n);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        struct tpl_value *x =
            attr ? get_path(st, line, items[i], attr, dflt)
                 : (jinja_charge(st, 1) ? NULL
                                        : jinja_filter_apply(st, line, fid, items[i], &fargs));
        if (!x) return NULL;
        out->u.arr->items[out->u.arr->n++] = x;
    }
    return out;
}

static struct tpl_value *f_minmax(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                  struct jinja_args *args, int want_max) {
    static const char *const names[] = {"case_sensitive", "attribute"};
    struct tpl_value *a[2], **items;
    size_t n;
    if (jinja_bind(st, line, want_max ? "max" : "min", args, names, 2, a) ||
        jinja_iterate(st, line, v, &items, &n))
        return NULL;
    if (n == 0) return undef_hint(st, "No aggregated item, sequence was empty.");
    struct tpl_value *best = items[0], *best_key = NULL;
    struct sort_ctx c = {.st = st, .line = line};
    for (size_t i = 0; i < n; i++) {
        struct tpl_value *k = get_path(st, line, items[i], a[1], NULL);
        if (!k || !(k = fold_case(st, k, arg_bool(a[0])))) return NULL;
        if (i == 0) {
            best_key = k;
            continue;
        }
        int cmp = compare_keys(&c, k, best_key);
        if (c.failed) return NULL;
        if (want_max ? cmp > 0 : cmp < 0) {
            best = items[i];
            best_key = k;
        }
    }
    return best;
}

static struct tpl_value *f_unique(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                  struct jinja_args *args) {
    static const char *const names[] = {"case_sensitive", "attribute"};
    struct tpl_value *a[2], **items;
    size_t n;
    if (jinja_bind(st, line, "unique", args, names, 2, a) || jinja_iterate(st, line, v, &items, &n))
        return NULL;
    struct tpl_value *out = jinja_new_list(st, n),
                     **keys = tpl_arena_alloc(st->arena, (n + 1) * sizeof(*keys));
    if (!out || !keys) return jinja_oom(st);
    size_t n_keys = 0;
    for (size_t i = 0; i < n; i++) {
        struct tpl_value *k = get_path(st, line, items[i], a[1], NULL);
        if (!k || !(k = fold_case(st, k, arg_bool(a[0]))) || jinja_charge(st, 1 + n_keys / 32))
            return NULL;
        size_t j = 0;
        int eq = 0;
        while (j < n_keys && (eq = jinja_equal(st, keys[j], k)) == 0) j++;
        if (eq < 0) return NULL;
        if (j < n_keys) continue;
        keys[n_keys++] = k;
        out->u.arr->items[out->u.arr->n++] = items[i];
    }
    return out;
}

static struct tpl_value *f_groupby(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                   struct jinja_args *args) {
    static const char *const names[] = {"attribute", "default", "case_sensitive"};
    struct tpl_value *a[3], **items;
    size_t n;
    if (jinja_bind(st, line, "groupby", args, names, 3, a) ||
        jinja_iterate(st, line, v, &items, &n))
        return NULL;
    int cs = arg_bool(a[2]);
    struct tpl_value *sorted_v = sorted(st, line, items, n, a[0], cs, 0);
    if (!sorted_v) return NULL;
    struct tpl_value *out = jinja_new_list(st, n);
    if (!out) return NULL;
    struct tpl_value *group = NULL, *group_key = NULL;
    for (size_t i = 0; i < n; i++) {
        struct tpl_value *item = sorted_v->u.arr->items[i];
        struct tpl_value *k = get_path(st, line, item, a[0], a[1]), *fk;
        if (!k || !(fk = fold_case(st, k, cs))) return NULL;
        int same = group ? jinja_equal(st, group_key, fk) : 0;
        if (same < 0) return NULL;
        if (!same) {
            struct tpl_value *pair = tpl_value_tuple(st->arena, 2);
            if (!pair || !(group = jinja_new_list(st, n - i))) return jinja_oom(st);
            pair->flags |= TPL_F_GROUP;
            pair->u.arr->items[0] = k;
            pair->u.arr->items[1] = group;
            out->u.arr->items[out->u.arr->n++] = pair;
            group_key = fk;
        }
        group->u.arr->items[group->u.arr->n++] = item;
    }
    return out;
}

static struct tpl_value *f_batch_slice(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                       struct jinja_args *args, int is_slice) {
    static const char *const names[] = {"linecount", "fill_with"};
    struct tpl_value *a[2], **items;
    size_t n;
    int64_t k = 0;
    if (jinja_bind(st, line, is_slice ? "slice" : "batch", args, names, 2, a) ||
        jinja_arg_int(st, line, a[0], 0, &k) || jinja_iterate(st, line, v, &items, &n))
        return NULL;
    if (!a[0] || k <= 0 || k > (1 << 20)) {
        jinja_fail(st, line, ERR_INVALID, "%s needs a positive count",
                   is_slice ? "slice" : "batch");
        return NULL;
    }
    struct tpl_value *fill = a[1] && a[1]->kind != TPL_NONE ? a[1] : NULL;
    struct tpl_value *out = tpl_value_array(st->arena);
    if (!out) return jinja_oom(st);
    if (!is_slice) {
        for (size_t i = 0; i < n; i += (size_t)k) {
            struct tpl_value *row = jinja_new_list(st, (size_t)k);
            if (!row) return NULL;
            for (size_t j = i; j < n && j < i + (size_t)k; j++)
                row->u.arr->items[row->u.arr->n++] = items[j];
            if (fill)
                while (row->u.arr->n < (size_t)k) row->u.arr->items[row->u.arr->n++] = fill;
            if (tpl_array_push(st->arena, out, row)) return jinja_oom(st);
        }
        return out;
    }
    size_t per = n / (size_t)k, extra = n % (size_t)k, offset = 0;
    if (jinja_charge(st, (uint64_t)k)) return NULL;
    for (size_t s = 0; s < (size_t)k; s++) {
        size_t start = offset + s * per;
        if (s < extra) offset++;
        size_t end = offset + (s + 1) * per;
        struct tpl_value *col = jinja_new_list(st, end - start + 1);
        if (!col) return NULL;
        for (size_t j = start; j < end; j++) col->u.arr->items[col->u.arr->n++] = items[j];
        if (fill && s >= extra) col->u.arr->items[col->u.arr->n++] = fill;
        if (tpl_array_push(st->arena, out, col)) return jinja_oom(st);
    }
    return out;
}

static struct tpl_value *f_sum(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                               struct jinja_args *args) {
    static const char *const names[] = {"attribute", "start"};
    struct tpl_value *a[2], **items;
    size_t n;
    if (jinja_bind(st, line, "sum", args, names, 2, a) || jinja_iterate(st, line, v, &items, &n))
        return NULL;
    struct tpl_value *acc = a[1] ? a[1] : jinja_new_int(st, 0);
    if (!acc) return NULL;
    if (acc->kind == TPL_STRING) {
        jinja_fail(st, line, ERR_INVALID, "sum() can't sum strings [use ''.join(seq) instead]");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        struct tpl_value *x = get_path(st, line, items[i], a[0], NULL);
        if (!x || jinja_charge(st, 1) || !(acc = jinja_binop(st, line, OP_ADD, acc, x)))
            return NULL;
    }
    return acc;
}

static struct tpl_value *f_default(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                                   struct jinja_args *args) {
    static const char *const names[] = {"default_value", "boolean"};
    struct tpl_value *a[2];
    if (jinja_bind(st, line, "default", args, names, 2, a)) return NULL;
    if (v->kind == TPL_UNDEFINED || (arg_bool(a[1]) && !tpl_is_truthy(v)))
        return a[0] ? a[0] : jinja_new_string(st, "", 0);
    return v;
}

static struct tpl_value *f_length(struct jinja_render *st, uint32_t line, struct tpl_value *v) {
    switch (v->kind) {
    case TPL_UNDEFINED:
        return jinja_new_int(st, 0);
    case TPL_STRING:
        return jinja_new_int(st, (int64_t)tpl_string_len(v));
    case TPL_ARRAY:
        if (v->flags & TPL_F_GEN) break; /* a generator has no len() */
        return jinja_new_int(st, (int64_t)v->u.arr->n);
    case TPL_OBJECT:
        return jinja_new_int(st, (int64_t)v->u.obj->n);
    default:
        break;
    }
    jinja_fail(st, line, ERR_INVALID, "object of type '%s' has no len()", tpl_type_name(v));
    return NULL;
}

static struct tpl_value *filter_apply(struct jinja_render *st, uint32_t line, int idx,
                                      struct tpl_value *v, struct jinja_args *args);

/* Filters whose Jinja implementation yields return a generator; we keep the list and mark it,
 * so truth, len() and printing behave like the generator. */
struct tpl_value *jinja_filter_apply(struct jinja_render *st, uint32_t line, int idx,
                                     struct tpl_value *v, struct jinja_args *args) {
    if (jinja_charge(st, jinja_weight(v))) return NULL;
    struct tpl_value *r = filter_apply(st, line, idx, v, args);
    int id = k_filters[idx].id;
    int yields = id == F_MAP || id == F_SELECT || id == F_REJECT || id == F_SELECTATTR ||
                 id == F_REJECTATTR || id == F_UNIQUE || id == F_BATCH || id == F_SLICE ||
                 id == F_ITEMS ||
                 (id == F_REVERSE && v->kind != TPL_STRING && !(v->flags & TPL_F_GEN));
    if (r && yields && r->kind == TPL_ARRAY && r != v) r->flags |= TPL_F_GEN;
    return r;
}

static struct tpl_value *filter_apply(struct jinja_render *st, uint32_t line, int idx,
                                      struct tpl_value *v, struct jinja_args *args) {
    int id = k_filters[idx].id;
    const char *fname = k_filters[idx].name;
    struct tpl_value *a[4], *s, **items;
    size_t n;
    switch (id) {
    case F_ABS:
        if (v->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, v);
        if (v->kind == TPL_FLOAT) return jinja_new_float(st, fabs(v->u.f));
        if (v->kind == TPL_INT || v->kind == TPL_BOOL) {
            if (v->u.i == INT64_MIN) {
                jinja_fail(st, line, ERR_UNSUPPORTED, "integer beyond 64 bits");
                return NULL;
            }
            return jinja_new_int(st, v->u.i < 0 ? -v->u.i : v->u.i);
        }
        jinja_fail(st, line, ERR_INVALID, "bad operand type for abs(): '%s'", tpl_type_name(v));
        return NULL;
    case F_ATTR: {
        static const char *const names[] = {"name"};
        if (jinja_bind(st, line, fname, args, names, 1, a)) return NULL;
        if (!a[0] || a[0]->kind != TPL_STRING) {
            jinja_fail(st, line, ERR_INVALID, "attr() needs an attribute name");
            return NULL;
        }
        if (v->kind == TPL_NAMESPACE || v->kind == TPL_LOOP || v->kind == TPL_UNDEFINED)
            return jinja_getattr(st, line, v, a[0]->u.s.p, a[0]->u.s.n);
        struct tpl_value *m = jinja_method_lookup(st, v, a[0]->u.s.p, a[0]->u.s.n);
        if (m || st->code) return m;
        return undef_hint(st, "no such attribute");
    }
    case F_BATCH:
        return f_batch_slice(st, line, v, args, 0);
    case F_SLICE:
        return f_batch_slice(st, line, v, args, 1);
    case F_CAPITALIZE:
        if (!(s = str_of(st, v)) || !(s = jinja_str_case(st, s, JINJA_CASE_LOWER))) return NULL;
        return jinja_str_case(st, s, JINJA_CASE_CAPITALIZE);
    case F_CENTER: {
        static const char *const names[] = {"width"};
        if (jinja_bind(st, line, fname, args, names, 1, a) || !(s = str_of(st, v))) return NULL;
        struct tpl_value *w = a[0] ? a[0] : jinja_new_int(st, 80);
        struct tpl_value *m = w ? jinja_method_lookup(st, s, "center", 6) : NULL;
        struct jinja_args ca = {.pos = &w, .n_pos = 1};
        return m ? jinja_method_call(st, line, m->u.fn, &ca) : NULL;
    }
    case F_COUNT:
    case F_LENGTH:
        return f_length(st, line, v);
    case F_DEFAULT:
        return f_default(st, line, v, args);
    case F_DICTSORT: {
        static const char *const names[] = {"case_sensitive", "by", "reverse"};
        if (jinja_bind(st, line, fname, args, names, 3, a)) return NULL;
        if (v->kind != TPL_OBJECT) {
            if (v->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, v);
            jinja_fail(st, line, ERR_INVALID, "'%s' object has no attribute 'items'",
                       tpl_type_name(v));
            return NULL;
        }
        int by_value = 0;
        if (a[1]) {
            if (a[1]->kind == TPL_STRING && strcmp(a[1]->u.s.p, "value") == 0)
                by_value = 1;
            else if (!(a[1]->kind == TPL_STRING && strcmp(a[1]->u.s.p, "key") == 0)) {
                jinja_fail(st, line, ERR_INVALID,
                           "You can only sort by either \"key\" or \"value\"");
                return NULL;
            }
        }
        struct tpl_value *pairs = jinja_dict_items(st, v->u.obj);
        struct tpl_value *idx_v = pairs ? jinja_new_int(st, by_value) : NULL;
        if (!idx_v) return NULL;
        return sorted(st, line, pairs->u.arr->items, pairs->u.arr->n, idx_v, arg_bool(a[0]),
                      arg_bool(a[2]));
    }
    case F_ESCAPE:
        return jinja_html_escape(st, v);
    case F_FORCEESCAPE: {
        if (!(s = str_of(st, v))) return NULL;
        struct tpl_value plain = *s;
        plain.flags &= (uint8_t)~TPL_F_SAFE;
        return jinja_html_escape(st, &plain);
    }
    case F_FIRST:
        if (jinja_iterate(st, line, v, &items, &n)) return NULL;
        return n ? items[0] : undef_hint(st, "No first item, sequence was empty.");
    case F_LAST:
        if (v->flags & TPL_F_GEN) {
            jinja_fail(st, line, ERR_INVALID, "'generator' object is not reversible");
            return NULL;
        }
        if (jinja_iterate(st, line, v, &items, &n)) return NULL;
        return n ? items[n - 1] : undef_hint(st, "No last item, sequence was empty.");
    case F_FLOAT: {
        static const char *const names[] = {"default"};
        if (jinja_bind(st, line, fname, args, names, 1, a)) return NULL;
        return f_float(st, line, v, a[0]);
    }
    case F_INT: {
        static const char *const names[] = {"default", "base"};
        if (jinja_bind(st, line, fname, args, names, 2, a)) return NULL;
        return f_int(st, line, v, a[0], a[1]);
    }
    case F_FORMAT: {
        if (!(s = str_of(st, v))) return NULL;
        if (args->n_pos && args->n_kw) {
            jinja_fail(st, line, ERR_INVALID,
                       "can't handle positional and keyword arguments at the same time");
            return NULL;
        }
        struct tpl_value *fa;
        if (args->n_kw) {
            if (!(fa = tpl_value_object(st->arena))) return jinja_oom(st);
            for (size_t k = 0; k < args->n_kw; k++)
                if (tpl_object_set(st->arena, fa, args->kw[k].name, args->kw[k].n, args->kw[k].v))
                    return jinja_oom(st);
        } else {
            if (!(fa = tpl_value_tuple(st->arena, args->n_pos))) return jinja_oom(st);
            for (size_t k = 0; k < args->n_pos; k++) fa->u.arr->items[k] = args->pos[k];
        }
        return jinja_percent_format(st, line, s, fa);
    }
    case F_GROUPBY:
        return f_groupby(st, line, v, args);
    case F_INDENT:
        return f_indent(st, line, v, args);
    case F_ITEMS:
        if (v->kind == TPL_UNDEFINED) return jinja_new_list(st, 0);
        if (v->kind != TPL_OBJECT) {
            jinja_fail(st, line, ERR_INVALID, "Can only get item pairs from a mapping.");
            return NULL;
        }
        return jinja_dict_items(st, v->u.obj);
    case F_JOIN:
        return f_join(st, line, v, args);
    case F_LIST:
    case F_REVERSE: {
        if (id == F_REVERSE && v->kind == TPL_STRING) {
            size_t count = tpl_string_len(v);
            return count ? jinja_str_slice(st, v, (int64_t)count - 1, -1, count) : v;
        }
        if (jinja_iterate(st, line, v, &items, &n)) return NULL;
        struct tpl_value *out = jinja_new_list(st, n);
        if (!out) return NULL;
        for (size_t i = 0; i < n; i++) out->u.arr->items[i] = items[id == F_LIST ? i : n - 1 - i];
        out->u.arr->n = n;
        return out;
    }
    case F_LOWER:
    case F_UPPER:
        if (!(s = str_of(st, v))) return NULL;
        return jinja_str_case(st, s, id == F_LOWER ? JINJA_CASE_LOWER : JINJA_CASE_UPPER);
    case F_TITLE:
        if (!(s = str_of(st, v))) return NULL;
        return jinja_str_case(st, s, JINJA_CASE_TITLE_FILTER);
    case F_MAP:
        return f_map(st, line, v, args);
    case F_MAX:
    case F_MIN:
        return f_minmax(st, line, v, args, id == F_MAX);
    case F_SELECT:
        return f_select(st, line, v, args, 0, 1);
    case F_REJECT:
        return f_select(st, line, v, args, 0, 0);
    case F_SELECTATTR:
        return f_select(st, line, v, args, 1, 1);
    case F_REJECTATTR:
        return f_select(st, line, v, args, 1, 0);
    case F_REPLACE: {
        static const char *const names[] = {"old", "new", "count"};
        int64_t count = -1;
        if (jinja_bind(st, line, fname, args, names, 3, a) ||
            jinja_arg_int(st, line, a[2], -1, &count))
            return NULL;
        if (!a[0] || !a[1]) {
            jinja_fail(st, line, ERR_INVALID, "replace() needs old and new");
            return NULL;
        }
        struct tpl_value *old, *new_;
        if (!(s = str_of(st, v)) || !(old = str_of(st, a[0])) || !(new_ = str_of(st, a[1])))
            return NULL;
        return jinja_str_replace(st, s, old, new_, count);
    }
    case F_ROUND:
        return f_round(st, line, v, args);
    case F_SAFE: {
        if (v->kind == TPL_STRING && (v->flags & TPL_F_SAFE)) return v;
        if (!(s = str_of(st, v))) return NULL;
        struct tpl_value *r = jinja_new_string(st, s->u.s.p, s->u.s.n);
        if (r) r->flags |= TPL_F_SAFE;
        return r;
    }
    case F_SORT: {
        static const char *const names[] = {"reverse", "case_sensitive", "attribute"};
        if (jinja_bind(st, line, fname, args, names, 3, a) ||
            jinja_iterate(st, line, v, &items, &n))
            return NULL;
        return sorted(st, line, items, n, a[2], arg_bool(a[1]), arg_bool(a[0]));
    }
    case F_STRING:
        return str_of(st, v);
    case F_SUM:
        return f_sum(st, line, v, args);
    case F_TOJSON:
        return f_tojson(st, line, v, args);
    case F_TRIM: {
        static const char *const names[] = {"chars"};
        if (jinja_bind(st, line, fname, args, names, 1, a) || !(s = str_of(st, v))) return NULL;
        if (a[0] && a[0]->kind != TPL_NONE && a[0]->kind != TPL_STRING) {
            jinja_fail(st, line, ERR_INVALID, "strip arg must be None or str");
            return NULL;
        }
        return jinja_str_strip(st, s, a[0], 1, 1);
    }
    case F_TRUNCATE:
        return f_truncate(st, line, v, args);
    case F_UNIQUE:
        return f_unique(st, line, v, args);
    case F_WORDCOUNT: {
        if (!(s = str_of(st, v))) return NULL;
        int64_t words = 0;
        int in_word = 0;
        size_t i = 0;
        while (i < s->u.s.n) {
            uint32_t c = jinja_utf8_next(s->u.s.p, s->u.s.n, &i);
            /* Python's \w: letters, numbers and '_' */
            int w = c == '_' ||
                    (c < 0x80 ? ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9')
                              : (unicode_flags(c) & (UNICODE_LETTER | UNICODE_NUMBER)) != 0);
            if (w && !in_word) words++;
            in_word = w;
        }
        return jinja_new_int(st, words);
    }
    }
    jinja_fail(st, line, ERR_INVALID, "No filter named '%s'.", fname);
    return NULL;
}
