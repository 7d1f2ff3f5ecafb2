/* fuzz_jinja.c: libFuzzer target for chat_template_parse + chat_template_render.
 *
 * The input is template source. It is parsed, and when that succeeds rendered twice with a small
 * fixed chat context (messages with a tool call, tools, flags) under tight limits, so runaway
 * loops and output end as errors quickly. Besides the sanitizers' checks: parse and render
 * either succeed or return a negative ERR_* recorded in the error (raise_exception('') may
 * leave its message empty, everything else has one); the two renders of one template
 * agree (rendering is deterministic and has no hidden state); no allocation leaks.
 */
#include "../../src/base/buf.h"
#include "../../src/base/mem.h"
#include "../../src/text/chat_template.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tpl_value *str(struct tpl_arena *a, const char *s) {
    return tpl_value_string(a, s, strlen(s));
}

static struct tpl_value *message(struct tpl_arena *a, const char *role, const char *content) {
    struct tpl_value *m = tpl_value_object(a);
    tpl_object_set(a, m, "role", 4, str(a, role));
    tpl_object_set(a, m, "content", 7, content ? str(a, content) : tpl_value_none());
    return m;
}

static struct tpl_value *build_context(struct tpl_arena *a) {
    struct tpl_value *ctx = tpl_value_object(a), *msgs = tpl_value_array(a);
    tpl_array_push(a, msgs, message(a, "system", "You are helpful."));
    tpl_array_push(a, msgs, message(a, "user", "Hi <think>x</think> \xc3\xa9\n"));
    struct tpl_value *asst = message(a, "assistant", NULL), *calls = tpl_value_array(a);
    struct tpl_value *call = tpl_value_object(a), *fn = tpl_value_object(a),
                     *args = tpl_value_object(a);
    tpl_object_set(a, args, "city", 4, str(a, "Paris"));
    tpl_object_set(a, args, "days", 4, tpl_value_int(a, 3));
    tpl_object_set(a, args, "temp", 4, tpl_value_float(a, 1.5e-7));
    tpl_object_set(a, fn, "name", 4, str(a, "get_weather"));
    tpl_object_set(a, fn, "arguments", 9, args);
    tpl_object_set(a, call, "type", 4, str(a, "function"));
    tpl_object_set(a, call, "function", 8, fn);
    tpl_array_push(a, calls, call);
    tpl_object_set(a, asst, "tool_calls", 10, calls);
    tpl_object_set(a, asst, "reasoning_content", 17, str(a, "because"));
    tpl_array_push(a, msgs, asst);
    tpl_array_push(a, msgs, message(a, "tool", "{\"t\": 18}"));
    tpl_array_push(a, msgs, message(a, "user", "Thanks"));
    struct tpl_value *tools = tpl_value_array(a), *tool = tpl_value_object(a);
    tpl_object_set(a, tool, "type", 4, str(a, "function"));
    tpl_object_set(a, tool, "function", 8, fn);
    tpl_array_push(a, tools, tool);
    tpl_object_set(a, ctx, "messages", 8, msgs);
    tpl_object_set(a, ctx, "tools", 5, tools);
    tpl_object_set(a, ctx, "add_generation_prompt", 21, tpl_value_bool(1));
    tpl_object_set(a, ctx, "enable_thinking", 15, tpl_value_bool(0));
    tpl_object_set(a, ctx, "bos_token", 9, str(a, "<s>"));
    tpl_object_set(a, ctx, "eos_token", 9, str(a, "</s>"));
    return ctx;
}

static struct tpl_arena *g_arena;
static struct tpl_value *g_ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_arena) {
        g_arena = tpl_arena_create(0);
        g_ctx = build_context(g_arena);
        if (tpl_arena_failed(g_arena)) abort();
    }
    int64_t live = mem_live_count();
    struct chat_template *t = NULL;
    struct error err = {0};
    int rc = chat_template_parse(&t, (const char *)data, size, &err);
    if (rc > 0 || (rc < 0 && (t != NULL || err.code != rc || err.msg[0] == 0))) abort();
    if (rc == 0) {
        struct chat_template_opts opts = {.max_output_bytes = 1 << 20,
                                          .max_memory_bytes = 32u << 20,
                                          .max_steps = 200000,
                                          .now_unix = 1700000000};
        struct buf out[2];
        int rcs[2];
        for (int k = 0; k < 2; k++) {
            buf_init(&out[k]);
            memset(&err, 0, sizeof(err));
            rcs[k] = chat_template_render_opts(t, g_ctx, &opts, &out[k], &err);
            if (rcs[k] > 0 || (rcs[k] < 0 && err.code != rcs[k])) abort();
            if (rcs[k] < 0 && out[k].len != 0) abort(); /* failed renders leave no output */
        }
        if (rcs[0] != rcs[1] || out[0].len != out[1].len ||
            (out[0].len && memcmp(out[0].data, out[1].data, out[0].len) != 0))
            abort();
        buf_free(&out[0]);
        buf_free(&out[1]);
        chat_template_free(t);
    }
    if (mem_live_count() != live) abort();
    return 0;
}
