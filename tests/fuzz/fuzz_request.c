/* fuzz_request.c: libFuzzer target for the server's request layer on arbitrary bytes.
 *
 * The first input byte picks the API (OpenAI chat, OpenAI completions, Anthropic messages) and
 * the route-independent checks; the rest is the request body. A body that validates is rendered
 * into a prompt with the built-in ChatML and with a small Jinja template (messages, tool calls
 * with object arguments, tools); the bytes also go through the UTF-8 repair used on generated
 * text. Besides the sanitizers' checks: no leak (mem_live_bytes returns to its start), every
 * error has a message, and repaired text is valid UTF-8. (The model-output parser has its own
 * target, fuzz_chat.)
 */
#include "../../src/base/buf.h"
#include "../../src/base/mem.h"
#include "../../src/server/arena.h"
#include "../../src/server/chat_prompt.h"
#include "../../src/server/json.h"
#include "../../src/server/request.h"
#include "../../src/server/utf8.h"
#include "../../src/text/chat_template.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char TEMPLATE[] =
    "{%- if tools %}<|im_start|>system\n{%- for t in tools %}{{ t | tojson }}\n{%- endfor %}"
    "<|im_end|>\n{%- endif %}{%- for m in messages %}<|im_start|>{{ m.role }}\n"
    "{%- if m.content is string %}{{ m.content }}{%- endif %}"
    "{%- if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{%- endif %}"
    "{%- for tc in m.tool_calls or [] %}<tool_call>{{ tc.function.name }}"
    "{%- if tc.function.arguments is mapping %}{%- for k, v in tc.function.arguments | items %}"
    "<parameter={{ k }}>{{ v if v is string else v | tojson }}</parameter>{%- endfor %}"
    "{%- else %}{{ tc.function.arguments }}{%- endif %}</tool_call>{%- endfor %}"
    "<|im_end|>\n{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
    "{%- endif %}{%- endif %}";

static struct chat_template *g_tpl;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    json_use_mem();
    if (!g_tpl) {
        struct error err = {0};
        if (chat_template_parse(&g_tpl, TEMPLATE, sizeof(TEMPLATE) - 1, &err)) {
            fprintf(stderr, "fuzz_request: template: %s\n", err.msg);
            abort();
        }
    }
    int64_t live0 = mem_live_bytes();
    enum req_api api = (enum req_api)(data[0] % 3);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    struct arena a;
    arena_init(&a);
    struct gen_request *r = NULL;
    struct error err = {0};
    int rc = req_parse(api, body, len, &a, &r, &err);
    if (rc) {
        if (!err.msg[0]) abort(); /* every refusal says why */
    } else if (api != REQ_API_COMPLETION) {
        for (int k = 0; k < 2; k++) {
            struct chat_prompt_cfg cfg = {k ? g_tpl : NULL, "<s>", "</s>"};
            struct buf out;
            buf_init(&out);
            struct error e2 = {0};
            int rr = chat_prompt_render(&cfg, r, &out, &e2);
            if (rr && !e2.msg[0]) abort();
            buf_free(&out);
        }
    }
    req_free(r);
    arena_free(&a);

    struct buf fixed;
    buf_init(&fixed);
    utf8_repair(body, len, &fixed);
    if (!fixed.failed && !utf8_valid(fixed.data ? fixed.data : "", fixed.len)) abort();
    size_t c = utf8_complete(body, len);
    if (c > len || len - c > 3) abort();
    buf_free(&fixed);

    if (mem_live_bytes() != live0) abort(); /* a leak in the request layer */
    return 0;
}
