/* fuzz_chat.c: libFuzzer target for the chat output parser, the JSON reader and the JSON-schema
 * compiler (`make fuzz`): everything in text/ that reads bytes a model or a client controls.
 *
 * The first input byte picks the mode, the rest is the payload:
 *   mode 0 (parser): bits of byte 0 pick the tool format and reasoning mode; the payload is
 *     model output, parsed one-shot and again in pieces whose sizes come from the payload's
 *     own bytes. Both must give the same message; every arguments string must be valid JSON;
 *     content and reasoning must be valid UTF-8.
 *   mode 1 (schema): the payload up to a NUL byte is a JSON schema, the rest a candidate
 *     output. The schema goes through json_schema_grammar, chat_grammar_json and (wrapped as a
 *     tool's parameters) chat_grammar_tools in both call formats; when a grammar compiles, the
 *     candidate is fed to a matcher, and a short walk checks that every state it reaches can
 *     either continue or is complete.
 *   mode 2 (jval): parse; if accepted, write it, parse that, and the second writing must equal
 *     the first.
 * Any crash, sanitizer report or abort() here is a bug.
 */
#include "../../src/base/buf.h"
#include "../../src/base/mem.h"
#include "../../src/text/chat.h"
#include "../../src/text/grammar.h"
#include "../../src/text/json_schema.h"
#include "../../src/text/jval.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_json(const char *s, size_t n) {
    struct jval *v = NULL;
    if (jval_parse(&v, s, n, NULL) != 0) abort();
    jval_free(v);
}

static void check_utf8(const char *s, size_t n) {
    struct buf b;
    buf_init(&b);
    jval_write_string(s, n, &b);
    check_json(b.data, b.len);
    buf_free(&b);
}

static const char TOOLS[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": "
    "\"object\", \"properties\": {\"s\": {\"type\": \"string\"}, \"n\": {\"type\": \"integer\"}, "
    "\"o\": {\"type\": \"object\"}, \"a\": {\"anyOf\": [{\"type\": \"number\"}, {\"type\": "
    "\"string\"}]}}}}}]";

static void fuzz_parser(uint8_t mode, const char *text, size_t n) {
    struct chat_parser_params pp = {(enum chat_tool_format)(mode % 3),
                                    (enum chat_reasoning)((mode / 3) % 3), TOOLS, sizeof(TOOLS) - 1,
                                    1};
    struct chat_message m;
    if (chat_parse(&pp, text, n, &m, NULL) != 0) abort();
    check_utf8(m.content, m.content_len);
    check_utf8(m.reasoning, m.reasoning_len);
    for (int i = 0; i < m.n_tool_calls; i++) {
        check_json(m.tool_calls[i].arguments, m.tool_calls[i].arguments_len);
        check_utf8(m.tool_calls[i].name, strlen(m.tool_calls[i].name));
    }
    struct chat_parser *p = NULL;
    if (chat_parser_create(&p, &pp, NULL) != 0) abort();
    const struct chat_delta *d;
    int nd;
    for (size_t pos = 0; pos < n;) {
        size_t k = 1 + (unsigned char)text[pos] % 7;
        if (k > n - pos) k = n - pos;
        if (chat_parser_feed(p, text + pos, k, &d, &nd) != 0) abort();
        for (int i = 0; i < nd; i++) check_utf8(d[i].text, d[i].len);
        pos += k;
    }
    if (chat_parser_finish(p, &d, &nd) != 0) abort();
    const struct chat_message *s = chat_parser_message(p);
    if (s->content_len != m.content_len || memcmp(s->content, m.content, m.content_len) ||
        s->reasoning_len != m.reasoning_len || memcmp(s->reasoning, m.reasoning, m.reasoning_len) ||
        s->n_tool_calls != m.n_tool_calls)
        abort();
    for (int i = 0; i < m.n_tool_calls; i++)
        if (strcmp(s->tool_calls[i].name, m.tool_calls[i].name) ||
            strcmp(s->tool_calls[i].arguments, m.tool_calls[i].arguments))
            abort();
    chat_parser_free(p);
    chat_message_free(&m);
}

static void exercise(const struct grammar *g, const char *cand, size_t n) {
    struct grammar_matcher *m = NULL;
    if (grammar_matcher_create(&m, g, NULL) != 0) return;
    (void)grammar_matcher_feed(m, cand, n);
    grammar_matcher_reset(m);
    /* walk: take the smallest allowed byte, 64 steps */
    int32_t s = grammar_matcher_state(m);
    for (int step = 0; step < 64 && s >= 0; step++) {
        int32_t next = GRAMMAR_DEAD;
        for (int b = 0; b < 256 && next < 0; b++) next = grammar_matcher_next(m, s, (uint8_t)b);
        if (next < 0 && !grammar_matcher_accepts(m, s) && !grammar_matcher_failed(m)) abort();
        s = next;
    }
    grammar_matcher_trim(m, 0);
    grammar_matcher_free(m);
}

static void fuzz_schema(const char *in, size_t n) {
    const char *nul = memchr(in, 0, n);
    size_t sn = nul ? (size_t)(nul - in) : n;
    const char *cand = nul ? nul + 1 : "";
    size_t cn = nul ? n - sn - 1 : 0;
    struct grammar *g = NULL;
    if (json_schema_grammar(&g, in, sn, NULL) == 0) {
        exercise(g, cand, cn);
        grammar_free(g);
    }
    if (chat_grammar_json(&g, CHAT_REASONING_PARSE, in, sn, NULL) == 0) {
        exercise(g, cand, cn);
        grammar_free(g);
    }
    struct buf tools;
    buf_init(&tools);
    buf_append_str(&tools, "[{\"function\": {\"name\": \"t\", \"parameters\": ");
    buf_append(&tools, in, sn);
    buf_append_str(&tools, "}}]");
    for (int fmt = 1; fmt <= 2 && !tools.failed; fmt++) {
        struct chat_grammar_params p = {
            (enum chat_tool_format)fmt, CHAT_REASONING_NONE, tools.data, tools.len, NULL, 1};
        if (chat_grammar_tools(&g, &p, NULL) == 0) {
            exercise(g, cand, cn);
            grammar_free(g);
        }
    }
    buf_free(&tools);
}

static void fuzz_jval(const char *in, size_t n) {
    struct jval *v = NULL, *w = NULL;
    if (jval_parse(&v, in, n, NULL) != 0) return;
    struct buf b, c;
    buf_init(&b);
    buf_init(&c);
    jval_write(v, &b);
    if (b.failed || jval_parse(&w, b.data, b.len, NULL) != 0) abort();
    jval_write(w, &c);
    if (c.failed || c.len != b.len || memcmp(c.data, b.data, b.len) != 0) abort();
    if (!jval_equal(v, v)) abort();
    buf_free(&b);
    buf_free(&c);
    jval_free(v);
    jval_free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 3) {
    case 0:
        fuzz_parser(data[0] / 3, in, n);
        break;
    case 1:
        fuzz_schema(in, n);
        break;
    default:
        fuzz_jval(in, n);
        break;
    }
    return 0;
}
