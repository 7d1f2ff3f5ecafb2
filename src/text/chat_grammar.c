/* chat_grammar.c: grammars that force a Qwen model's output into a tool call or a JSON value.
 *
 * A grammar is [reasoning prefix] + body. The body is either one JSON value (response_format)
 * or one or more tool calls spelled exactly as the model's chat template teaches them (so the
 * model stays on familiar tokens), with the arguments compiled from each tool's "parameters"
 * schema. In the XML syntax a parameter whose schema admits strings is raw text up to the first
 * "</parameter>" (and may not contain "</function>", which the parser would take as the end of
 * the call); other values are JSON, as the Qwen3.5/Coder templates render them with tojson.
 * What these grammars produce, chat_parser reads back into the same calls.
 */
#include "chat.h"

#include "../base/buf.h"
#include "../base/mem.h"
#include "json_schema.h"
#include "jval.h"

#include <string.h>

/* ============================================================================================
 * Reasoning prefix and JSON responses
 *
 * The prefix mirrors chat_reasoning: nothing, an optional <think> block, or reasoning already
 * open (the prompt ended with <think>) that must be closed before the answer.
 * ============================================================================================ */

/* [ \t\n]{0,8}: the blank between </think> and the answer */
static int32_t rule_blank(struct grammar *g) {
    uint8_t set[32] = {0};
    set[' ' >> 3] |= (uint8_t)(1u << (' ' & 7));
    set['\t' >> 3] |= (uint8_t)(1u << ('\t' & 7));
    set['\n' >> 3] |= (uint8_t)(1u << ('\n' & 7));
    int32_t one = grammar_rule_add(g, "blank");
    grammar_alt_begin(g, one);
    grammar_alt_set(g, set);
    grammar_alt_end(g);
    return grammar_rule_repeat(g, one, 0, 8);
}

/* The reasoning part that may or must come first; -1 for none. */
static int32_t rule_reasoning(struct grammar *g, enum chat_reasoning mode) {
    if (mode == CHAT_REASONING_NONE) return -1;
    static const char *const end[] = {"</think>"};
    int32_t until = grammar_rule_until(g, end, 1, NULL, 0);
    int32_t blank = rule_blank(g);
    int32_t r = grammar_rule_add(g, "reasoning");
    grammar_alt_begin(g, r);
    if (mode == CHAT_REASONING_PARSE) grammar_alt_str(g, "<think>");
    grammar_alt_ref(g, until);
    grammar_alt_ref(g, blank);
    grammar_alt_end(g);
    if (mode == CHAT_REASONING_PARSE) { /* thinking is optional */
        grammar_alt_begin(g, r);
        grammar_alt_end(g);
    }
    return r;
}

static int finish_with_prefix(struct grammar *g, enum chat_reasoning mode, int32_t body,
                              struct error *err) {
    int32_t pre = rule_reasoning(g, mode);
    int32_t root = grammar_rule_add(g, "root");
    grammar_alt_begin(g, root);
    if (pre >= 0) grammar_alt_ref(g, pre);
    grammar_alt_ref(g, body);
    grammar_alt_end(g);
    return grammar_finish(g, root, err);
}

int chat_grammar_json(struct grammar **out, enum chat_reasoning reasoning, const char *schema_json,
                      size_t schema_len, struct error *err) {
    *out = NULL;
    struct grammar *g = NULL;
    struct jval *schema = NULL;
    int rc = grammar_create(&g, err);
    if (rc) return rc;
    int32_t body;
    if (schema_json) {
        rc = jval_parse(&schema, schema_json, schema_len, err);
        if (rc) {
            error_prefix(err, "response_format schema");
            if (rc != ERR_NOMEM) rc = ERR_INVALID;
            goto fail;
        }
        rc = json_schema_compile(g, schema, schema, &body, err);
        if (rc == JSON_SCHEMA_NEVER)
            rc = error_set(err, ERR_INVALID, "json schema: no value can match it");
        if (rc) goto fail;
    } else {
        body = json_schema_any_value(g, 1);
    }
    if ((rc = finish_with_prefix(g, reasoning, body, err))) goto fail;
    jval_free(schema);
    *out = g;
    return 0;
fail:
    jval_free(schema);
    grammar_free(g);
    return rc;
}

/* ============================================================================================
 * Tool calls
 *
 * One rule per tool, spelled as its template renders calls in history; "any_call" chooses
 * among them, "calls" repeats it with newlines when parallel calls are allowed. XML parameters
 * follow the schema's property order, required ones always present, optional ones skippable
 * (a schema's extra keys are not generated).
 * ============================================================================================ */

/* Parameter list of an object schema: its properties (and those of allOf parts), in order. */
struct params {
    const char **keys;
    const struct jval **schemas;
    int *required;
    size_t n, cap;
};

static int params_add(struct params *ps, const char *key, const struct jval *s, int req) {
    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->keys[i], key) == 0) {
            ps->required[i] |= req;
            if (!ps->schemas[i]) ps->schemas[i] = s;
            return 0;
        }
    if (ps->n == ps->cap) {
        size_t ncap = ps->cap ? ps->cap * 2 : 8;
        const char **k = mem_realloc(ps->keys, ncap * sizeof(*k));
        if (!k) return -1;
        ps->keys = k;
        const struct jval **sc = mem_realloc(ps->schemas, ncap * sizeof(*sc));
        if (!sc) return -1;
        ps->schemas = sc;
        int *rq = mem_realloc(ps->required, ncap * sizeof(*rq));
        if (!rq) return -1;
        ps->required = rq;
        ps->cap = ncap;
    }
    ps->keys[ps->n] = key;
    ps->schemas[ps->n] = s;
    ps->required[ps->n] = req;
    ps->n++;
    return 0;
}

static int params_collect(struct params *ps, const struct jval *root, const struct jval *s,
                          int depth) {
    s = json_schema_resolve(root, s);
    if (!s || s->type != JVAL_OBJECT || depth > 16) return 0;
    const struct jval *props = jval_get(s, "properties");
    if (props && props->type == JVAL_OBJECT)
        for (size_t i = 0; i < props->n; i++)
            if (params_add(ps, props->keys[i], &props->items[i], 0)) return -1;
    const struct jval *req = jval_get(s, "required");
    if (req && req->type == JVAL_ARRAY)
        for (size_t i = 0; i < req->n; i++)
            if (req->items[i].type == JVAL_STRING && params_add(ps, req->items[i].str, NULL, 1))
                return -1;
    const struct jval *all = jval_get(s, "allOf");
    if (all && all->type == JVAL_ARRAY)
        for (size_t i = 0; i < all->n; i++)
            if (params_collect(ps, root, &all->items[i], depth + 1)) return -1;
    return 0;
}

static void params_free(struct params *ps) {
    mem_free(ps->keys);
    mem_free(ps->schemas);
    mem_free(ps->required);
}

/* 1 if s (resolved) is an enum or const made only of strings, which *vals and *n then give. */
static int string_enum(const struct jval *root, const struct jval *s, const struct jval **vals,
                       size_t *n) {
    s = json_schema_resolve(root, s);
    if (!s || s->type != JVAL_OBJECT) return 0;
    const struct jval *en = jval_get(s, "enum");
    if (en && en->type == JVAL_ARRAY && en->n > 0) {
        for (size_t i = 0; i < en->n; i++)
            if (en->items[i].type != JVAL_STRING) return 0;
        *vals = en->items;
        *n = en->n;
        return 1;
    }
    const struct jval *cn = jval_get(s, "const");
    if (cn && cn->type == JVAL_STRING) {
        *vals = cn;
        *n = 1;
        return 1;
    }
    return 0;
}

/* The value of one XML parameter, through its closing "</parameter>". 0, JSON_SCHEMA_NEVER or an
 * error, as json_schema_compile. */
static int xml_value_rule(struct grammar *g, const struct jval *root, const struct jval *s,
                          int32_t *out, struct error *err) {
    static const char *const end[] = {"</parameter>"}, *const ban[] = {"</function>"};
    unsigned types = s ? json_schema_types(root, s) : JSON_SCHEMA_T_ANY;
    const struct jval *vals;
    size_t n_vals;
    if (s && types == JSON_SCHEMA_T_STRING && string_enum(root, s, &vals, &n_vals)) {
        int32_t r = grammar_rule_add(g, "xml_enum");
        for (size_t i = 0; i < n_vals; i++) {
            grammar_alt_begin(g, r);
            grammar_alt_lit(g, vals[i].str, vals[i].len);
            grammar_alt_str(g, "\n</parameter>");
            grammar_alt_end(g);
        }
        *out = r;
        return 0;
    }
    int32_t alts[2];
    int n = 0;
    if (types & JSON_SCHEMA_T_STRING) alts[n++] = grammar_rule_until(g, end, 1, ban, 1);
    if (types & ~(unsigned)JSON_SCHEMA_T_STRING) {
        int32_t json = -1;
        int rc = 0;
        if (s)
            rc = json_schema_compile(g, root, s, &json, err);
        else
            json = json_schema_any_value(g, 0);
        if (rc < 0) return rc;
        if (rc == 0) {
            int32_t r = grammar_rule_add(g, "xml_json");
            grammar_alt_begin(g, r);
            grammar_alt_ref(g, json);
            grammar_alt_str(g, "\n</parameter>");
            grammar_alt_end(g);
            alts[n++] = r;
        }
    }
    if (n == 0) return JSON_SCHEMA_NEVER;
    int32_t r = grammar_rule_add(g, "xml_value");
    for (int i = 0; i < n; i++) {
        grammar_alt_begin(g, r);
        grammar_alt_ref(g, alts[i]);
        grammar_alt_end(g);
    }
    *out = r;
    return 0;
}

static int xml_call_rule(struct grammar *g, const char *name, const struct jval *params,
                         int32_t *out, struct error *err) {
    struct params ps = {0};
    int rc = 0;
    if (params && params_collect(&ps, params, params, 0)) {
        rc = error_set(err, ERR_NOMEM, "out of memory");
        goto done;
    }
    int32_t seq = grammar_rule_add(g, "params_end");
    grammar_alt_begin(g, seq);
    grammar_alt_end(g);
    for (size_t i = ps.n; i-- > 0;) {
        int32_t value = -1;
        if (strpbrk(ps.keys[i], ">\n")) { /* cannot be written as <parameter=KEY> */
            if (!ps.required[i]) continue;
            rc = error_set(err, ERR_UNSUPPORTED, "parameter name '%s' has '>' or a newline",
                           ps.keys[i]);
            goto done;
        }
        rc = xml_value_rule(g, params, ps.schemas[i], &value, err);
        if (rc == JSON_SCHEMA_NEVER && !ps.required[i]) { /* an impossible optional one */
            rc = 0;
            continue;
        }
        if (rc == JSON_SCHEMA_NEVER)
            rc = error_set(err, ERR_INVALID, "json schema: no value can match it");
        if (rc) {
            error_prefix(err, "parameter '%s'", ps.keys[i]);
            goto done;
        }
        int32_t r = grammar_rule_add(g, "params");
        grammar_alt_begin(g, r);
        grammar_alt_str(g, "<parameter=");
        grammar_alt_str(g, ps.keys[i]);
        grammar_alt_str(g, ">\n");
        grammar_alt_ref(g, value);
        grammar_alt_str(g, "\n");
        grammar_alt_ref(g, seq);
        grammar_alt_end(g);
        if (!ps.required[i]) {
            grammar_alt_begin(g, r);
            grammar_alt_ref(g, seq);
            grammar_alt_end(g);
        }
        seq = r;
    }
    int32_t call = grammar_rule_add(g, "call");
    grammar_alt_begin(g, call);
    grammar_alt_str(g, "<tool_call>\n<function=");
    grammar_alt_str(g, name);
    grammar_alt_str(g, ">\n");
    grammar_alt_ref(g, seq);
    grammar_alt_str(g, "</function>\n</tool_call>");
    grammar_alt_end(g);
    *out = call;
done:
    params_free(&ps);
    return rc;
}

static int json_call_rule(struct grammar *g, const char *name, const struct jval *params,
                          int32_t *out, struct error *err) {
    int32_t args;
    if (params) {
        int rc = json_schema_compile(g, params, params, &args, err);
        if (rc == JSON_SCHEMA_NEVER)
            rc = error_set(err, ERR_INVALID, "json schema: no value can match it");
        if (rc) return rc;
    } else {
        args = json_schema_any_value(g, 1);
    }
    struct buf nm;
    buf_init(&nm);
    jval_write_string(name, strlen(name), &nm);
    if (nm.failed) {
        buf_free(&nm);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    int32_t call = grammar_rule_add(g, "call");
    grammar_alt_begin(g, call);
    grammar_alt_str(g, "<tool_call>\n{\"name\": ");
    grammar_alt_lit(g, nm.data, nm.len);
    grammar_alt_str(g, ", \"arguments\": ");
    grammar_alt_ref(g, args);
    grammar_alt_str(g, "}\n</tool_call>");
    grammar_alt_end(g);
    buf_free(&nm);
    *out = call;
    return 0;
}

int chat_grammar_tools(struct grammar **out, const struct chat_grammar_params *p,
                       struct error *err) {
    *out = NULL;
    if (p->tool_format != CHAT_TOOL_FORMAT_JSON && p->tool_format != CHAT_TOOL_FORMAT_XML)
        return error_set(err, ERR_INVALID, "tool grammar: no tool-call format");
    struct jval *tools = NULL;
    struct grammar *g = NULL;
    int rc = jval_parse(&tools, p->tools_json, p->tools_json ? p->tools_json_len : 0, err);
    if (rc) {
        error_prefix(err, "tools");
        return rc == ERR_NOMEM ? rc : ERR_INVALID;
    }
    if (tools->type != JVAL_ARRAY) {
        rc = error_set(err, ERR_INVALID, "tools: not an array");
        goto fail;
    }
    if ((rc = grammar_create(&g, err))) goto fail;
    int32_t any = grammar_rule_add(g, "any_call");
    int n = 0;
    for (size_t i = 0; i < tools->n; i++) {
        const struct jval *fn = jval_get(&tools->items[i], "function");
        if (!fn) fn = &tools->items[i];
        const char *name = jval_get_str(fn, "name");
        if (!name || !*name || strlen(name) != jval_get(fn, "name")->len) continue;
        if (p->tool_name && strcmp(name, p->tool_name) != 0) continue;
        if (p->tool_format == CHAT_TOOL_FORMAT_XML && strpbrk(name, ">\n")) continue;
        const struct jval *params = jval_get(fn, "parameters");
        int32_t call = -1;
        rc = p->tool_format == CHAT_TOOL_FORMAT_XML ? xml_call_rule(g, name, params, &call, err)
                                                    : json_call_rule(g, name, params, &call, err);
        if (rc) {
            error_prefix(err, "tool '%s'", name);
            goto fail;
        }
        grammar_alt_begin(g, any);
        grammar_alt_ref(g, call);
        grammar_alt_end(g);
        n++;
    }
    if (n == 0) {
        rc = p->tool_name
                 ? error_set(err, ERR_INVALID, "tool_choice: no tool named '%s'", p->tool_name)
                 : error_set(err, ERR_INVALID, "tools: no usable tool");
        goto fail;
    }
    int32_t calls = any;
    if (p->parallel_tool_calls) {
        int32_t more = grammar_rule_add(g, "more_calls");
        grammar_alt_begin(g, more);
        grammar_alt_end(g);
        grammar_alt_begin(g, more);
        grammar_alt_str(g, "\n");
        grammar_alt_ref(g, any);
        grammar_alt_ref(g, more);
        grammar_alt_end(g);
        calls = grammar_rule_add(g, "calls");
        grammar_alt_begin(g, calls);
        grammar_alt_ref(g, any);
        grammar_alt_ref(g, more);
        grammar_alt_end(g);
    }
    if ((rc = finish_with_prefix(g, p->reasoning, calls, err))) goto fail;
    jval_free(tools);
    *out = g;
    return 0;
fail:
    jval_free(tools);
    grammar_free(g);
    return rc;
}
