/* test_chat.c: the Qwen output parser (text/chat.h) and jval.
 *
 * Each fixture is a model output with the message it must give. Every fixture is also fed in
 * random piece sizes (and byte by byte): the deltas must concatenate to the same message, every
 * call must be announced before its argument fragments, every arguments string must be valid
 * JSON, and each delta must be valid UTF-8.
 */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/text/chat.h"
#include "../src/text/jval.h"

#include <stdint.h>
#include <string.h>

static const char TOOLS[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"read_file\", \"parameters\": "
    "{\"type\": \"object\", \"properties\": {\"path\": {\"type\": \"string\"}, \"line\": "
    "{\"type\": \"integer\"}, \"recursive\": {\"type\": \"boolean\"}, \"opts\": {\"type\": "
    "\"object\"}, \"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}}, \"ratio\": "
    "{\"type\": [\"number\", \"null\"]}, \"mode\": {\"enum\": [\"fast\", \"slow\"]}, \"code\": "
    "{\"type\": \"string\"}, \"any\": {\"anyOf\": [{\"type\": \"integer\"}, {\"type\": "
    "\"string\"}]}, \"ref\": {\"$ref\": \"#/$defs/n\"}}, \"required\": [\"path\"], \"$defs\": "
    "{\"n\": {\"type\": \"number\"}}}}}, {\"type\": \"function\", \"function\": {\"name\": "
    "\"grep\", \"parameters\": {\"type\": \"object\", \"properties\": {\"pattern\": {\"type\": "
    "\"string\"}}}}}, {\"name\": \"bare_tool\", \"parameters\": {\"properties\": {\"n\": "
    "{\"type\": \"integer\"}}}}]";

struct fixture {
    const char *name;
    enum chat_tool_format fmt;
    enum chat_reasoning reasoning;
    const char *text;
    const char *content;
    const char *reasoning_text;
    int n_calls;
    const char *calls[4][2]; /* name, arguments */
};

#define J       CHAT_TOOL_FORMAT_JSON
#define X       CHAT_TOOL_FORMAT_XML
#define NOTOOLS CHAT_TOOL_FORMAT_NONE
#define P       CHAT_REASONING_PARSE
#define F       CHAT_REASONING_FORCED
#define NR      CHAT_REASONING_NONE

static const struct fixture FIXTURES[] = {
    {"plain", J, P, "Hello world", "Hello world", "", 0, {{0}}},
    {"plain_lt",
     J,
     P,
     "a < b and <b>bold</b> <tool ok <3",
     "a < b and <b>bold</b> <tool ok <3",
     "",
     0,
     {{0}}},
    {"think",
     J,
     P,
     "<think>\nLet me think.\n</think>\n\nThe answer is 4.",
     "The answer is 4.",
     "Let me think.",
     0,
     {{0}}},
    {"think_forced",
     X,
     F,
     "I think...\nstill\n</think>\n\nAnswer",
     "Answer",
     "I think...\nstill",
     0,
     {{0}}},
    {"think_forced_unclosed", X, F, "thinking forever", "", "thinking forever", 0, {{0}}},
    {"think_none", J, NR, "<think>x</think>y", "<think>x</think>y", "", 0, {{0}}},
    {"think_empty_prompt", J, P, "\n\nHi there\n", "Hi there", "", 0, {{0}}},
    {"json_call",
     J,
     P,
     "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"src/main.c\"}}\n"
     "</tool_call>",
     "",
     "",
     1,
     {{"read_file", "{\"path\": \"src/main.c\"}"}}},
    {"json_parallel",
     J,
     P,
     "<think>\nTwo calls.\n</think>\n\nLet me look.\n<tool_call>\n{\"name\": \"read_file\", "
     "\"arguments\": {\"path\": \"a.c\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"grep\", "
     "\"arguments\": {\"pattern\": \"TODO\"}}\n</tool_call>",
     "Let me look.",
     "Two calls.",
     2,
     {{"read_file", "{\"path\": \"a.c\"}"}, {"grep", "{\"pattern\": \"TODO\"}"}}},
    {"json_nested",
     J,
     P,
     "<tool_call>\n{\"name\":\"f\",\"arguments\":{\"x\":[1,2,{\"y\":null,\"z\":[true,false]}],"
     "\"s\":\"a\\\"b\\\\c\\u00e9\"}}\n</tool_call>",
     "",
     "",
     1,
     {{"f", "{\"x\":[1,2,{\"y\":null,\"z\":[true,false]}],\"s\":\"a\\\"b\\\\c\\u00e9\"}"}}},
    {"json_ws_around",
     J,
     P,
     "<tool_call>   \n\n  {  \"name\" : \"f\" , \"arguments\" : { \"a\" : -1.5e3 }  }  \n"
     "</tool_call>\n",
     "",
     "",
     1,
     {{"f", "{ \"a\" : -1.5e3 }"}}},
    {"json_missing_close_eos",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
     "",
     "",
     1,
     {{"f", "{\"a\": 1}"}}},
    {"json_truncated_string",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"hel",
     "",
     "",
     1,
     {{"f", "{\"a\": \"hel\"}"}}},
    {"json_truncated_key",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1, \"bb",
     "",
     "",
     1,
     {{"f", "{\"a\": 1}"}}},
    {"json_truncated_literal",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, tr",
     "",
     "",
     1,
     {{"f", "{\"a\": [1]}"}}},
    {"json_truncated_number",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1.",
     "",
     "",
     1,
     {{"f", "{\"a\": 1}"}}},
    {"json_trailing_text",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}}} oops\n</tool_call>\nDone.",
     "Done.",
     "",
     1,
     {{"f", "{}"}}},
    {"json_broken_args",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1, \"b\": x}}\n</tool_call>",
     "",
     "",
     1,
     {{"f", "{\"a\": 1}"}}},
    {"json_fence",
     J,
     P,
     "<tool_call>\n```json\n{\"name\": \"f\", \"arguments\": {\"k\": \"v\"}}\n```\n</tool_call>",
     "",
     "",
     1,
     {{"f", "{\"k\": \"v\"}"}}},
    {"json_no_arguments",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
     "",
     "",
     1,
     {{"f", "{}"}}},
    {"json_args_first",
     J,
     P,
     "<tool_call>\n{\"arguments\": {\"q\": [1, 2]}, \"name\": \"search\"}\n</tool_call>",
     "",
     "",
     1,
     {{"search", "{\"q\": [1, 2]}"}}},
    {"json_args_string",
     J,
     P,
     "<tool_call>\n{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}\n</tool_call>",
     "",
     "",
     1,
     {{"f", "{\"a\": 1}"}}},
    {"json_raw_newline",
     J,
     P,
     "<tool_call>\n{\"name\": \"write\", \"arguments\": {\"code\": \"a\nb\tc\"}}\n</tool_call>",
     "",
     "",
     1,
     {{"write", "{\"code\": \"a\\nb\\tc\"}"}}},
    {"json_not_json",
     J,
     P,
     "<tool_call>\nnot json\n</tool_call> after",
     "<tool_call>\nnot json\n after",
     "",
     0,
     {{0}}},
    {"json_no_name",
     J,
     P,
     "<tool_call>\n{\"arguments\": {}}\n</tool_call>",
     "<tool_call>\n{\"arguments\": {}}",
     "",
     0,
     {{0}}},
    {"json_unclosed_unnamed", J, P, "Hi <tool_call>\n{\"na", "Hi <tool_call>\n{\"na", "", 0, {{0}}},
    {"json_double_open",
     J,
     P,
     "<tool_call><tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
     "<tool_call>",
     "",
     1,
     {{"f", "{}"}}},
    {"json_unicode",
     J,
     P,
     "Voilà 😀\n<tool_call>\n{\"name\": \"say\", \"arguments\": {\"text\": \"héllo 😀 "
     "\\ud83d\\ude00\"}}"
     "\n</tool_call>",
     "Voilà 😀",
     "",
     1,
     {{"say", "{\"text\": \"héllo 😀 \\ud83d\\ude00\"}"}}},
    {"json_in_reasoning",
     J,
     P,
     "<think>\nI'll call it.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 2}}\n"
     "</tool_call>",
     "",
     "I'll call it.",
     1,
     {{"f", "{\"a\": 2}"}}},
    {"json_stray_close", J, P, "Text</tool_call> more", "Text more", "", 0, {{0}}},
    {"tools_none",
     NOTOOLS,
     P,
     "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
     "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
     "",
     0,
     {{0}}},
    {"xml_call",
     X,
     F,
     "The user wants a file.\n</think>\n\nReading it.\n\n<tool_call>\n<function=read_file>\n"
     "<parameter=path>\nsrc/main.c\n</parameter>\n<parameter=line>\n42\n</parameter>\n"
     "<parameter=recursive>\ntrue\n</parameter>\n</function>\n</tool_call>",
     "Reading it.",
     "The user wants a file.",
     1,
     {{"read_file", "{\"path\": \"src/main.c\", \"line\": 42, \"recursive\": true}"}}},
    {"xml_typed",
     X,
     P,
     "<tool_call>\n<function=read_file>\n<parameter=path>\n42\n</parameter>\n"
     "<parameter=opts>\n{\"a\": [1, {\"b\": \"</parameter>\"}]}\n</parameter>\n<parameter=tags>\n"
     "[\"x\", \"y\"]\n</parameter>\n<parameter=ratio>\nnull\n</parameter>\n<parameter=mode>\n"
     "fast\n</parameter>\n<parameter=any>\n7\n</parameter>\n<parameter=ref>\n2.5\n</parameter>\n"
     "<parameter=line>\nnot a number\n</parameter>\n</function>\n</tool_call>",
     "",
     "",
     1,
     {{"read_file", "{\"path\": \"42\", \"opts\": \"{\\\"a\\\": [1, {\\\"b\\\": \\\"\"}"}}},
    {"xml_multiline",
     X,
     P,
     "<tool_call>\n<function=read_file>\n<parameter=code>\nint main() {\n  printf(\"hi\\n\");"
     "\n  return a < b;\n}\n\n</parameter>\n</function>\n</tool_call>",
     "",
     "",
     1,
     {{"read_file", "{\"code\": \"int main() {\\n  printf(\\\"hi\\\\n\\\");\\n  return a < b;\\n}"
                    "\\n\"}"}}},
    {"xml_zero_args",
     X,
     P,
     "<tool_call>\n<function=list>\n</function>\n</tool_call>",
     "",
     "",
     1,
     {{"list", "{}"}}},
    {"xml_untyped",
     X,
     P,
     "<tool_call>\n<function=other>\n<parameter=a>\n5\n</parameter>\n<parameter=b>\n[1]\n"
     "</parameter>\n</function>\n</tool_call>",
     "",
     "",
     1,
     {{"other", "{\"a\": \"5\", \"b\": [1]}"}}},
    {"xml_parallel",
     X,
     P,
     "Two.\n\n<tool_call>\n<function=grep>\n<parameter=pattern>\nfoo\n</parameter>\n</function>"
     "\n</tool_call>\n<tool_call>\n<function=bare_tool>\n<parameter=n>\n3\n</parameter>\n"
     "</function>\n</tool_call>",
     "Two.",
     "",
     2,
     {{"grep", "{\"pattern\": \"foo\"}"}, {"bare_tool", "{\"n\": 3}"}}},
    {"xml_missing_param_close",
     X,
     P,
     "<tool_call>\n<function=grep>\n<parameter=pattern>\nhello\n</function>\n</tool_call>",
     "",
     "",
     1,
     {{"grep", "{\"pattern\": \"hello\"}"}}},
    {"xml_function_in_value",
     X,
     P,
     "<tool_call>\n<function=grep>\n<parameter=pattern>\na</function>b\n</function> x\n"
     "</parameter>\n</function>\n</tool_call>",
     "",
     "",
     1,
     {{"grep", "{\"pattern\": \"a</function>b\\n</function> x\"}"}}},
    {"xml_truncated_value",
     X,
     P,
     "<tool_call>\n<function=grep>\n<parameter=pattern>\nhel",
     "",
     "",
     1,
     {{"grep", "{\"pattern\": \"hel\"}"}}},
    {"xml_truncated_close",
     X,
     P,
     "<tool_call>\n<function=grep>\n<parameter=pattern>\nhello\n</para",
     "",
     "",
     1,
     {{"grep", "{\"pattern\": \"hello\"}"}}},
    {"xml_truncated_pname",
     X,
     P,
     "<tool_call>\n<function=grep>\n<parameter=pattern>\nx\n</parameter>\n<parameter=pa",
     "",
     "",
     1,
     {{"grep", "{\"pattern\": \"x\"}"}}},
    {"xml_truncated_typed",
     X,
     P,
     "<tool_call>\n<function=bare_tool>\n<parameter=n>\n12",
     "",
     "",
     1,
     {{"bare_tool", "{\"n\": 12}"}}},
    {"xml_bad_pname",
     X,
     P,
     "<tool_call>\n<function=grep>\n<parameter=pat\nx</parameter>\n<parameter=pattern>\ny\n"
     "</parameter>\n</function>\n</tool_call>",
     "",
     "",
     1,
     {{"grep", "{\"pattern\": \"y\"}"}}},
    {"xml_bare_function",
     X,
     P,
     "Sure.\n<function=grep>\n<parameter=pattern>\nz\n</parameter>\n</function>\n</tool_call>\n"
     "Done",
     "Sure.\nDone",
     "",
     1,
     {{"grep", "{\"pattern\": \"z\"}"}}},
    {"xml_bad_name",
     X,
     P,
     "<tool_call>\n<function=gr\nep>\n</function>\n</tool_call>",
     "<tool_call>\n<function=gr\nep>\n</function>",
     "",
     0,
     {{0}}},
    {"xml_when_json",
     J,
     P,
     "<tool_call>\n<function=grep>\n<parameter=pattern>\nq\n</parameter>\n</function>\n"
     "</tool_call>",
     "",
     "",
     1,
     {{"grep", "{\"pattern\": \"q\"}"}}},
    {"json_when_xml",
     X,
     F,
     "ok\n</think>\n<tool_call>\n{\"name\": \"grep\", \"arguments\": {\"pattern\": \"q\"}}\n"
     "</tool_call>",
     "",
     "ok",
     1,
     {{"grep", "{\"pattern\": \"q\"}"}}},
    {"xml_unicode",
     X,
     P,
     "<tool_call>\n<function=grep>\n<parameter=pattern>\nnaïve ☃ 😀\n</parameter>\n</function>"
     "\n</tool_call>",
     "",
     "",
     1,
     {{"grep", "{\"pattern\": \"naïve ☃ 😀\"}"}}},
    {"invalid_utf8",
     J,
     P,
     "a\xff"
     "b\xe2\x82"
     "c\xf0\x9f\x98",
     "a\xef\xbf\xbd"
     "b\xef\xbf\xbd"
     "c\xef\xbf\xbd",
     "",
     0,
     {{0}}},
    {"hold_at_end", J, P, "text <tool_", "text <tool_", "", 0, {{0}}},
};

static void expect_valid_utf8(const char *s, size_t n, const char *what) {
    struct buf b;
    buf_init(&b);
    jval_write_string(s, n, &b);
    struct jval *v = NULL;
    int rc = jval_parse(&v, b.data, b.len, NULL);
    EXPECT_MSG(rc == 0, "%s is not valid UTF-8: %.*s", what, (int)n, s);
    jval_free(v);
    buf_free(&b);
}

/* What a client rebuilds from deltas. */
struct rebuilt {
    struct buf content, reasoning;
    struct buf names[8], args[8], ids[8];
    int n_calls;
};

static void rebuilt_free(struct rebuilt *r) {
    buf_free(&r->content);
    buf_free(&r->reasoning);
    for (int i = 0; i < 8; i++) {
        buf_free(&r->names[i]);
        buf_free(&r->args[i]);
        buf_free(&r->ids[i]);
    }
}

static void apply_deltas(struct rebuilt *r, const struct chat_delta *d, int n, const char *fx) {
    for (int i = 0; i < n; i++) {
        expect_valid_utf8(d[i].text, d[i].len, fx);
        switch (d[i].type) {
        case CHAT_DELTA_CONTENT:
            buf_append(&r->content, d[i].text, d[i].len);
            break;
        case CHAT_DELTA_REASONING:
            buf_append(&r->reasoning, d[i].text, d[i].len);
            break;
        case CHAT_DELTA_TOOL_CALL:
            EXPECT_MSG(d[i].tool_index == r->n_calls, "%s: call index %d", fx, d[i].tool_index);
            if (r->n_calls < 8) {
                buf_append(&r->names[r->n_calls], d[i].text, d[i].len);
                buf_append_str(&r->ids[r->n_calls], d[i].id);
                buf_append(&r->args[r->n_calls], "", 0);
                r->n_calls++;
            }
            break;
        case CHAT_DELTA_TOOL_ARGS:
            EXPECT_MSG(d[i].tool_index >= 0 && d[i].tool_index < r->n_calls,
                       "%s: args before their call", fx);
            if (d[i].tool_index >= 0 && d[i].tool_index < r->n_calls)
                buf_append(&r->args[d[i].tool_index], d[i].text, d[i].len);
            break;
        }
    }
}

static const char *bstr(const struct buf *b) {
    return b->data ? b->data : "";
}

static uint64_t rng_next(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* Feeds text in pieces (piece 0: random 1..8 bytes, else that fixed size) and checks. */
static void run_streamed(const struct fixture *fx, const struct chat_message *ref, int piece,
                         uint64_t seed) {
    struct chat_parser_params pp = {fx->fmt, fx->reasoning, TOOLS, sizeof(TOOLS) - 1, 7};
    struct chat_parser *p = NULL;
    ASSERT(chat_parser_create(&p, &pp, NULL) == 0);
    struct rebuilt r;
    memset(&r, 0, sizeof(r));
    size_t len = strlen(fx->text), pos = 0;
    const struct chat_delta *d;
    int n;
    while (pos < len) {
        size_t k = piece ? (size_t)piece : 1 + rng_next(&seed) % 8;
        if (k > len - pos) k = len - pos;
        EXPECT(chat_parser_feed(p, fx->text + pos, k, &d, &n) == 0);
        apply_deltas(&r, d, n, fx->name);
        pos += k;
    }
    EXPECT(chat_parser_finish(p, &d, &n) == 0);
    apply_deltas(&r, d, n, fx->name);
    EXPECT_MSG(strcmp(bstr(&r.content), ref->content) == 0, "%s (piece %d): content '%s' vs '%s'",
               fx->name, piece, bstr(&r.content), ref->content);
    EXPECT_MSG(strcmp(bstr(&r.reasoning), ref->reasoning) == 0, "%s: reasoning '%s' vs '%s'",
               fx->name, bstr(&r.reasoning), ref->reasoning);
    EXPECT_MSG(r.n_calls == ref->n_tool_calls, "%s: %d calls vs %d", fx->name, r.n_calls,
               ref->n_tool_calls);
    for (int i = 0; i < r.n_calls && i < ref->n_tool_calls; i++) {
        EXPECT(strcmp(bstr(&r.names[i]), ref->tool_calls[i].name) == 0);
        EXPECT(strcmp(bstr(&r.ids[i]), ref->tool_calls[i].id) == 0);
        EXPECT_MSG(strcmp(bstr(&r.args[i]), ref->tool_calls[i].arguments) == 0,
                   "%s (piece %d): args '%s' vs '%s'", fx->name, piece, bstr(&r.args[i]),
                   ref->tool_calls[i].arguments);
    }
    /* the parser's own message equals what the deltas built */
    const struct chat_message *m = chat_parser_message(p);
    EXPECT(strcmp(m->content, bstr(&r.content)) == 0);
    EXPECT(m->n_tool_calls == r.n_calls);
    rebuilt_free(&r);
    chat_parser_free(p);
}

TEST(chat_fixtures_oneshot_and_streamed) {
    for (size_t f = 0; f < sizeof(FIXTURES) / sizeof(FIXTURES[0]); f++) {
        const struct fixture *fx = &FIXTURES[f];
        struct chat_parser_params pp = {fx->fmt, fx->reasoning, TOOLS, sizeof(TOOLS) - 1, 7};
        struct chat_message m;
        struct error err = {0};
        if (chat_parse(&pp, fx->text, strlen(fx->text), &m, &err)) {
            test_fail(__FILE__, __LINE__, "%s: %s", fx->name, err.msg);
            continue;
        }
        EXPECT_MSG(strcmp(m.content, fx->content) == 0, "%s: content '%s' want '%s'", fx->name,
                   m.content, fx->content);
        EXPECT_MSG(strcmp(m.reasoning, fx->reasoning_text) == 0, "%s: reasoning '%s' want '%s'",
                   fx->name, m.reasoning, fx->reasoning_text);
        EXPECT_MSG(m.n_tool_calls == fx->n_calls, "%s: %d calls, want %d", fx->name, m.n_tool_calls,
                   fx->n_calls);
        for (int i = 0; i < m.n_tool_calls && i < fx->n_calls; i++) {
            EXPECT_MSG(strcmp(m.tool_calls[i].name, fx->calls[i][0]) == 0, "%s: name '%s'",
                       fx->name, m.tool_calls[i].name);
            if (strcmp(fx->name, "xml_typed") != 0)
                EXPECT_MSG(strcmp(m.tool_calls[i].arguments, fx->calls[i][1]) == 0,
                           "%s: args '%s' want '%s'", fx->name, m.tool_calls[i].arguments,
                           fx->calls[i][1]);
            struct jval *v = NULL;
            EXPECT_MSG(
                jval_parse(&v, m.tool_calls[i].arguments, m.tool_calls[i].arguments_len, NULL) == 0,
                "%s: arguments not JSON: %s", fx->name, m.tool_calls[i].arguments);
            jval_free(v);
            EXPECT(strncmp(m.tool_calls[i].id, "call_", 5) == 0 &&
                   strlen(m.tool_calls[i].id) == 29);
        }
        for (int piece = 0; piece <= 3; piece++)
            run_streamed(fx, &m, piece, 1000 + (uint64_t)f * 31 + (uint64_t)piece);
        for (uint64_t seed = 1; seed <= 6; seed++) run_streamed(fx, &m, 0, seed * 7919 + f);
        chat_message_free(&m);
    }
}

/* xml_typed in detail: each parameter typed by the schema. */
TEST(chat_xml_values_typed_by_schema) {
    const struct fixture *fx = NULL;
    for (size_t f = 0; f < sizeof(FIXTURES) / sizeof(FIXTURES[0]); f++)
        if (strcmp(FIXTURES[f].name, "xml_typed") == 0) fx = &FIXTURES[f];
    ASSERT(fx);
    struct chat_parser_params pp = {X, P, TOOLS, sizeof(TOOLS) - 1, 1};
    struct chat_message m;
    ASSERT(chat_parse(&pp, fx->text, strlen(fx->text), &m, NULL) == 0);
    ASSERT(m.n_tool_calls == 1);
    struct jval *v = NULL;
    ASSERT(jval_parse(&v, m.tool_calls[0].arguments, m.tool_calls[0].arguments_len, NULL) == 0);
    const struct jval *a;
    EXPECT((a = jval_get(v, "path")) && a->type == JVAL_STRING && strcmp(a->str, "42") == 0);
    /* opts: the value contains "</parameter>" inside a JSON string, which ends it early: the
     * text before is not JSON, so it stays a string (the schema said object) */
    EXPECT((a = jval_get(v, "opts")) && a->type == JVAL_STRING);
    EXPECT((a = jval_get(v, "tags")) && a->type == JVAL_ARRAY && a->n == 2);
    EXPECT((a = jval_get(v, "ratio")) && a->type == JVAL_NULL);
    EXPECT((a = jval_get(v, "mode")) && a->type == JVAL_STRING && strcmp(a->str, "fast") == 0);
    EXPECT((a = jval_get(v, "any")) && a->type == JVAL_NUMBER && a->number == 7);
    EXPECT((a = jval_get(v, "ref")) && a->type == JVAL_NUMBER && a->number == 2.5);
    EXPECT((a = jval_get(v, "line")) && a->type == JVAL_STRING &&
           strcmp(a->str, "not a number") == 0);
    jval_free(v);
    chat_message_free(&m);
}

TEST(chat_ids_deterministic_and_distinct) {
    const char *text = "<tool_call>\n{\"name\": \"a\"}\n</tool_call>\n<tool_call>\n{\"name\": "
                       "\"b\"}\n</tool_call>";
    struct chat_parser_params pp = {J, P, NULL, 0, 42};
    struct chat_message m1, m2, m3;
    ASSERT(chat_parse(&pp, text, strlen(text), &m1, NULL) == 0);
    ASSERT(chat_parse(&pp, text, strlen(text), &m2, NULL) == 0);
    pp.id_seed = 43;
    ASSERT(chat_parse(&pp, text, strlen(text), &m3, NULL) == 0);
    ASSERT(m1.n_tool_calls == 2 && m3.n_tool_calls == 2);
    EXPECT(strcmp(m1.tool_calls[0].id, m2.tool_calls[0].id) == 0);
    EXPECT(strcmp(m1.tool_calls[0].id, m1.tool_calls[1].id) != 0);
    EXPECT(strcmp(m1.tool_calls[0].id, m3.tool_calls[0].id) != 0);
    for (const char *c = m1.tool_calls[0].id + 5; *c; c++)
        EXPECT((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9'));
    chat_message_free(&m1);
    chat_message_free(&m2);
    chat_message_free(&m3);
}

/* Streaming deltas: markup is held until decided, the name comes before argument fragments. */
TEST(chat_stream_holds_markup) {
    struct chat_parser_params pp = {J, P, NULL, 0, 1};
    struct chat_parser *p;
    ASSERT(chat_parser_create(&p, &pp, NULL) == 0);
    const struct chat_delta *d;
    int n;
    ASSERT(chat_parser_feed(p, "Hello <tool_", strlen("Hello <tool_"), &d, &n) == 0);
    ASSERT(n == 1);
    EXPECT(d[0].type == CHAT_DELTA_CONTENT && d[0].len == 5 && memcmp(d[0].text, "Hello", 5) == 0);
    ASSERT(chat_parser_feed(p, "call>\n{\"name\": \"f\", \"argu",
                            strlen("call>\n{\"name\": \"f\", \"argu"), &d, &n) == 0);
    ASSERT(n == 1);
    EXPECT(d[0].type == CHAT_DELTA_TOOL_CALL && d[0].tool_index == 0 && d[0].len == 1 &&
           d[0].text[0] == 'f' && d[0].id && strncmp(d[0].id, "call_", 5) == 0);
    ASSERT(chat_parser_feed(p, "ments\": {\"a\": \"x", strlen("ments\": {\"a\": \"x"), &d, &n) ==
           0);
    ASSERT(n == 1);
    EXPECT(d[0].type == CHAT_DELTA_TOOL_ARGS && d[0].len == 8 &&
           memcmp(d[0].text, "{\"a\": \"x", 8) == 0);
    /* after a comma the text is not closable (a key must follow): ", \"b\": tr" is held */
    ASSERT(chat_parser_feed(p, "y\", \"b\": tr", strlen("y\", \"b\": tr"), &d, &n) == 0);
    ASSERT(n == 1);
    EXPECT(d[0].len == 2 && memcmp(d[0].text, "y\"", 2) == 0);
    ASSERT(chat_parser_feed(p, "ue}}\n</tool_call>", strlen("ue}}\n</tool_call>"), &d, &n) == 0);
    ASSERT(n == 1);
    EXPECT(d[0].len == 12 && memcmp(d[0].text, ", \"b\": true}", 12) == 0);
    ASSERT(chat_parser_finish(p, &d, &n) == 0);
    EXPECT(n == 0);
    const struct chat_message *m = chat_parser_message(p);
    EXPECT(m->n_tool_calls == 1 &&
           strcmp(m->tool_calls[0].arguments, "{\"a\": \"xy\", \"b\": true}") == 0);
    EXPECT(strcmp(m->content, "Hello") == 0);
    EXPECT(chat_parser_feed(p, "x", strlen("x"), &d, &n) == ERR_INVALID);
    chat_parser_free(p);
}

TEST(chat_xml_stream_string_fragments) {
    struct chat_parser_params pp = {X, F, TOOLS, sizeof(TOOLS) - 1, 1};
    struct chat_parser *p;
    ASSERT(chat_parser_create(&p, &pp, NULL) == 0);
    const struct chat_delta *d;
    int n;
    const char *a = "ok</think>\n\n<tool_call>\n<function=grep>\n<parameter=pattern>\nline1\n";
    ASSERT(chat_parser_feed(p, a, strlen(a), &d, &n) == 0);
    /* reasoning, the call, and the start of the arguments with the first line (its newline is
     * held: it may be the one before </parameter>) */
    ASSERT(n == 3);
    EXPECT(d[0].type == CHAT_DELTA_REASONING);
    EXPECT(d[1].type == CHAT_DELTA_TOOL_CALL);
    EXPECT(d[2].type == CHAT_DELTA_TOOL_ARGS && d[2].len == 18 &&
           memcmp(d[2].text, "{\"pattern\": \"line1", 18) == 0);
    const char *b = "line2\n</parameter>\n</function>\n</tool_call>";
    ASSERT(chat_parser_feed(p, b, strlen(b), &d, &n) == 0);
    ASSERT(n == 1);
    EXPECT(d[0].len == 9 && memcmp(d[0].text, "\\nline2\"}", 9) == 0);
    chat_parser_free(p);
}

TEST(chat_detect_format_and_reasoning) {
    const char *names[] = {"templates/Qwen-Qwen3-0.6B.jinja", "templates/Qwen3.5-4B.jinja",
                           "templates/Qwen3-Coder.jinja",
                           "templates/Qwen-Qwen2.5-7B-Instruct.jinja",
                           "templates/Qwen-QwQ-32B.jinja"};
    enum chat_tool_format want[] = {J, X, X, J, J};
    int found = 0;
    for (int i = 0; i < 5; i++) {
        const char *path = test_model_path(names[i]);
        if (!path) continue;
        size_t n = 0;
        char *src = test_read_file(path, &n);
        ASSERT(src);
        EXPECT_MSG(chat_tool_format_detect(src, n) == want[i], "%s", names[i]);
        mem_free(src);
        found++;
    }
    EXPECT(chat_tool_format_detect("{{ messages }}", 14) == NOTOOLS);
    const char *forced = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n";
    const char *off = "<|im_start|>assistant\n<think>\n\n</think>\n\n";
    const char *plain = "<|im_start|>assistant\n";
    EXPECT(chat_reasoning_detect(forced, strlen(forced)) == F);
    EXPECT(chat_reasoning_detect(off, strlen(off)) == P);
    EXPECT(chat_reasoning_detect(plain, strlen(plain)) == P);
    const char *quoted =
        "<|im_start|>user\nwhat does <think> do?<|im_end|>\n<|im_start|>assistant\n";
    EXPECT(chat_reasoning_detect(quoted, strlen(quoted)) == P);
    if (!found) SKIP_TEST("../shared/models/templates not found (inline checks ran)");
}

TEST(chat_bad_tools_json_and_oom) {
    struct chat_parser_params pp = {J, P, "[{", 2, 1};
    struct chat_parser *p = NULL;
    struct error err = {0};
    EXPECT(chat_parser_create(&p, &pp, &err) == ERR_INVALID && !p);
    /* every allocation failure gives ERR_NOMEM and no leak */
    const char *text = "<think>r</think>\n<tool_call>\n<function=read_file>\n<parameter=line>"
                       "\n4\n</parameter>\n</function>\n</tool_call><tool_call>\n{\"name\": \"g\", "
                       "\"arguments\": {\"x\": [1]}}";
    struct chat_parser_params ok = {X, P, TOOLS, sizeof(TOOLS) - 1, 1};
    int64_t live = mem_live_bytes();
    int saw_ok = 0;
    for (int64_t k = 0; k < 400 && !saw_ok; k++) {
        struct chat_message m;
        mem_fail_after(k);
        int rc = chat_parse(&ok, text, strlen(text), &m, NULL);
        mem_fail_after(-1);
        EXPECT(rc == 0 || rc == ERR_NOMEM);
        if (rc == 0) {
            saw_ok = 1;
            EXPECT(m.n_tool_calls == 2);
            chat_message_free(&m);
        }
    }
    EXPECT(saw_ok);
    EXPECT_EQ_INT(mem_live_bytes(), live);
}

TEST(chat_jval_roundtrip) {
    const char *ok[] = {"null",
                        " true ",
                        "-0.5e+3",
                        "\"a\\u00e9\\ud83d\\ude00\\n\"",
                        "[1, [2, [3]], {}]",
                        "{\"a\": {\"b\": [null, false]}, \"c\": \"\"}"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct jval *v = NULL, *w = NULL;
        ASSERT_MSG(jval_parse(&v, ok[i], strlen(ok[i]), NULL) == 0, "%s", ok[i]);
        struct buf b;
        buf_init(&b);
        jval_write(v, &b);
        EXPECT(jval_parse(&w, b.data, b.len, NULL) == 0 && jval_equal(v, w));
        jval_free(v);
        jval_free(w);
        buf_free(&b);
    }
    const char *bad[] = {"",         "nul",     "01",          "1.",           "[1,]",  "{\"a\" 1}",
                         "\"\x01\"", "\"\\x\"", "\"\\ud800\"", "\"\xc0\x80\"", "[1] x", "{,}",
                         "\"abc",    "-",       "1e",          "[[[[[[[[[[["};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct jval *v = NULL;
        struct error err = {0};
        EXPECT_MSG(jval_parse(&v, bad[i], strlen(bad[i]), &err) == ERR_FORMAT, "%s", bad[i]);
        EXPECT(v == NULL && strstr(err.msg, "at byte") != NULL);
    }
    char deep[JVAL_MAX_DEPTH + 2];
    memset(deep, '[', sizeof(deep));
    struct jval *v = NULL;
    EXPECT(jval_parse(&v, deep, sizeof(deep), NULL) == ERR_FORMAT);
    struct jval *a = NULL, *b = NULL;
    ASSERT(jval_parse(&a, "{\"x\": 1, \"y\": 2}", 16, NULL) == 0);
    ASSERT(jval_parse(&b, "{\"y\": 2.0, \"x\": 1}", 18, NULL) == 0);
    EXPECT(jval_equal(a, b));
    jval_free(a);
    jval_free(b);
}
