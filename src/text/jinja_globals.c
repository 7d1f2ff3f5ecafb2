/* jinja_globals.c: the global functions a template can call: Jinja's range, namespace and
 * dict (jinja2/defaults.py, with the sandbox's MAX_RANGE), and transformers' raise_exception
 * and strftime_now.
 */
#include "jinja_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* ============================================================================================
 * Globals
 * ============================================================================================
 */

enum global_id { G_RANGE, G_NAMESPACE, G_DICT, G_RAISE_EXCEPTION, G_STRFTIME_NOW };

/* Read-only after start-up: values point at them, nothing writes them. */
static struct jinja_func k_global_funcs[] = {
    {G_RANGE, "range", NULL, 0},
    {G_NAMESPACE, "namespace", NULL, 0},
    {G_DICT, "dict", NULL, 0},
    {G_RAISE_EXCEPTION, "raise_exception", NULL, 0},
    {G_STRFTIME_NOW, "strftime_now", NULL, 0},
};

static struct tpl_value k_global_values[] = {
    {.kind = TPL_FUNC, .u.fn = &k_global_funcs[0]}, {.kind = TPL_FUNC, .u.fn = &k_global_funcs[1]},
    {.kind = TPL_FUNC, .u.fn = &k_global_funcs[2]}, {.kind = TPL_FUNC, .u.fn = &k_global_funcs[3]},
    {.kind = TPL_FUNC, .u.fn = &k_global_funcs[4]},
};

struct tpl_value *jinja_global_lookup(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof(k_global_funcs) / sizeof(k_global_funcs[0]); i++)
        if (strlen(k_global_funcs[i].name) == n && memcmp(k_global_funcs[i].name, name, n) == 0)
            return &k_global_values[i];
    return NULL;
}

#define JINJA_MAX_RANGE 100000 /* jinja2.sandbox.MAX_RANGE */

static struct tpl_value *g_range(struct jinja_render *st, uint32_t line, struct jinja_args *args) {
    int64_t v[3] = {0, 0, 1};
    if (args->n_kw || args->n_pos < 1 || args->n_pos > 3) {
        jinja_fail(st, line, ERR_INVALID, "range expected 1 to 3 arguments, got %zu", args->n_pos);
        return NULL;
    }
    for (size_t i = 0; i < args->n_pos; i++)
        if (jinja_arg_int(st, line, args->pos[i], 0, &v[args->n_pos == 1 ? 1 : i])) return NULL;
    if (v[2] == 0) {
        jinja_fail(st, line, ERR_INVALID, "range() arg 3 must not be zero");
        return NULL;
    }
    int64_t start = v[0], stop = v[1], step = v[2], count = 0;
    if (step > 0 && start < stop)
        count = (int64_t)(((uint64_t)stop - (uint64_t)start - 1) / (uint64_t)step) + 1;
    if (step < 0 && start > stop)
        count =
            (int64_t)(((uint64_t)start - (uint64_t)stop - 1) / ((uint64_t)0 - (uint64_t)step)) + 1;
    if (count > JINJA_MAX_RANGE) {
        jinja_fail(st, line, ERR_RANGE,
                   "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).",
                   JINJA_MAX_RANGE);
        return NULL;
    }
    if (jinja_charge(st, (uint64_t)count / 16)) return NULL;
    struct tpl_value *out = jinja_new_list(st, (size_t)count);
    if (!out) return NULL;
    for (int64_t i = 0; i < count; i++) {
        struct tpl_value *x = jinja_new_int(st, start + i * step);
        if (!x) return NULL;
        out->u.arr->items[out->u.arr->n++] = x;
    }
    return out;
}

static struct tpl_value *g_namespace_or_dict(struct jinja_render *st, uint32_t line,
                                             struct jinja_args *args, int is_ns) {
    struct tpl_value *obj = tpl_value_object(st->arena);
    if (!obj) return jinja_oom(st);
    if (args->n_pos > 1 || (args->n_pos == 1 && args->pos[0]->kind != TPL_OBJECT)) {
        jinja_fail(st, line, ERR_INVALID, "%s() takes at most one mapping argument",
                   is_ns ? "namespace" : "dict");
        return NULL;
    }
    if (args->n_pos) {
        const struct tpl_object *src = args->pos[0]->u.obj;
        for (size_t i = 0; i < src->n; i++)
            if (tpl_object_put(st->arena, obj->u.obj, src->entries[i].key, src->entries[i].val))
                return jinja_oom(st);
    }
    for (size_t k = 0; k < args->n_kw; k++)
        if (tpl_object_set(st->arena, obj, args->kw[k].name, args->kw[k].n, args->kw[k].v))
            return jinja_oom(st);
    if (is_ns) obj->kind = TPL_NAMESPACE;
    return obj;
}

static struct tpl_value *g_strftime_now(struct jinja_render *st, uint32_t line,
                                        struct jinja_args *args) {
    if (args->n_pos != 1 || args->pos[0]->kind != TPL_STRING) {
        jinja_fail(st, line, ERR_INVALID, "strftime_now() takes one format string");
        return NULL;
    }
    struct tpl_value *fmt = args->pos[0];
    time_t t = (time_t)st->now_unix;
    struct tm tm;
    if (!localtime_r(&t, &tm)) {
        jinja_fail(st, line, ERR_INVALID, "strftime_now: time out of range");
        return NULL;
    }
    /* Python formats each directive with C strftime, plus %f (microseconds: 000000 here) */
    struct buf out;
    buf_init(&out);
    const char *p = fmt->u.s.p;
    size_t n = fmt->u.s.n;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%' || i + 1 >= n) {
            buf_append_char(&out, p[i]);
            continue;
        }
        char d = p[++i], spec[4] = {'%', d, 0, 0}, tmp[256];
        if (d == 'f') {
            buf_append_str(&out, "000000");
            continue;
        }
        if ((d == 'E' || d == 'O') && i + 1 < n) spec[2] = p[++i];
        size_t k = strftime(tmp, sizeof(tmp), spec, &tm);
        buf_append(&out, tmp, k);
    }
    return jinja_buf_to_string(st, &out);
}

struct tpl_value *jinja_builtin_call(struct jinja_render *st, uint32_t line, struct jinja_func *fn,
                                     struct jinja_args *args) {
    switch (fn->id) {
    case G_RANGE:
        return g_range(st, line, args);
    case G_NAMESPACE:
        return g_namespace_or_dict(st, line, args, 1);
    case G_DICT:
        return g_namespace_or_dict(st, line, args, 0);
    case G_RAISE_EXCEPTION: {
        /* the message verbatim, except that NUL bytes (which a C string cannot hold) read \x00 */
        struct tpl_value *msg = args->n_pos ? jinja_to_string(st, args->pos[0]) : NULL;
        if (args->n_pos && !msg) return NULL;
        struct buf b;
        buf_init(&b);
        for (size_t i = 0; msg && i < msg->u.s.n && b.len < sizeof(st->err->msg); i++) {
            if (msg->u.s.p[i])
                buf_append_char(&b, msg->u.s.p[i]);
            else
                buf_append_str(&b, "\\x00");
        }
        jinja_fail(st, 0, ERR_INVALID, "%s", b.data ? b.data : "");
        buf_free(&b);
        return NULL;
    }
    case G_STRFTIME_NOW:
        return g_strftime_now(st, line, args);
    }
    jinja_fail(st, line, ERR_INVALID, "'%s' is not callable", fn->name);
    return NULL;
}
