/* test_grammar.c: byte grammars, the JSON-schema compiler, tool-call grammars and token masks.
 *
 * Schemas are checked with strings the automaton must accept and strings it must reject; random
 * walks through grammars produce sentences that must parse back (chat parser, jval) and validate
 * against the schema (a small validator below, independent of the compiler); token masks are
 * compared with a brute-force check of every token; and greedy decoding of real models
 * (stories260K, the synthetic qwen3) under a grammar must produce valid JSON.
 */
#include "test.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/engine/constraint.h"
#include "../src/engine/engine.h"
#include "../src/text/chat.h"
#include "../src/text/grammar.h"
#include "../src/text/json_schema.h"
#include "../src/text/jval.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- helpers ---- */

static struct grammar *schema_grammar(const char *schema) {
    struct grammar *g = NULL;
    struct error err = {0};
    if (json_schema_grammar(&g, schema, strlen(schema), &err))
        test_fail(__FILE__, __LINE__, "schema %s: %s", schema, err.msg);
    return g;
}

static int accepts_n(const struct grammar *g, const char *text, size_t n) {
    struct grammar_matcher *m = NULL;
    if (grammar_matcher_create(&m, g, NULL)) return -1;
    int ok = grammar_matcher_feed(m, text, n) == 0 && grammar_matcher_is_complete(m);
    grammar_matcher_free(m);
    return ok;
}

static int accepts(const struct grammar *g, const char *text) {
    return accepts_n(g, text, strlen(text));
}

static uint64_t rng(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static size_t utf8_chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* A small JSON Schema validator for the keywords the compiler supports (test oracle). */
static int validate(const struct jval *root, const struct jval *s, const struct jval *v, int d) {
    if (d > 64) return 0;
    if (s->type == JVAL_BOOL) return s->boolean;
    if (s->type != JVAL_OBJECT) return 0;
    const char *ref = jval_get_str(s, "$ref");
    if (ref) {
        const struct jval *t = json_schema_resolve(root, s);
        return t && validate(root, t, v, d + 1);
    }
    const struct jval *k;
    if ((k = jval_get(s, "anyOf")) || (k = jval_get(s, "oneOf"))) {
        for (size_t i = 0; i < k->n; i++)
            if (validate(root, &k->items[i], v, d + 1)) return 1;
        return 0;
    }
    if ((k = jval_get(s, "allOf")))
        for (size_t i = 0; i < k->n; i++)
            if (!validate(root, &k->items[i], v, d + 1)) return 0;
    if ((k = jval_get(s, "enum"))) {
        for (size_t i = 0; i < k->n; i++)
            if (jval_equal(&k->items[i], v)) return 1;
        return 0;
    }
    if ((k = jval_get(s, "const"))) return jval_equal(k, v);
    if ((k = jval_get(s, "type"))) {
        int ok = 0;
        size_t n = k->type == JVAL_ARRAY ? k->n : 1;
        for (size_t i = 0; i < n && !ok; i++) {
            const char *t = k->type == JVAL_ARRAY ? k->items[i].str : k->str;
            ok = (!strcmp(t, "null") && v->type == JVAL_NULL) ||
                 (!strcmp(t, "boolean") && v->type == JVAL_BOOL) ||
                 (!strcmp(t, "number") && v->type == JVAL_NUMBER) ||
                 (!strcmp(t, "integer") && v->type == JVAL_NUMBER &&
                  v->number == floor(v->number)) ||
                 (!strcmp(t, "string") && v->type == JVAL_STRING) ||
                 (!strcmp(t, "array") && v->type == JVAL_ARRAY) ||
                 (!strcmp(t, "object") && v->type == JVAL_OBJECT);
        }
        const struct jval *nl = jval_get(s, "nullable");
        if (!ok && !(nl && nl->boolean && v->type == JVAL_NULL)) return 0;
    }
    if (v->type == JVAL_OBJECT) {
        const struct jval *props = jval_get(s, "properties");
        const struct jval *ap = jval_get(s, "additionalProperties");
        for (size_t i = 0; i < v->n; i++) {
            const struct jval *ps = jval_get(props, v->keys[i]);
            if (ps) {
                if (!validate(root, ps, &v->items[i], d + 1)) return 0;
            } else if (ap && !validate(root, ap, &v->items[i], d + 1)) {
                return 0;
            }
        }
        const struct jval *req = jval_get(s, "required");
        for (size_t i = 0; req && i < req->n; i++)
            if (!jval_get(v, req->items[i].str)) return 0;
    }
    if (v->type == JVAL_ARRAY) {
        const struct jval *pre = jval_get(s, "prefixItems"), *items = jval_get(s, "items");
        for (size_t i = 0; i < v->n; i++) {
            const struct jval *es = pre && i < pre->n ? &pre->items[i] : items;
            if (es && !validate(root, es, &v->items[i], d + 1)) return 0;
        }
        const struct jval *mn = jval_get(s, "minItems"), *mx = jval_get(s, "maxItems");
        if (mn && (double)v->n < mn->number) return 0;
        if (mx && (double)v->n > mx->number) return 0;
    }
    if (v->type == JVAL_STRING) {
        const struct jval *mn = jval_get(s, "minLength"), *mx = jval_get(s, "maxLength");
        size_t n = utf8_chars(v->str, v->len);
        if (mn && (double)n < mn->number) return 0;
        if (mx && (double)n > mx->number) return 0;
    }
    if (v->type == JVAL_NUMBER) {
        const struct jval *mn = jval_get(s, "minimum");
        if (mn && v->number < mn->number) return 0;
    }
    return 1;
}

static int validate_text(const char *schema, const char *text, size_t n) {
    struct jval *s = NULL, *v = NULL;
    int ok = jval_parse(&s, schema, strlen(schema), NULL) == 0 &&
             jval_parse(&v, text, n, NULL) == 0 && validate(s, s, v, 0);
    jval_free(s);
    jval_free(v);
    return ok;
}

/* A random sentence of g: bytes are drawn among the allowed ones, preferring to finish the
 * closing tags and literals already begun, and to stop once complete. 0 if it got too long. */
static int random_sentence(const struct grammar *g, uint64_t *seed, struct buf *out, size_t max) {
    static const char *const closers[] = {"</parameter>", "</function>", "</tool_call>", "</think>",
                                          "true",         "false",       "null"};
    struct grammar_matcher *m = NULL;
    if (grammar_matcher_create(&m, g, NULL)) return 0;
    buf_clear(out);
    int32_t s = grammar_matcher_state(m);
    int ok = 0;
    while (out->len < max) {
        int complete = grammar_matcher_accepts(m, s);
        uint8_t allowed[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
            if (grammar_matcher_next(m, s, (uint8_t)b) >= 0) allowed[n++] = (uint8_t)b;
        if (n == 0 || (complete && (rng(seed) % 3 == 0 || out->len > max / 2))) {
            ok = complete;
            break;
        }
        int pick = -1, cands[16], n_cands = 0;
        for (size_t c = 0; c < sizeof(closers) / sizeof(closers[0]); c++) {
            size_t cl = strlen(closers[c]);
            for (size_t k = cl - 1; k >= 1; k--)
                if (out->len >= k && memcmp(out->data + out->len - k, closers[c], k) == 0) {
                    for (int i = 0; i < n; i++)
                        if (allowed[i] == (uint8_t)closers[c][k] && n_cands < 16)
                            cands[n_cands++] = allowed[i];
                    break;
                }
        }
        if (n_cands) pick = cands[rng(seed) % (uint64_t)n_cands];
        if (pick < 0 || rng(seed) % 10 == 0) {
            /* prefer printable ASCII, and structure now and then */
            static const char pref[] = "\"}]>\n<";
            if (rng(seed) % 3 == 0)
                for (const char *p = pref; *p && pick < 0; p++)
                    for (int i = 0; i < n; i++)
                        if (allowed[i] == (uint8_t)*p) pick = allowed[i];
            for (int tries = 0; tries < 8 && pick < 0; tries++) {
                int b = allowed[rng(seed) % (uint64_t)n];
                if ((b >= 0x20 && b < 0x7f) || tries == 7) pick = b;
            }
        }
        char c = (char)pick;
        buf_append(out, &c, 1);
        s = grammar_matcher_next(m, s, (uint8_t)pick);
    }
    grammar_matcher_free(m);
    return ok;
}

/* ---- grammar core ---- */

TEST(grammar_builder_and_matcher) {
    struct grammar *g = NULL;
    ASSERT(grammar_create(&g, NULL) == 0);
    int32_t digit = grammar_rule_add(g, "digit");
    grammar_alt_begin(g, digit);
    grammar_alt_range(g, '0', '9');
    grammar_alt_end(g);
    int32_t digits = grammar_rule_repeat(g, digit, 1, 3);
    int32_t as = grammar_rule_add(g, "as");
    grammar_alt_begin(g, as);
    grammar_alt_end(g);
    grammar_alt_begin(g, as);
    grammar_alt_str(g, "a");
    grammar_alt_ref(g, as); /* right recursion: the stack stays flat */
    grammar_alt_end(g);
    int32_t root = grammar_rule_add(g, "root");
    grammar_alt_begin(g, root);
    grammar_alt_str(g, "x=");
    grammar_alt_ref(g, digits);
    grammar_alt_end(g);
    grammar_alt_begin(g, root);
    grammar_alt_str(g, "b");
    grammar_alt_ref(g, as);
    grammar_alt_str(g, "c");
    grammar_alt_end(g);
    ASSERT(grammar_finish(g, root, NULL) == 0);
    EXPECT(accepts(g, "x=1") == 1);
    EXPECT(accepts(g, "x=123") == 1);
    EXPECT(accepts(g, "x=1234") == 0);
    EXPECT(accepts(g, "x=") == 0);
    EXPECT(accepts(g, "bc") == 1);
    EXPECT(accepts(g, "baaaaaaaaaaaaaac") == 1);
    EXPECT(accepts(g, "bac ") == 0);
    /* "ba...a" keeps one state: the automaton does not grow with the length */
    struct grammar_matcher *m = NULL;
    ASSERT(grammar_matcher_create(&m, g, NULL) == 0);
    ASSERT(grammar_matcher_feed(m, "baaa", 4) == 0);
    int32_t n_states = grammar_matcher_n_states(m);
    for (int i = 0; i < 1000; i++) ASSERT(grammar_matcher_feed(m, "a", 1) == 0);
    EXPECT_EQ_INT(grammar_matcher_n_states(m), n_states);
    EXPECT(grammar_matcher_feed(m, "x", 1) == ERR_INVALID); /* state unchanged */
    EXPECT(!grammar_matcher_is_complete(m) && grammar_matcher_can_continue(m));
    EXPECT(grammar_matcher_feed(m, "c", 1) == 0 && grammar_matcher_is_complete(m));
    EXPECT(!grammar_matcher_can_continue(m));
    /* trim: the current state survives under a new id */
    grammar_matcher_reset(m);
    ASSERT(grammar_matcher_feed(m, "ba", 2) == 0);
    EXPECT(grammar_matcher_trim(m, 0) == 1);
    EXPECT(grammar_matcher_feed(m, "aac", 3) == 0 && grammar_matcher_is_complete(m));
    grammar_matcher_reset(m);
    EXPECT(grammar_matcher_feed(m, "x=42", 4) == 0 && grammar_matcher_is_complete(m));
    grammar_matcher_free(m);
    struct buf b;
    buf_init(&b);
    grammar_print(g, &b);
    EXPECT(b.data && strstr(b.data, "root") && strstr(b.data, "[0-9]"));
    buf_free(&b);
    grammar_free(g);
}

TEST(grammar_rejects_bad_grammars) {
    struct grammar *g = NULL;
    struct error err = {0};
    ASSERT(grammar_create(&g, NULL) == 0);
    int32_t a = grammar_rule_add(g, "a"), b = grammar_rule_add(g, "b");
    grammar_alt_begin(g, a);
    grammar_alt_ref(g, b);
    grammar_alt_str(g, "x");
    grammar_alt_end(g);
    grammar_alt_begin(g, b);
    grammar_alt_end(g);
    grammar_alt_begin(g, b);
    grammar_alt_ref(g, a); /* b -> a -> b without consuming */
    grammar_alt_end(g);
    EXPECT(grammar_finish(g, a, &err) == ERR_INVALID && strstr(err.msg, "left-recursive"));
    grammar_free(g);
    ASSERT(grammar_create(&g, NULL) == 0);
    a = grammar_rule_add(g, "a");
    grammar_rule_add(g, "empty");
    grammar_alt_begin(g, a);
    grammar_alt_str(g, "x");
    grammar_alt_end(g);
    EXPECT(grammar_finish(g, a, &err) == ERR_INVALID && strstr(err.msg, "no alternatives"));
    grammar_free(g);
}

TEST(grammar_until_patterns) {
    struct grammar *g = NULL;
    ASSERT(grammar_create(&g, NULL) == 0);
    const char *ends[] = {"</p>"}, *bans[] = {"</f>"};
    int32_t u = grammar_rule_until(g, ends, 1, bans, 1);
    int32_t root = grammar_rule_add(g, "root");
    grammar_alt_begin(g, root);
    grammar_alt_ref(g, u);
    grammar_alt_str(g, "!");
    grammar_alt_end(g);
    ASSERT(grammar_finish(g, root, NULL) == 0);
    EXPECT(accepts(g, "</p>!"));
    EXPECT(accepts(g, "abc</p>!"));
    EXPECT(accepts(g, "a</</p</p>!"));
    EXPECT(accepts(g, "<</f<f>\n</p>!"));
    EXPECT(!accepts(g, "abc</p>x</p>!")); /* ends at the first </p> */
    EXPECT(!accepts(g, "a</f>b</p>!"));   /* banned */
    EXPECT(!accepts(g, "abc!"));
    grammar_free(g);
    /* overlapping pattern: the first occurrence ends it */
    ASSERT(grammar_create(&g, NULL) == 0);
    const char *e2[] = {"abab"};
    u = grammar_rule_until(g, e2, 1, NULL, 0);
    ASSERT(grammar_finish(g, u, NULL) == 0);
    EXPECT(accepts(g, "abab"));
    EXPECT(accepts(g, "aabab"));
    EXPECT(!accepts(g, "ababab"));
    grammar_free(g);
}

/* ---- JSON schema ---- */

struct schema_case {
    const char *schema;
    const char *valid[8];
    const char *invalid[8];
};

static const struct schema_case SCHEMAS[] = {
    {"{\"type\": \"string\"}",
     {"\"\"", "\"abc\"", "\"a\\\"b\\\\\"", "\"\\u00e9\\n\"", "\"héllo 😀\"", "\"</tool_call>\""},
     {"abc", "\"a", "\"\\x\"", "\"a\nb\"", "1", "\"\xff\"", "\"\xed\xa0\x80\"", "\"a\" "}},
    {"{\"type\": \"integer\"}",
     {"0", "-12", "1234567890123456", "7"},
     {"01", "1.5", "-", "12345678901234567", "+1", "1e3", " 1"}},
    {"{\"type\": \"number\"}",
     {"0", "-0.5", "1e10", "2.5E-3", "3.1415926535897932"},
     {".5", "1.", "1e", "NaN", "--1", "1e1234"}},
    {"{\"type\": \"boolean\"}", {"true", "false"}, {"True", "1", "tru", "null"}},
    {"{\"type\": \"null\"}", {"null"}, {"nul", "\"null\""}},
    {"{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}, \"b\": {\"type\": "
     "\"string\"}, \"c\": {\"type\": \"boolean\"}}, \"required\": [\"b\"]}",
     {"{\"b\": \"x\"}", "{\"a\": 1, \"b\": \"x\"}", "{\"a\":1,\"b\":\"x\",\"c\":true}",
      "{ \"b\" : \"x\" }", "{\n  \"a\": 1,\n  \"b\": \"\"\n}", "{\"b\": \"x\", \"c\": false}"},
     /* out of schema order is refused too: the grammar emits properties in order */
     {"{}", "{\"a\": 1}", "{\"b\": \"x\", \"a\": 1}", "{\"b\": \"x\", \"d\": 1}", "{\"b\": 1}",
      "{\"b\": \"x\",}", "{\"b\": \"x\"  }"}},
    {"{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}, "
     "\"additionalProperties\": true}",
     {"{\"a\": 1, \"zz\": [1, {}]}", "{\"q\": null}", "{}"},
     {"{\"a\": \"s\"}", "{\"zz\": 1, \"a\": 1}"}},
    {"{\"properties\": {\"ab\": {\"type\": \"integer\"}, \"é\": {}}, \"additionalProperties\": "
     "{\"type\": \"string\"}}",
     {"{\"ab\": 1, \"a\": \"x\", \"abc\": \"y\", \"b\": \"\"}", "{\"\": \"\"}", "{\"aé\": \"\"}"},
     {"{\"ab\": 1, \"ab\": \"x\"}", "{\"ab\": \"x\"}"}},
    {"{\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}}",
     {"{}", "{\"x\": 1, \"y\": -2}"},
     {"{\"x\": \"s\"}", "[]"}},
    {"{\"type\": \"object\"}",
     {"{}", "{\"a\": [1, {\"b\": null}], \"c\": \"d\"}"},
     {"[]", "{\"a\"}", "{a: 1}"}},
    {"{\"type\": \"array\", \"items\": {\"type\": \"integer\"}, \"minItems\": 1, \"maxItems\": 3}",
     {"[1]", "[1, 2, 3]", "[ 1 ,2 ]"},
     {"[]", "[1,2,3,4]", "[\"a\"]", "[1,]"}},
    {"{\"type\": \"array\", \"prefixItems\": [{\"type\": \"string\"}, {\"type\": \"integer\"}], "
     "\"items\": false}",
     {"[]", "[\"a\"]", "[\"a\", 1]"},
     {"[\"a\", 1, 2]", "[1]"}},
    {"{\"type\": \"array\", \"minItems\": 2}", {"[1, \"a\"]", "[null, [], {}]"}, {"[]", "[1]"}},
    {"{\"enum\": [\"red\", \"green\", 1, null, {\"a\": [1]}]}",
     {"\"red\"", "\"green\"", "1", "null", "{\"a\": [1]}"},
     {"\"blue\"", "{\"a\":[1]}", "2"}},
    {"{\"const\": \"x\"}", {"\"x\""}, {"\"y\"", "x"}},
    {"{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"string\", \"maxLength\": 2}]}",
     {"5", "\"ab\"", "\"\""},
     {"\"abc\"", "true"}},
    {"{\"oneOf\": [{\"type\": \"boolean\"}, {\"type\": \"null\"}]}", {"true", "null"}, {"1"}},
    {"{\"type\": [\"string\", \"null\"]}", {"\"s\"", "null"}, {"1"}},
    {"{\"type\": \"string\", \"minLength\": 2, \"maxLength\": 3}",
     {"\"ab\"", "\"abc\"", "\"é😀\"", "\"\\n\\t\""},
     {"\"a\"", "\"abcd\"", "\"\""}},
    {"{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": "
     "\"integer\"}, \"next\": {\"anyOf\": [{\"$ref\": \"#/$defs/node\"}, {\"type\": "
     "\"null\"}]}}, \"required\": [\"v\", \"next\"]}}, \"$ref\": \"#/$defs/node\"}",
     {"{\"v\": 1, \"next\": {\"v\": 2, \"next\": {\"v\": 3, \"next\": null}}}",
      "{\"v\": 1, \"next\": null}"},
     {"{\"v\": 1}", "{\"v\": 1, \"next\": {\"v\": 2}}"}},
    {"{\"allOf\": [{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"integer\"}}, "
     "\"required\": [\"a\"]}, {\"properties\": {\"b\": {\"type\": \"string\"}}, \"required\": "
     "[\"b\"]}]}",
     {"{\"a\": 1, \"b\": \"x\"}"},
     {"{\"a\": 1}", "{\"b\": \"x\"}"}},
    {"{\"type\": \"integer\", \"minimum\": 0}", {"5", "0"}, {"-5"}},
    {"{\"type\": \"number\", \"exclusiveMinimum\": 0}", {"5.5"}, {"-0.1"}},
    {"true", {"[1, {\"a\": null}]", "\"s\"", "-1.5e3", "{}"}, {"", "[1", "nul"}},
    {"{}", {"[]", "false"}, {"x"}},
    {"{\"type\": \"string\", \"nullable\": true}", {"null", "\"x\""}, {"1"}},
    {"{\"type\": \"object\", \"properties\": {\"items\": {\"type\": \"array\", \"items\": "
     "{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"integer\"}, \"tags\": "
     "{\"type\": \"array\", \"items\": {\"type\": \"string\"}}}, \"required\": [\"id\"]}}}, "
     "\"required\": [\"items\"]}",
     {"{\"items\": []}", "{\"items\": [{\"id\": 1}, {\"id\": 2, \"tags\": [\"a\", \"b\"]}]}"},
     {"{\"items\": [{\"tags\": []}]}", "{}"}},
    {"{\"type\": \"object\", \"required\": [\"x\"]}",
     {"{\"x\": 1}", "{\"x\": [], \"y\": 2}"},
     {"{}", "{\"y\": 2}"}},
    {"{\"type\": \"string\", \"pattern\": \"^a\", \"format\": \"date\"}", {"\"b\""}, {"1"}},
    {"{\"properties\": {\"a\": false, \"b\": {\"type\": \"integer\"}}}",
     {"{}", "{\"b\": 1}"},
     {"{\"a\": 1}"}},
    {"{\"items\": {\"enum\": [\"x\", \"y\"]}, \"maxItems\": 2}",
     {"[]", "[\"x\", \"y\"]"},
     {"[\"z\"]", "[\"x\", \"x\", \"x\"]"}},
};

TEST(grammar_json_schema_accepts_and_rejects) {
    for (size_t i = 0; i < sizeof(SCHEMAS) / sizeof(SCHEMAS[0]); i++) {
        const struct schema_case *c = &SCHEMAS[i];
        struct grammar *g = schema_grammar(c->schema);
        if (!g) continue;
        for (int k = 0; k < 8 && c->valid[k]; k++) {
            EXPECT_MSG(accepts(g, c->valid[k]) == 1, "schema %zu should accept %s", i, c->valid[k]);
            EXPECT_MSG(validate_text(c->schema, c->valid[k], strlen(c->valid[k])),
                       "oracle disagrees: schema %zu value %s", i, c->valid[k]);
        }
        for (int k = 0; k < 8 && c->invalid[k]; k++)
            EXPECT_MSG(accepts(g, c->invalid[k]) == 0, "schema %zu should reject %s", i,
                       c->invalid[k]);
        grammar_free(g);
    }
}

/* Random sentences of every schema's grammar are JSON that validates. */
TEST(grammar_json_schema_random_sentences_validate) {
    struct buf out;
    buf_init(&out);
    int done = 0, total = 0;
    for (size_t i = 0; i < sizeof(SCHEMAS) / sizeof(SCHEMAS[0]); i++) {
        struct grammar *g = schema_grammar(SCHEMAS[i].schema);
        if (!g) continue;
        for (uint64_t seed = 1; seed <= 12; seed++) {
            uint64_t s = seed * 1315423911u + i;
            total++;
            if (!random_sentence(g, &s, &out, 600)) continue;
            done++;
            EXPECT_MSG(validate_text(SCHEMAS[i].schema, out.data, out.len),
                       "schema %zu produced an invalid value: %.*s", i, (int)out.len, out.data);
        }
        grammar_free(g);
    }
    EXPECT_MSG(done * 10 >= total * 8, "only %d of %d walks finished", done, total);
    buf_free(&out);
}

TEST(grammar_json_schema_errors) {
    static const struct {
        const char *schema;
        int code;
    } bad[] = {
        {"{\"type\": \"foo\"}", ERR_INVALID},
        {"{\"type\": 3}", ERR_INVALID},
        {"{\"$ref\": \"#/nope\"}", ERR_INVALID},
        {"{\"$ref\": \"http://example.com/s.json\"}", ERR_UNSUPPORTED},
        {"{\"$ref\": \"#\"}", ERR_INVALID},
        {"{\"anyOf\": [{\"$ref\": \"#\"}, {\"type\": \"null\"}]}", ERR_INVALID},
        {"[1]", ERR_INVALID},
        {"{\"type\": \"array\", \"minItems\": -1}", ERR_INVALID},
        {"{\"type\": \"array\", \"minItems\": 100000}", ERR_UNSUPPORTED},
        {"{\"type\": \"string\", \"minLength\": 1.5}", ERR_INVALID},
        {"{\"enum\": []}", ERR_INVALID},
        {"false", ERR_INVALID},
        {"{\"type\": \"object\", \"properties\": {\"a\": false}, \"required\": [\"a\"]}",
         ERR_INVALID},
        {"{\"type\": \"array\", \"minItems\": 3, \"maxItems\": 2}", ERR_INVALID},
        {"{", ERR_INVALID},
        {"{\"anyOf\": 1}", ERR_INVALID},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct grammar *g = NULL;
        struct error err = {0};
        int rc = json_schema_grammar(&g, bad[i].schema, strlen(bad[i].schema), &err);
        EXPECT_MSG(rc == bad[i].code, "%s: got %d (%s)", bad[i].schema, rc, err.msg);
        EXPECT(g == NULL && err.msg[0]);
    }
    /* the message says where */
    struct grammar *g = NULL;
    struct error err = {0};
    const char *s = "{\"properties\": {\"x\": {\"items\": {\"type\": \"nope\"}}}}";
    EXPECT(json_schema_grammar(&g, s, strlen(s), &err) == ERR_INVALID);
    EXPECT_MSG(strstr(err.msg, "#/x/items") != NULL, "%s", err.msg);
    /* big bounds above the cap are ignored (maxItems) */
    s = "{\"type\": \"array\", \"maxItems\": 100000}";
    g = schema_grammar(s);
    EXPECT(g && accepts(g, "[1, 2, 3]"));
    grammar_free(g);
}

TEST(grammar_json_schema_types_query) {
    const char *s =
        "{\"$defs\": {\"n\": {\"type\": \"number\"}}, \"properties\": {\"a\": {\"$ref\": "
        "\"#/$defs/n\"}, \"b\": {\"enum\": [\"x\", 1]}, \"c\": {\"anyOf\": [{\"type\": "
        "\"null\"}, {\"items\": {}}]}, \"d\": {}}}";
    struct jval *root = NULL;
    ASSERT(jval_parse(&root, s, strlen(s), NULL) == 0);
    EXPECT(json_schema_types(root, json_schema_property(root, root, "a")) == JSON_SCHEMA_T_NUMBER);
    EXPECT(json_schema_types(root, json_schema_property(root, root, "b")) ==
           (JSON_SCHEMA_T_STRING | JSON_SCHEMA_T_INTEGER | JSON_SCHEMA_T_NUMBER));
    EXPECT(json_schema_types(root, json_schema_property(root, root, "c")) ==
           (JSON_SCHEMA_T_NULL | JSON_SCHEMA_T_ARRAY));
    EXPECT(json_schema_types(root, json_schema_property(root, root, "d")) == JSON_SCHEMA_T_ANY);
    EXPECT(json_schema_property(root, root, "zz") == NULL);
    EXPECT(json_schema_types(root, root) == JSON_SCHEMA_T_OBJECT);
    jval_free(root);
}

/* ---- chat grammars ---- */

static const char TOOLS[] =
    "[{\"type\": \"function\", \"function\": {\"name\": \"read_file\", \"parameters\": {\"type\": "
    "\"object\", \"properties\": {\"path\": {\"type\": \"string\"}, \"line\": {\"type\": "
    "\"integer\", \"minimum\": 0}, \"mode\": {\"enum\": [\"fast\", \"slow\"]}, \"opts\": "
    "{\"type\": "
    "\"object\", \"properties\": {\"deep\": {\"type\": \"boolean\"}}, \"required\": [\"deep\"]}, "
    "\"tags\": {\"type\": \"array\", \"items\": {\"type\": \"string\", \"maxLength\": 4}, "
    "\"maxItems\": 2}, \"n\": {\"type\": [\"number\", \"string\"]}}, \"required\": [\"path\", "
    "\"line\"]}}}, {\"type\": \"function\", \"function\": {\"name\": \"list\"}}, {\"type\": "
    "\"function\", \"function\": {\"name\": \"grep\", \"parameters\": {\"type\": \"object\", "
    "\"properties\": {\"pattern\": {\"type\": \"string\"}}, \"required\": [\"pattern\"]}}}]";

static struct grammar *tools_grammar(enum chat_tool_format fmt, enum chat_reasoning r,
                                     const char *only, int parallel) {
    struct chat_grammar_params p = {fmt, r, TOOLS, sizeof(TOOLS) - 1, only, parallel};
    struct grammar *g = NULL;
    struct error err = {0};
    if (chat_grammar_tools(&g, &p, &err)) test_fail(__FILE__, __LINE__, "%s", err.msg);
    return g;
}

TEST(grammar_tool_calls_json_format) {
    struct grammar *g = tools_grammar(CHAT_TOOL_FORMAT_JSON, CHAT_REASONING_PARSE, NULL, 1);
    ASSERT(g);
    const char *one = "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.c\", "
                      "\"line\": 3}}\n</tool_call>";
    EXPECT(accepts(g, one));
    char buf[1024];
    snprintf(buf, sizeof(buf), "<think>\nhm </tool_call>\n</think>\n\n%s\n%s", one,
             "<tool_call>\n{\"name\": \"list\", \"arguments\": {}}\n</tool_call>");
    EXPECT(accepts(g, buf));
    EXPECT(!accepts(g, "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": "
                       "\"a.c\"}}\n</tool_call>")); /* line is required */
    EXPECT(!accepts(g, "<tool_call>\n{\"name\": \"nope\", \"arguments\": {}}\n</tool_call>"));
    EXPECT(!accepts(g, "Sure! <tool_call>\n{\"name\": \"list\", \"arguments\": {}}\n</tool_call>"));
    EXPECT(!accepts(g, "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a\", "
                       "\"line\": -1}}\n</tool_call>"));
    grammar_free(g);
    /* named tool, no parallel calls, forced reasoning */
    g = tools_grammar(CHAT_TOOL_FORMAT_JSON, CHAT_REASONING_FORCED, "list", 0);
    ASSERT(g);
    EXPECT(accepts(g, "ok</think>\n\n<tool_call>\n{\"name\": \"list\", \"arguments\": "
                      "{\"x\": [1]}}\n</tool_call>"));
    EXPECT(!accepts(g, "<tool_call>\n{\"name\": \"list\", \"arguments\": {}}\n</tool_call>"));
    EXPECT(!accepts(g, "</think><tool_call>\n{\"name\": \"list\", \"arguments\": {}}\n</tool_call>"
                       "\n<tool_call>\n{\"name\": \"list\", \"arguments\": {}}\n</tool_call>"));
    EXPECT(!accepts(g, one));
    grammar_free(g);
    struct chat_grammar_params p = {CHAT_TOOL_FORMAT_JSON, CHAT_REASONING_NONE, TOOLS,
                                    sizeof(TOOLS) - 1,     "missing",           0};
    struct error err = {0};
    EXPECT(chat_grammar_tools(&g, &p, &err) == ERR_INVALID && strstr(err.msg, "missing"));
    p.tools_json = "[]";
    p.tools_json_len = 2;
    p.tool_name = NULL;
    EXPECT(chat_grammar_tools(&g, &p, &err) == ERR_INVALID);
    p.tools_json = "[{\"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"bogus\"}}}]";
    p.tools_json_len = strlen(p.tools_json);
    EXPECT(chat_grammar_tools(&g, &p, &err) == ERR_INVALID && strstr(err.msg, "tool 'f'"));
}

TEST(grammar_tool_calls_xml_format) {
    struct grammar *g = tools_grammar(CHAT_TOOL_FORMAT_XML, CHAT_REASONING_FORCED, NULL, 1);
    ASSERT(g);
    const char *ok = "Let me see.\n</think>\n\n<tool_call>\n<function=read_file>\n<parameter=path>"
                     "\nsrc/a \"quoted\" {x}\nline2\n</parameter>\n<parameter=line>\n12\n"
                     "</parameter>\n<parameter=mode>\nslow\n</parameter>\n<parameter=opts>\n"
                     "{\"deep\": true}\n</parameter>\n<parameter=n>\nabc\n</parameter>\n"
                     "</function>\n</tool_call>\n<tool_call>\n<function=list>\n</function>\n"
                     "</tool_call>";
    EXPECT(accepts(g, ok));
    EXPECT(!accepts(g, "x</think><tool_call>\n<function=read_file>\n<parameter=path>\na\n"
                       "</parameter>\n<parameter=line>\nx\n</parameter>\n</function>\n"
                       "</tool_call>")); /* line must be an integer */
    EXPECT(!accepts(g, "x</think><tool_call>\n<function=grep>\n<parameter=pattern>\na</function>"
                       "\n</parameter>\n</function>\n</tool_call>")); /* </function> in a value */
    EXPECT(!accepts(g, "x</think><tool_call>\n<function=read_file>\n<parameter=line>\n1\n"
                       "</parameter>\n<parameter=path>\na\n</parameter>\n</function>\n"
                       "</tool_call>")); /* order of the schema */
    /* what the grammar allows, the parser reads back */
    struct chat_parser_params pp = {CHAT_TOOL_FORMAT_XML, CHAT_REASONING_FORCED, TOOLS,
                                    sizeof(TOOLS) - 1, 1};
    struct chat_message m;
    ASSERT(chat_parse(&pp, ok, strlen(ok), &m, NULL) == 0);
    ASSERT(m.n_tool_calls == 2);
    EXPECT(strcmp(m.tool_calls[0].arguments,
                  "{\"path\": \"src/a \\\"quoted\\\" {x}\\nline2\", \"line\": 12, \"mode\": "
                  "\"slow\", \"opts\": {\"deep\": true}, \"n\": \"abc\"}") == 0);
    EXPECT(strcmp(m.tool_calls[1].arguments, "{}") == 0);
    EXPECT(strcmp(m.reasoning, "Let me see.") == 0 && strcmp(m.content, "") == 0);
    chat_message_free(&m);
    grammar_free(g);
}

/* Random sentences of tool grammars parse back into calls whose arguments validate. */
TEST(grammar_tool_calls_random_roundtrip) {
    struct jval *tools = NULL;
    ASSERT(jval_parse(&tools, TOOLS, sizeof(TOOLS) - 1, NULL) == 0);
    struct buf out;
    buf_init(&out);
    int done = 0, total = 0;
    for (int fmt = 1; fmt <= 2; fmt++)
        for (int r = 0; r <= 2; r++) {
            struct grammar *g =
                tools_grammar((enum chat_tool_format)fmt, (enum chat_reasoning)r, NULL, 1);
            ASSERT(g);
            for (uint64_t seed = 1; seed <= 15; seed++) {
                uint64_t s = seed * 2654435761u + (uint64_t)(fmt * 10 + r);
                total++;
                if (!random_sentence(g, &s, &out, 3000)) continue;
                done++;
                struct chat_parser_params pp = {(enum chat_tool_format)fmt, (enum chat_reasoning)r,
                                                TOOLS, sizeof(TOOLS) - 1, seed};
                struct chat_message m;
                ASSERT(chat_parse(&pp, out.data, out.len, &m, NULL) == 0);
                EXPECT_MSG(m.n_tool_calls >= 1 && m.content_len == 0,
                           "fmt %d: %d calls, content '%s' from: %.*s", fmt, m.n_tool_calls,
                           m.content, (int)out.len, out.data);
                for (int i = 0; i < m.n_tool_calls; i++) {
                    const struct jval *params = NULL;
                    for (size_t t = 0; t < tools->n; t++) {
                        const struct jval *fn = jval_get(&tools->items[t], "function");
                        if (strcmp(jval_get_str(fn, "name"), m.tool_calls[i].name) == 0)
                            params = jval_get(fn, "parameters");
                    }
                    struct jval *args = NULL;
                    int ok = jval_parse(&args, m.tool_calls[i].arguments,
                                        m.tool_calls[i].arguments_len, NULL) == 0 &&
                             (!params || validate(params, params, args, 0));
                    EXPECT_MSG(ok, "fmt %d: %s(%s) does not validate; output: %.*s", fmt,
                               m.tool_calls[i].name, m.tool_calls[i].arguments, (int)out.len,
                               out.data);
                    jval_free(args);
                }
                chat_message_free(&m);
            }
            grammar_free(g);
        }
    EXPECT_MSG(done * 10 >= total * 7, "only %d of %d walks finished", done, total);
    jval_free(tools);
    buf_free(&out);
}

TEST(grammar_response_format_json) {
    struct grammar *g = NULL;
    ASSERT(chat_grammar_json(&g, CHAT_REASONING_PARSE, NULL, 0, NULL) == 0);
    EXPECT(accepts(g, "{\"a\": 1}"));
    EXPECT(accepts(g, "<think>\nplan\n</think>\n\n{}"));
    EXPECT(!accepts(g, "[1]"));
    EXPECT(!accepts(g, "{} "));
    grammar_free(g);
    const char *s = "{\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\"}}, "
                    "\"required\": [\"n\"]}";
    ASSERT(chat_grammar_json(&g, CHAT_REASONING_NONE, s, strlen(s), NULL) == 0);
    EXPECT(accepts(g, "{\"n\": 5}"));
    EXPECT(!accepts(g, "<think></think>{\"n\": 5}"));
    grammar_free(g);
    struct error err = {0};
    EXPECT(chat_grammar_json(&g, CHAT_REASONING_NONE, "{\"type\": 1}", 11, &err) == ERR_INVALID);
}

/* ---- token masks ---- */

/* Brute force: token id is allowed iff its bytes can follow (or it is EOG and complete). */
static void check_mask_brute(struct constraint *c, struct grammar_matcher *ref, int32_t n_vocab,
                             const char *const *pieces, const size_t *lens, const uint8_t *eog,
                             int *bad) {
    float *logits = mem_alloc((size_t)n_vocab * sizeof(float));
    for (int32_t i = 0; i < n_vocab; i++) logits[i] = 0;
    int n_allowed = constraint_apply(c, logits);
    int count = 0;
    int32_t s0 = grammar_matcher_state(ref);
    for (int32_t id = 0; id < n_vocab; id++) {
        int want;
        if (eog[id])
            want = grammar_matcher_accepts(ref, s0);
        else if (lens[id] == 0)
            want = 0;
        else {
            int32_t s = s0;
            for (size_t k = 0; k < lens[id] && s >= 0; k++)
                s = grammar_matcher_next(ref, s, (uint8_t)pieces[id][k]);
            want = s >= 0;
        }
        int got = logits[id] == 0;
        count += got;
        if (want != got && (*bad)++ < 5)
            test_fail(__FILE__, __LINE__, "token %d '%.*s': want %d got %d", id, (int)lens[id],
                      pieces[id], want, got);
        EXPECT(constraint_allows(c, id) == want);
    }
    EXPECT(count == n_allowed || (n_allowed == 0 && count > 0));
    mem_free(logits);
}

TEST(grammar_constraint_mask_small_vocab) {
    static const char *const toks[] = {"{",   "}",   "\"",   "a",  "ab", "\"a\":", " ",
                                       "1",   "12",  "true", "tr", "ue", "}}",     ",",
                                       "\"b", "\":", "",     "[",  "x",  "\"}",    "<eos>"};
    enum { N = sizeof(toks) / sizeof(toks[0]) };
    size_t lens[N];
    uint8_t eog[N] = {0};
    for (int i = 0; i < N; i++) lens[i] = strlen(toks[i]);
    lens[N - 1] = 0; /* a control token: no bytes */
    eog[N - 1] = 1;
    struct constraint_vocab *v = NULL;
    ASSERT(constraint_vocab_create_from_pieces(&v, N, toks, lens, eog, NULL) == 0);
    EXPECT(constraint_vocab_n_vocab(v) == N);
    const char *schema = "{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"boolean\"}, "
                         "\"b\": {\"type\": \"integer\"}}, \"required\": [\"a\"]}";
    struct grammar *g = schema_grammar(schema);
    ASSERT(g);
    struct constraint *c = NULL;
    ASSERT(constraint_create(&c, v, g, NULL) == 0);
    struct grammar_matcher *ref = NULL;
    ASSERT(grammar_matcher_create(&ref, g, NULL) == 0);
    /* {"a": true, "b": 12} */
    int path[] = {0, 5, 6, 10, 11, 13, 14, 15, 8, 1};
    int bad = 0;
    for (size_t k = 0; k < sizeof(path) / sizeof(path[0]); k++) {
        check_mask_brute(c, ref, N, toks, lens, eog, &bad);
        EXPECT(constraint_accept(c, N - 1) == ERR_INVALID); /* EOG before the end */
        ASSERT(constraint_accept(c, path[k]) == 0);
        ASSERT(grammar_matcher_feed(ref, toks[path[k]], lens[path[k]]) == 0);
    }
    check_mask_brute(c, ref, N, toks, lens, eog, &bad);
    EXPECT(constraint_is_complete(c));
    EXPECT(constraint_accept(c, 3) == ERR_INVALID);
    EXPECT(constraint_accept(c, N - 1) == 0);
    /* the hook masks before the sampler's chain and accepts what it picks */
    constraint_reset(c);
    struct sampler_params sp;
    sampler_params_default(&sp);
    sp.temperature = 0;
    struct sampler *smp = NULL;
    ASSERT(sampler_create(&smp, &sp, N, NULL) == 0);
    struct sampler_constraint hook;
    constraint_hook(c, &hook);
    ASSERT(sampler_set_constraint(smp, &hook) == 0);
    float logits[N];
    for (int i = 0; i < N; i++) logits[i] = (float)i; /* the model prefers high ids */
    struct buf out;
    buf_init(&out);
    for (int step = 0; step < 40; step++) {
        int32_t id = sampler_sample(smp, logits, NULL);
        if (eog[id]) break;
        buf_append(&out, toks[id], lens[id]);
    }
    EXPECT(constraint_is_complete(c));
    EXPECT_MSG(validate_text(schema, out.data, out.len), "sampled: %.*s", (int)out.len, out.data);
    ASSERT(sampler_set_constraint(smp, NULL) == 0);
    EXPECT(sampler_sample(smp, logits, NULL) == N - 1);
    buf_free(&out);
    sampler_free(smp);
    grammar_matcher_free(ref);
    constraint_free(c);
    grammar_free(g);
    constraint_vocab_free(v);
}

/* Greedy decoding of a real model under grammars: the output is JSON matching the schema. */
static void constrained_generation(const char *model_rel, const char *const *schemas, int n,
                                   int check_brute) {
    const char *path = test_model_path(model_rel);
    if (!path) {
        test_skip("../shared/models/%s not found", model_rel);
        return;
    }
    struct engine *e = NULL;
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = 1;
    struct error err = {0};
    if (engine_open(&e, path, &ep, &err)) {
        test_fail(__FILE__, __LINE__, "engine_open: %s", err.msg);
        return;
    }
    struct constraint_vocab *v = NULL;
    if (constraint_vocab_create(&v, e, &err)) {
        test_fail(__FILE__, __LINE__, "vocab: %s", err.msg);
        engine_close(e);
        return;
    }
    struct engine_info info;
    engine_get_info(e, &info);
    /* pieces for the brute-force check */
    struct buf pieces;
    buf_init(&pieces);
    size_t *off = mem_alloc(((size_t)info.n_vocab + 1) * sizeof(size_t));
    uint8_t *eog = mem_alloc((size_t)info.n_vocab);
    const char **pp = mem_alloc((size_t)info.n_vocab * sizeof(char *));
    size_t *lens = mem_alloc((size_t)info.n_vocab * sizeof(size_t));
    for (int32_t id = 0; id < info.n_vocab; id++) {
        off[id] = pieces.len;
        engine_token_piece(e, id, 0, &pieces);
        eog[id] = engine_token_is_eog(e, id) != 0;
    }
    off[info.n_vocab] = pieces.len;
    for (int32_t id = 0; id < info.n_vocab; id++) {
        pp[id] = pieces.data + off[id];
        lens[id] = off[id + 1] - off[id];
    }
    for (int si = 0; si < n; si++) {
        struct grammar *g = NULL;
        if (chat_grammar_json(&g, CHAT_REASONING_NONE, schemas[si], strlen(schemas[si]), &err)) {
            test_fail(__FILE__, __LINE__, "%s: %s", schemas[si], err.msg);
            continue;
        }
        struct constraint *c = NULL;
        struct grammar_matcher *ref = NULL;
        struct session *s = NULL;
        struct sampler *smp = NULL;
        struct session_params sp;
        session_params_default(&sp);
        sp.n_ctx = 512;
        struct sampler_params smp_p;
        sampler_params_default(&smp_p);
        smp_p.temperature = 0;
        ASSERT(constraint_create(&c, v, g, NULL) == 0 &&
               grammar_matcher_create(&ref, g, NULL) == 0);
        ASSERT(session_create(&s, e, &sp, NULL) == 0 &&
               sampler_create(&smp, &smp_p, info.n_vocab, NULL) == 0);
        struct sampler_constraint hook;
        constraint_hook(c, &hook);
        ASSERT(sampler_set_constraint(smp, &hook) == 0);
        int32_t tok = engine_token_bos(e);
        ASSERT(session_eval(s, &tok, 1, NULL, NULL) == 0);
        struct buf out;
        buf_init(&out);
        int ended = 0, bad = 0;
        for (int step = 0; step < 400; step++) {
            if (check_brute && step < 40)
                check_mask_brute(c, ref, info.n_vocab, pp, lens, eog, &bad);
            tok = session_sample(s, smp);
            if (engine_token_is_eog(e, tok)) {
                ended = 1;
                break;
            }
            engine_token_piece(e, tok, 0, &out);
            ASSERT(grammar_matcher_feed(ref, pp[tok], lens[tok]) == 0);
            ASSERT(session_eval(s, &tok, 1, NULL, NULL) == 0);
        }
        EXPECT_MSG(ended && constraint_is_complete(c), "%s: no end after 400 tokens: %.*s",
                   schemas[si], (int)out.len, out.data);
        EXPECT_MSG(validate_text(schemas[si], out.data, out.len), "%s: invalid output %.*s",
                   schemas[si], (int)out.len, out.data);
        EXPECT(accepts_n(g, out.data, out.len) == 1);
        if (si == 0) printf("    %s under schema 0: %.*s\n", model_rel, (int)out.len, out.data);
        buf_free(&out);
        sampler_free(smp);
        session_free(s);
        grammar_matcher_free(ref);
        constraint_free(c);
        grammar_free(g);
    }
    mem_free(off);
    mem_free(eog);
    mem_free(pp);
    mem_free(lens);
    buf_free(&pieces);
    constraint_vocab_free(v);
    engine_close(e);
}

static const char *const GEN_SCHEMAS[] = {
    "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", \"maxLength\": 12}, "
    "\"age\": {\"type\": \"integer\", \"minimum\": 0}, \"happy\": {\"type\": \"boolean\"}}, "
    "\"required\": [\"name\", \"age\", \"happy\"]}",
    "{\"type\": \"array\", \"items\": {\"enum\": [\"cat\", \"dog\", \"bird\"]}, \"minItems\": 2, "
    "\"maxItems\": 4}",
    "{\"type\": \"object\", \"properties\": {\"story\": {\"type\": \"object\", \"properties\": "
    "{\"title\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 20}, \"tags\": {\"type\": "
    "\"array\", \"items\": {\"type\": \"string\", \"maxLength\": 6}, \"maxItems\": 3}}, "
    "\"required\": [\"title\", \"tags\"]}, \"score\": {\"type\": \"number\"}, \"note\": "
    "{\"type\": [\"string\", \"null\"], \"maxLength\": 10}}, \"required\": [\"story\", \"score\", "
    "\"note\"], \"additionalProperties\": false}",
    "{\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"object\", \"properties\": {\"k\": "
    "{\"const\": \"v\"}}, \"required\": [\"k\"]}]}",
};

TEST(grammar_constrained_greedy_stories260k) {
    constrained_generation("stories/stories260K.gguf", GEN_SCHEMAS,
                           (int)(sizeof(GEN_SCHEMAS) / sizeof(GEN_SCHEMAS[0])), 1);
}

TEST(grammar_constrained_greedy_synthetic_qwen3) {
    constrained_generation("synthetic/qwen3-f32.gguf", GEN_SCHEMAS, 2, 0);
}

/* ---- cost on a real 151k vocabulary (Qwen3's tokenizer.json) ---- */

/* GPT-2 byte-level alphabet: the code point standing for each byte, inverted. */
static int byte_of_cp(unsigned cp) {
    static int table[324];
    static int ready;
    if (!ready) {
        for (int i = 0; i < 324; i++) table[i] = -1;
        int n = 0;
        for (int b = 0; b < 256; b++) {
            int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
            if (printable)
                table[b] = b;
            else
                table[256 + n++] = b;
        }
        ready = 1;
    }
    return cp < 324 ? table[cp] : -1;
}

static int decode_byte_level(const char *s, size_t n, struct buf *out) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        unsigned cp;
        size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (i + k > n) return -1;
        cp = k == 1 ? c : k == 2 ? (c & 0x1Fu) : k == 3 ? (c & 0x0Fu) : (c & 0x07u);
        for (size_t j = 1; j < k; j++) cp = cp << 6 | ((unsigned char)s[i + j] & 0x3Fu);
        int b = byte_of_cp(cp);
        if (b < 0) return -1;
        buf_append_char(out, (char)b);
        i += k;
    }
    return 0;
}

struct qwen_vocab {
    int32_t n;
    char **pieces;
    size_t *lens;
    uint8_t *eog;
};

static void qwen_vocab_free(struct qwen_vocab *q) {
    for (int32_t i = 0; i < q->n; i++) mem_free(q->pieces[i]);
    mem_free(q->pieces);
    mem_free(q->lens);
    mem_free(q->eog);
}

/* Qwen3's 151,643 BPE tokens + its added tokens, padded to 151,936 like the GGUFs. */
static int load_qwen_vocab(struct qwen_vocab *q) {
    const char *path = test_model_path("tokenizers/qwen3/tokenizer.json");
    if (!path) return 0;
    size_t n = 0;
    char *text = test_read_file(path, &n);
    if (!text) return 0;
    const char *v = strstr(text, "\"vocab\": {");
    struct jval *vocab = NULL;
    size_t used = 0;
    int ok = v && jval_parse_prefix(&vocab, v + 9, n - (size_t)(v + 9 - text), &used, NULL) == 0;
    memset(q, 0, sizeof(*q));
    q->n = 151936;
    q->pieces = mem_calloc((size_t)q->n, sizeof(char *));
    q->lens = mem_calloc((size_t)q->n, sizeof(size_t));
    q->eog = mem_calloc((size_t)q->n, 1);
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; ok && i < vocab->n; i++) {
        const struct jval *id = &vocab->items[i];
        buf_clear(&b);
        if (id->type != JVAL_NUMBER || id->number < 0 || id->number >= q->n ||
            decode_byte_level(vocab->keys[i], vocab->key_lens[i], &b)) {
            ok = 0;
            break;
        }
        int32_t k = (int32_t)id->number;
        q->pieces[k] = mem_strndup(b.data ? b.data : "", b.len);
        q->lens[k] = b.len;
    }
    static const char *const added[] = {"<tool_call>",      "</tool_call>", "<tool_response>",
                                        "</tool_response>", "<think>",      "</think>"};
    static const int32_t added_id[] = {151657, 151658, 151665, 151666, 151667, 151668};
    for (int i = 0; ok && i < 6; i++) {
        q->pieces[added_id[i]] = mem_strdup(added[i]);
        q->lens[added_id[i]] = strlen(added[i]);
    }
    q->eog[151643] = q->eog[151645] = 1; /* <|endoftext|>, <|im_end|> */
    for (int32_t i = 0; i < q->n; i++)
        if (!q->pieces[i]) q->pieces[i] = mem_strdup(""); /* control and padding */
    buf_free(&b);
    jval_free(vocab);
    mem_free(text);
    if (!ok) qwen_vocab_free(q);
    return ok;
}

static uint64_t mix_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

/* Open-addressing index of the vocabulary's non-empty pieces (cap a power of two), for
 * longest_token; NULL when out of memory. */
static int32_t *piece_index(const struct qwen_vocab *q, size_t cap) {
    int32_t *index = mem_alloc(cap * sizeof(int32_t));
    if (!index) return NULL;
    for (size_t i = 0; i < cap; i++) index[i] = -1;
    for (int32_t id = 0; id < q->n; id++) {
        if (!q->lens[id]) continue;
        size_t h = (size_t)(mix_hash(q->pieces[id], q->lens[id]) & (cap - 1));
        while (index[h] >= 0) h = (h + 1) & (cap - 1);
        index[h] = id;
    }
    return index;
}

/* Longest-match split of text into vocabulary tokens (a stand-in for BPE: similar lengths). */
static int32_t longest_token(const struct qwen_vocab *q, const int32_t *index, size_t cap,
                             const char *s, size_t n) {
    for (size_t len = n < 32 ? n : 32; len > 0; len--) {
        size_t h = (size_t)(mix_hash(s, len) & (cap - 1));
        while (index[h] >= 0) {
            int32_t id = index[h];
            if (q->lens[id] == len && memcmp(q->pieces[id], s, len) == 0) return id;
            h = (h + 1) & (cap - 1);
        }
    }
    return -1;
}

static double ms_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Drives a tool-call grammar through a realistic output on Qwen3's vocabulary and reports the
 * cost of each mask. Every token of the output must be allowed when it comes. */
TEST(grammar_constraint_qwen_vocab_cost) {
    struct qwen_vocab q;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!load_qwen_vocab(&q)) SKIP_TEST("../shared/models/tokenizers/qwen3 not found");
    double t_load = ms_since(&t0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct constraint_vocab *v = NULL;
    ASSERT(constraint_vocab_create_from_pieces(&v, q.n, (const char *const *)q.pieces, q.lens,
                                               q.eog, NULL) == 0);
    double t_trie = ms_since(&t0);
    size_t cap = 1 << 19;
    int32_t *index = piece_index(&q, cap);
    ASSERT(index);
    const char *out =
        "<think>\nThe user wants the first lines of the main source file, and also which "
        "functions mention the allocator. I will read the file and grep for \"mem_alloc\".\n"
        "</think>\n\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": "
        "\"src/main.c\", \"line\": 120, \"mode\": \"fast\", \"opts\": {\"deep\": false}, "
        "\"tags\": [\"c\", \"core\"]}}\n</tool_call>\n<tool_call>\n{\"name\": \"grep\", "
        "\"arguments\": {\"pattern\": \"mem_alloc\\\\(.*\\\\) with a long explanation of why "
        "this pattern matters for the memory accounting of every request in the server\"}}\n"
        "</tool_call>";
    struct grammar *g = tools_grammar(CHAT_TOOL_FORMAT_JSON, CHAT_REASONING_PARSE, NULL, 1);
    ASSERT(g);
    struct constraint *c = NULL;
    ASSERT(constraint_create(&c, v, g, NULL) == 0);
    float *logits = mem_alloc((size_t)q.n * sizeof(float));
    ASSERT(logits);
    size_t pos = 0, len = strlen(out);
    int n_tok = 0;
    double worst = 0, total = 0;
    while (pos < len) {
        int32_t id = longest_token(&q, index, cap, out + pos, len - pos);
        ASSERT_MSG(id >= 0, "no token at %zu", pos);
        for (int32_t i = 0; i < q.n; i++) logits[i] = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int n_allowed = constraint_apply(c, logits);
        double ms = ms_since(&t0);
        total += ms;
        if (ms > worst) worst = ms;
        ASSERT_MSG(logits[id] == 0 && n_allowed > 0, "token %d '%.*s' refused at %zu", id,
                   (int)q.lens[id], q.pieces[id], pos);
        ASSERT(constraint_accept(c, id) == 0);
        pos += q.lens[id];
        n_tok++;
    }
    for (int32_t i = 0; i < q.n; i++) logits[i] = 0;
    EXPECT(constraint_apply(c, logits) >= 2 && logits[151645] == 0 && logits[151643] == 0);
    EXPECT(logits[151657] == -INFINITY); /* <tool_call> needs the newline first */
    EXPECT(constraint_is_complete(c));
    struct constraint_stats st;
    constraint_get_stats(c, &st);
    printf("    qwen3 vocab %d tokens: load %.0f ms, trie %.0f ms; %d tokens generated: mask "
           "%.3f ms/token on average, worst %.2f ms; %lld trie walks, %lld cached masks, %lld "
           "automaton states\n",
           q.n, t_load, t_trie, n_tok, total / n_tok, worst, (long long)st.n_walks,
           (long long)st.n_cached, (long long)st.n_states);
    mem_free(logits);
    mem_free(index);
    constraint_free(c);
    grammar_free(g);
    constraint_vocab_free(v);
    qwen_vocab_free(&q);
}

/* A lazy constraint (tool_choice auto): free text, thinking included, until the output spells
 * "<tool_call>" outside <think>; from there the tool grammar holds (a call that strays from
 * its schema is refused), and after the call only end of generation or another call. Small
 * vocabulary: the trigger arrives split over tokens, its last one carrying bytes after it. */
TEST(grammar_lazy_tool_trigger) {
    static const char *toks[] = {
        "Sure",
        " ",
        "<think>",
        "</think>",
        "<",
        "tool",
        "_call",
        ">",
        ">\n{",
        "\n",
        "{",
        "}",
        "\"name\"",
        ": ",
        "\"list\"",
        ", ",
        "\"arguments\"",
        "</",
        "hi",
        "\n</tool_call>",
        "x",
        "",
    };
    enum { N = sizeof(toks) / sizeof(toks[0]) };
    size_t lens[N];
    uint8_t eog[N] = {0};
    for (int i = 0; i < N; i++) lens[i] = strlen(toks[i]);
    eog[N - 1] = 1;
    struct constraint_vocab *v = NULL;
    ASSERT(constraint_vocab_create_from_pieces(&v, N, toks, lens, eog, NULL) == 0);
    size_t pl;
    const char *pp = constraint_vocab_piece(v, 4, &pl);
    EXPECT(pp && pl == 1 && pp[0] == '<');
    EXPECT(constraint_vocab_piece(v, N, &pl) == NULL && pl == 0);
    struct grammar *g = tools_grammar(CHAT_TOOL_FORMAT_JSON, CHAT_REASONING_NONE, NULL, 0);
    ASSERT(g);
    struct constraint *c = NULL;
    ASSERT(constraint_create(&c, v, g, NULL) == 0);
    EXPECT(constraint_set_lazy(c, "", NULL, NULL, 0) == ERR_INVALID);
    EXPECT(constraint_set_lazy(c, "<tool_call>", "<think>", NULL, 0) == ERR_INVALID);
    ASSERT(constraint_set_lazy(c, "<tool_call>", "<think>", "</think>", 0) == 0);
    float logits[N];
    /* "<think> <tool_call></think>Sure <tool_call>\n{" then a call of "list" */
    int waiting[] = {2, 1, 4, 5, 6, 7, 3, 0, 1, 4, 5, 6};
    for (size_t k = 0; k < sizeof(waiting) / sizeof(waiting[0]); k++) {
        for (int i = 0; i < N; i++) logits[i] = 1;
        EXPECT_MSG(constraint_apply(c, logits) == N && logits[20] == 1, "step %zu masked", k);
        EXPECT(constraint_is_waiting(c) && !constraint_is_complete(c));
        EXPECT(constraint_allows(c, 20));
        ASSERT(constraint_accept(c, waiting[k]) == 0);
    }
    ASSERT(constraint_accept(c, 8) == 0); /* ">\n{": the trigger ends inside the token */
    EXPECT(!constraint_is_waiting(c));
    for (int i = 0; i < N; i++) logits[i] = 1;
    EXPECT(constraint_apply(c, logits) == 1 && logits[12] == 1); /* only "name" now */
    EXPECT(!constraint_allows(c, 20) && !constraint_allows(c, 11));
    int call[] = {12, 13, 14, 15, 16, 13, 10, 11, 11};
    for (size_t k = 0; k < sizeof(call) / sizeof(call[0]); k++) {
        EXPECT(constraint_accept(c, 20) == ERR_INVALID); /* stray text is refused */
        ASSERT_MSG(constraint_accept(c, call[k]) == 0, "call token %zu", k);
    }
    EXPECT(!constraint_is_complete(c));
    ASSERT(constraint_accept(c, 19) == 0); /* "\n</tool_call>" */
    EXPECT(constraint_is_complete(c));
    for (int i = 0; i < N; i++) logits[i] = 1;
    EXPECT(constraint_apply(c, logits) == 1 && logits[N - 1] == 1); /* only the end */
    /* starting inside a thinking block (a prompt that opened it): no trigger before </think> */
    ASSERT(constraint_set_lazy(c, "<tool_call>", "<think>", "</think>", 1) == 0);
    int inside[] = {4, 5, 6, 7, 18, 3};
    for (size_t k = 0; k < sizeof(inside) / sizeof(inside[0]); k++)
        ASSERT(constraint_accept(c, inside[k]) == 0);
    EXPECT(constraint_is_waiting(c));
    int after[] = {4, 5, 6, 7};
    for (size_t k = 0; k < sizeof(after) / sizeof(after[0]); k++)
        ASSERT(constraint_accept(c, after[k]) == 0);
    EXPECT(!constraint_is_waiting(c));
    EXPECT(constraint_allows(c, 9) && !constraint_allows(c, 10)); /* the newline comes first */
    /* reset leaves lazy mode: the grammar applies from the first token */
    constraint_reset(c);
    EXPECT(!constraint_is_waiting(c) && !constraint_allows(c, 0) && constraint_allows(c, 4));
    constraint_free(c);
    grammar_free(g);
    constraint_vocab_free(v);
}

/* The lazy tool grammar on Qwen3's vocabulary, where <tool_call> and the thinking tags are
 * single tokens: nothing is masked through the thinking block (a <tool_call> inside it
 * included) and the text before the call; from the call's tag on, every token of the call is
 * allowed and the mask holds (text right after the tag is refused); after one call only the
 * end-of-generation tokens. */
TEST(grammar_lazy_tool_trigger_qwen_vocab) {
    struct qwen_vocab q;
    if (!load_qwen_vocab(&q)) SKIP_TEST("../shared/models/tokenizers/qwen3 not found");
    struct constraint_vocab *v = NULL;
    ASSERT(constraint_vocab_create_from_pieces(&v, q.n, (const char *const *)q.pieces, q.lens,
                                               q.eog, NULL) == 0);
    size_t cap = 1 << 19;
    int32_t *index = piece_index(&q, cap);
    ASSERT(index);
    const char *before = "<think>\nI could call <tool_call> now, or look first.\n</think>\n\n"
                         "Let me list the files.\n";
    const char *call = "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": "
                       "\"a.c\", \"line\": 3}}\n</tool_call>";
    struct grammar *g = tools_grammar(CHAT_TOOL_FORMAT_JSON, CHAT_REASONING_NONE, NULL, 0);
    ASSERT(g);
    struct constraint *c = NULL;
    ASSERT(constraint_create(&c, v, g, NULL) == 0);
    ASSERT(constraint_set_lazy(c, "<tool_call>", "<think>", "</think>", 0) == 0);
    float *logits = mem_alloc((size_t)q.n * sizeof(float));
    ASSERT(logits);
    int32_t let = longest_token(&q, index, cap, "Let", 3);
    ASSERT(let >= 0);
    for (int part = 0; part < 2; part++) {
        const char *text = part ? call : before;
        size_t pos = 0, len = strlen(text);
        while (pos < len) {
            int32_t id = longest_token(&q, index, cap, text + pos, len - pos);
            ASSERT_MSG(id >= 0, "no token at %zu", pos);
            for (int32_t i = 0; i < q.n; i++) logits[i] = 0;
            int n_allowed = constraint_apply(c, logits);
            if (part == 0 || pos == 0) { /* waiting: the call's own tag comes unmasked */
                EXPECT_MSG(constraint_is_waiting(c) && n_allowed == q.n && logits[let] == 0,
                           "masked at %d:%zu", part, pos);
            } else {
                EXPECT_MSG(logits[id] == 0 && n_allowed < q.n, "token %d '%.*s' at %zu refused", id,
                           (int)q.lens[id], q.pieces[id], pos);
                if (pos == strlen("<tool_call>")) /* right after the tag: only the newline */
                    EXPECT(logits[let] == -INFINITY && n_allowed < 10);
            }
            ASSERT(constraint_accept(c, id) == 0);
            if (part == 1 && pos == 0) EXPECT_EQ_INT(id, 151657); /* one token: <tool_call> */
            pos += q.lens[id];
        }
    }
    EXPECT(!constraint_is_waiting(c) && constraint_is_complete(c));
    for (int32_t i = 0; i < q.n; i++) logits[i] = 0;
    EXPECT(constraint_apply(c, logits) == 2 && logits[151643] == 0 && logits[151645] == 0);
    mem_free(logits);
    mem_free(index);
    constraint_free(c);
    grammar_free(g);
    constraint_vocab_free(v);
    qwen_vocab_free(&q);
}

/* Every allocation failure while compiling or constraining gives a clean error (or a smaller,
 * still safe mask) and leaks nothing. */
TEST(grammar_allocation_failures) {
    const char *schema = SCHEMAS[20].schema; /* recursive $ref with anyOf */
    int64_t live = mem_live_bytes();
    int ok_seen = 0;
    for (int64_t k = 0; k < 3000 && !ok_seen; k++) {
        struct grammar *g = NULL;
        mem_fail_after(k);
        struct error err = {0};
        int rc = json_schema_grammar(&g, schema, strlen(schema), &err);
        mem_fail_after(-1);
        EXPECT_MSG(rc == 0 || rc == ERR_NOMEM, "k=%lld rc=%d %s", (long long)k, rc, err.msg);
        ok_seen = rc == 0;
        grammar_free(g);
    }
    EXPECT(ok_seen);
    ok_seen = 0;
    for (int64_t k = 0; k < 3000 && !ok_seen; k++) {
        struct chat_grammar_params p = {
            CHAT_TOOL_FORMAT_XML, CHAT_REASONING_FORCED, TOOLS, sizeof(TOOLS) - 1, NULL, 1};
        struct grammar *g = NULL;
        mem_fail_after(k);
        int rc = chat_grammar_tools(&g, &p, NULL);
        mem_fail_after(-1);
        EXPECT(rc == 0 || rc == ERR_NOMEM);
        ok_seen = rc == 0;
        grammar_free(g);
    }
    EXPECT(ok_seen);
    EXPECT_EQ_INT(mem_live_bytes(), live);
    /* masks: failures during a walk only ever remove tokens */
    static const char *const toks[] = {"{", "}", "\"", "a", "\"a\":", " ", "1", "true", ","};
    size_t lens[9];
    for (int i = 0; i < 9; i++) lens[i] = strlen(toks[i]);
    struct constraint_vocab *v = NULL;
    ASSERT(constraint_vocab_create_from_pieces(&v, 9, toks, lens, NULL, NULL) == 0);
    struct grammar *g = schema_grammar("{\"type\": \"object\", \"properties\": {\"a\": {}}}");
    ASSERT(g);
    int path[] = {0, 4, 5, 7, 1};
    for (int64_t k = 0; k < 200; k++) {
        struct constraint *c = NULL;
        mem_fail_after(k);
        int rc = constraint_create(&c, v, g, NULL);
        for (size_t i = 0; rc == 0 && i < sizeof(path) / sizeof(path[0]); i++) {
            float logits[9] = {0};
            constraint_apply(c, logits);
            if (logits[path[i]] != 0) break; /* a failed walk may drop tokens */
            rc = constraint_accept(c, path[i]);
            EXPECT(rc == 0 || rc == ERR_NOMEM);
        }
        mem_fail_after(-1);
        constraint_free(c);
    }
    grammar_free(g);
    constraint_vocab_free(v);
    EXPECT_EQ_INT(mem_live_bytes(), live);
}

/* The sampler's hook: masked tokens are never drawn, whatever the temperature and filters, and
 * the hook hears every pick. */
static int g_hook_calls, g_hook_last;

static void mask_odd(void *ctx, float *logits, int n) {
    (void)ctx;
    for (int i = 1; i < n; i += 2) logits[i] = -INFINITY;
}

static void note_pick(void *ctx, int32_t id) {
    (void)ctx;
    g_hook_calls++;
    g_hook_last = id;
}

TEST(grammar_sampler_hook_masks_before_chain) {
    struct sampler_params p;
    sampler_params_default(&p);
    p.temperature = 1.5f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0;
    p.seed = 5;
    p.presence_penalty = 0.5f;
    struct sampler *s = NULL;
    ASSERT(sampler_create(&s, &p, 16, NULL) == 0);
    struct sampler_constraint hook = {NULL, mask_odd, note_pick};
    ASSERT(sampler_set_constraint(s, &hook) == 0);
    float logits[16];
    for (int i = 0; i < 16; i++) logits[i] = (i % 2) ? 5.0f : -3.0f; /* odd ones are likelier */
    g_hook_calls = 0;
    for (int k = 0; k < 3000; k++) {
        int32_t id = sampler_sample(s, logits, NULL);
        EXPECT(id % 2 == 0);
        EXPECT(g_hook_last == id);
    }
    EXPECT_EQ_INT(g_hook_calls, 3000);
    /* greedy too; and without the hook the odd ones win again */
    sampler_free(s);
    p.temperature = 0;
    ASSERT(sampler_create(&s, &p, 16, NULL) == 0);
    ASSERT(sampler_set_constraint(s, &hook) == 0);
    EXPECT(sampler_sample(s, logits, NULL) % 2 == 0);
    ASSERT(sampler_set_constraint(s, NULL) == 0);
    EXPECT(sampler_sample(s, logits, NULL) % 2 == 1);
    sampler_free(s);
}
