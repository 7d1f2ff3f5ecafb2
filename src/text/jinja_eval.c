/* jinja_eval.c: walks the AST and writes the output, with Python/Jinja2 semantics.
 *
 * Scopes follow Jinja2's compiled code: the template body is one scope; every for-loop
 * iteration, macro call and with-block gets a fresh child scope, so a `set` inside them never
 * leaks out, while `if` blocks share their parent's scope. Lookups go scope chain, then the
 * render context (the caller's variables), then the globals. A macro sees the scope it was
 * defined in as it is at call time (a Python closure), not its caller's variables.
 *
 * Errors do not unwind with longjmp: every eval returns NULL (or a negative code) after
 * recording the first error in the render state, and callers pass that up.
 */
#include "jinja_internal.h"

#include "../base/mem.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { EXEC_OK = 0, EXEC_BREAK = 1, EXEC_CONTINUE = 2 };

struct jinja_var {
    const char *name;
    size_t n;
    struct tpl_value *v;
};

struct jinja_scope {
    struct jinja_scope *parent;
    struct jinja_var *vars; /* [n] */
    size_t n, cap;
    int captured; /* a macro closed over it: a loop must not reuse it */
};

struct jinja_macro {
    const struct jinja_node *node; /* N_MACRO, or N_CALL_BLOCK for `caller` */
    struct jinja_scope *closure;   /* the scope the macro was defined in */
};

struct jinja_loop {
    const struct jinja_node *node; /* the N_FOR */
    struct jinja_scope *scope;     /* where the for statement runs (recursive calls) */
    struct tpl_value **items;      /* [n] after the loop filter */
    size_t n, index0;
    int depth0;
    struct tpl_value *last_changed; /* loop.changed() state, NULL before the first call */
};

static struct tpl_value *eval(struct jinja_render *st, struct jinja_scope *sc,
                              const struct jinja_node *n);
static int exec_list(struct jinja_render *st, struct jinja_scope *sc,
                     struct jinja_node *const *list, size_t n);

/* ============================================================================================
 * Errors, limits, allocation
 * ============================================================================================
 * The first error wins and stays in the render state; everything after it sees st->code and
 * unwinds. Steps and output size are counted here, so no template runs or grows without bound.
 */

int jinja_fail(struct jinja_render *st, uint32_t line, int code, const char *fmt, ...) {
    if (st->code) return st->code;
    st->code = code;
    if (st->err) {
        char msg[sizeof(st->err->msg)];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (line)
            error_set(st->err, code, "line %u: %s", line, msg);
        else
            error_set(st->err, code, "%s", msg);
    }
    return code;
}

struct tpl_value *jinja_oom(struct jinja_render *st) {
    if (st->arena->max_bytes && st->arena->used_bytes + (1u << 17) >= st->arena->max_bytes)
        jinja_fail(st, 0, ERR_RANGE, "template render exceeded its memory limit (%zu bytes)",
                   st->arena->max_bytes);
    else
        jinja_fail(st, 0, ERR_NOMEM, "template render: out of memory");
    return NULL;
}

int jinja_charge(struct jinja_render *st, uint64_t n) {
    st->steps += n;
    if (st->steps > st->max_steps)
        return jinja_fail(st, 0, ERR_RANGE, "template render exceeded %" PRIu64 " steps",
                          st->max_steps);
    return 0;
}

uint64_t jinja_weight(const struct tpl_value *v) {
    switch (v->kind) {
    case TPL_STRING:
        return v->u.s.n >> 8;
    case TPL_ARRAY:
        return v->u.arr->n >> 4;
    case TPL_OBJECT:
    case TPL_NAMESPACE:
        return v->u.obj->n >> 4;
    default:
        return 0;
    }
}

int jinja_equal(struct jinja_render *st, const struct tpl_value *a, const struct tpl_value *b) {
    uint64_t work = 0;
    int eq = tpl_value_equal(a, b, &work);
    return jinja_charge(st, work >> 8) ? -1 : eq;
}

/* Out of line on purpose: its struct error is large and eval_compare sits on the recursion. */
__attribute__((noinline)) int jinja_order(struct jinja_render *st, uint32_t line,
                                          const struct tpl_value *a, const struct tpl_value *b,
                                          int *out) {
    struct error e = {0};
    uint64_t work = 0;
    if (tpl_value_compare(a, b, out, &e, &work)) return jinja_fail(st, line, e.code, "%s", e.msg);
    return jinja_charge(st, work >> 8);
}

struct tpl_value *jinja_undefined_error(struct jinja_render *st, uint32_t line,
                                        const struct tpl_value *u) {
    const char *name = u->u.undef.name ? u->u.undef.name : "";
    int n = (int)(u->u.undef.n > 200 ? 200 : u->u.undef.n);
    switch (u->why) {
    case TPL_UNDEF_NAME:
        jinja_fail(st, line, ERR_INVALID, "'%.*s' is undefined", n, name);
        break;
    case TPL_UNDEF_ATTR:
        jinja_fail(st, line, ERR_INVALID, "'%s' has no attribute '%.*s'", u->u.undef.owner, n,
                   name);
        break;
    case TPL_UNDEF_ITEM:
        jinja_fail(st, line, ERR_INVALID, "%s has no element %.*s", u->u.undef.owner, n, name);
        break;
    default:
        jinja_fail(st, line, ERR_INVALID, "%.*s", n, n ? name : "value is undefined");
        break;
    }
    return NULL;
}

struct tpl_value *jinja_new_string(struct jinja_render *st, const char *p, size_t n) {
    struct tpl_value *v = tpl_value_string(st->arena, p, n);
    return v ? v : jinja_oom(st);
}

struct tpl_value *jinja_new_int(struct jinja_render *st, int64_t x) {
    struct tpl_value *v = tpl_value_int(st->arena, x);
    return v ? v : jinja_oom(st);
}

struct tpl_value *jinja_new_float(struct jinja_render *st, double x) {
    struct tpl_value *v = tpl_value_float(st->arena, x);
    return v ? v : jinja_oom(st);
}

struct tpl_value *jinja_buf_to_string(struct jinja_render *st, struct buf *b) {
    if (b->failed) {
        buf_free(b);
        return jinja_oom(st);
    }
    if (b->len > st->max_output) {
        buf_free(b);
        jinja_fail(st, 0, ERR_RANGE, "template output exceeded %zu bytes", st->max_output);
        return NULL;
    }
    struct tpl_value *v = jinja_new_string(st, b->data ? b->data : "", b->len);
    buf_free(b);
    return v;
}

static int emit(struct jinja_render *st, const char *p, size_t n) {
    buf_append(st->out, p, n);
    if (st->out->failed) return jinja_oom(st), st->code;
    if (st->out->len > st->max_output)
        return jinja_fail(st, 0, ERR_RANGE, "template output exceeded %zu bytes", st->max_output);
    return 0;
}

/* ============================================================================================
 * Scopes and names
 * ============================================================================================
 * A scope is a short vector of (name, value) and chains are short (template, loop iteration,
 * macro call), so a linear search beats hashing.
 */

static struct jinja_scope *scope_new(struct jinja_render *st, struct jinja_scope *parent) {
    struct jinja_scope *s = tpl_arena_alloc(st->arena, sizeof(*s));
    if (!s) {
        jinja_oom(st);
        return NULL;
    }
    memset(s, 0, sizeof(*s));
    s->parent = parent;
    return s;
}

static int scope_set(struct jinja_render *st, struct jinja_scope *s, const char *name, size_t n,
                     struct tpl_value *v) {
    for (size_t i = 0; i < s->n; i++) {
        if (s->vars[i].n == n && memcmp(s->vars[i].name, name, n) == 0) {
            s->vars[i].v = v;
            return 0;
        }
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct jinja_var *vars = tpl_arena_alloc(st->arena, cap * sizeof(*vars));
        if (!vars) return jinja_oom(st), st->code;
        if (s->n) memcpy(vars, s->vars, s->n * sizeof(*vars));
        s->vars = vars;
        s->cap = cap;
    }
    s->vars[s->n].name = name;
    s->vars[s->n].n = n;
    s->vars[s->n].v = v;
    s->n++;
    return 0;
}

static struct tpl_value *scope_find(struct jinja_scope *s, const char *name, size_t n) {
    for (; s; s = s->parent)
        for (size_t i = s->n; i-- > 0;)
            if (s->vars[i].n == n && memcmp(s->vars[i].name, name, n) == 0) return s->vars[i].v;
    return NULL;
}

static struct tpl_value *lookup_name(struct jinja_render *st, struct jinja_scope *sc,
                                     const char *name, size_t n) {
    struct tpl_value *v = scope_find(sc, name, n);
    if (v) return v;
    if (st->ctx && st->ctx->kind == TPL_OBJECT) {
        v = tpl_object_find(st->ctx->u.obj, name, n);
        if (v) return v;
    }
    v = jinja_global_lookup(name, n);
    if (v) return v;
    v = tpl_value_undef(st->arena, TPL_UNDEF_NAME, name, n, NULL);
    return v ? v : jinja_oom(st);
}

/* ============================================================================================
 * Attribute and item access
 * ============================================================================================
 * Jinja's sandboxed getattr tries the Python attribute first and falls back to the item, so
 * `d.items` is the dict method even when d has an "items" key; getitem does the reverse.
 * Missing things are Undefined (printing ''), and only using that Undefined fails.
 */

static const char *owner_text(const struct tpl_value *v) {
    switch (v->kind) {
    case TPL_NONE:
        return "None";
    case TPL_BOOL:
        return "bool object";
    case TPL_INT:
        return "int object";
    case TPL_FLOAT:
        return "float object";
    case TPL_STRING:
        return "str object";
    case TPL_ARRAY:
        return v->flags & TPL_F_TUPLE ? "tuple object" : "list object";
    case TPL_OBJECT:
        return "dict object";
    case TPL_NAMESPACE:
        return "Namespace object";
    case TPL_LOOP:
        return "LoopContext object";
    case TPL_MACRO:
        return "Macro object";
    default:
        return "object";
    }
}

static struct tpl_value *missing_attr(struct jinja_render *st, const struct tpl_value *obj,
                                      const char *name, size_t n) {
    struct tpl_value *u = tpl_value_undef(st->arena, TPL_UNDEF_ATTR, name, n, owner_text(obj));
    return u ? u : jinja_oom(st);
}

static struct tpl_value *loop_attr(struct jinja_render *st, struct tpl_value *lv, const char *name,
                                   size_t n) {
    struct jinja_loop *l = lv->u.loop;
    int64_t i0 = (int64_t)l->index0, len = (int64_t)l->n;
#define IS(s) (n == sizeof(s) - 1 && memcmp(name, s, n) == 0)
    if (IS("index")) return jinja_new_int(st, i0 + 1);
    if (IS("index0")) return jinja_new_int(st, i0);
    if (IS("revindex")) return jinja_new_int(st, len - i0);
    if (IS("revindex0")) return jinja_new_int(st, len - i0 - 1);
    if (IS("first")) return tpl_value_bool(i0 == 0);
    if (IS("last")) return tpl_value_bool(i0 == len - 1);
    if (IS("length")) return jinja_new_int(st, len);
    if (IS("depth")) return jinja_new_int(st, l->depth0 + 1);
    if (IS("depth0")) return jinja_new_int(st, l->depth0);
    if (IS("previtem")) {
        if (i0 > 0) return l->items[i0 - 1];
        struct tpl_value *u =
            tpl_value_undef(st->arena, TPL_UNDEF_HINT, "there is no previous item", 25, NULL);
        return u ? u : jinja_oom(st);
    }
    if (IS("nextitem")) {
        if (i0 + 1 < len) return l->items[i0 + 1];
        struct tpl_value *u =
            tpl_value_undef(st->arena, TPL_UNDEF_HINT, "there is no next item", 21, NULL);
        return u ? u : jinja_oom(st);
    }
#undef IS
    struct tpl_value *m = jinja_method_lookup(st, lv, name, n);
    if (m || st->code) return m;
    return missing_attr(st, lv, name, n);
}

/* Macro.name and Macro.arguments; other attributes are undefined. */
static struct tpl_value *macro_attr(struct jinja_render *st, struct tpl_value *mv, const char *name,
                                    size_t n) {
    const struct jinja_node *node = mv->u.mac->node;
    if (n == 4 && memcmp(name, "name", 4) == 0)
        return node->kind == N_MACRO ? jinja_new_string(st, node->name, node->name_n)
                                     : jinja_new_string(st, "caller", 6);
    if (n == 9 && memcmp(name, "arguments", 9) == 0) {
        struct tpl_value *t = tpl_value_tuple(st->arena, node->n2);
        if (!t) return jinja_oom(st);
        for (size_t i = 0; i < node->n2; i++)
            if (!(t->u.arr->items[i] =
                      jinja_new_string(st, node->list2[i]->name, node->list2[i]->name_n)))
                return NULL;
        return t;
    }
    return missing_attr(st, mv, name, n);
}

struct tpl_value *jinja_getattr(struct jinja_render *st, uint32_t line, struct tpl_value *obj,
                                const char *name, size_t n) {
    switch (obj->kind) {
    case TPL_MACRO:
        return macro_attr(st, obj, name, n);
    case TPL_UNDEFINED:
        return jinja_undefined_error(st, line, obj);
    case TPL_LOOP:
        return loop_attr(st, obj, name, n);
    case TPL_NAMESPACE: {
        struct tpl_value *v = tpl_object_find(obj->u.obj, name, n);
        return v ? v : missing_attr(st, obj, name, n);
    }
    case TPL_OBJECT: {
        struct tpl_value *m = jinja_method_lookup(st, obj, name, n);
        if (m || st->code) return m;
        struct tpl_value *v = tpl_object_find(obj->u.obj, name, n);
        return v ? v : missing_attr(st, obj, name, n);
    }
    default: {
        if ((obj->flags & TPL_F_GROUP) && n == 7 && memcmp(name, "grouper", 7) == 0)
            return obj->u.arr->items[0];
        if ((obj->flags & TPL_F_GROUP) && n == 4 && memcmp(name, "list", 4) == 0)
            return obj->u.arr->items[1];
        struct tpl_value *m = jinja_method_lookup(st, obj, name, n);
        if (m || st->code) return m;
        return missing_attr(st, obj, name, n);
    }
    }
}

static int index_of(const struct tpl_value *key, int64_t *out) {
    if (key->kind != TPL_INT && key->kind != TPL_BOOL) return 0;
    *out = key->u.i;
    return 1;
}

static struct tpl_value *missing_item(struct jinja_render *st, const struct tpl_value *obj,
                                      const struct tpl_value *key) {
    struct buf b;
    buf_init(&b);
    tpl_value_repr(&b, key);
    struct tpl_value *text = jinja_buf_to_string(st, &b);
    if (!text) return NULL;
    struct tpl_value *u =
        tpl_value_undef(st->arena, TPL_UNDEF_ITEM, text->u.s.p, text->u.s.n, owner_text(obj));
    return u ? u : jinja_oom(st);
}

struct tpl_value *jinja_getitem(struct jinja_render *st, uint32_t line, struct tpl_value *obj,
                                struct tpl_value *key) {
    int64_t i;
    switch (obj->kind) {
    case TPL_UNDEFINED:
        return jinja_undefined_error(st, line, obj);
    case TPL_ARRAY:
        if (obj->flags & TPL_F_GEN) break; /* not subscriptable: the sandbox gives Undefined */
        if (index_of(key, &i)) {
            int64_t n = (int64_t)obj->u.arr->n;
            if (i < 0) i += n;
            if (i < 0 || i >= n) return missing_item(st, obj, key);
            return obj->u.arr->items[i];
        }
        break;
    case TPL_STRING:
        if (index_of(key, &i)) {
            size_t count = tpl_string_len(obj);
            if (i < 0) i += (int64_t)count;
            if (i < 0 || i >= (int64_t)count) return missing_item(st, obj, key);
            return jinja_str_slice(st, obj, i, 1, 1);
        }
        break;
    case TPL_OBJECT:
        if (key->kind == TPL_STRING) {
            struct tpl_value *v = tpl_object_find(obj->u.obj, key->u.s.p, key->u.s.n);
            if (v) return v;
        } else {
            return missing_item(st, obj, key);
        }
        break;
    default:
        break;
    }
    if (key->kind == TPL_STRING) return jinja_getattr(st, line, obj, key->u.s.p, key->u.s.n);
    return missing_item(st, obj, key);
}

/* Python's slice.indices(len): resolves start/stop/step; returns the element count, or -1 for
 * a zero step. */
static int64_t slice_indices(int64_t len, const int64_t *start_in, const int64_t *stop_in,
                             int64_t step, int64_t *start, int64_t *stop) {
    if (step == 0) return -1;
    int64_t lower = step < 0 ? -1 : 0, upper = step < 0 ? len - 1 : len;
    if (!start_in) {
        *start = step < 0 ? upper : lower;
    } else {
        *start = *start_in;
        if (*start < 0) {
            *start += len;
            if (*start < lower) *start = lower;
        } else if (*start > upper) {
            *start = upper;
        }
    }
    if (!stop_in) {
        *stop = step < 0 ? lower : upper;
    } else {
        *stop = *stop_in;
        if (*stop < 0) {
            *stop += len;
            if (*stop < lower) *stop = lower;
        } else if (*stop > upper) {
            *stop = upper;
        }
    }
    if (step > 0) return *start < *stop ? (*stop - *start - 1) / step + 1 : 0;
    return *stop < *start ? (*start - *stop - 1) / (-step) + 1 : 0;
}

static struct tpl_value *eval_slice(struct jinja_render *st, struct jinja_scope *sc,
                                    const struct jinja_node *n, struct tpl_value *obj) {
    const struct jinja_node *sl = n->b;
    int64_t parts[3], *given[3] = {NULL, NULL, NULL};
    const struct jinja_node *exprs[3] = {sl->a, sl->b, sl->c};
    int bad = 0;
    for (int k = 0; k < 3; k++) {
        if (!exprs[k]) continue;
        struct tpl_value *v = eval(st, sc, exprs[k]);
        if (!v) return NULL;
        if (v->kind == TPL_NONE) continue;
        if (!index_of(v, &parts[k])) {
            bad = 1;
            continue;
        }
        given[k] = &parts[k];
    }
    if (obj->kind == TPL_UNDEFINED) return jinja_undefined_error(st, n->line, obj);
    /* Jinja compiles a slice to a plain Python subscript (no sandbox fallback to Undefined) */
    if ((obj->kind != TPL_ARRAY && obj->kind != TPL_STRING) || (obj->flags & TPL_F_GEN)) {
        jinja_fail(st, n->line, ERR_INVALID, "'%s' object is not subscriptable",
                   tpl_type_name(obj));
        return NULL;
    }
    if (bad) {
        jinja_fail(st, n->line, ERR_INVALID,
                   "slice indices must be integers or None or have an __index__ method");
        return NULL;
    }
    int64_t step = given[2] ? *given[2] : 1, start, stop;
    int64_t len = obj->kind == TPL_ARRAY ? (int64_t)obj->u.arr->n : (int64_t)tpl_string_len(obj);
    int64_t count = slice_indices(len, given[0], given[1], step, &start, &stop);
    if (count < 0) {
        jinja_fail(st, n->line, ERR_INVALID, "slice step cannot be zero");
        return NULL;
    }
    if (obj->kind == TPL_STRING) return jinja_str_slice(st, obj, start, step, (size_t)count);
    struct tpl_value *r = tpl_value_tuple(st->arena, (size_t)count);
    if (!r) return jinja_oom(st);
    r->flags = obj->flags & TPL_F_TUPLE;
    for (int64_t k = 0; k < count; k++) r->u.arr->items[k] = obj->u.arr->items[start + k * step];
    return r;
}

/* ============================================================================================
 * Iteration, strings, containment
 * ============================================================================================
 * Python iterates dicts by key and strings by character, and Jinja's Undefined iterates as
 * empty. Anything iterable becomes an item vector once, shared by loops, filters and `in`.
 */

int jinja_iterate(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                  struct tpl_value ***items, size_t *n) {
    *items = NULL;
    *n = 0;
    switch (v->kind) {
    case TPL_UNDEFINED:
        return 0;
    case TPL_ARRAY:
        *items = v->u.arr->items;
        *n = v->u.arr->n;
        return 0;
    case TPL_OBJECT: {
        size_t count = v->u.obj->n;
        if (!count) return 0;
        struct tpl_value **keys = tpl_arena_alloc(st->arena, count * sizeof(*keys));
        if (!keys) return jinja_oom(st), st->code;
        for (size_t i = 0; i < count; i++) keys[i] = v->u.obj->entries[i].key;
        *items = keys;
        *n = count;
        return 0;
    }
    case TPL_STRING: {
        size_t count = tpl_string_len(v);
        if (!count) return 0;
        if (jinja_charge(st, count >> 4)) return st->code;
        struct tpl_value **chars = tpl_arena_alloc(st->arena, count * sizeof(*chars));
        if (!chars) return jinja_oom(st), st->code;
        size_t pos = 0;
        for (size_t i = 0; i < count; i++) {
            size_t start = pos;
            jinja_utf8_next(v->u.s.p, v->u.s.n, &pos);
            chars[i] = jinja_new_string(st, v->u.s.p + start, pos - start);
            if (!chars[i]) return st->code;
        }
        *items = chars;
        *n = count;
        return 0;
    }
    default:
        return jinja_fail(st, line, ERR_INVALID, "'%s' object is not iterable", tpl_type_name(v));
    }
}

struct tpl_value *jinja_to_string(struct jinja_render *st, struct tpl_value *v) {
    if (v->kind == TPL_STRING) return v;
    struct buf b;
    buf_init(&b);
    if (tpl_value_str(&b, v)) {
        buf_free(&b);
        jinja_fail(st, 0, ERR_RANGE, "value nested too deeply to print");
        return NULL;
    }
    return jinja_buf_to_string(st, &b);
}

int jinja_contains(struct jinja_render *st, uint32_t line, struct tpl_value *container,
                   struct tpl_value *item, int *out) {
    *out = 0;
    if (jinja_charge(st, jinja_weight(container))) return st->code;
    switch (container->kind) {
    case TPL_UNDEFINED:
        return 0;
    case TPL_STRING:
        if (item->kind != TPL_STRING)
            return jinja_fail(st, line, ERR_INVALID,
                              "'in <string>' requires string as left operand, not %s",
                              tpl_type_name(item));
        *out = item->u.s.n == 0 ||
               (item->u.s.n <= container->u.s.n &&
                memmem(container->u.s.p, container->u.s.n, item->u.s.p, item->u.s.n) != NULL);
        return 0;
    case TPL_ARRAY:
        for (size_t i = 0; i < container->u.arr->n; i++) {
            int eq = jinja_equal(st, container->u.arr->items[i], item);
            if (eq < 0) return st->code;
            if (eq) {
                *out = 1;
                break;
            }
        }
        return 0;
    case TPL_OBJECT:
        *out = item->kind == TPL_STRING &&
               tpl_object_find(container->u.obj, item->u.s.p, item->u.s.n) != NULL;
        return 0;
    default:
        return jinja_fail(st, line, ERR_INVALID, "argument of type '%s' is not iterable",
                          tpl_type_name(container));
    }
}

/* ============================================================================================
 * Arithmetic (Python rules: int64 here, with overflow an error rather than a bignum)
 * ============================================================================================
 * Templates count and index; int64 with an overflow error keeps results exact where it matters
 * without a bignum. Floats follow Python's divmod and power rules.
 */

static struct tpl_value *type_error(struct jinja_render *st, uint32_t line, const char *op,
                                    const struct tpl_value *a, const struct tpl_value *b) {
    jinja_fail(st, line, ERR_INVALID, "unsupported operand type(s) for %s: '%s' and '%s'", op,
               tpl_type_name(a), tpl_type_name(b));
    return NULL;
}

static struct tpl_value *overflow(struct jinja_render *st, uint32_t line) {
    jinja_fail(st, line, ERR_UNSUPPORTED, "integer overflow (beyond 64-bit integers)");
    return NULL;
}

static struct tpl_value *repeat(struct jinja_render *st, uint32_t line, struct tpl_value *seq,
                                int64_t times) {
    if (times < 0) times = 0;
    if (seq->kind == TPL_STRING) {
        size_t total;
        if (mem_mul_size(seq->u.s.n, (size_t)times, &total) || total > st->max_output) {
            jinja_fail(st, line, ERR_RANGE, "string repetition too large");
            return NULL;
        }
        char *p = tpl_arena_alloc(st->arena, total + 1);
        if (!p) return jinja_oom(st);
        for (int64_t k = 0; k < times; k++)
            memcpy(p + (size_t)k * seq->u.s.n, seq->u.s.p, seq->u.s.n);
        p[total] = 0;
        struct tpl_value *v = tpl_value_string_take(st->arena, p, total, 0);
        return v ? v : jinja_oom(st);
    }
    size_t total;
    if (mem_mul_size(seq->u.arr->n, (size_t)times, &total) || total > (1u << 24)) {
        jinja_fail(st, line, ERR_RANGE, "list repetition too large");
        return NULL;
    }
    if (jinja_charge(st, total / 64)) return NULL;
    struct tpl_value *r = tpl_value_tuple(st->arena, total);
    if (!r) return jinja_oom(st);
    r->flags = seq->flags & TPL_F_TUPLE;
    for (size_t k = 0; k < total; k++) r->u.arr->items[k] = seq->u.arr->items[k % seq->u.arr->n];
    return r;
}

static void float_divmod(double vx, double wx, double *floordiv, double *mod) {
    /* Objects/floatobject.c float_divmod */
    double m = fmod(vx, wx);
    double div = (vx - m) / wx;
    if (m != 0) {
        if ((wx < 0) != (m < 0)) {
            m += wx;
            div -= 1.0;
        }
    } else {
        m = copysign(0.0, wx);
    }
    double fd;
    if (div != 0) {
        fd = floor(div);
        if (div - fd > 0.5) fd += 1.0;
    } else {
        fd = copysign(0.0, vx / wx);
    }
    *floordiv = fd;
    *mod = m;
}

static struct tpl_value *concat_strings(struct jinja_render *st, struct tpl_value *a,
                                        struct tpl_value *b) {
    /* Markup + str escapes the str (markupsafe); the result stays Markup */
    int safe = (a->flags | b->flags) & TPL_F_SAFE;
    if (safe && !(a->flags & TPL_F_SAFE) && !(a = jinja_html_escape(st, a))) return NULL;
    if (safe && !(b->flags & TPL_F_SAFE) && !(b = jinja_html_escape(st, b))) return NULL;
    size_t total;
    if (mem_add_size(a->u.s.n, b->u.s.n, &total) || total > st->max_output) {
        jinja_fail(st, 0, ERR_RANGE, "string too large");
        return NULL;
    }
    char *p = tpl_arena_alloc(st->arena, total + 1);
    if (!p) return jinja_oom(st);
    memcpy(p, a->u.s.p, a->u.s.n);
    memcpy(p + a->u.s.n, b->u.s.p, b->u.s.n);
    p[total] = 0;
    struct tpl_value *v = tpl_value_string_take(st->arena, p, total, safe ? TPL_F_SAFE : 0);
    return v ? v : jinja_oom(st);
}

static struct tpl_value *int_pow(struct jinja_render *st, uint32_t line, int64_t base,
                                 int64_t exp) {
    int64_t result = 1;
    while (exp > 0) {
        if (exp & 1 && __builtin_mul_overflow(result, base, &result)) return overflow(st, line);
        exp >>= 1;
        if (exp && __builtin_mul_overflow(base, base, &base)) return overflow(st, line);
    }
    return jinja_new_int(st, result);
}

struct tpl_value *jinja_binop(struct jinja_render *st, uint32_t line, int op, struct tpl_value *a,
                              struct tpl_value *b) {
    static const char *const sym[] = {
        [OP_ADD] = "+", [OP_SUB] = "-", [OP_DIV] = "/",          [OP_FLOORDIV] = "//",
        [OP_MUL] = "*", [OP_MOD] = "%", [OP_POW] = "** or pow()"};
    if (a->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, a);
    if (b->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, b);
    if ((a->flags | b->flags) & TPL_F_GEN) return type_error(st, line, sym[op], a, b);
    if (jinja_charge(st, jinja_weight(a) + jinja_weight(b))) return NULL;
    int an = tpl_is_number(a), bn = tpl_is_number(b);
    if (op == OP_ADD && !(an && bn)) {
        if (a->kind == TPL_STRING && b->kind == TPL_STRING) return concat_strings(st, a, b);
        if (a->kind == TPL_ARRAY && b->kind == TPL_ARRAY &&
            (a->flags & TPL_F_TUPLE) == (b->flags & TPL_F_TUPLE)) {
            size_t total = a->u.arr->n + b->u.arr->n;
            struct tpl_value *r = tpl_value_tuple(st->arena, total);
            if (!r) return jinja_oom(st);
            r->flags = a->flags & TPL_F_TUPLE;
            for (size_t k = 0; k < a->u.arr->n; k++) r->u.arr->items[k] = a->u.arr->items[k];
            for (size_t k = 0; k < b->u.arr->n; k++)
                r->u.arr->items[a->u.arr->n + k] = b->u.arr->items[k];
            return r;
        }
        if (a->kind == TPL_STRING || a->kind == TPL_ARRAY) {
            jinja_fail(st, line, ERR_INVALID, "can only concatenate %s (not \"%s\") to %s",
                       tpl_type_name(a), tpl_type_name(b), tpl_type_name(a));
            return NULL;
        }
        return type_error(st, line, "+", a, b);
    }
    if (op == OP_MUL && !(an && bn)) {
        if ((a->kind == TPL_STRING || a->kind == TPL_ARRAY) &&
            (b->kind == TPL_INT || b->kind == TPL_BOOL))
            return repeat(st, line, a, b->u.i);
        if ((b->kind == TPL_STRING || b->kind == TPL_ARRAY) &&
            (a->kind == TPL_INT || a->kind == TPL_BOOL))
            return repeat(st, line, b, a->u.i);
        return type_error(st, line, "*", a, b);
    }
    if (op == OP_MOD && a->kind == TPL_STRING) return jinja_percent_format(st, line, a, b);
    if (!an || !bn) return type_error(st, line, sym[op], a, b);

    if (a->kind != TPL_FLOAT && b->kind != TPL_FLOAT && op != OP_DIV) {
        int64_t x = a->u.i, y = b->u.i, r;
        switch (op) {
        case OP_ADD:
            if (__builtin_add_overflow(x, y, &r)) return overflow(st, line);
            return jinja_new_int(st, r);
        case OP_SUB:
            if (__builtin_sub_overflow(x, y, &r)) return overflow(st, line);
            return jinja_new_int(st, r);
        case OP_MUL:
            if (__builtin_mul_overflow(x, y, &r)) return overflow(st, line);
            return jinja_new_int(st, r);
        case OP_FLOORDIV:
        case OP_MOD:
            if (y == 0) {
                jinja_fail(st, line, ERR_INVALID, "integer division or modulo by zero");
                return NULL;
            }
            if (y == -1) {
                if (op == OP_MOD) return jinja_new_int(st, 0);
                if (x == INT64_MIN) return overflow(st, line);
                return jinja_new_int(st, -x);
            }
            r = op == OP_FLOORDIV ? x / y : x % y;
            if (op == OP_FLOORDIV && (x % y != 0) && ((x < 0) != (y < 0))) r--;
            if (op == OP_MOD && r != 0 && ((r < 0) != (y < 0))) r += y;
            return jinja_new_int(st, r);
        case OP_POW:
            if (y >= 0) return int_pow(st, line, x, y);
            if (x == 0) {
                jinja_fail(st, line, ERR_INVALID, "0.0 cannot be raised to a negative power");
                return NULL;
            }
            return jinja_new_float(st, pow((double)x, (double)y));
        }
    }
    double x = tpl_to_double(a), y = tpl_to_double(b), fd, m;
    switch (op) {
    case OP_ADD:
        return jinja_new_float(st, x + y);
    case OP_SUB:
        return jinja_new_float(st, x - y);
    case OP_MUL:
        return jinja_new_float(st, x * y);
    case OP_DIV:
        if (y == 0) {
            jinja_fail(st, line, ERR_INVALID, "division by zero");
            return NULL;
        }
        return jinja_new_float(st, x / y);
    case OP_FLOORDIV:
    case OP_MOD:
        if (y == 0) {
            jinja_fail(st, line, ERR_INVALID, "float floor division or modulo by zero");
            return NULL;
        }
        float_divmod(x, y, &fd, &m);
        return jinja_new_float(st, op == OP_MOD ? m : fd);
    case OP_POW: {
        if (x == 0 && y < 0) {
            jinja_fail(st, line, ERR_INVALID, "0.0 cannot be raised to a negative power");
            return NULL;
        }
        if (x < 0 && y != floor(y)) {
            jinja_fail(st, line, ERR_UNSUPPORTED, "complex result of a power");
            return NULL;
        }
        double r = pow(x, y);
        if (isinf(r) && !isinf(x) && !isinf(y)) {
            jinja_fail(st, line, ERR_INVALID, "(34, 'Numerical result out of range')");
            return NULL;
        }
        return jinja_new_float(st, r);
    }
    }
    return type_error(st, line, "?", a, b);
}

/* ============================================================================================
 * Calls: macros, builtins, recursive loops
 * ============================================================================================
 * Macros bind like Jinja's Macro._invoke: positional, keyword, defaults evaluated in the
 * macro's own scope, and varargs/kwargs/caller only when the body uses them (known at parse time).
 * A call renders into a private buffer and returns the text.
 */

static int run_loop(struct jinja_render *st, struct jinja_scope *sc, const struct jinja_node *n,
                    struct tpl_value *iterable, int depth0);

static int bind_target(struct jinja_render *st, struct jinja_scope *sc,
                       const struct jinja_node *target, struct tpl_value *v);

static int enter_call(struct jinja_render *st, uint32_t line) {
    if (jinja_charge(st, 1)) return st->code;
    if (++st->call_depth > st->max_call_depth) {
        st->call_depth--;
        return jinja_fail(st, line, ERR_RANGE,
                          "macro or recursive loop calls nested deeper than %d",
                          st->max_call_depth);
    }
    return 0;
}

static struct tpl_value *call_macro(struct jinja_render *st, uint32_t line, struct jinja_macro *mac,
                                    struct jinja_args *args) {
    const struct jinja_node *node = mac->node;
    int is_caller = node->kind == N_CALL_BLOCK;
    const char *name = is_caller ? "caller" : node->name;
    int name_n = is_caller ? 6 : (int)node->name_n;
    size_t n_params = node->n2;
    if (args->n_pos > n_params && !(node->flag & JINJA_USES_VARARGS)) {
        jinja_fail(st, line, ERR_INVALID, "macro '%.*s' takes not more than %zu argument(s)",
                   name_n, name, n_params);
        return NULL;
    }
    if (enter_call(st, line)) return NULL;
    struct tpl_value *result = NULL;
    struct jinja_scope *sc = scope_new(st, mac->closure);
    uint8_t *used = NULL;
    if (!sc) goto done;
    if (args->n_kw && !(used = tpl_arena_alloc(st->arena, args->n_kw))) {
        jinja_oom(st);
        goto done;
    }
    if (used) memset(used, 0, args->n_kw);
    for (size_t i = 0; i < n_params; i++) {
        const struct jinja_node *param = node->list2[i];
        struct tpl_value *v = i < args->n_pos ? args->pos[i] : NULL;
        for (size_t k = 0; k < args->n_kw; k++) {
            if (args->kw[k].n == param->name_n &&
                memcmp(args->kw[k].name, param->name, param->name_n) == 0) {
                if (v) {
                    jinja_fail(st, line, ERR_INVALID,
                               "macro '%.*s' got multiple values for argument '%.*s'", name_n, name,
                               (int)param->name_n, param->name);
                    goto done;
                }
                v = args->kw[k].v;
                used[k] = 1;
            }
        }
        if (!v && param->a && !(v = eval(st, sc, param->a))) goto done;
        if (!v) {
            v = tpl_value_undef(st->arena, TPL_UNDEF_HINT, "parameter was not provided", 26, NULL);
            if (!v) {
                jinja_oom(st);
                goto done;
            }
        }
        if (scope_set(st, sc, param->name, param->name_n, v)) goto done;
    }
    struct tpl_value *kwargs = NULL, *caller = NULL;
    for (size_t k = 0; k < args->n_kw; k++) {
        if (used[k]) continue;
        if (args->kw[k].n == 6 && memcmp(args->kw[k].name, "caller", 6) == 0 &&
            (node->flag & JINJA_USES_CALLER)) {
            caller = args->kw[k].v;
            continue;
        }
        if (!(node->flag & JINJA_USES_KWARGS)) {
            jinja_fail(st, line, ERR_INVALID, "macro '%.*s' takes no keyword argument '%.*s'",
                       name_n, name, (int)args->kw[k].n, args->kw[k].name);
            goto done;
        }
        if (!kwargs && !(kwargs = tpl_value_object(st->arena))) {
            jinja_oom(st);
            goto done;
        }
        if (tpl_object_set(st->arena, kwargs, args->kw[k].name, args->kw[k].n, args->kw[k].v)) {
            jinja_oom(st);
            goto done;
        }
    }
    if (node->flag & JINJA_USES_KWARGS) {
        if (!kwargs && !(kwargs = tpl_value_object(st->arena))) {
            jinja_oom(st);
            goto done;
        }
        if (scope_set(st, sc, "kwargs", 6, kwargs)) goto done;
    }
    if (node->flag & JINJA_USES_VARARGS) {
        size_t extra = args->n_pos > n_params ? args->n_pos - n_params : 0;
        struct tpl_value *va = tpl_value_tuple(st->arena, extra);
        if (!va) {
            jinja_oom(st);
            goto done;
        }
        for (size_t k = 0; k < extra; k++) va->u.arr->items[k] = args->pos[n_params + k];
        if (scope_set(st, sc, "varargs", 7, va)) goto done;
    }
    if ((node->flag & JINJA_USES_CALLER) && !is_caller) {
        if (!caller &&
            !(caller = tpl_value_undef(st->arena, TPL_UNDEF_HINT, "No caller defined", 17, NULL))) {
            jinja_oom(st);
            goto done;
        }
        if (scope_set(st, sc, "caller", 6, caller)) goto done;
    }
    struct buf out, *saved = st->out;
    buf_init(&out);
    st->out = &out;
    int rc = exec_list(st, sc, node->list, node->n);
    st->out = saved;
    if (rc < 0) {
        buf_free(&out);
        goto done;
    }
    result = jinja_buf_to_string(st, &out);
done:
    st->call_depth--;
    return result;
}

static struct tpl_value *call_loop(struct jinja_render *st, uint32_t line, struct jinja_loop *l,
                                   struct jinja_args *args) {
    if (!l->node->flag) {
        jinja_fail(st, line, ERR_INVALID,
                   "Tried to call non recursive loop. Maybe you forgot the 'recursive' modifier.");
        return NULL;
    }
    if (args->n_pos != 1 || args->n_kw) {
        jinja_fail(st, line, ERR_INVALID, "loop() takes exactly one argument");
        return NULL;
    }
    if (enter_call(st, line)) return NULL;
    struct buf out, *saved = st->out;
    buf_init(&out);
    st->out = &out;
    int rc = run_loop(st, l->scope, l->node, args->pos[0], l->depth0 + 1);
    st->out = saved;
    st->call_depth--;
    if (rc < 0) {
        buf_free(&out);
        return NULL;
    }
    return jinja_buf_to_string(st, &out);
}

static struct tpl_value *loop_method(struct jinja_render *st, uint32_t line, struct jinja_func *fn,
                                     struct jinja_args *args) {
    struct jinja_loop *l = fn->self->u.loop;
    if (strcmp(fn->name, "cycle") == 0) {
        if (!args->n_pos) {
            jinja_fail(st, line, ERR_INVALID, "no items for cycling given");
            return NULL;
        }
        return args->pos[l->index0 % args->n_pos];
    }
    /* changed(*values) */
    struct tpl_value *now = tpl_value_tuple(st->arena, args->n_pos);
    if (!now) return jinja_oom(st);
    for (size_t i = 0; i < args->n_pos; i++) now->u.arr->items[i] = args->pos[i];
    int same = l->last_changed ? jinja_equal(st, l->last_changed, now) : 0;
    if (same < 0) return NULL;
    if (same) return tpl_value_bool(0);
    l->last_changed = now;
    return tpl_value_bool(1);
}

struct tpl_value *jinja_call(struct jinja_render *st, uint32_t line, struct tpl_value *callee,
                             struct jinja_args *args) {
    switch (callee->kind) {
    case TPL_MACRO:
        return call_macro(st, line, callee->u.mac, args);
    case TPL_LOOP:
        return call_loop(st, line, callee->u.loop, args);
    case TPL_FUNC:
        if (jinja_charge(st, 1)) return NULL;
        if (callee->u.fn->self && callee->u.fn->self->kind == TPL_LOOP)
            return loop_method(st, line, callee->u.fn, args);
        if (callee->u.fn->is_method) return jinja_method_call(st, line, callee->u.fn, args);
        return jinja_builtin_call(st, line, callee->u.fn, args);
    case TPL_UNDEFINED:
        return jinja_undefined_error(st, line, callee);
    default:
        jinja_fail(st, line, ERR_INVALID, "'%s' object is not callable", tpl_type_name(callee));
        return NULL;
    }
}

/* Evaluates the argument lists of a call, filter or test node into args. */
static int eval_args(struct jinja_render *st, struct jinja_scope *sc, const struct jinja_node *n,
                     struct jinja_args *args, size_t extra_kw) {
    memset(args, 0, sizeof(*args));
    struct tpl_value *dyn = NULL, *dynkw = NULL;
    struct tpl_value **dyn_items = NULL;
    size_t n_dyn = 0, n_dynkw = 0;
    if (n->c) {
        if (!(dyn = eval(st, sc, n->c))) return st->code;
        if (jinja_iterate(st, n->line, dyn, &dyn_items, &n_dyn)) return st->code;
    }
    if (n->d) {
        if (!(dynkw = eval(st, sc, n->d))) return st->code;
        if (dynkw->kind != TPL_OBJECT)
            return jinja_fail(st, n->line, ERR_INVALID, "argument after ** must be a mapping");
        n_dynkw = dynkw->u.obj->n;
    }
    size_t n_pos = n->n + n_dyn, n_kw = n->n2 + n_dynkw + extra_kw;
    if (n_pos) {
        args->pos = tpl_arena_alloc(st->arena, n_pos * sizeof(*args->pos));
        if (!args->pos) return jinja_oom(st), st->code;
    }
    if (n_kw) {
        args->kw = tpl_arena_alloc(st->arena, n_kw * sizeof(*args->kw));
        if (!args->kw) return jinja_oom(st), st->code;
    }
    for (size_t i = 0; i < n->n; i++)
        if (!(args->pos[args->n_pos++] = eval(st, sc, n->list[i]))) return st->code;
    for (size_t i = 0; i < n_dyn; i++) args->pos[args->n_pos++] = dyn_items[i];
    for (size_t i = 0; i < n->n2; i++) {
        struct jinja_kwarg *kw = &args->kw[args->n_kw++];
        kw->name = n->list2[i]->name;
        kw->n = n->list2[i]->name_n;
        if (!(kw->v = eval(st, sc, n->list2[i]->a))) return st->code;
    }
    for (size_t i = 0; i < n_dynkw; i++) {
        struct jinja_kwarg *kw = &args->kw[args->n_kw++];
        kw->name = dynkw->u.obj->entries[i].key->u.s.p;
        kw->n = dynkw->u.obj->entries[i].key->u.s.n;
        kw->v = dynkw->u.obj->entries[i].val;
    }
    return 0;
}

static struct tpl_value *eval_filter(struct jinja_render *st, struct jinja_scope *sc,
                                     const struct jinja_node *n, struct tpl_value *input) {
    struct tpl_value *v;
    if (!n->a)
        v = input;
    else if (n->a->kind == E_FILTER && input)
        v = eval_filter(st, sc, n->a, input);
    else
        v = eval(st, sc, n->a);
    if (!v) return NULL;
    if (n->id < 0) {
        jinja_fail(st, n->line, ERR_INVALID, "No filter named '%.*s'.", (int)n->name_n, n->name);
        return NULL;
    }
    struct jinja_args args;
    if (eval_args(st, sc, n, &args, 0)) return NULL;
    if (jinja_charge(st, 1)) return NULL;
    return jinja_filter_apply(st, n->line, n->id, v, &args);
}

/* ============================================================================================
 * Expressions
 * ============================================================================================
 * eval returns NULL after recording an error; the depth counter bounds recursion through deep or
 * left-leaning expression trees.
 */

static struct tpl_value *eval_compare(struct jinja_render *st, struct jinja_scope *sc,
                                      const struct jinja_node *n) {
    struct tpl_value *left = eval(st, sc, n->a);
    if (!left) return NULL;
    for (size_t i = 0; i < n->n; i++) {
        const struct jinja_node *o = n->list[i];
        struct tpl_value *right = eval(st, sc, o->a);
        if (!right) return NULL;
        int ok = 0, c;
        if (jinja_charge(st, jinja_weight(left) + jinja_weight(right))) return NULL;
        switch (o->op) {
        case OP_EQ:
        case OP_NE:
            if ((ok = jinja_equal(st, left, right)) < 0) return NULL;
            if (o->op == OP_NE) ok = !ok;
            break;
        case OP_IN:
        case OP_NOTIN:
            if (jinja_contains(st, o->line, right, left, &ok)) return NULL;
            if (o->op == OP_NOTIN) ok = !ok;
            break;
        default:
            if (left->kind == TPL_UNDEFINED) return jinja_undefined_error(st, o->line, left);
            if (right->kind == TPL_UNDEFINED) return jinja_undefined_error(st, o->line, right);
            if (jinja_order(st, o->line, left, right, &c)) return NULL;
            ok = o->op == OP_LT     ? c == -1
                 : o->op == OP_LTEQ ? (c == -1 || c == 0)
                 : o->op == OP_GT   ? c == 1
                                    : (c == 1 || c == 0);
            break;
        }
        if (!ok) return tpl_value_bool(0);
        left = right;
    }
    return tpl_value_bool(1);
}

static struct tpl_value *eval_inner(struct jinja_render *st, struct jinja_scope *sc,
                                    const struct jinja_node *n) {
    struct tpl_value *a, *b;
    switch (n->kind) {
    case E_CONST:
        return n->value;
    case E_NAME:
        return lookup_name(st, sc, n->name, n->name_n);
    case E_GETATTR:
        if (!(a = eval(st, sc, n->a))) return NULL;
        return jinja_getattr(st, n->line, a, n->name, n->name_n);
    case E_GETITEM:
        if (!(a = eval(st, sc, n->a))) return NULL;
        if (n->b->kind == E_SLICE) return eval_slice(st, sc, n, a);
        if (!(b = eval(st, sc, n->b))) return NULL;
        return jinja_getitem(st, n->line, a, b);
    case E_CALL: {
        if (!(a = eval(st, sc, n->a))) return NULL;
        struct jinja_args args;
        if (eval_args(st, sc, n, &args, 0)) return NULL;
        return jinja_call(st, n->line, a, &args);
    }
    case E_FILTER:
        return eval_filter(st, sc, n, NULL);
    case E_TEST: {
        if (!(a = eval(st, sc, n->a))) return NULL;
        if (n->id < 0) {
            jinja_fail(st, n->line, ERR_INVALID, "No test named '%.*s'.", (int)n->name_n, n->name);
            return NULL;
        }
        struct jinja_args args;
        int ok;
        if (eval_args(st, sc, n, &args, 0) || jinja_test_apply(st, n->line, n->id, a, &args, &ok))
            return NULL;
        return tpl_value_bool(ok);
    }
    case E_NOT:
        if (!(a = eval(st, sc, n->a))) return NULL;
        return tpl_value_bool(!tpl_is_truthy(a));
    case E_NEG:
    case E_POS:
        if (!(a = eval(st, sc, n->a))) return NULL;
        if (a->kind == TPL_UNDEFINED) return jinja_undefined_error(st, n->line, a);
        if (!tpl_is_number(a)) {
            jinja_fail(st, n->line, ERR_INVALID, "bad operand type for unary %c: '%s'",
                       n->kind == E_NEG ? '-' : '+', tpl_type_name(a));
            return NULL;
        }
        if (a->kind == TPL_FLOAT) return n->kind == E_NEG ? jinja_new_float(st, -a->u.f) : a;
        if (n->kind == E_NEG && a->u.i == INT64_MIN) return overflow(st, n->line);
        return jinja_new_int(st, n->kind == E_NEG ? -a->u.i : a->u.i);
    case E_BINOP:
        if (!(a = eval(st, sc, n->a)) || !(b = eval(st, sc, n->b))) return NULL;
        return jinja_binop(st, n->line, n->op, a, b);
    case E_AND:
        if (!(a = eval(st, sc, n->a))) return NULL;
        return tpl_is_truthy(a) ? eval(st, sc, n->b) : a;
    case E_OR:
        if (!(a = eval(st, sc, n->a))) return NULL;
        return tpl_is_truthy(a) ? a : eval(st, sc, n->b);
    case E_CONCAT: {
        struct buf out;
        buf_init(&out);
        for (size_t i = 0; i < n->n; i++) {
            if (!(a = eval(st, sc, n->list[i])) || tpl_value_str(&out, a)) {
                if (a) jinja_fail(st, n->line, ERR_RANGE, "value nested too deeply to print");
                buf_free(&out);
                return NULL;
            }
            if (out.len > st->max_output) break;
        }
        if (jinja_charge(st, out.len >> 8)) {
            buf_free(&out);
            return NULL;
        }
        return jinja_buf_to_string(st, &out);
    }
    case E_COMPARE:
        return eval_compare(st, sc, n);
    case E_COND:
        if (!(a = eval(st, sc, n->a))) return NULL;
        if (tpl_is_truthy(a)) return eval(st, sc, n->b);
        if (n->c) return eval(st, sc, n->c);
        return &tpl_undefined_value;
    case E_LIST:
    case E_TUPLE: {
        struct tpl_value *r = tpl_value_tuple(st->arena, n->n);
        if (!r) return jinja_oom(st);
        r->flags = n->kind == E_TUPLE ? TPL_F_TUPLE : 0;
        for (size_t i = 0; i < n->n; i++)
            if (!(r->u.arr->items[i] = eval(st, sc, n->list[i]))) return NULL;
        return r;
    }
    case E_DICT: {
        struct tpl_value *r = tpl_value_object(st->arena);
        if (!r) return jinja_oom(st);
        for (size_t i = 0; i < n->n; i++) {
            if (!(a = eval(st, sc, n->list[i])) || !(b = eval(st, sc, n->list2[i]))) return NULL;
            if (a->kind != TPL_STRING) {
                jinja_fail(st, n->line, ERR_UNSUPPORTED, "dict keys must be strings here, not %s",
                           tpl_type_name(a));
                return NULL;
            }
            if (tpl_object_put(st->arena, r->u.obj, a, b)) return jinja_oom(st);
        }
        return r;
    }
    default:
        jinja_fail(st, n->line, ERR_INVALID, "cannot evaluate this expression");
        return NULL;
    }
}

static struct tpl_value *eval(struct jinja_render *st, struct jinja_scope *sc,
                              const struct jinja_node *n) {
    if (++st->depth > st->max_depth) {
        st->depth--;
        jinja_fail(st, n->line, ERR_RANGE, "template evaluation nested too deeply");
        return NULL;
    }
    struct tpl_value *v = eval_inner(st, sc, n);
    st->depth--;
    return v;
}

/* ============================================================================================
 * Statements
 * ============================================================================================
 * exec returns EXEC_OK/BREAK/CONTINUE or a negative error. Captures (set and filter blocks,
 * macros) swap st->out for a private buffer.
 */

/* Assigns v to a name or unpacks it over a tuple of targets (for loops, set, with). */
static int bind_target(struct jinja_render *st, struct jinja_scope *sc,
                       const struct jinja_node *target, struct tpl_value *v) {
    if (target->kind == E_NAME) return scope_set(st, sc, target->name, target->name_n, v);
    if (target->kind != E_TUPLE)
        return jinja_fail(st, target->line, ERR_INVALID, "cannot assign to this target");
    struct tpl_value **items;
    size_t n;
    if (v->kind == TPL_UNDEFINED) return jinja_undefined_error(st, target->line, v), st->code;
    if (jinja_iterate(st, target->line, v, &items, &n)) return st->code;
    if (n < target->n)
        return jinja_fail(st, target->line, ERR_INVALID,
                          "not enough values to unpack (expected %zu, got %zu)", target->n, n);
    if (n > target->n)
        return jinja_fail(st, target->line, ERR_INVALID, "too many values to unpack (expected %zu)",
                          target->n);
    for (size_t i = 0; i < n; i++)
        if (bind_target(st, sc, target->list[i], items[i])) return st->code;
    return 0;
}

static int assign(struct jinja_render *st, struct jinja_scope *sc, const struct jinja_node *target,
                  struct tpl_value *v) {
    if (target->kind != E_NSREF) return bind_target(st, sc, target, v);
    struct tpl_value *ns = lookup_name(st, sc, target->name, target->name_n);
    if (!ns) return st->code;
    if (ns->kind != TPL_NAMESPACE)
        return jinja_fail(st, target->line, ERR_INVALID,
                          "cannot assign attribute on non-namespace object");
    struct tpl_value *key = jinja_new_string(st, target->name2, target->name2_n);
    if (!key || tpl_object_put(st->arena, ns->u.obj, key, v)) return jinja_oom(st), st->code;
    return 0;
}

static int run_loop(struct jinja_render *st, struct jinja_scope *sc, const struct jinja_node *n,
                    struct tpl_value *iterable, int depth0) {
    struct tpl_value **items;
    size_t count;
    if (jinja_iterate(st, n->line, iterable, &items, &count)) return st->code;
    if (n->c && count) { /* `for x in xs if test`: filter first, so loop.length counts kept items */
        struct tpl_value **kept = tpl_arena_alloc(st->arena, count * sizeof(*kept));
        if (!kept) return jinja_oom(st), st->code;
        size_t k = 0;
        for (size_t i = 0; i < count; i++) {
            struct jinja_scope *tmp = scope_new(st, sc);
            if (!tmp || jinja_charge(st, 1) || bind_target(st, tmp, n->a, items[i]))
                return st->code;
            struct tpl_value *ok = eval(st, tmp, n->c);
            if (!ok) return st->code;
            if (tpl_is_truthy(ok)) kept[k++] = items[i];
        }
        items = kept;
        count = k;
    }
    if (count == 0) {
        struct jinja_scope *else_sc = n->n2 ? scope_new(st, sc) : NULL;
        if (n->n2 && !else_sc) return st->code;
        int rc = n->n2 ? exec_list(st, else_sc, n->list2, n->n2) : 0;
        return rc < 0 ? rc : 0;
    }
    struct jinja_loop *l = tpl_arena_alloc(st->arena, sizeof(*l));
    struct tpl_value *lv = l ? tpl_arena_alloc(st->arena, sizeof(*lv)) : NULL;
    if (!lv) return jinja_oom(st), st->code;
    memset(l, 0, sizeof(*l));
    memset(lv, 0, sizeof(*lv));
    l->node = n;
    l->scope = sc;
    l->items = items;
    l->n = count;
    l->depth0 = depth0;
    lv->kind = TPL_LOOP;
    lv->u.loop = l;
    struct jinja_scope *iter = NULL;
    for (size_t i = 0; i < count; i++) {
        if (jinja_charge(st, 1)) return st->code;
        if (!iter || iter->captured) {
            if (!(iter = scope_new(st, sc))) return st->code;
        } else {
            iter->n = 0; /* nothing closed over the last iteration's scope: reuse it */
        }
        l->index0 = i;
        if (bind_target(st, iter, n->a, items[i]) || scope_set(st, iter, "loop", 4, lv))
            return st->code;
        int rc = exec_list(st, iter, n->list, n->n);
        if (rc < 0) return rc;
        if (rc == EXEC_BREAK) break;
    }
    return 0;
}

/* Runs body with output captured; *out gets the text as a string value. */
static int capture(struct jinja_render *st, struct jinja_scope *sc, struct jinja_node *const *body,
                   size_t n, struct tpl_value **out) {
    struct buf b, *saved = st->out;
    buf_init(&b);
    st->out = &b;
    int rc = exec_list(st, sc, body, n);
    st->out = saved;
    if (rc < 0) {
        buf_free(&b);
        return rc;
    }
    *out = jinja_buf_to_string(st, &b);
    return *out ? rc : st->code;
}

static struct tpl_value *new_macro(struct jinja_render *st, struct jinja_scope *sc,
                                   const struct jinja_node *n) {
    struct jinja_macro *m = tpl_arena_alloc(st->arena, sizeof(*m));
    struct tpl_value *v = m ? tpl_arena_alloc(st->arena, sizeof(*v)) : NULL;
    if (!v) return jinja_oom(st);
    memset(v, 0, sizeof(*v));
    m->node = n;
    m->closure = sc;
    sc->captured = 1;
    v->kind = TPL_MACRO;
    v->u.mac = m;
    return v;
}

/* Writes str(v), as {{ v }} does. */
static int emit_value(struct jinja_render *st, uint32_t line, const struct tpl_value *v) {
    if (v->kind == TPL_STRING) return emit(st, v->u.s.p, v->u.s.n);
    if (tpl_value_str(st->out, v))
        return jinja_fail(st, line, ERR_RANGE, "value nested too deeply to print");
    return emit(st, "", 0);
}

static int exec_stmt(struct jinja_render *st, struct jinja_scope *sc, const struct jinja_node *n) {
    struct tpl_value *v;
    int rc;
    switch (n->kind) {
    case N_DATA:
        return emit(st, n->name, n->name_n);
    case N_PRINT:
        if (!(v = eval(st, sc, n->a))) return st->code;
        return emit_value(st, n->line, v);
    case N_IF:
        if (!(v = eval(st, sc, n->a))) return st->code;
        if (tpl_is_truthy(v)) return exec_list(st, sc, n->list, n->n);
        return exec_list(st, sc, n->list2, n->n2);
    case N_FOR:
        if (!(v = eval(st, sc, n->b))) return st->code;
        return run_loop(st, sc, n, v, 0);
    case N_SET:
        if (!(v = eval(st, sc, n->b))) return st->code;
        return assign(st, sc, n->a, v);
    case N_SET_BLOCK:
        if ((rc = capture(st, sc, n->list, n->n, &v)) != 0) return rc;
        if (n->b && !(v = eval_filter(st, sc, n->b, v))) return st->code;
        return assign(st, sc, n->a, v);
    case N_MACRO:
        if (!(v = new_macro(st, sc, n))) return st->code;
        return scope_set(st, sc, n->name, n->name_n, v);
    case N_CALL_BLOCK: {
        const struct jinja_node *call = n->a;
        struct tpl_value *callee, *caller = new_macro(st, sc, n);
        struct jinja_args args;
        if (!caller || !(callee = eval(st, sc, call->a))) return st->code;
        if (eval_args(st, sc, call, &args, 1)) return st->code;
        struct jinja_kwarg *kw = &args.kw[args.n_kw++];
        kw->name = "caller";
        kw->n = 6;
        kw->v = caller;
        if (!(v = jinja_call(st, n->line, callee, &args))) return st->code;
        return emit_value(st, n->line, v);
    }
    case N_FILTER_BLOCK:
        if ((rc = capture(st, sc, n->list, n->n, &v)) != 0) return rc;
        if (!(v = eval_filter(st, sc, n->a, v))) return st->code;
        return emit_value(st, n->line, v);
    case N_WITH: {
        struct jinja_scope *inner = scope_new(st, sc);
        if (!inner) return st->code;
        for (size_t i = 0; i < n->n2; i++) {
            /* values see the outer scope, like Jinja's with */
            if (!(v = eval(st, sc, n->list2[i]->b))) return st->code;
            if (bind_target(st, inner, n->list2[i]->a, v)) return st->code;
        }
        return exec_list(st, inner, n->list, n->n);
    }
    case N_SCOPE:
        return exec_list(st, sc, n->list, n->n);
    case N_BLOCK: {
        /* a block is its own function in Jinja: it sees the template's top-level variables
         * (or, when scoped, the enclosing ones) and its sets stay inside */
        struct jinja_scope *inner = scope_new(st, n->flag ? sc : st->root);
        if (!inner) return st->code;
        rc = exec_list(st, inner, n->list, n->n);
        return rc < 0 ? rc : 0;
    }
    case N_AUTOESCAPE:
        if (!(v = eval(st, sc, n->a))) return st->code;
        if (tpl_is_truthy(v))
            return jinja_fail(st, n->line, ERR_UNSUPPORTED, "autoescape is not supported");
        return exec_list(st, sc, n->list, n->n);
    case N_BREAK:
        return EXEC_BREAK;
    case N_CONTINUE:
        return EXEC_CONTINUE;
    default:
        return jinja_fail(st, n->line, ERR_INVALID, "cannot execute this statement");
    }
}

static int exec_list(struct jinja_render *st, struct jinja_scope *sc,
                     struct jinja_node *const *list, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (jinja_charge(st, 1)) return st->code;
        if (++st->depth > st->max_depth) {
            st->depth--;
            return jinja_fail(st, list[i]->line, ERR_RANGE,
                              "template evaluation nested too deeply");
        }
        int rc = exec_stmt(st, sc, list[i]);
        st->depth--;
        if (rc < 0 || st->code) return rc < 0 ? rc : st->code;
        if (rc != EXEC_OK) return rc;
    }
    return EXEC_OK;
}

int jinja_render(const struct jinja_template *t, struct jinja_render *st) {
    struct jinja_scope *root = scope_new(st, NULL);
    if (!root) return st->code;
    st->root = root;
    int rc = exec_list(st, root, t->body, t->n_body);
    if (rc < 0) return rc;
    return st->code;
}
