/* chat_prompt.c: see chat_prompt.h.
 *
 * The built-in rendering follows the ChatML frame the Qwen families use (see
 * ../shared/docs/reference/qwen-tool-calling.md §1-3) with our own wording for the tool
 * instructions; tool signatures and call arguments are printed like Python's json.dumps
 * (", " and ": " separators), as the Qwen templates' tojson does, so a model trained on them
 * sees familiar text.
 */
#include "chat_prompt.h"

#include "../base/mem.h"
#include "../text/chat_template.h"
#include "json.h"

#include <string.h>

static const char *str_of(const json_t *m, const char *key) {
    const char *s = json_string_value(json_object_get(m, key));
    return s ? s : "";
}

/* json.dumps-style text of v (", " and ": " separators, insertion order, UTF-8 kept). */
static void dump_spaced(const json_t *v, struct buf *out) {
    char *s = json_dump_str(v, 0);
    if (!s) {
        out->failed = 1;
        return;
    }
    buf_append_str(out, s);
    mem_free(s);
}

static void render_call(const json_t *call, struct buf *out) {
    const json_t *fn = json_object_get(call, "function");
    const char *args = str_of(fn, "arguments");
    json_t *obj = json_loads(args, 0, NULL);
    json_t *c = json_object();
    if (!c) {
        json_decref(obj);
        out->failed = 1;
        return;
    }
    json_object_set(c, "name", json_object_get(fn, "name"));
    json_object_set_new(c, "arguments", obj ? obj : json_string(args));
    buf_append_str(out, "<tool_call>\n");
    dump_spaced(c, out);
    buf_append_str(out, "\n</tool_call>");
    json_decref(c);
}

static int render_chatml(const struct gen_request *r, size_t n_msgs, struct buf *out,
                         struct error *err) {
    const json_t *msgs = r->messages;
    size_t first = 0;
    const json_t *m0 = json_array_get(msgs, 0);
    int has_sys = n_msgs > 0 && !strcmp(str_of(m0, "role"), "system");
    if (r->tools && r->tool_choice != REQ_TOOLS_NONE) {
        buf_append_str(out, "<|im_start|>system\n");
        if (has_sys) {
            buf_append_str(out, str_of(m0, "content"));
            buf_append_str(out, "\n\n");
            first = 1;
        }
        buf_append_str(out, "# Tools\n\nFunctions you may call, one signature per line:\n<tools>");
        size_t i;
        const json_t *t;
        json_array_foreach(r->tools, i, t) {
            buf_append_char(out, '\n');
            dump_spaced(t, out);
        }
        buf_append_str(out, "\n</tools>\n\nTo call one, write <tool_call>\n{\"name\": <name>, "
                            "\"arguments\": <object>}\n</tool_call><|im_end|>\n");
    }
    for (size_t i = first; i < n_msgs; i++) {
        const json_t *m = json_array_get(msgs, i);
        const char *role = str_of(m, "role");
        if (!strcmp(role, "tool")) {
            int prev_tool =
                i > first && !strcmp(str_of(json_array_get(msgs, i - 1), "role"), "tool");
            int next_tool =
                i + 1 < n_msgs && !strcmp(str_of(json_array_get(msgs, i + 1), "role"), "tool");
            if (!prev_tool) buf_append_str(out, "<|im_start|>user");
            buf_append_str(out, "\n<tool_response>\n");
            buf_append_str(out, str_of(m, "content"));
            buf_append_str(out, "\n</tool_response>");
            if (!next_tool) buf_append_str(out, "<|im_end|>\n");
            continue;
        }
        buf_printf(out, "<|im_start|>%s\n", role);
        buf_append_str(out, str_of(m, "content"));
        const json_t *calls = json_object_get(m, "tool_calls");
        size_t k;
        const json_t *c;
        json_array_foreach(calls, k, c) {
            if (k > 0 || json_string_length(json_object_get(m, "content")))
                buf_append_char(out, '\n');
            render_call(c, out);
        }
        buf_append_str(out, "<|im_end|>\n");
    }
    buf_append_str(out, "<|im_start|>assistant\n");
    const json_t *et = json_object_get(r->template_kwargs, "enable_thinking");
    if (json_is_false(et)) buf_append_str(out, "<think>\n\n</think>\n\n");
    (void)err;
    return 0;
}

/* ---- Jinja templates ---- */

/* v as a template value in arena a (NULL when out of memory). Tool-call arguments strings are
 * turned into objects on the way (parse_args), as the Qwen templates iterate them. */
static struct tpl_value *to_tpl(struct tpl_arena *a, const json_t *v, int depth) {
    if (depth > 64) return NULL;
    switch (json_typeof(v)) {
    case JSON_NULL:
        return tpl_value_none();
    case JSON_TRUE:
        return tpl_value_bool(1);
    case JSON_FALSE:
        return tpl_value_bool(0);
    case JSON_INTEGER:
        return tpl_value_int(a, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return tpl_value_float(a, json_real_value(v));
    case JSON_STRING:
        return tpl_value_string(a, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        struct tpl_value *arr = tpl_value_array(a);
        size_t i;
        const json_t *x;
        json_array_foreach(v, i, x) {
            if (tpl_array_push(a, arr, to_tpl(a, x, depth + 1))) return NULL;
        }
        return arr;
    }
    case JSON_OBJECT: {
        struct tpl_value *obj = tpl_value_object(a);
        const char *key;
        const json_t *x;
        json_object_foreach((json_t *)v, key, x) {
            struct tpl_value *tv;
            if (!strcmp(key, "arguments") && json_is_string(x)) {
                json_t *parsed = json_loads(json_string_value(x), 0, NULL);
                tv = to_tpl(a, json_is_object(parsed) ? parsed : x, depth + 1);
                json_decref(parsed);
            } else {
                tv = to_tpl(a, x, depth + 1);
            }
            if (tpl_object_set(a, obj, key, strlen(key), tv)) return NULL;
        }
        return obj;
    }
    }
    return NULL;
}

static int render_template(const struct chat_prompt_cfg *cfg, const struct gen_request *r,
                           size_t n_msgs, struct buf *out, struct error *err) {
    struct tpl_arena *a = tpl_arena_create(0);
    if (!a) return error_set(err, ERR_NOMEM, "out of memory");
    json_t *msgs = json_array();
    for (size_t i = 0; msgs && i < n_msgs; i++)
        json_array_append(msgs, json_array_get(r->messages, i));
    struct tpl_value *ctx = tpl_value_object(a);
    const char *key;
    const json_t *x;
    int rc = 0;
    /* the request's template variables first, so the standard ones below cannot be overridden */
    json_object_foreach(r->template_kwargs, key, x) {
        if (tpl_object_set(a, ctx, key, strlen(key), to_tpl(a, x, 0))) rc = ERR_NOMEM;
    }
    if (!msgs || tpl_object_set(a, ctx, "messages", 8, to_tpl(a, msgs, 0)) ||
        (r->tools && r->tool_choice != REQ_TOOLS_NONE &&
         tpl_object_set(a, ctx, "tools", 5, to_tpl(a, r->tools, 0))) ||
        tpl_object_set(a, ctx, "add_generation_prompt", 21, tpl_value_bool(1)) ||
        tpl_object_set(a, ctx, "bos_token", 9,
                       tpl_value_string(a, cfg->bos_text, strlen(cfg->bos_text))) ||
        tpl_object_set(a, ctx, "eos_token", 9,
                       tpl_value_string(a, cfg->eos_text, strlen(cfg->eos_text))))
        rc = ERR_NOMEM;
    json_decref(msgs);
    if (rc) {
        tpl_arena_free(a);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    rc = chat_template_render(cfg->tpl, ctx, out, err);
    tpl_arena_free(a);
    if (rc == ERR_NOMEM) return rc;
    if (rc) {
        error_prefix(err, "chat template");
        return ERR_INVALID; /* the conversation does not fit the template: the client's 400 */
    }
    return 0;
}

int chat_prompt_render(const struct chat_prompt_cfg *cfg, const struct gen_request *r,
                       struct buf *out, struct error *err) {
    size_t n = json_array_size(r->messages);
    const json_t *last = json_array_get(r->messages, n - 1);
    int prefill =
        n > 1 && !strcmp(str_of(last, "role"), "assistant") && !json_object_get(last, "tool_calls");
    int rc;
    if (cfg->tpl)
        rc = render_template(cfg, r, prefill ? n - 1 : n, out, err);
    else
        rc = render_chatml(r, prefill ? n - 1 : n, out, err);
    if (rc) return rc;
    if (prefill) buf_append_str(out, str_of(last, "content"));
    if (out->failed) return error_set(err, ERR_NOMEM, "out of memory");
    return 0;
}
