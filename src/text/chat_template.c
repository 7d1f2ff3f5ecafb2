/* chat_template.c: the public entry points of the chat-template engine (see chat_template.h).
 *
 * Parsing normalizes newlines, lexes and builds the AST in the template's own arena. Rendering
 * sets up a private arena and limits, runs the evaluator, and only on success appends the text
 * to the caller's buffer, so a failed render leaves no partial output behind.
 */
#include "chat_template.h"

#include "jinja_internal.h"

#include "../base/mem.h"

#include <string.h>
#include <time.h>

#define DEFAULT_MAX_OUTPUT (32u << 20)
#define DEFAULT_MAX_MEMORY (256u << 20)
#define DEFAULT_MAX_STEPS  10000000u
#define MAX_EVAL_DEPTH     600 /* nested expression/statement frames in one render */
#define MAX_CALL_DEPTH     100 /* nested macro calls and recursive loop calls */
#define MAX_TEMPLATE_BYTES (16u << 20)

struct chat_template {
    struct jinja_template t;
};

int chat_template_parse(struct chat_template **out, const char *src, size_t len,
                        struct error *err) {
    *out = NULL;
    if (!src && len) return error_set(err, ERR_INVALID, "template: no source");
    if (len > MAX_TEMPLATE_BYTES)
        return error_set(err, ERR_RANGE, "template: %zu bytes is larger than %u", len,
                         MAX_TEMPLATE_BYTES);
    struct chat_template *ct = mem_calloc(1, sizeof(*ct));
    struct jinja_tokens toks = {0};
    int rc = ERR_NOMEM;
    if (!ct || !(ct->t.arena = tpl_arena_create(0))) goto fail;
    size_t n;
    char *norm = jinja_normalize(ct->t.arena, src ? src : "", len, &n);
    if (!norm) goto fail;
    if ((rc = jinja_lex(norm, n, ct->t.arena, &toks, err)) != 0) goto fail;
    if ((rc = jinja_parse(&ct->t, &toks, err)) != 0) goto fail;
    mem_free(toks.v);
    *out = ct;
    return 0;
fail:
    if (rc == ERR_NOMEM) error_set(err, ERR_NOMEM, "template: out of memory");
    mem_free(toks.v);
    chat_template_free(ct);
    return rc;
}

void chat_template_free(struct chat_template *t) {
    if (!t) return;
    tpl_arena_free(t->t.arena);
    mem_free(t);
}

int chat_template_render_opts(const struct chat_template *t, const struct tpl_value *context,
                              const struct chat_template_opts *opts, struct buf *out,
                              struct error *err) {
    if (!t || !out) return error_set(err, ERR_INVALID, "template render: no template or output");
    if (context && context->kind != TPL_OBJECT)
        return error_set(err, ERR_INVALID, "template render: the context must be an object");
    struct chat_template_opts o = opts ? *opts : (struct chat_template_opts){0};
    struct jinja_render st = {
        .ctx = context,
        .max_output = o.max_output_bytes ? o.max_output_bytes : DEFAULT_MAX_OUTPUT,
        .max_steps = o.max_steps ? o.max_steps : DEFAULT_MAX_STEPS,
        .max_depth = MAX_EVAL_DEPTH,
        .max_call_depth = MAX_CALL_DEPTH,
        .now_unix = o.now_unix ? o.now_unix : (int64_t)time(NULL),
        .err = err,
    };
    st.arena = tpl_arena_create(o.max_memory_bytes ? o.max_memory_bytes : DEFAULT_MAX_MEMORY);
    if (!st.arena) return error_set(err, ERR_NOMEM, "template render: out of memory");
    struct buf text;
    buf_init(&text);
    st.out = &text;
    int rc = jinja_render(&t->t, &st);
    if (!rc && text.failed) rc = error_set(err, ERR_NOMEM, "template render: out of memory");
    if (!rc) {
        buf_append(out, text.data ? text.data : "", text.len);
        if (out->failed) rc = error_set(err, ERR_NOMEM, "template render: out of memory");
    }
    buf_free(&text);
    tpl_arena_free(st.arena);
    return rc;
}

int chat_template_render(const struct chat_template *t, const struct tpl_value *context,
                         struct buf *out, struct error *err) {
    return chat_template_render_opts(t, context, NULL, out, err);
}
