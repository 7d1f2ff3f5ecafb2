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
        buf_append_str(out, "# Tools\n\nYou may call one or more of the functions whose "
                            "signatures are listed inside <tools></tools>, one per line:\n"
                            "<tools>");
        size_t i;
        const json_t *t;
        json_array_foreach(r->tools, i, t) {
            buf_append_char(out, '\n');
            dump_spaced(t, out);
        }
        buf_append_str(out, "\n</tools>\n\nTo call a function, write a JSON object with its "
                            "\"name\" and \"arguments\" between <tool_call> and </tool_call>:\n"
                            "<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                            "<args-json-object>}\n</tool_call><|im_end|>\n");
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

int chat_prompt_render(const struct chat_prompt_cfg *cfg, const struct gen_request *r,
                       struct buf *out, int *reasoning_open, struct error *err) {
    *reasoning_open = 0;
    size_t n = json_array_size(r->messages);
    const json_t *last = json_array_get(r->messages, n - 1);
    int prefill =
        n > 1 && !strcmp(str_of(last, "role"), "assistant") && !json_object_get(last, "tool_calls");
    size_t start = out->len;
    int rc;
    (void)cfg;
    rc = render_chatml(r, prefill ? n - 1 : n, out, err);
    if (rc) return rc;
    if (prefill) buf_append_str(out, str_of(last, "content"));
    if (out->failed) return error_set(err, ERR_NOMEM, "out of memory");
    /* a generation prompt that opens a thinking block (and does not close it): the last
     * "<think>" in the prompt's final bytes, with no "</think>" after it */
    const char *p = out->data + start;
    size_t len = out->len - start, tail = len < 64 ? len : 64;
    const char *open = NULL;
    for (const char *q = p + len - tail; (q = memmem(q, (size_t)(p + len - q), "<think>", 7));
         q += 7)
        open = q;
    if (!prefill && open && !memmem(open, (size_t)(p + len - open), "</think>", 8))
        *reasoning_open = 1;
    return 0;
}
