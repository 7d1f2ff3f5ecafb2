/* jinja_internal.h: what the chat-template engine's files share (not a public interface).
 *
 * tpl_value.c    arena, values, Python str()/repr(), json.dumps, equality and ordering
 * jinja_lex.c    source -> tokens, with Jinja's whitespace control (trim/lstrip blocks, -/+)
 * jinja_parse.c  tokens -> AST (struct jinja_node), with Jinja's operator precedence
 * jinja_eval.c   AST -> output: statements, expressions, scopes, macros, loops
 * jinja_filters.c  builtin filters (and the argument binding builtins share)
 * jinja_tests.c    builtin tests (`is defined`, `is string`, ...)
 * jinja_globals.c  range, namespace, dict, raise_exception, strftime_now
 * jinja_methods.c  Python str/dict/list methods and the string helpers they share
 * jinja_format.c   `%` formatting and str.format
 * chat_template.c  the public parse/render entry points
 *
 * Everything a template owns (tokens' strings, nodes, constants) lives in the template's arena;
 * everything a render creates lives in the render's arena, which dies with the render.
 */
#ifndef HEARTH_JINJA_INTERNAL_H
#define HEARTH_JINJA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../base/buf.h"
#include "../base/error.h"
#include "chat_template.h"

/* ---- values ------------------------------------------------------------------------------ */

enum tpl_kind {
    TPL_UNDEFINED, /* Jinja's default Undefined: prints '', iterates empty, other uses fail */
    TPL_NONE,
    TPL_BOOL,      /* u.i is 0 or 1 */
    TPL_INT,       /* u.i */
    TPL_FLOAT,     /* u.f */
    TPL_STRING,    /* u.s: UTF-8, NUL after n bytes */
    TPL_ARRAY,     /* u.arr; a tuple when flags has TPL_F_TUPLE */
    TPL_OBJECT,    /* u.obj: insertion-ordered, string keys */
    TPL_NAMESPACE, /* u.obj: Jinja namespace(), the one mutable value */
    TPL_FUNC,      /* u.fn: a builtin function or a bound method */
    TPL_MACRO,     /* u.mac */
    TPL_LOOP,      /* u.loop: the `loop` variable of a for loop */
};

enum {
    TPL_F_TUPLE = 1, /* array printed as (a, b) and unequal to a list */
    TPL_F_SAFE = 2,  /* string is Markup (|safe, |escape): `+` with it escapes the other side */
    TPL_F_ASCII = 4, /* string has only ASCII bytes: character index == byte index */
    TPL_F_GROUP = 8, /* a (grouper, list) pair from |groupby: .grouper and .list work */
    TPL_F_GEN = 16,  /* the result of a filter that yields in Jinja (map, select, ...): always
                        true, no len(), no indexing, prints as a generator object */
};

enum tpl_undef_why {
    TPL_UNDEF_NAME, /* "'name' is undefined" */
    TPL_UNDEF_ATTR, /* "'owner' has no attribute 'name'" */
    TPL_UNDEF_ITEM, /* "owner has no element name" */
    TPL_UNDEF_HINT, /* name is the whole message */
};

struct tpl_array {
    struct tpl_value **items; /* [n] */
    size_t n, cap;
};

struct tpl_entry {
    struct tpl_value *key; /* a TPL_STRING */
    struct tpl_value *val;
    uint64_t hash; /* of the key bytes */
};

struct tpl_object {
    struct tpl_entry *entries; /* [n] in insertion order */
    size_t n, cap;
    uint32_t *slots; /* [n_slots] open-addressing index (entry + 1, 0 = empty); NULL while small */
    size_t n_slots;
};

struct jinja_func;
struct jinja_macro;
struct jinja_loop;

struct tpl_value {
    uint8_t kind;  /* enum tpl_kind */
    uint8_t flags; /* TPL_F_* */
    uint8_t why;   /* enum tpl_undef_why, for TPL_UNDEFINED */
    union {
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n; /* bytes */
        } s;
        struct {
            const char *name; /* the missing name, or the hint */
            size_t n;
            const char *owner; /* static type text for the message, e.g. "dict object" */
        } undef;
        struct tpl_array *arr;
        struct tpl_object *obj;
        struct jinja_func *fn;
        struct jinja_macro *mac;
        struct jinja_loop *loop;
    } u;
};

struct tpl_arena {
    struct tpl_chunk *chunk; /* newest first */
    size_t used_bytes;       /* requested from mem_alloc so far */
    size_t max_bytes;        /* 0: unbounded */
    int failed;
};

void *tpl_arena_alloc(struct tpl_arena *a, size_t n); /* 16-aligned, NULL on failure */

extern struct tpl_value tpl_undefined_value; /* a plain undefined, no name */

struct tpl_value *tpl_value_undef(struct tpl_arena *a, enum tpl_undef_why why, const char *name,
                                  size_t n, const char *owner);
/* A string value that takes p (arena memory, NUL at p[n]) without copying. */
struct tpl_value *tpl_value_string_take(struct tpl_arena *a, char *p, size_t n, uint8_t flags);
struct tpl_value *tpl_value_tuple(struct tpl_arena *a, size_t n); /* n NULL slots to fill */
/* Copies of an array's item vector (tuple flag kept); NULL on failure. */
struct tpl_value *tpl_array_copy(struct tpl_arena *a, const struct tpl_value *arr, uint8_t flags);
struct tpl_value *tpl_object_find(const struct tpl_object *o, const char *key, size_t n);
int tpl_object_put(struct tpl_arena *a, struct tpl_object *o, struct tpl_value *key,
                   struct tpl_value *v);

int tpl_is_truthy(const struct tpl_value *v);
int tpl_is_number(const struct tpl_value *v);         /* bool, int or float */
double tpl_to_double(const struct tpl_value *v);      /* of a number */
const char *tpl_type_name(const struct tpl_value *v); /* Python's: 'str', 'int', 'dict', ... */

/* Python's str(v) / repr(v) appended to b. Returns 0 or ERR_RANGE (nested too deeply). */
int tpl_value_str(struct buf *b, const struct tpl_value *v);
int tpl_value_repr(struct buf *b, const struct tpl_value *v);
void tpl_format_float(struct buf *b, double x); /* Python repr of a float */
void tpl_repr_string(struct buf *b, const char *s, size_t n);

/* json.dumps(v, ensure_ascii=False, indent, separators, sort_keys). indent NULL: one line.
 * Returns 0, ERR_INVALID (msg names the unserializable type) or ERR_RANGE. */
struct tpl_json_opts {
    const char *indent; /* NULL: no newlines; else the text repeated per level */
    size_t indent_n;
    const char *item_sep, *key_sep; /* e.g. ", " and ": " */
    size_t item_sep_n, key_sep_n;
    int sort_keys;
};
int tpl_value_json(struct buf *b, const struct tpl_value *v, const struct tpl_json_opts *o,
                   struct error *err);

/* Python ==. work (may be NULL) accumulates bytes and items visited, for step charging. */
int tpl_value_equal(const struct tpl_value *a, const struct tpl_value *b, uint64_t *work);
/* Python ordering: *out < 0, 0, > 0. Returns 0, or ERR_INVALID when the two are not orderable
 * (message in err) and ERR_RANGE when nested too deeply. */
int tpl_value_compare(const struct tpl_value *a, const struct tpl_value *b, int *out,
                      struct error *err, uint64_t *work);

/* ---- UTF-8 and Python string helpers (jinja_methods.c) -------------------------------------- */

/* Decodes the code point at s[*i] (n bytes total), advancing *i; an invalid byte decodes as
 * itself (one character), like Python's surrogateescape. */
uint32_t jinja_utf8_next(const char *s, size_t n, size_t *i);
void jinja_utf8_put(struct buf *b, uint32_t cp);
size_t jinja_utf8_count(const char *s, size_t n); /* characters */
int jinja_is_pyspace(uint32_t cp);                /* Python str.isspace() */
/* Byte offset of character index `idx` (0..count) in s. */
size_t jinja_utf8_offset(const char *s, size_t n, size_t idx);
size_t tpl_string_len(const struct tpl_value *v); /* characters of a TPL_STRING */

/* ---- lexer ------------------------------------------------------------------------------- */

enum jinja_tok_type {
    TK_EOF,
    TK_DATA,
    TK_VAR_BEGIN,
    TK_VAR_END,
    TK_BLOCK_BEGIN,
    TK_BLOCK_END,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
};

enum jinja_op {
    OP_ADD,
    OP_SUB,
    OP_DIV,
    OP_FLOORDIV,
    OP_MUL,
    OP_MOD,
    OP_POW,
    OP_TILDE,
    OP_LBRACKET,
    OP_RBRACKET,
    OP_LPAREN,
    OP_RPAREN,
    OP_LBRACE,
    OP_RBRACE,
    OP_EQ,
    OP_NE,
    OP_GT,
    OP_GTEQ,
    OP_LT,
    OP_LTEQ,
    OP_ASSIGN,
    OP_DOT,
    OP_COLON,
    OP_PIPE,
    OP_COMMA,
    OP_SEMICOLON,
    /* not tokens: operators of the AST only */
    OP_IN,
    OP_NOTIN,
};

struct jinja_token {
    uint8_t type;       /* enum jinja_tok_type */
    uint8_t op;         /* enum jinja_op for TK_OP */
    uint32_t line, col; /* 1-based, in the newline-normalized source */
    const char *p;      /* DATA/NAME: text; STRING: decoded bytes (template arena) */
    size_t n;
    int64_t i; /* TK_INT */
    double f;  /* TK_FLOAT */
};

struct jinja_tokens {
    struct jinja_token *v; /* [n], last is TK_EOF; mem_alloc'ed */
    size_t n, cap;
};

/* Tokenizes src (already newline-normalized, see jinja_normalize). Strings and data live in
 * arena a. Returns 0, ERR_FORMAT ("line L:C: ...") or ERR_NOMEM. */
int jinja_lex(const char *src, size_t n, struct tpl_arena *a, struct jinja_tokens *out,
              struct error *err);
/* Jinja's source preparation: \r\n and \r become \n, one trailing newline is dropped. Returns
 * an arena copy (NUL-terminated) and its length, or NULL. */
char *jinja_normalize(struct tpl_arena *a, const char *src, size_t n, size_t *out_n);

/* ---- AST --------------------------------------------------------------------------------- */

enum jinja_node_kind {
    /* statements */
    N_DATA,         /* name: the text */
    N_PRINT,        /* a: expression */
    N_IF,           /* a: test, list: body, list2: else body (an elif is an N_IF there) */
    N_FOR,          /* a: target, b: iterable, c: filter test or NULL, list: body, list2: else,
                       flag: recursive */
    N_SET,          /* a: target, b: value */
    N_SET_BLOCK,    /* a: target, b: filter chain or NULL, list: body */
    N_MACRO,        /* name, list2: params (E_PARAM), list: body, flag: JINJA_USES_* */
    N_CALL_BLOCK,   /* a: the E_CALL, list2: params of `caller`, list: body */
    N_FILTER_BLOCK, /* a: filter chain, list: body */
    N_WITH,         /* list2: N_SET assignments, list: body */
    N_SCOPE,        /* list: body, rendered in place (generation, print) */
    N_BLOCK,        /* name, list: body, flag: scoped; renders in place in its own scope */
    N_AUTOESCAPE,   /* a: the setting, list: body; only a false setting renders */
    N_BREAK,
    N_CONTINUE,
    /* expressions */
    E_CONST,   /* value */
    E_NAME,    /* name */
    E_NSREF,   /* `ns.attr` as an assignment target: name = ns, name2 = attr */
    E_GETATTR, /* a: object, name: attribute */
    E_GETITEM, /* a: object, b: index or E_SLICE */
    E_SLICE,   /* a: start, b: stop, c: step (each may be NULL) */
    E_CALL,    /* a: callee, list: args, list2: E_KWARG, c: *args, d: **kwargs */
    E_FILTER,  /* a: operand (NULL: the block's input), name, id, args as E_CALL */
    E_TEST,    /* a: operand, name, id, args as E_CALL */
    E_KWARG,   /* name, a: value */
    E_PARAM,   /* name, a: default or NULL */
    E_NOT,     /* a */
    E_NEG,     /* a */
    E_POS,     /* a */
    E_BINOP,   /* op: OP_ADD..OP_POW, a, b */
    E_AND,     /* a, b */
    E_OR,      /* a, b */
    E_CONCAT,  /* list */
    E_COMPARE, /* a: first operand, list: E_OPERAND */
    E_OPERAND, /* op: OP_EQ..OP_LTEQ, OP_IN, OP_NOTIN; a */
    E_COND,    /* a: test, b: then, c: else or NULL */
    E_LIST,    /* list */
    E_TUPLE,   /* list */
    E_DICT,    /* list: keys, list2: values */
};

enum { JINJA_USES_VARARGS = 1, JINJA_USES_KWARGS = 2, JINJA_USES_CALLER = 4 };

struct jinja_node {
    uint16_t kind; /* enum jinja_node_kind */
    uint8_t op;    /* enum jinja_op */
    uint8_t flag;
    int32_t id; /* E_FILTER/E_TEST: builtin index, -1 when unknown */
    uint32_t line;
    const char *name, *name2; /* see the kinds */
    size_t name_n, name2_n;
    struct jinja_node *a, *b, *c, *d;
    struct jinja_node **list, **list2;
    size_t n, n2;
    struct tpl_value *value; /* E_CONST */
};

struct jinja_template {
    struct tpl_arena *arena;  /* owns the nodes and constants */
    struct jinja_node **body; /* [n_body] top-level statements */
    size_t n_body;
};

/* Parses tokens into t->body (nodes in t->arena). 0, ERR_FORMAT or ERR_NOMEM. */
int jinja_parse(struct jinja_template *t, const struct jinja_tokens *toks, struct error *err);

/* ---- render ------------------------------------------------------------------------------ */

struct jinja_scope;

struct jinja_render {
    struct tpl_arena *arena;     /* every value this render creates */
    const struct tpl_value *ctx; /* the caller's context object (or NULL) */
    struct buf *out;             /* where output goes now (captures swap it) */
    size_t max_output;           /* bytes per output buffer */
    uint64_t steps, max_steps;
    int depth, max_depth;           /* nested eval/exec frames */
    int call_depth, max_call_depth; /* nested macro calls and recursive loops */
    int64_t now_unix;
    struct jinja_scope *root; /* the template body's scope (blocks see it) */
    struct error *err;
    int code; /* first error, 0 while fine */
};

struct jinja_kwarg {
    const char *name;
    size_t n;
    struct tpl_value *v;
};

struct jinja_args {
    struct tpl_value **pos; /* [n_pos] */
    size_t n_pos;
    struct jinja_kwarg *kw; /* [n_kw] */
    size_t n_kw;
};

/* Builtin callables: globals, bound methods of str/dict/list, loop.cycle/changed. */
struct jinja_func {
    int id; /* enum jinja_builtin_fn (jinja_filters.c) or a method index */
    const char *name;
    struct tpl_value *self; /* the bound object, NULL for a global */
    int is_method;
};

int jinja_render(const struct jinja_template *t, struct jinja_render *st);

/* Records the first error (code + "line N: msg" unless line is 0) and returns NULL-friendly
 * status: always returns code. */
int jinja_fail(struct jinja_render *st, uint32_t line, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int jinja_charge(struct jinja_render *st, uint64_t n); /* steps; 0 or ERR_RANGE */
/* The extra steps an operation over v costs: one per 256 string bytes or 16 items, so work on
 * big values counts against max_steps like the loop iterations that would build them. */
uint64_t jinja_weight(const struct tpl_value *v);
/* Python == with the work charged as steps: 1/0, or -1 when the step limit ran out. */
int jinja_equal(struct jinja_render *st, const struct tpl_value *a, const struct tpl_value *b);
/* Python ordering with the work charged: 0, or an error code (recorded). */
int jinja_order(struct jinja_render *st, uint32_t line, const struct tpl_value *a,
                const struct tpl_value *b, int *out);
/* The error for using an undefined value (UndefinedError). Returns NULL. */
struct tpl_value *jinja_undefined_error(struct jinja_render *st, uint32_t line,
                                        const struct tpl_value *u);

/* Python-ish helpers the builtins share with the evaluator (jinja_eval.c). */
struct tpl_value *jinja_getattr(struct jinja_render *st, uint32_t line, struct tpl_value *obj,
                                const char *name, size_t n);
struct tpl_value *jinja_getitem(struct jinja_render *st, uint32_t line, struct tpl_value *obj,
                                struct tpl_value *key);
/* Items of an iterable: arrays as is, dict keys, string characters, undefined: none. Returns 0
 * or an error code (not iterable). *items may point into v. */
int jinja_iterate(struct jinja_render *st, uint32_t line, struct tpl_value *v,
                  struct tpl_value ***items, size_t *n);
struct tpl_value *jinja_to_string(struct jinja_render *st, struct tpl_value *v); /* str(v) */
struct tpl_value *jinja_call(struct jinja_render *st, uint32_t line, struct tpl_value *callee,
                             struct jinja_args *args);
struct tpl_value *jinja_binop(struct jinja_render *st, uint32_t line, int op, struct tpl_value *a,
                              struct tpl_value *b);
int jinja_contains(struct jinja_render *st, uint32_t line, struct tpl_value *container,
                   struct tpl_value *item, int *out);
struct tpl_value *jinja_new_string(struct jinja_render *st, const char *p, size_t n);
struct tpl_value *jinja_new_int(struct jinja_render *st, int64_t v);
struct tpl_value *jinja_new_float(struct jinja_render *st, double v);
struct tpl_value *jinja_buf_to_string(struct jinja_render *st, struct buf *b); /* frees b */
/* Records ERR_NOMEM/ERR_RANGE for a failed render allocation; returns NULL. */
struct tpl_value *jinja_oom(struct jinja_render *st);

/* ---- builtins (jinja_filters/tests/globals/methods/format.c)
 * ----------------------------------------- */

int jinja_filter_lookup(const char *name, size_t n); /* index or -1 */
int jinja_test_lookup(const char *name, size_t n);   /* index or -1 */
/* Applies filter `id` to v. Returns the result or NULL (error recorded). */
struct tpl_value *jinja_filter_apply(struct jinja_render *st, uint32_t line, int id,
                                     struct tpl_value *v, struct jinja_args *args);
/* Applies test `id`; *out = 0/1. Returns 0 or an error code. */
int jinja_test_apply(struct jinja_render *st, uint32_t line, int id, struct tpl_value *v,
                     struct jinja_args *args, int *out);
/* The global function named name (range, namespace, dict, raise_exception, strftime_now, ...),
 * or NULL. */
struct tpl_value *jinja_global_lookup(const char *name, size_t n);
/* A bound method of v named name (str, dict and list methods), or NULL when v has none. */
struct tpl_value *jinja_method_lookup(struct jinja_render *st, struct tpl_value *v,
                                      const char *name, size_t n);
/* Calls a builtin function value. */
struct tpl_value *jinja_builtin_call(struct jinja_render *st, uint32_t line, struct jinja_func *fn,
                                     struct jinja_args *args);
struct tpl_value *jinja_method_call(struct jinja_render *st, uint32_t line, struct jinja_func *fn,
                                    struct jinja_args *args);
/* Binds args to parameter names (filters: after the filtered value). out[i] = NULL when not
 * given. Errors on too many positionals or an unknown keyword. */
int jinja_bind(struct jinja_render *st, uint32_t line, const char *fname,
               const struct jinja_args *args, const char *const *names, size_t n_names,
               struct tpl_value **out);
/* Python str.format (jinja_format.c). */
struct tpl_value *jinja_str_format(struct jinja_render *st, uint32_t line, struct tpl_value *fmt,
                                   struct jinja_args *args);
/* An integer argument (bool counts); dflt when v is NULL or None. 0 or an error code. */
int jinja_arg_int(struct jinja_render *st, uint32_t line, struct tpl_value *v, int64_t dflt,
                  int64_t *out);
/* An empty list with room for n items (fill items[] and n directly). */
struct tpl_value *jinja_new_list(struct jinja_render *st, size_t n);
/* Python printf-style formatting (`fmt % args`, |format). */
struct tpl_value *jinja_percent_format(struct jinja_render *st, uint32_t line,
                                       struct tpl_value *fmt, struct tpl_value *args);

/* Python string pieces used by filters and methods. Results are render strings. */
struct tpl_value *jinja_str_strip(struct jinja_render *st, struct tpl_value *s,
                                  struct tpl_value *chars, int left, int right);
struct tpl_value *jinja_str_case(struct jinja_render *st, struct tpl_value *s, int how);
enum {
    JINJA_CASE_UPPER,
    JINJA_CASE_LOWER,
    JINJA_CASE_CAPITALIZE,
    JINJA_CASE_TITLE_METHOD,
    JINJA_CASE_TITLE_FILTER,
    JINJA_CASE_SWAP
};
/* Python str.islower() (want_lower) / str.isupper(). */
int jinja_str_is_case(const struct tpl_value *s, int want_lower);
struct tpl_value *jinja_str_replace(struct jinja_render *st, struct tpl_value *s,
                                    struct tpl_value *old, struct tpl_value *new_, int64_t count);
/* count characters of s from character start, stepping by step (a resolved Python slice). */
struct tpl_value *jinja_str_slice(struct jinja_render *st, struct tpl_value *s, int64_t start,
                                  int64_t step, size_t count);
/* A list of (key, value) tuples of a dict, in order. */
struct tpl_value *jinja_dict_items(struct jinja_render *st, const struct tpl_object *o);
/* Python html escape (markupsafe.escape) of str(v), flagged safe. */
struct tpl_value *jinja_html_escape(struct jinja_render *st, struct tpl_value *v);

#endif
