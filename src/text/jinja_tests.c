/* jinja_tests.c: Jinja2's builtin tests (jinja2/tests.py): `x is defined`, `x is string`, ...
 *
 * They follow Python's types: `is sequence` holds for lists, tuples, strings and dicts (and
 * Jinja's Undefined), `is number` for booleans too, `is integer` not for booleans; `is
 * iterable` for anything a for loop accepts.
 */
#include "jinja_internal.h"

#include <math.h>
#include <string.h>

/* ============================================================================================
 * Tests
 * ============================================================================================
 */

enum test_id {
    T_BOOLEAN,
    T_CALLABLE,
    T_DEFINED,
    T_DIVISIBLEBY,
    T_EQ,
    T_ESCAPED,
    T_EVEN,
    T_FALSE,
    T_FILTER,
    T_FLOAT,
    T_GE,
    T_GT,
    T_IN,
    T_INTEGER,
    T_ITERABLE,
    T_LE,
    T_LOWER,
    T_LT,
    T_MAPPING,
    T_NE,
    T_NONE,
    T_NUMBER,
    T_ODD,
    T_SAMEAS,
    T_SEQUENCE,
    T_STRING,
    T_TEST,
    T_TRUE,
    T_UNDEFINED,
    T_UPPER,
};

static const struct {
    const char *name;
    uint8_t id;
} k_tests[] = {
    {"!=", T_NE},
    {"<", T_LT},
    {"<=", T_LE},
    {"==", T_EQ},
    {">", T_GT},
    {">=", T_GE},
    {"boolean", T_BOOLEAN},
    {"callable", T_CALLABLE},
    {"defined", T_DEFINED},
    {"divisibleby", T_DIVISIBLEBY},
    {"eq", T_EQ},
    {"equalto", T_EQ},
    {"escaped", T_ESCAPED},
    {"even", T_EVEN},
    {"false", T_FALSE},
    {"filter", T_FILTER},
    {"float", T_FLOAT},
    {"ge", T_GE},
    {"greaterthan", T_GT},
    {"gt", T_GT},
    {"in", T_IN},
    {"integer", T_INTEGER},
    {"iterable", T_ITERABLE},
    {"le", T_LE},
    {"lessthan", T_LT},
    {"lower", T_LOWER},
    {"lt", T_LT},
    {"mapping", T_MAPPING},
    {"ne", T_NE},
    {"none", T_NONE},
    {"number", T_NUMBER},
    {"odd", T_ODD},
    {"sameas", T_SAMEAS},
    {"sequence", T_SEQUENCE},
    {"string", T_STRING},
    {"test", T_TEST},
    {"true", T_TRUE},
    {"undefined", T_UNDEFINED},
    {"upper", T_UPPER},
};

int jinja_test_lookup(const char *name, size_t n) {
    for (size_t i = 0; i < sizeof(k_tests) / sizeof(k_tests[0]); i++)
        if (strlen(k_tests[i].name) == n && memcmp(k_tests[i].name, name, n) == 0) return (int)i;
    return -1;
}

static int compare_test(struct jinja_render *st, uint32_t line, struct tpl_value *a,
                        struct tpl_value *b, int *c) {
    if (a->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, a), st->code;
    if (b->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, b), st->code;
    return jinja_order(st, line, a, b, c);
}

int jinja_test_apply(struct jinja_render *st, uint32_t line, int idx, struct tpl_value *v,
                     struct jinja_args *args, int *out) {
    int id = k_tests[idx].id;
    struct tpl_value *arg = args->n_pos ? args->pos[0] : args->n_kw ? args->kw[0].v : NULL;
    int needs_arg = id == T_DIVISIBLEBY || id == T_EQ || id == T_NE || id == T_LT || id == T_LE ||
                    id == T_GT || id == T_GE || id == T_IN || id == T_SAMEAS;
    if (needs_arg && !arg)
        return jinja_fail(st, line, ERR_INVALID, "test '%s' needs an argument", k_tests[idx].name);
    int c;
    *out = 0;
    switch (id) {
    case T_BOOLEAN:
        *out = v->kind == TPL_BOOL;
        return 0;
    case T_CALLABLE:
        *out = v->kind == TPL_FUNC || v->kind == TPL_MACRO || v->kind == TPL_LOOP ||
               v->kind == TPL_UNDEFINED;
        return 0;
    case T_DEFINED:
        *out = v->kind != TPL_UNDEFINED;
        return 0;
    case T_UNDEFINED:
        *out = v->kind == TPL_UNDEFINED;
        return 0;
    case T_DIVISIBLEBY: {
        if (!tpl_is_number(v) || !tpl_is_number(arg)) {
            if (v->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, v), st->code;
            return jinja_fail(st, line, ERR_INVALID, "divisibleby needs numbers");
        }
        struct tpl_value *m = jinja_binop(st, line, OP_MOD, v, arg);
        if (!m) return st->code;
        *out = tpl_to_double(m) == 0;
        return 0;
    }
    case T_EQ:
        if ((*out = jinja_equal(st, v, arg)) < 0) return st->code;
        return 0;
    case T_NE:
        if ((*out = jinja_equal(st, v, arg)) < 0) return st->code;
        *out = !*out;
        return 0;
    case T_LT:
    case T_LE:
    case T_GT:
    case T_GE:
        if (compare_test(st, line, v, arg, &c)) return st->code;
        *out = id == T_LT   ? c == -1
               : id == T_LE ? (c == -1 || c == 0)
               : id == T_GT ? c == 1
                            : (c == 1 || c == 0);
        return 0;
    case T_ESCAPED:
        *out = v->kind == TPL_STRING && (v->flags & TPL_F_SAFE);
        return 0;
    case T_EVEN:
    case T_ODD: {
        if (v->kind == TPL_UNDEFINED) return jinja_undefined_error(st, line, v), st->code;
        if (v->kind == TPL_FLOAT) {
            double m = fmod(v->u.f, 2.0);
            *out = id == T_EVEN ? m == 0 : (m == 1 || m == -1);
            return 0;
        }
        if (v->kind != TPL_INT && v->kind != TPL_BOOL)
            return jinja_fail(st, line, ERR_INVALID,
                              "not all arguments converted during string formatting");
        int64_t r = v->u.i % 2;
        *out = id == T_EVEN ? r == 0 : r != 0;
        return 0;
    }
    case T_FALSE:
        *out = v->kind == TPL_BOOL && !v->u.i;
        return 0;
    case T_TRUE:
        *out = v->kind == TPL_BOOL && v->u.i;
        return 0;
    case T_FILTER:
    case T_TEST:
        *out =
            v->kind == TPL_STRING && (id == T_FILTER ? jinja_filter_lookup(v->u.s.p, v->u.s.n)
                                                     : jinja_test_lookup(v->u.s.p, v->u.s.n)) >= 0;
        return 0;
    case T_FLOAT:
        *out = v->kind == TPL_FLOAT;
        return 0;
    case T_INTEGER:
        *out = v->kind == TPL_INT;
        return 0;
    case T_NUMBER:
        *out = tpl_is_number(v);
        return 0;
    case T_IN:
        return jinja_contains(st, line, arg, v, out);
    case T_ITERABLE:
        *out = v->kind == TPL_ARRAY || v->kind == TPL_OBJECT || v->kind == TPL_STRING ||
               v->kind == TPL_UNDEFINED;
        return 0;
    case T_MAPPING:
        *out = v->kind == TPL_OBJECT;
        return 0;
    case T_SEQUENCE:
        /* len() and __getitem__: lists, tuples, strings, dicts, and Jinja's Undefined */
        *out = (v->kind == TPL_ARRAY && !(v->flags & TPL_F_GEN)) || v->kind == TPL_OBJECT ||
               v->kind == TPL_STRING || v->kind == TPL_UNDEFINED;
        return 0;
    case T_STRING:
        *out = v->kind == TPL_STRING;
        return 0;
    case T_NONE:
        *out = v->kind == TPL_NONE;
        return 0;
    case T_LOWER:
    case T_UPPER: {
        struct tpl_value *s = jinja_to_string(st, v);
        if (!s) return st->code;
        *out = jinja_str_is_case(s, id == T_LOWER);
        return 0;
    }
    case T_SAMEAS:
        if (v->kind != arg->kind) return 0;
        switch (v->kind) {
        case TPL_NONE:
        case TPL_UNDEFINED:
            *out = v == arg || v->kind == TPL_NONE;
            return 0;
        case TPL_BOOL:
            *out = v->u.i == arg->u.i;
            return 0;
        case TPL_INT:
            *out = v->u.i == arg->u.i && v->u.i >= -5 && v->u.i <= 256;
            return 0;
        default:
            *out = v == arg;
            return 0;
        }
    }
    return jinja_fail(st, line, ERR_INVALID, "bad test");
}
