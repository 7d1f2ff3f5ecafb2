/* jinja_parse.c: tokens -> AST, following Jinja2's recursive-descent parser (jinja2/parser.py).
 *
 * Precedence, loosest first: `x if c else y`, or, and, not, comparisons (== != < <= > >= in,
 * not in; chained), + -, ~, * / // %, **, unary - +, then postfix (.attr, [item], call) and
 * finally filters and tests, which bind tightest of the infix forms: `'a' + x|trim` is
 * `'a' + (x|trim)` and `-x|abs` is `abs(-x)`. Statements parse their bodies up to their end tag.
 * Nesting is bounded so hostile input cannot exhaust the C stack.
 */
#include "jinja_internal.h"

#include "../base/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define PARSE_MAX_DEPTH 200

struct parser {
    const struct jinja_token *tok; /* [n_tok], last is TK_EOF */
    size_t n_tok, pos;
    struct tpl_arena *arena;
    struct error *err;
    int failed;
    int code; /* the first error */
    int depth;
    int loop_depth;      /* for loops enclosing the current statement (break/continue) */
    uint8_t *macro_uses; /* JINJA_USES_* of the innermost macro body, or NULL */
};

struct node_vec {
    struct jinja_node **v;
    size_t n, cap;
};

/* ============================================================================================
 * Token helpers and errors
 * ============================================================================================
 * Errors carry the line:column of the offending token; the first one wins.
 */

static const struct jinja_token *cur(const struct parser *p) {
    return &p->tok[p->pos];
}

static const struct jinja_token *look(const struct parser *p) {
    return p->pos + 1 < p->n_tok ? &p->tok[p->pos + 1] : &p->tok[p->n_tok - 1];
}

static const struct jinja_token *next(struct parser *p) {
    const struct jinja_token *t = cur(p);
    if (p->pos + 1 < p->n_tok) p->pos++;
    return t;
}

static int tok_is_name(const struct jinja_token *t, const char *name) {
    return t->type == TK_NAME && t->n == strlen(name) && memcmp(t->p, name, t->n) == 0;
}

static int tok_is_op(const struct jinja_token *t, int op) {
    return t->type == TK_OP && t->op == op;
}

static const char *op_text(int op) {
    static const char *const names[] = {
        "+",  "-",  "/", "//", "*", "%",  "**", "~", "[", "]", "(", ")", "{",  "}",
        "==", "!=", ">", ">=", "<", "<=", "=",  ".", ":", "|", ",", ";", "in", "not in",
    };
    return op >= 0 && op < (int)(sizeof(names) / sizeof(names[0])) ? names[op] : "?";
}

/* Describes a token for messages, like Jinja's describe_token. */
static void describe(const struct jinja_token *t, char *out, size_t n) {
    switch (t->type) {
    case TK_EOF:
        snprintf(out, n, "end of template");
        break;
    case TK_DATA:
        snprintf(out, n, "template data");
        break;
    case TK_VAR_BEGIN:
        snprintf(out, n, "begin of print statement");
        break;
    case TK_VAR_END:
        snprintf(out, n, "end of print statement");
        break;
    case TK_BLOCK_BEGIN:
        snprintf(out, n, "begin of statement block");
        break;
    case TK_BLOCK_END:
        snprintf(out, n, "end of statement block");
        break;
    case TK_NAME:
        snprintf(out, n, "%.*s", (int)(t->n > 40 ? 40 : t->n), t->p);
        break;
    case TK_STRING:
        snprintf(out, n, "string");
        break;
    case TK_INT:
        snprintf(out, n, "integer");
        break;
    case TK_FLOAT:
        snprintf(out, n, "float");
        break;
    case TK_OP:
        snprintf(out, n, "%s", op_text(t->op));
        break;
    default:
        snprintf(out, n, "token");
        break;
    }
}

static void *fail_at(struct parser *p, const struct jinja_token *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void *fail_at(struct parser *p, const struct jinja_token *t, int code, const char *fmt,
                     ...) {
    if (!p->failed) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        error_set(p->err, code, "line %u:%u: %s", t->line, t->col, msg);
        p->failed = 1;
        p->code = code;
    }
    return NULL;
}

#define fail(p, ...) fail_at((p), cur(p), ERR_FORMAT, __VA_ARGS__)

static void *oom(struct parser *p) {
    if (!p->failed) {
        error_set(p->err, ERR_NOMEM, "template: out of memory");
        p->failed = 1;
        p->code = ERR_NOMEM;
    }
    return NULL;
}

static void *unexpected(struct parser *p, const char *want) {
    char got[64];
    describe(cur(p), got, sizeof(got));
    if (want) return fail(p, "expected token '%s', got '%s'", want, got);
    return fail(p, "unexpected '%s'", got);
}

static int expect_op(struct parser *p, int op) {
    if (tok_is_op(cur(p), op)) {
        next(p);
        return 1;
    }
    unexpected(p, op_text(op));
    return 0;
}

static int expect_type(struct parser *p, int type, const char *what) {
    if (cur(p)->type == type) {
        next(p);
        return 1;
    }
    unexpected(p, what);
    return 0;
}

static int skip_name(struct parser *p, const char *name) {
    if (tok_is_name(cur(p), name)) {
        next(p);
        return 1;
    }
    return 0;
}

static int skip_op(struct parser *p, int op) {
    if (tok_is_op(cur(p), op)) {
        next(p);
        return 1;
    }
    return 0;
}

/* ============================================================================================
 * Nodes
 * ============================================================================================
 * Nodes and their child lists live in the template's arena and die with the template.
 */

static struct jinja_node *node_new(struct parser *p, int kind, uint32_t line) {
    struct jinja_node *n = tpl_arena_alloc(p->arena, sizeof(*n));
    if (!n) return oom(p);
    memset(n, 0, sizeof(*n));
    n->kind = (uint16_t)kind;
    n->line = line;
    n->id = -1;
    return n;
}

static int vec_push(struct parser *p, struct node_vec *v, struct jinja_node *x) {
    if (!x) return 0;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        struct jinja_node **items = tpl_arena_alloc(p->arena, cap * sizeof(*items));
        if (!items) {
            oom(p);
            return 0;
        }
        if (v->n) memcpy(items, v->v, v->n * sizeof(*items));
        v->v = items;
        v->cap = cap;
    }
    v->v[v->n++] = x;
    return 1;
}

static struct jinja_node *const_node(struct parser *p, uint32_t line, struct tpl_value *v) {
    if (!v) return oom(p);
    struct jinja_node *n = node_new(p, E_CONST, line);
    if (n) n->value = v;
    return n;
}

static void note_name_use(struct parser *p, const char *name, size_t n) {
    if (!p->macro_uses) return;
    if (n == 7 && memcmp(name, "varargs", 7) == 0) *p->macro_uses |= JINJA_USES_VARARGS;
    if (n == 6 && memcmp(name, "kwargs", 6) == 0) *p->macro_uses |= JINJA_USES_KWARGS;
    if (n == 6 && memcmp(name, "caller", 6) == 0) *p->macro_uses |= JINJA_USES_CALLER;
}

/* ============================================================================================
 * Expressions
 * ============================================================================================
 * One function per precedence level, in the order of jinja2/parser.py.
 */

static struct jinja_node *parse_expression(struct parser *p, int with_condexpr);
static struct jinja_node *parse_tuple(struct parser *p, int simplified, int with_condexpr,
                                      const char *extra_end, int explicit_parens);
static struct jinja_node *parse_primary(struct parser *p);
static struct jinja_node *parse_postfix(struct parser *p, struct jinja_node *node);
static struct jinja_node *parse_filter_expr(struct parser *p, struct jinja_node *node);
static struct jinja_node *parse_unary(struct parser *p, int with_filter);

static int enter(struct parser *p) {
    if (++p->depth > PARSE_MAX_DEPTH) {
        fail(p, "expression nested too deeply");
        return 0;
    }
    return 1;
}

static struct jinja_node *parse_or(struct parser *p);

static struct jinja_node *parse_condexpr(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *expr1 = parse_or(p);
    while (expr1 && skip_name(p, "if")) {
        struct jinja_node *expr2 = parse_or(p), *expr3 = NULL;
        if (!expr2) return NULL;
        if (skip_name(p, "else")) {
            expr3 = parse_condexpr(p);
            if (!expr3) return NULL;
        }
        struct jinja_node *n = node_new(p, E_COND, line);
        if (!n) return NULL;
        n->a = expr2;
        n->b = expr1;
        n->c = expr3;
        expr1 = n;
        line = cur(p)->line;
    }
    return expr1;
}

static struct jinja_node *parse_not(struct parser *p);

static struct jinja_node *parse_and(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *left = parse_not(p);
    while (left && skip_name(p, "and")) {
        struct jinja_node *right = parse_not(p), *n;
        if (!right || !(n = node_new(p, E_AND, line))) return NULL;
        n->a = left;
        n->b = right;
        left = n;
        line = cur(p)->line;
    }
    return left;
}

static struct jinja_node *parse_or(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *left = parse_and(p);
    while (left && skip_name(p, "or")) {
        struct jinja_node *right = parse_and(p), *n;
        if (!right || !(n = node_new(p, E_OR, line))) return NULL;
        n->a = left;
        n->b = right;
        left = n;
        line = cur(p)->line;
    }
    return left;
}

static struct jinja_node *parse_compare(struct parser *p);

static struct jinja_node *parse_not(struct parser *p) {
    if (tok_is_name(cur(p), "not")) {
        uint32_t line = next(p)->line;
        if (!enter(p)) return NULL;
        struct jinja_node *inner = parse_not(p), *n;
        p->depth--;
        if (!inner || !(n = node_new(p, E_NOT, line))) return NULL;
        n->a = inner;
        return n;
    }
    return parse_compare(p);
}

static struct jinja_node *parse_math1(struct parser *p);

static struct jinja_node *parse_compare(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *expr = parse_math1(p);
    if (!expr) return NULL;
    struct node_vec ops = {0};
    for (;;) {
        const struct jinja_token *t = cur(p);
        int op;
        if (t->type == TK_OP && t->op >= OP_EQ && t->op <= OP_LTEQ) {
            op = t->op;
            next(p);
        } else if (tok_is_name(t, "in")) {
            op = OP_IN;
            next(p);
        } else if (tok_is_name(t, "not") && tok_is_name(look(p), "in")) {
            op = OP_NOTIN;
            next(p);
            next(p);
        } else {
            break;
        }
        struct jinja_node *rhs = parse_math1(p), *o;
        if (!rhs || !(o = node_new(p, E_OPERAND, t->line))) return NULL;
        o->op = (uint8_t)op;
        o->a = rhs;
        if (!vec_push(p, &ops, o)) return NULL;
        line = cur(p)->line;
    }
    if (!ops.n) return expr;
    struct jinja_node *n = node_new(p, E_COMPARE, line);
    if (!n) return NULL;
    n->a = expr;
    n->list = ops.v;
    n->n = ops.n;
    return n;
}

static struct jinja_node *binop(struct parser *p, uint32_t line, int op, struct jinja_node *a,
                                struct jinja_node *b) {
    if (!a || !b) return NULL;
    struct jinja_node *n = node_new(p, E_BINOP, line);
    if (!n) return NULL;
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static struct jinja_node *parse_concat(struct parser *p);

static struct jinja_node *parse_math1(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *left = parse_concat(p);
    while (left && (tok_is_op(cur(p), OP_ADD) || tok_is_op(cur(p), OP_SUB))) {
        int op = next(p)->op;
        left = binop(p, line, op, left, parse_concat(p));
        line = cur(p)->line;
    }
    return left;
}

static struct jinja_node *parse_math2(struct parser *p);

static struct jinja_node *parse_concat(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *first = parse_math2(p);
    if (!first || !tok_is_op(cur(p), OP_TILDE)) return first;
    struct node_vec args = {0};
    vec_push(p, &args, first);
    while (tok_is_op(cur(p), OP_TILDE)) {
        next(p);
        struct jinja_node *x = parse_math2(p);
        if (!x || !vec_push(p, &args, x)) return NULL;
    }
    struct jinja_node *n = node_new(p, E_CONCAT, line);
    if (!n) return NULL;
    n->list = args.v;
    n->n = args.n;
    return n;
}

static struct jinja_node *parse_pow(struct parser *p);

static struct jinja_node *parse_math2(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *left = parse_pow(p);
    while (left && cur(p)->type == TK_OP &&
           (cur(p)->op == OP_MUL || cur(p)->op == OP_DIV || cur(p)->op == OP_FLOORDIV ||
            cur(p)->op == OP_MOD)) {
        int op = next(p)->op;
        left = binop(p, line, op, left, parse_pow(p));
        line = cur(p)->line;
    }
    return left;
}

static struct jinja_node *parse_pow(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *left = parse_unary(p, 1);
    while (left && tok_is_op(cur(p), OP_POW)) {
        next(p);
        left = binop(p, line, OP_POW, left, parse_unary(p, 1));
        line = cur(p)->line;
    }
    return left;
}

static struct jinja_node *parse_unary(struct parser *p, int with_filter) {
    const struct jinja_token *t = cur(p);
    struct jinja_node *node;
    if (!enter(p)) return NULL;
    if (tok_is_op(t, OP_SUB) || tok_is_op(t, OP_ADD)) {
        next(p);
        struct jinja_node *inner = parse_unary(p, 0);
        node = inner ? node_new(p, t->op == OP_SUB ? E_NEG : E_POS, t->line) : NULL;
        if (node) node->a = inner;
    } else {
        node = parse_primary(p);
    }
    p->depth--;
    node = parse_postfix(p, node);
    if (with_filter) node = parse_filter_expr(p, node);
    return node;
}

static struct jinja_node *parse_list_or_dict(struct parser *p, int is_dict) {
    const struct jinja_token *t = next(p); /* [ or { */
    int close = is_dict ? OP_RBRACE : OP_RBRACKET;
    struct node_vec keys = {0}, vals = {0};
    while (!tok_is_op(cur(p), close)) {
        if (keys.n && !expect_op(p, OP_COMMA)) return NULL;
        if (tok_is_op(cur(p), close)) break;
        struct jinja_node *k = parse_expression(p, 1);
        if (!k || !vec_push(p, &keys, k)) return NULL;
        if (is_dict) {
            if (!expect_op(p, OP_COLON)) return NULL;
            struct jinja_node *v = parse_expression(p, 1);
            if (!v || !vec_push(p, &vals, v)) return NULL;
        }
    }
    if (!expect_op(p, close)) return NULL;
    struct jinja_node *n = node_new(p, is_dict ? E_DICT : E_LIST, t->line);
    if (!n) return NULL;
    n->list = keys.v;
    n->n = keys.n;
    n->list2 = vals.v;
    n->n2 = vals.n;
    return n;
}

static struct jinja_node *parse_primary(struct parser *p) {
    const struct jinja_token *t = cur(p);
    switch (t->type) {
    case TK_NAME: {
        next(p);
        if (tok_is_name(t, "true") || tok_is_name(t, "True"))
            return const_node(p, t->line, tpl_value_bool(1));
        if (tok_is_name(t, "false") || tok_is_name(t, "False"))
            return const_node(p, t->line, tpl_value_bool(0));
        if (tok_is_name(t, "none") || tok_is_name(t, "None"))
            return const_node(p, t->line, tpl_value_none());
        struct jinja_node *n = node_new(p, E_NAME, t->line);
        if (!n) return NULL;
        n->name = t->p;
        n->name_n = t->n;
        note_name_use(p, t->p, t->n);
        return n;
    }
    case TK_STRING: {
        next(p);
        if (cur(p)->type != TK_STRING) {
            struct tpl_value *v = tpl_value_string(p->arena, t->p, t->n);
            return const_node(p, t->line, v);
        }
        struct buf b; /* adjacent literals concatenate */
        buf_init(&b);
        buf_append(&b, t->p, t->n);
        while (cur(p)->type == TK_STRING) {
            buf_append(&b, cur(p)->p, cur(p)->n);
            next(p);
        }
        struct tpl_value *v = b.failed ? NULL : tpl_value_string(p->arena, b.data, b.len);
        buf_free(&b);
        return const_node(p, t->line, v);
    }
    case TK_INT:
        next(p);
        return const_node(p, t->line, tpl_value_int(p->arena, t->i));
    case TK_FLOAT:
        next(p);
        return const_node(p, t->line, tpl_value_float(p->arena, t->f));
    case TK_OP:
        if (t->op == OP_LPAREN) {
            next(p);
            struct jinja_node *n = parse_tuple(p, 0, 1, NULL, 1);
            if (!n || !expect_op(p, OP_RPAREN)) return NULL;
            return n;
        }
        if (t->op == OP_LBRACKET) return parse_list_or_dict(p, 0);
        if (t->op == OP_LBRACE) return parse_list_or_dict(p, 1);
        break;
    default:
        break;
    }
    return unexpected(p, NULL);
}

/* Jinja's is_tuple_end. Its extra_end_rules (the `in` of a for target, `recursive`) never
 * match because Jinja passes them to test_any() as one tuple; we keep that, so a trailing comma
 * in `for a, in x` is the same syntax error as in Jinja. */
static int is_tuple_end(struct parser *p, const char *extra_end) {
    (void)extra_end;
    const struct jinja_token *t = cur(p);
    return t->type == TK_VAR_END || t->type == TK_BLOCK_END || tok_is_op(t, OP_RPAREN);
}

static struct jinja_node *parse_tuple(struct parser *p, int simplified, int with_condexpr,
                                      const char *extra_end, int explicit_parens) {
    uint32_t line = cur(p)->line;
    struct node_vec args = {0};
    int is_tuple = 0;
    for (;;) {
        if (args.n && !expect_op(p, OP_COMMA)) return NULL;
        if (is_tuple_end(p, extra_end)) break;
        struct jinja_node *x = simplified ? parse_primary(p) : parse_expression(p, with_condexpr);
        if (!x || !vec_push(p, &args, x)) return NULL;
        if (tok_is_op(cur(p), OP_COMMA))
            is_tuple = 1;
        else
            break;
        line = cur(p)->line;
    }
    if (!is_tuple) {
        if (args.n) return args.v[0];
        if (!explicit_parens) {
            char got[64];
            describe(cur(p), got, sizeof(got));
            return fail(p, "Expected an expression, got '%s'", got);
        }
    }
    struct jinja_node *n = node_new(p, E_TUPLE, line);
    if (!n) return NULL;
    n->list = args.v;
    n->n = args.n;
    return n;
}

static struct jinja_node *parse_expression(struct parser *p, int with_condexpr) {
    if (!enter(p)) return NULL;
    struct jinja_node *n = with_condexpr ? parse_condexpr(p) : parse_or(p);
    p->depth--;
    return n;
}

/* (args, kw=..., *dyn, **dyn) into n->list, list2, c, d. */
static int parse_call_args(struct parser *p, struct jinja_node *n) {
    const struct jinja_token *open = cur(p);
    if (!expect_op(p, OP_LPAREN)) return 0;
    struct node_vec args = {0}, kwargs = {0};
    int require_comma = 0;
    while (!tok_is_op(cur(p), OP_RPAREN)) {
        if (require_comma) {
            if (!expect_op(p, OP_COMMA)) return 0;
            if (tok_is_op(cur(p), OP_RPAREN)) break;
        }
        if (tok_is_op(cur(p), OP_MUL)) {
            if (n->c || n->d)
                return !!fail_at(p, open, ERR_FORMAT,
                                 "invalid syntax for function call expression");
            next(p);
            if (!(n->c = parse_expression(p, 1))) return 0;
        } else if (tok_is_op(cur(p), OP_POW)) {
            if (n->d)
                return !!fail_at(p, open, ERR_FORMAT,
                                 "invalid syntax for function call expression");
            next(p);
            if (!(n->d = parse_expression(p, 1))) return 0;
        } else if (cur(p)->type == TK_NAME && tok_is_op(look(p), OP_ASSIGN)) {
            if (n->d)
                return !!fail_at(p, open, ERR_FORMAT,
                                 "invalid syntax for function call expression");
            const struct jinja_token *key = next(p);
            next(p);
            struct jinja_node *v = parse_expression(p, 1), *kw;
            if (!v || !(kw = node_new(p, E_KWARG, key->line))) return 0;
            kw->name = key->p;
            kw->name_n = key->n;
            kw->a = v;
            if (!vec_push(p, &kwargs, kw)) return 0;
        } else {
            if (n->c || n->d || kwargs.n)
                return !!fail_at(p, open, ERR_FORMAT,
                                 "invalid syntax for function call expression");
            struct jinja_node *v = parse_expression(p, 1);
            if (!v || !vec_push(p, &args, v)) return 0;
        }
        require_comma = 1;
    }
    if (!expect_op(p, OP_RPAREN)) return 0;
    n->list = args.v;
    n->n = args.n;
    n->list2 = kwargs.v;
    n->n2 = kwargs.n;
    return 1;
}

static struct jinja_node *parse_subscripted(struct parser *p) {
    uint32_t line = cur(p)->line;
    struct jinja_node *parts[3] = {NULL, NULL, NULL};
    if (tok_is_op(cur(p), OP_COLON)) {
        next(p);
    } else {
        struct jinja_node *x = parse_expression(p, 1);
        if (!x) return NULL;
        if (!tok_is_op(cur(p), OP_COLON)) return x;
        next(p);
        parts[0] = x;
    }
    const struct jinja_token *t = cur(p);
    if (!tok_is_op(t, OP_COLON) && !tok_is_op(t, OP_RBRACKET) && !tok_is_op(t, OP_COMMA)) {
        if (!(parts[1] = parse_expression(p, 1))) return NULL;
    }
    if (tok_is_op(cur(p), OP_COLON)) {
        next(p);
        t = cur(p);
        if (!tok_is_op(t, OP_RBRACKET) && !tok_is_op(t, OP_COMMA))
            if (!(parts[2] = parse_expression(p, 1))) return NULL;
    }
    struct jinja_node *n = node_new(p, E_SLICE, line);
    if (!n) return NULL;
    n->a = parts[0];
    n->b = parts[1];
    n->c = parts[2];
    return n;
}

static struct jinja_node *parse_subscript(struct parser *p, struct jinja_node *node) {
    const struct jinja_token *t = next(p); /* . or [ */
    if (t->op == OP_DOT) {
        const struct jinja_token *attr = next(p);
        if (attr->type == TK_NAME) {
            struct jinja_node *n = node_new(p, E_GETATTR, t->line);
            if (!n) return NULL;
            n->a = node;
            n->name = attr->p;
            n->name_n = attr->n;
            return n;
        }
        if (attr->type != TK_INT) return fail_at(p, attr, ERR_FORMAT, "expected name or number");
        struct jinja_node *n = node_new(p, E_GETITEM, t->line);
        if (!n || !(n->b = const_node(p, attr->line, tpl_value_int(p->arena, attr->i))))
            return NULL;
        n->a = node;
        return n;
    }
    struct node_vec args = {0};
    while (!tok_is_op(cur(p), OP_RBRACKET)) {
        if (args.n && !expect_op(p, OP_COMMA)) return NULL;
        struct jinja_node *x = parse_subscripted(p);
        if (!x || !vec_push(p, &args, x)) return NULL;
    }
    if (!expect_op(p, OP_RBRACKET)) return NULL;
    struct jinja_node *n = node_new(p, E_GETITEM, t->line);
    if (!n) return NULL;
    n->a = node;
    if (args.n == 1) {
        n->b = args.v[0];
    } else {
        struct jinja_node *tup = node_new(p, E_TUPLE, t->line);
        if (!tup) return NULL;
        tup->list = args.v;
        tup->n = args.n;
        n->b = tup;
    }
    return n;
}

static struct jinja_node *parse_call(struct parser *p, struct jinja_node *callee) {
    struct jinja_node *n = node_new(p, E_CALL, cur(p)->line);
    if (!n) return NULL;
    n->a = callee;
    return parse_call_args(p, n) ? n : NULL;
}

static struct jinja_node *parse_postfix(struct parser *p, struct jinja_node *node) {
    while (node) {
        const struct jinja_token *t = cur(p);
        if (tok_is_op(t, OP_DOT) || tok_is_op(t, OP_LBRACKET))
            node = parse_subscript(p, node);
        else if (tok_is_op(t, OP_LPAREN))
            node = parse_call(p, node);
        else
            break;
    }
    return node;
}

/* A dotted filter or test name (foo or foo.bar); stored as written. */
static int parse_dotted_name(struct parser *p, struct jinja_node *n) {
    const struct jinja_token *t = cur(p);
    if (!expect_type(p, TK_NAME, "name")) return 0;
    n->name = t->p;
    n->name_n = t->n;
    while (tok_is_op(cur(p), OP_DOT)) {
        next(p);
        const struct jinja_token *part = cur(p);
        if (!expect_type(p, TK_NAME, "name")) return 0;
        n->name_n = (size_t)(part->p + part->n - t->p);
    }
    return 1;
}

/* `|f(args)|g` chains; start_inline: the first filter has no leading pipe (filter blocks). */
static struct jinja_node *parse_filter(struct parser *p, struct jinja_node *node,
                                       int start_inline) {
    while (tok_is_op(cur(p), OP_PIPE) || start_inline) {
        if (!start_inline) next(p);
        start_inline = 0;
        struct jinja_node *n = node_new(p, E_FILTER, cur(p)->line);
        if (!n || !parse_dotted_name(p, n)) return NULL;
        n->id = jinja_filter_lookup(n->name, n->name_n);
        if (tok_is_op(cur(p), OP_LPAREN) && !parse_call_args(p, n)) return NULL;
        n->a = node;
        node = n;
    }
    return node;
}

static struct jinja_node *parse_test(struct parser *p, struct jinja_node *node) {
    const struct jinja_token *is = next(p);
    int negated = skip_name(p, "not");
    struct jinja_node *n = node_new(p, E_TEST, is->line);
    if (!n || !parse_dotted_name(p, n)) return NULL;
    n->id = jinja_test_lookup(n->name, n->name_n);
    n->a = node;
    const struct jinja_token *t = cur(p);
    if (tok_is_op(t, OP_LPAREN)) {
        if (!parse_call_args(p, n)) return NULL;
    } else if ((t->type == TK_NAME || t->type == TK_STRING || t->type == TK_INT ||
                t->type == TK_FLOAT || tok_is_op(t, OP_LBRACKET) || tok_is_op(t, OP_LBRACE)) &&
               !tok_is_name(t, "else") && !tok_is_name(t, "or") && !tok_is_name(t, "and")) {
        if (tok_is_name(t, "is")) return fail(p, "You cannot chain multiple tests with is");
        struct jinja_node *arg = parse_postfix(p, parse_primary(p));
        if (!arg) return NULL;
        struct jinja_node **list = tpl_arena_alloc(p->arena, sizeof(*list));
        if (!list) return oom(p);
        list[0] = arg;
        n->list = list;
        n->n = 1;
    }
    if (!negated) return n;
    struct jinja_node *notn = node_new(p, E_NOT, is->line);
    if (notn) notn->a = n;
    return notn;
}

static struct jinja_node *parse_filter_expr(struct parser *p, struct jinja_node *node) {
    while (node) {
        const struct jinja_token *t = cur(p);
        if (tok_is_op(t, OP_PIPE))
            node = parse_filter(p, node, 0);
        else if (tok_is_name(t, "is"))
            node = parse_test(p, node);
        else if (tok_is_op(t, OP_LPAREN))
            node = parse_call(p, node);
        else
            break;
    }
    return node;
}

/* ============================================================================================
 * Statements
 * ============================================================================================
 * Each tag parses its header, then its body up to an end tag through parse_statements.
 */

static int can_assign(const struct jinja_node *n) {
    if (n->kind == E_NAME || n->kind == E_NSREF) return 1;
    if (n->kind != E_TUPLE) return 0;
    for (size_t i = 0; i < n->n; i++)
        if (!can_assign(n->list[i]) || n->list[i]->kind == E_NSREF) return 0;
    return 1;
}

static int is_reserved_name(const struct jinja_node *n) {
    /* true/false/none parse as constants, which cannot be assigned */
    return n->kind == E_CONST;
}

static struct jinja_node *parse_assign_target(struct parser *p, int with_tuple, int name_only,
                                              const char *extra_end, int with_namespace) {
    const struct jinja_token *t = cur(p);
    struct jinja_node *target;
    if (with_namespace && t->type == TK_NAME && tok_is_op(look(p), OP_DOT)) {
        next(p);
        next(p);
        const struct jinja_token *attr = cur(p);
        if (!expect_type(p, TK_NAME, "name")) return NULL;
        if (!(target = node_new(p, E_NSREF, t->line))) return NULL;
        target->name = t->p;
        target->name_n = t->n;
        target->name2 = attr->p;
        target->name2_n = attr->n;
        return target;
    }
    if (name_only) {
        if (!expect_type(p, TK_NAME, "name")) return NULL;
        if (!(target = node_new(p, E_NAME, t->line))) return NULL;
        target->name = t->p;
        target->name_n = t->n;
        if (tok_is_name(t, "true") || tok_is_name(t, "false") || tok_is_name(t, "none") ||
            tok_is_name(t, "True") || tok_is_name(t, "False") || tok_is_name(t, "None"))
            return fail_at(p, t, ERR_FORMAT, "can't assign to 'const'");
        return target;
    }
    target = with_tuple ? parse_tuple(p, 1, 1, extra_end, 0) : parse_primary(p);
    if (!target) return NULL;
    if (is_reserved_name(target) || !can_assign(target))
        return fail_at(p, t, ERR_FORMAT, "can't assign to '%s'",
                       target->kind == E_CONST ? "const" : "expression");
    return target;
}

static int parse_body(struct parser *p, const char *const *end_tags, struct node_vec *out);

/* parse_statements: optional ':', '%}', then the body up to one of end_tags. With drop, the
 * end tag's name is consumed. */
static int parse_statements(struct parser *p, const char *const *end_tags, int drop,
                            struct node_vec *out) {
    skip_op(p, OP_COLON);
    if (!expect_type(p, TK_BLOCK_END, "end of statement block")) return 0;
    if (!parse_body(p, end_tags, out)) return 0;
    if (cur(p)->type == TK_EOF) {
        char msg[200];
        size_t k = 0;
        for (int i = 0; end_tags[i]; i++)
            k += (size_t)snprintf(msg + k, sizeof(msg) - k, "%s'%s'", i ? " or " : "", end_tags[i]);
        fail(p, "Unexpected end of template. Jinja was looking for the following tags: %s.", msg);
        return 0;
    }
    if (drop) next(p);
    return 1;
}

static void set_list(struct jinja_node *n, struct node_vec *v) {
    n->list = v->v;
    n->n = v->n;
}

static void set_list2(struct jinja_node *n, struct node_vec *v) {
    n->list2 = v->v;
    n->n2 = v->n;
}

static struct jinja_node *parse_for(struct parser *p, uint32_t line) {
    static const char *const body_end[] = {"endfor", "else", NULL};
    static const char *const else_end[] = {"endfor", NULL};
    struct jinja_node *n = node_new(p, N_FOR, line);
    if (!n) return NULL;
    if (!(n->a = parse_assign_target(p, 1, 0, "in", 0))) return NULL;
    if (!tok_is_name(cur(p), "in")) return unexpected(p, "in");
    next(p);
    if (!(n->b = parse_tuple(p, 0, 0, "recursive", 0))) return NULL;
    if (skip_name(p, "if") && !(n->c = parse_expression(p, 1))) return NULL;
    n->flag = (uint8_t)skip_name(p, "recursive");
    struct node_vec body = {0}, else_body = {0};
    p->loop_depth++;
    int ok = parse_statements(p, body_end, 0, &body);
    p->loop_depth--;
    if (!ok) return NULL;
    set_list(n, &body);
    if (tok_is_name(next(p), "else")) {
        if (!parse_statements(p, else_end, 1, &else_body)) return NULL;
        set_list2(n, &else_body);
    }
    return n;
}

static struct jinja_node *parse_if(struct parser *p, uint32_t line) {
    static const char *const body_end[] = {"elif", "else", "endif", NULL};
    static const char *const else_end[] = {"endif", NULL};
    struct jinja_node *result = node_new(p, N_IF, line), *node = result;
    if (!result) return NULL;
    for (;;) {
        if (!(node->a = parse_tuple(p, 0, 0, NULL, 0))) return NULL;
        struct node_vec body = {0};
        if (!parse_statements(p, body_end, 0, &body)) return NULL;
        set_list(node, &body);
        const struct jinja_token *t = next(p);
        if (tok_is_name(t, "elif")) {
            struct jinja_node *elif = node_new(p, N_IF, cur(p)->line);
            struct jinja_node **list = tpl_arena_alloc(p->arena, sizeof(*list));
            if (!elif || !list) return oom(p);
            list[0] = elif;
            node->list2 = list;
            node->n2 = 1;
            node = elif;
            continue;
        }
        if (tok_is_name(t, "else")) {
            struct node_vec else_body = {0};
            if (!parse_statements(p, else_end, 1, &else_body)) return NULL;
            set_list2(node, &else_body);
        }
        return result;
    }
}

static struct jinja_node *parse_set(struct parser *p, uint32_t line) {
    static const char *const end[] = {"endset", NULL};
    struct jinja_node *target = parse_assign_target(p, 1, 0, NULL, 1);
    if (!target) return NULL;
    if (skip_op(p, OP_ASSIGN)) {
        struct jinja_node *n = node_new(p, N_SET, line);
        if (!n || !(n->b = parse_tuple(p, 0, 1, NULL, 0))) return NULL;
        n->a = target;
        return n;
    }
    struct jinja_node *n = node_new(p, N_SET_BLOCK, line);
    if (!n) return NULL;
    n->a = target;
    if (tok_is_op(cur(p), OP_PIPE) && !(n->b = parse_filter(p, NULL, 0))) return NULL;
    struct node_vec body = {0};
    if (!parse_statements(p, end, 1, &body)) return NULL;
    set_list(n, &body);
    return n;
}

/* (a, b=default, ...) into params (E_PARAM). */
static int parse_signature(struct parser *p, struct node_vec *params) {
    if (!expect_op(p, OP_LPAREN)) return 0;
    int has_default = 0;
    while (!tok_is_op(cur(p), OP_RPAREN)) {
        if (params->n && !expect_op(p, OP_COMMA)) return 0;
        struct jinja_node *name = parse_assign_target(p, 0, 1, NULL, 0);
        if (!name) return 0;
        struct jinja_node *param = node_new(p, E_PARAM, name->line);
        if (!param) return 0;
        param->name = name->name;
        param->name_n = name->name_n;
        if (skip_op(p, OP_ASSIGN)) {
            if (!(param->a = parse_expression(p, 1))) return 0;
            has_default = 1;
        } else if (has_default) {
            fail(p, "non-default argument follows default argument");
            return 0;
        }
        if (!vec_push(p, params, param)) return 0;
    }
    return expect_op(p, OP_RPAREN);
}

/* Parses a macro-like body (macro, call block): own break/continue context and JINJA_USES_*. */
static int parse_macro_body(struct parser *p, struct jinja_node *n, const char *const *end) {
    uint8_t *saved_uses = p->macro_uses;
    int saved_loops = p->loop_depth;
    p->macro_uses = &n->flag;
    p->loop_depth = 0;
    struct node_vec body = {0};
    int ok = parse_statements(p, end, 1, &body);
    p->macro_uses = saved_uses;
    p->loop_depth = saved_loops;
    if (saved_uses) *saved_uses |= n->flag;
    set_list(n, &body);
    return ok;
}

static struct jinja_node *parse_macro(struct parser *p, uint32_t line) {
    static const char *const end[] = {"endmacro", NULL};
    struct jinja_node *n = node_new(p, N_MACRO, line);
    struct jinja_node *name = n ? parse_assign_target(p, 0, 1, NULL, 0) : NULL;
    if (!name) return NULL;
    n->name = name->name;
    n->name_n = name->name_n;
    struct node_vec params = {0};
    if (!parse_signature(p, &params)) return NULL;
    set_list2(n, &params);
    return parse_macro_body(p, n, end) ? n : NULL;
}

static struct jinja_node *parse_call_block(struct parser *p, uint32_t line) {
    static const char *const end[] = {"endcall", NULL};
    struct jinja_node *n = node_new(p, N_CALL_BLOCK, line);
    if (!n) return NULL;
    struct node_vec params = {0};
    if (tok_is_op(cur(p), OP_LPAREN) && !parse_signature(p, &params)) return NULL;
    set_list2(n, &params);
    if (!(n->a = parse_expression(p, 1))) return NULL;
    if (n->a->kind != E_CALL) return fail_at(p, cur(p), ERR_FORMAT, "expected call");
    return parse_macro_body(p, n, end) ? n : NULL;
}

static struct jinja_node *parse_with(struct parser *p, uint32_t line) {
    static const char *const end[] = {"endwith", NULL};
    struct jinja_node *n = node_new(p, N_WITH, line);
    if (!n) return NULL;
    struct node_vec assigns = {0}, body = {0};
    while (cur(p)->type != TK_BLOCK_END) {
        if (assigns.n && !expect_op(p, OP_COMMA)) return NULL;
        struct jinja_node *set = node_new(p, N_SET, cur(p)->line);
        if (!set || !(set->a = parse_assign_target(p, 1, 0, NULL, 0))) return NULL;
        if (!expect_op(p, OP_ASSIGN) || !(set->b = parse_expression(p, 1))) return NULL;
        if (!vec_push(p, &assigns, set)) return NULL;
    }
    set_list2(n, &assigns);
    if (!parse_statements(p, end, 1, &body)) return NULL;
    set_list(n, &body);
    return n;
}

static struct jinja_node *parse_block_like(struct parser *p, int kind, uint32_t line,
                                           const char *end_tag) {
    const char *end[] = {end_tag, NULL};
    struct jinja_node *n = node_new(p, kind, line);
    if (!n) return NULL;
    if (kind == N_FILTER_BLOCK && !(n->a = parse_filter(p, NULL, 1))) return NULL;
    if (kind == N_AUTOESCAPE && !(n->a = parse_expression(p, 1))) return NULL;
    struct node_vec body = {0};
    if (!parse_statements(p, end, 1, &body)) return NULL;
    set_list(n, &body);
    return n;
}

/* {% block name [scoped] [required] %}: without inheritance a block renders in place. */
static struct jinja_node *parse_block(struct parser *p, uint32_t line) {
    static const char *const end[] = {"endblock", NULL};
    struct jinja_node *n = node_new(p, N_BLOCK, line);
    const struct jinja_token *name = cur(p);
    if (!n || !expect_type(p, TK_NAME, "name")) return NULL;
    n->name = name->p;
    n->name_n = name->n;
    n->flag = (uint8_t)skip_name(p, "scoped");
    int required = skip_name(p, "required");
    if (tok_is_op(cur(p), OP_SUB))
        return fail(p, "Block names in Jinja have to be valid Python identifiers and may not "
                       "contain hyphens, use an underscore instead.");
    struct node_vec body = {0};
    int saved_loops = p->loop_depth;
    p->loop_depth = 0;
    int ok = parse_statements(p, end, 1, &body);
    p->loop_depth = saved_loops;
    if (!ok) return NULL;
    if (required)
        for (size_t i = 0; i < body.n; i++)
            if (body.v[i]->kind != N_DATA)
                return fail_at(p, cur(p), ERR_FORMAT,
                               "Required blocks can only contain comments or whitespace");
    set_list(n, &body);
    if (cur(p)->type == TK_NAME && cur(p)->n == n->name_n &&
        memcmp(cur(p)->p, n->name, n->name_n) == 0)
        next(p);
    return n;
}

static struct jinja_node *parse_statement(struct parser *p) {
    const struct jinja_token *t = cur(p);
    if (t->type != TK_NAME) return fail(p, "tag name expected");
    if (!enter(p)) return NULL;
    uint32_t line = t->line;
    struct jinja_node *n = NULL;
    next(p);
    if (tok_is_name(t, "for"))
        n = parse_for(p, line);
    else if (tok_is_name(t, "if"))
        n = parse_if(p, line);
    else if (tok_is_name(t, "set"))
        n = parse_set(p, line);
    else if (tok_is_name(t, "macro"))
        n = parse_macro(p, line);
    else if (tok_is_name(t, "call"))
        n = parse_call_block(p, line);
    else if (tok_is_name(t, "filter"))
        n = parse_block_like(p, N_FILTER_BLOCK, line, "endfilter");
    else if (tok_is_name(t, "with"))
        n = parse_with(p, line);
    else if (tok_is_name(t, "generation")) /* transformers' AssistantTracker: renders in place */
        n = parse_block_like(p, N_SCOPE, line, "endgeneration");
    else if (tok_is_name(t, "autoescape"))
        n = parse_block_like(p, N_AUTOESCAPE, line, "endautoescape");
    else if (tok_is_name(t, "print")) {
        struct node_vec items = {0};
        while (cur(p)->type != TK_BLOCK_END) {
            if (items.n && !expect_op(p, OP_COMMA)) break;
            struct jinja_node *x = parse_expression(p, 1), *pr;
            if (!x || !(pr = node_new(p, N_PRINT, line))) break;
            pr->a = x;
            if (!vec_push(p, &items, pr)) break;
        }
        if (!p->failed && (n = node_new(p, N_SCOPE, line))) set_list(n, &items);
    } else if (tok_is_name(t, "break") || tok_is_name(t, "continue")) {
        if (p->loop_depth == 0) {
            n = fail_at(p, t, ERR_FORMAT, "'%s' outside loop",
                        tok_is_name(t, "break") ? "break" : "continue");
        } else {
            n = node_new(p, tok_is_name(t, "break") ? N_BREAK : N_CONTINUE, line);
        }
    } else if (tok_is_name(t, "block")) {
        n = parse_block(p, line);
    } else if (tok_is_name(t, "extends") || tok_is_name(t, "include") || tok_is_name(t, "import") ||
               tok_is_name(t, "from")) {
        char name[16];
        snprintf(name, sizeof(name), "%.*s", (int)t->n, t->p);
        n = fail_at(p, t, ERR_UNSUPPORTED, "tag '%s' is not supported (templates have no loader)",
                    name);
    } else {
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(t->n > 40 ? 40 : t->n), t->p);
        n = fail_at(p, t, ERR_FORMAT, "Encountered unknown tag '%s'.", name);
    }
    p->depth--;
    return n;
}

/* Jinja's subparse: data, {{ expr }} and statements until a block whose first name is one of
 * end_tags (left as the current token) or the end of the template. */
static int parse_body(struct parser *p, const char *const *end_tags, struct node_vec *out) {
    for (;;) {
        const struct jinja_token *t = cur(p);
        if (t->type == TK_EOF) return 1;
        if (t->type == TK_DATA) {
            struct jinja_node *n = node_new(p, N_DATA, t->line);
            if (!n) return 0;
            n->name = t->p;
            n->name_n = t->n;
            if (!vec_push(p, out, n)) return 0;
            next(p);
        } else if (t->type == TK_VAR_BEGIN) {
            next(p);
            struct jinja_node *x = parse_tuple(p, 0, 1, NULL, 0), *n;
            if (!x || !expect_type(p, TK_VAR_END, "end of print statement")) return 0;
            if (!(n = node_new(p, N_PRINT, t->line))) return 0;
            n->a = x;
            if (!vec_push(p, out, n)) return 0;
        } else if (t->type == TK_BLOCK_BEGIN) {
            next(p);
            if (end_tags)
                for (int i = 0; end_tags[i]; i++)
                    if (tok_is_name(cur(p), end_tags[i])) return 1;
            if (cur(p)->type == TK_NAME && cur(p)->n >= 3 && memcmp(cur(p)->p, "end", 3) == 0) {
                char name[64];
                snprintf(name, sizeof(name), "%.*s", (int)(cur(p)->n > 40 ? 40 : cur(p)->n),
                         cur(p)->p);
                fail(p, "Encountered unknown tag '%s'.", name);
                return 0;
            }
            struct jinja_node *n = parse_statement(p);
            if (!n || !vec_push(p, out, n)) return 0;
            if (!expect_type(p, TK_BLOCK_END, "end of statement block")) return 0;
        } else {
            unexpected(p, NULL);
            return 0;
        }
    }
}

int jinja_parse(struct jinja_template *t, const struct jinja_tokens *toks, struct error *err) {
    struct parser p = {.tok = toks->v, .n_tok = toks->n, .arena = t->arena, .err = err};
    struct node_vec body = {0};
    if (!parse_body(&p, NULL, &body) || p.failed) return p.code ? p.code : ERR_FORMAT;
    t->body = body.v;
    t->n_body = body.n;
    return 0;
}
