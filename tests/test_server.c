/* test_server.c: the server's pieces without HTTP: UTF-8 release, request validation, prompt
 * rendering (built-in ChatML and a real Qwen template). The output parser and the grammars are
 * the chat module's (tests/test_chat.c, tests/test_grammar.c).
 */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/server/arena.h"
#include "../src/server/chat_prompt.h"
#include "../src/server/json.h"
#include "../src/server/request.h"
#include "../src/server/scheduler.h"
#include "../src/server/utf8.h"
#include "../src/text/chat.h"
#include "../src/text/chat_template.h"

#include <math.h>
#include <string.h>

/* ============================================================================================
 * UTF-8
 * ============================================================================================ */

TEST(server_utf8_complete_and_repair) {
    const char *e_acute = "caf\xc3\xa9";    /* é: 2 bytes */
    const char *euro = "\xe2\x82\xac";      /* €: 3 bytes */
    const char *emoji = "\xf0\x9f\x98\x80"; /* 4 bytes */
    EXPECT_EQ_INT(utf8_complete(e_acute, 5), 5);
    EXPECT_EQ_INT(utf8_complete(e_acute, 4), 3); /* split inside é: hold the lead byte */
    EXPECT_EQ_INT(utf8_complete(euro, 1), 0);
    EXPECT_EQ_INT(utf8_complete(euro, 2), 0);
    EXPECT_EQ_INT(utf8_complete(emoji, 3), 0);
    EXPECT_EQ_INT(utf8_complete(emoji, 4), 4);
    EXPECT_EQ_INT(utf8_complete("a\xff", 2), 2); /* invalid: not held, will be repaired */
    EXPECT_EQ_INT(utf8_complete("a\xc3"
                                "b",
                                3),
                  3); /* broken in the middle: complete */
    EXPECT(utf8_valid(emoji, 4));
    EXPECT(!utf8_valid(emoji, 3));
    EXPECT(!utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
    EXPECT(!utf8_valid("\xc0\xaf", 2));     /* overlong */
    EXPECT(!utf8_valid("a\0b", 3));
    struct buf b;
    buf_init(&b);
    utf8_repair("a\xff"
                "b\xe2\x82",
                5, &b);
    EXPECT(b.len == 8 && memcmp(b.data,
                                "a\xef\xbf\xbd"
                                "b\xef\xbf\xbd",
                                8) == 0);
    EXPECT(utf8_valid(b.data, b.len));
    buf_free(&b);
}

/* ============================================================================================
 * Requests
 * ============================================================================================ */

static struct gen_request *parse_req(enum req_api api, const char *body, struct arena *a,
                                     struct error *err) {
    json_use_mem();
    struct gen_request *r = NULL;
    if (req_parse(api, body, strlen(body), a, &r, err)) return NULL;
    return r;
}

TEST(server_request_fields) {
    struct arena a;
    arena_init(&a);
    struct error err = {0};
    struct gen_request *r = parse_req(
        REQ_API_CHAT,
        "{\"model\": \"m\", \"messages\": [{\"role\": \"developer\", \"content\": \"d\"}, "
        "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": "
        "\"text\", \"text\": \"b\"}]}, {\"role\": \"assistant\", \"content\": null, "
        "\"reasoning\": \"hm\", \"tool_calls\": [{\"id\": \"c\", \"type\": \"function\", "
        "\"function\": {\"name\": \"f\", \"arguments\": {\"x\": 1}}}]}, {\"role\": \"tool\", "
        "\"tool_call_id\": \"c\", \"content\": \"r\"}], \"max_completion_tokens\": 7, "
        "\"temperature\": 0.5, \"top_k\": 3, \"top_p\": 0.5, \"min_p\": 0.1, \"seed\": 9, "
        "\"stop\": [\"x\", \"\", \"yy\"], \"logit_bias\": {\"5\": -100, \"6\": 2.5}, "
        "\"stream\": true, \"stream_options\": {\"include_usage\": true}, \"n\": 2, "
        "\"logprobs\": true, \"top_logprobs\": 4, \"tools\": [{\"type\": \"function\", "
        "\"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}}], "
        "\"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"f\"}}, "
        "\"parallel_tool_calls\": false, \"response_format\": {\"type\": \"json_schema\", "
        "\"json_schema\": {\"name\": \"s\", \"schema\": {\"type\": \"object\"}}}, "
        "\"chat_template_kwargs\": {\"enable_thinking\": false}}",
        &a, &err);
    ASSERT_MSG(r, "%s", err.msg);
    EXPECT(!strcmp(r->model, "m"));
    EXPECT_EQ_INT(r->max_tokens, 7);
    EXPECT_NEAR(r->temperature, 0.5, 0);
    EXPECT_EQ_INT(r->top_k, 3);
    EXPECT_EQ_INT(r->seed, 9);
    EXPECT_EQ_INT(r->n_stop, 2);
    EXPECT(!strcmp(r->stop[1], "yy"));
    EXPECT_EQ_INT(r->n_bias, 2);
    EXPECT(r->bias_vals[0] == -INFINITY || r->bias_vals[1] == -INFINITY);
    EXPECT(r->stream && r->include_usage);
    EXPECT_EQ_INT(r->n, 2);
    EXPECT(r->logprobs && r->top_logprobs == 4);
    EXPECT_EQ_INT(r->tool_choice, REQ_TOOLS_NAMED);
    EXPECT(!strcmp(r->tool_name, "f"));
    EXPECT_EQ_INT(r->parallel_tool_calls, 0);
    EXPECT_EQ_INT(r->format, REQ_FORMAT_JSON_SCHEMA);
    EXPECT(json_is_false(json_object_get(r->template_kwargs, "enable_thinking")));
    json_t *m = r->messages;
    EXPECT_EQ_INT(json_array_size(m), 4);
    EXPECT(!strcmp(json_string_value(json_object_get(json_array_get(m, 0), "role")), "system"));
    EXPECT(!strcmp(json_string_value(json_object_get(json_array_get(m, 1), "content")), "a\nb"));
    json_t *asst = json_array_get(m, 2);
    EXPECT(json_is_null(json_object_get(asst, "content")));
    EXPECT(!strcmp(json_string_value(json_object_get(asst, "reasoning_content")), "hm"));
    json_t *fn =
        json_object_get(json_array_get(json_object_get(asst, "tool_calls"), 0), "function");
    EXPECT(!strcmp(json_string_value(json_object_get(fn, "arguments")), "{\"x\":1}"));
    req_free(r);
    arena_free(&a);
}

TEST(server_request_anthropic) {
    struct arena a;
    arena_init(&a);
    struct error err = {0};
    struct gen_request *r = parse_req(
        REQ_API_MESSAGES,
        "{\"model\": \"c\", \"max_tokens\": 50, \"system\": [{\"type\": \"text\", \"text\": "
        "\"x-anthropic-billing-header: cc_version=1; cch=abc;\"}, {\"type\": \"text\", \"text\": "
        "\"S\", \"cache_control\": {\"type\": \"ephemeral\"}}], \"thinking\": {\"type\": "
        "\"disabled\"}, \"stop_sequences\": [\"END\"], \"tools\": [{\"name\": \"t\", "
        "\"input_schema\": {\"type\": \"object\"}}, {\"type\": \"web_search_20250305\", \"name\": "
        "\"web_search\"}], \"tool_choice\": {\"type\": \"any\", \"disable_parallel_tool_use\": "
        "true}, \"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
        "\"content\": [{\"type\": \"thinking\", \"thinking\": \"th\", \"signature\": \"s\"}, "
        "{\"type\": \"text\", \"text\": \"ok\"}, {\"type\": \"tool_use\", \"id\": \"u1\", "
        "\"name\": \"t\", \"input\": {\"k\": [1, 2]}}]}, {\"role\": \"user\", \"content\": "
        "[{\"type\": \"tool_result\", \"tool_use_id\": \"u1\", \"content\": [{\"type\": \"text\", "
        "\"text\": \"res\"}]}, {\"type\": \"text\", \"text\": \"next\"}]}]}",
        &a, &err);
    ASSERT_MSG(r, "%s", err.msg);
    EXPECT_EQ_INT(r->max_tokens, 50);
    EXPECT_NEAR(r->temperature, 1.0, 0);
    EXPECT_EQ_INT(r->n_stop, 1);
    EXPECT_EQ_INT(r->tool_choice, REQ_TOOLS_REQUIRED);
    EXPECT_EQ_INT(r->parallel_tool_calls, 0);
    EXPECT_EQ_INT(json_array_size(r->tools), 1); /* the server-side tool is not ours */
    EXPECT(json_is_false(json_object_get(r->template_kwargs, "enable_thinking")));
    json_t *m = r->messages;
    EXPECT_EQ_INT(json_array_size(m), 5); /* system, user, assistant, tool, user */
    EXPECT(!strcmp(json_string_value(json_object_get(json_array_get(m, 0), "content")), "S"));
    json_t *asst = json_array_get(m, 2);
    EXPECT(!strcmp(json_string_value(json_object_get(asst, "content")), "ok"));
    EXPECT(!strcmp(json_string_value(json_object_get(asst, "reasoning_content")), "th"));
    json_t *call = json_array_get(json_object_get(asst, "tool_calls"), 0);
    EXPECT(!strcmp(json_string_value(json_object_get(call, "id")), "u1"));
    EXPECT(
        !strcmp(json_string_value(json_object_get(json_object_get(call, "function"), "arguments")),
                "{\"k\":[1,2]}"));
    json_t *tool = json_array_get(m, 3);
    EXPECT(!strcmp(json_string_value(json_object_get(tool, "role")), "tool"));
    EXPECT(!strcmp(json_string_value(json_object_get(tool, "tool_call_id")), "u1"));
    EXPECT(!strcmp(json_string_value(json_object_get(tool, "content")), "res"));
    EXPECT(!strcmp(json_string_value(json_object_get(json_array_get(m, 4), "content")), "next"));
    req_free(r);
    arena_free(&a);
}

/* Allocation failures anywhere in parsing give ERR_NOMEM (or succeed), never a crash or leak. */
TEST(server_request_oom) {
    json_use_mem();
    const char *body = "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                       "\"text\": \"a\"}]}, {\"role\": \"assistant\", \"content\": \"x\", "
                       "\"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": {}}}]}], "
                       "\"stop\": [\"a\", \"b\"], \"logit_bias\": {\"1\": 2}, \"tools\": "
                       "[{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]}";
    int64_t live0 = mem_live_bytes();
    int ok_seen = 0;
    for (int n = 0; n < 400 && !ok_seen; n++) {
        struct arena a;
        arena_init(&a);
        struct gen_request *r = NULL;
        struct error err = {0};
        mem_fail_after(n);
        int rc = req_parse(REQ_API_CHAT, body, strlen(body), &a, &r, &err);
        mem_fail_after(-1);
        if (rc == 0) {
            ok_seen = 1;
            struct buf prompt;
            buf_init(&prompt);
            struct chat_prompt_cfg cfg = {NULL, "", ""};
            EXPECT(chat_prompt_render(&cfg, r, &prompt, &err) == 0);
            buf_free(&prompt);
        } else {
            EXPECT_MSG(rc == ERR_NOMEM || rc == ERR_FORMAT, "n=%d rc=%d %s", n, rc, err.msg);
        }
        req_free(r);
        arena_free(&a);
        if (mem_live_bytes() != live0) printf("leak at n=%d rc=%d: %s\n", n, rc, err.msg);
    }
    EXPECT(ok_seen);
    EXPECT_EQ_INT(mem_live_bytes(), live0);
}

/* ============================================================================================
 * Prompts
 * ============================================================================================ */

/* Renders body's conversation; *open says whether the prompt leaves a thinking block open. */
static char *render(const struct chat_prompt_cfg *cfg, const char *body, int *open) {
    struct arena a;
    arena_init(&a);
    struct error err = {0};
    struct gen_request *r = parse_req(REQ_API_CHAT, body, &a, &err);
    struct buf out;
    buf_init(&out);
    int rc = r ? chat_prompt_render(cfg, r, &out, &err) : -1;
    if (!rc) *open = chat_reasoning_detect(out.data, out.len) == CHAT_REASONING_FORCED;
    if (rc) test_fail(__FILE__, __LINE__, "render: %s", err.msg);
    req_free(r);
    arena_free(&a);
    if (rc) {
        buf_free(&out);
        return NULL;
    }
    return buf_detach(&out);
}

TEST(server_chat_prompt_chatml) {
    struct chat_prompt_cfg cfg = {NULL, "", ""};
    int open = -1;
    char *p = render(&cfg,
                     "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": "
                     "\"user\", \"content\": \"U\"}, {\"role\": \"assistant\", \"content\": \"A\", "
                     "\"tool_calls\": [{\"id\": \"1\", \"function\": {\"name\": \"f\", "
                     "\"arguments\": \"{\\\"x\\\": 1}\"}}]}, {\"role\": \"tool\", \"content\": "
                     "\"R1\"}, {\"role\": \"tool\", \"content\": \"R2\"}], \"tools\": [{\"type\": "
                     "\"function\", \"function\": {\"name\": \"f\"}}], \"chat_template_kwargs\": "
                     "{\"enable_thinking\": false}}",
                     &open);
    ASSERT(p);
    EXPECT(!strncmp(p, "<|im_start|>system\nS\n\n# Tools\n", 30));
    EXPECT(
        strstr(p, "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\"}}\n</tools>"));
    EXPECT(strstr(p, "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA\n<tool_call>\n"
                     "{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n</tool_call><|im_end|>\n"));
    EXPECT(strstr(p, "<|im_start|>user\n<tool_response>\nR1\n</tool_response>\n<tool_response>\nR2"
                     "\n</tool_response><|im_end|>\n"));
    size_t n = strlen(p);
    const char *tail = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    EXPECT(n > strlen(tail) && !strcmp(p + n - strlen(tail), tail));
    EXPECT_EQ_INT(open, 0);
    mem_free(p);
    /* prefill: a final assistant message is continued, not closed */
    p = render(&cfg,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"U\"}, {\"role\": "
               "\"assistant\", \"content\": \"Sure, \"}]}",
               &open);
    ASSERT(p);
    EXPECT(!strcmp(p, "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nSure, "));
    mem_free(p);
}

TEST(server_chat_prompt_qwen_template) {
    const char *path = test_model_path("templates/Qwen3.5-4B.jinja");
    if (!path) SKIP_TEST("../shared/models/templates not found");
    size_t n;
    char *src = test_read_file(path, &n);
    ASSERT(src);
    struct chat_template *t = NULL;
    struct error err = {0};
    ASSERT_MSG(chat_template_parse(&t, src, n, &err) == 0, "%s", err.msg);
    struct chat_prompt_cfg cfg = {t, "", "<|im_end|>"};
    int open = 0;
    /* tool-call arguments sent as a JSON string reach the template as an object (the XML
     * parameters are rendered from its items) */
    char *p = render(&cfg,
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"U\"}, {\"role\": "
                     "\"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"1\", "
                     "\"function\": {\"name\": \"read\", \"arguments\": \"{\\\"path\\\": "
                     "\\\"a.c\\\"}\"}}]}, {\"role\": \"tool\", \"content\": \"R\"}], \"tools\": "
                     "[{\"type\": \"function\", \"function\": {\"name\": \"read\", \"parameters\": "
                     "{\"type\": \"object\"}}}]}",
                     &open);
    ASSERT(p);
    EXPECT(strstr(p, "<function=read>\n<parameter=path>\na.c\n</parameter>\n</function>") != NULL);
    EXPECT(strstr(p, "<tool_response>\nR\n</tool_response>") != NULL);
    EXPECT_EQ_INT(open, 1); /* Qwen3.5 opens <think> in the generation prompt */
    mem_free(p);
    p = render(&cfg,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"U\"}], "
               "\"chat_template_kwargs\": {\"enable_thinking\": false}}",
               &open);
    ASSERT(p);
    EXPECT_EQ_INT(open, 0);
    mem_free(p);
    /* the template's own exception is the client's error (400), with its message */
    struct arena a;
    arena_init(&a);
    struct gen_request *r = parse_req(
        REQ_API_CHAT, "{\"messages\": [{\"role\": \"tool\", \"content\": \"R\"}]}", &a, &err);
    ASSERT(r);
    struct buf out;
    buf_init(&out);
    EXPECT_EQ_INT(chat_prompt_render(&cfg, r, &out, &err), ERR_INVALID);
    EXPECT(strstr(err.msg, "No user query") != NULL);
    buf_free(&out);
    req_free(r);
    arena_free(&a);
    chat_template_free(t);
    mem_free(src);
}

/* ============================================================================================
 * Scheduler
 * ============================================================================================ */

/* A long prompt is read in n_batch chunks between the decode steps of a generating slot: the
 * generation keeps producing a token per step while the prompt is processed, instead of
 * stalling until it is done. */
TEST(server_sched_prefill_interleaves) {
    const char *path = test_model_path("stories/stories260K.gguf");
    if (!path) SKIP_TEST("../shared/models/stories not found");
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = 1;
    ep.n_batch = 16;
    struct engine *e = NULL;
    struct error err = {0};
    ASSERT(engine_open(&e, path, &ep, &err) == 0);
    struct sched_params p;
    memset(&p, 0, sizeof(p));
    p.n_slots = 2;
    p.n_ctx = 1024;
    p.n_batch = 16;
    p.kv_type = KV_TYPE_F16;
    struct sched *s = NULL;
    ASSERT_MSG(sched_create(&s, e, &p, &err) == 0, "%s", err.msg);
    struct sched_chan *ch = sched_chan_create();
    ASSERT(ch);
    struct sched_gen g;
    memset(&g, 0, sizeof(g));
    sampler_params_default(&g.sp);
    g.sp.temperature = 0;
    g.max_tokens = 700;
    g.ignore_eos = 1;
    g.n_probs = 0; /* token records let the test count tokens */
    int32_t pa[2] = {1, 403};
    struct sched_task *a = NULL, *b = NULL;
    ASSERT(sched_submit(s, ch, pa, 2, &g, &a, &err) == 0);
    struct buf text;
    buf_init(&text);
    struct sched_tokens ta = {0}, tb = {0};
    struct sched_result ra, rb;
    for (int i = 0; ta.n < 5; i++) {
        ASSERT_MSG(i < 300, "no tokens after 30 s");
        sched_chan_wait(ch, 100);
        ASSERT(!sched_task_take(a, &text, &ta, &ra));
    }
    int32_t pb[300];
    for (int i = 0; i < 300; i++) pb[i] = 3 + (i * 37) % 500;
    g.max_tokens = 1;
    ASSERT(sched_submit(s, ch, pb, 300, &g, &b, &err) == 0);
    int before = ta.n, b_done = 0;
    struct buf tb_text;
    buf_init(&tb_text);
    for (int i = 0; !b_done; i++) {
        ASSERT_MSG(i < 600, "the long prompt did not finish in 60 s");
        sched_chan_wait(ch, 100);
        b_done = sched_task_take(b, &tb_text, &tb, &rb);
        sched_task_take(a, &text, &ta, &ra);
    }
    int during = ta.n - before;
    /* 300 prompt tokens at 16 per step, less the decode token of each step: >= 20 steps */
    EXPECT_MSG(during >= 18, "the generating slot got %d tokens while the prompt ran", during);
    EXPECT_EQ_INT(rb.n_prompt, 300);
    EXPECT_EQ_INT(rb.n_gen, 1);
    EXPECT_EQ_INT(rb.finish, SCHED_LENGTH);
    sched_task_cancel(a);
    for (int i = 0; i < 300 && !sched_task_take(a, &text, &ta, &ra); i++) sched_chan_wait(ch, 100);
    EXPECT_EQ_INT(ra.finish, SCHED_CANCELLED);
    sched_task_release(a);
    sched_task_release(b);
    sched_chan_free(ch);
    sched_free(s);
    engine_close(e);
    buf_free(&text);
    buf_free(&tb_text);
    mem_free(ta.v);
    mem_free(tb.v);
}
