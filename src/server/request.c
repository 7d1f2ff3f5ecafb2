/* request.c: request bodies -> struct gen_request (see request.h).
 *
 * Validation is strict about types and ranges (a wrong type is a 400 naming the field, never a
 * silent default) and lenient about what it does not know (unknown fields are ignored: clients
 * send many vendor extensions). Anthropic requests are translated into the OpenAI chat shape
 * here, so the prompt renderer and the scheduler see one kind of conversation.
 */
#include "request.h"

#include "../base/mem.h"
#include "../engine/speculative.h"
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ < 0) return rc_;                                                                   \
    } while (0)

static int oom(struct error *err) {
    return error_set(err, ERR_NOMEM, "out of memory");
}

/* ============================================================================================
 * Shared fields: sampling, stop strings, logit bias
 * ============================================================================================ */

static int parse_stop(const json_t *body, const char *key, struct gen_request *r, struct arena *a,
                      struct error *err) {
    const json_t *v = json_object_get(body, key);
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        r->stop = arena_array(a, 1, sizeof(char *));
        if (!r->stop) return oom(err);
        if (json_string_length(v) == 0) return 0; /* "" stops nothing */
        r->stop[0] = json_string_value(v);
        r->n_stop = 1;
        return 0;
    }
    if (!json_is_array(v))
        return error_set(err, ERR_INVALID, "'%s' must be a string or an array of strings", key);
    if (json_array_size(v) > REQ_MAX_STOP)
        return error_set(err, ERR_INVALID, "'%s' has more than %d entries", key, REQ_MAX_STOP);
    r->stop = arena_array(a, json_array_size(v) + 1, sizeof(char *));
    if (!r->stop) return oom(err);
    size_t i;
    const json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s))
            return error_set(err, ERR_INVALID, "'%s[%zu]' must be a string", key, i);
        if (json_string_length(s) == 0) continue;
        r->stop[r->n_stop++] = json_string_value(s);
    }
    return 0;
}

static int add_bias(struct gen_request *r, int64_t id, double bias, int ban, struct error *err) {
    if (id < 0 || id > INT32_MAX)
        return error_set(err, ERR_INVALID, "'logit_bias': token id %lld out of range",
                         (long long)id);
    r->bias_ids[r->n_bias] = (int32_t)id;
    r->bias_vals[r->n_bias] = ban || bias <= -100 ? -INFINITY : (float)bias;
    r->n_bias++;
    return 0;
}

/* OpenAI's {"token id": bias} object, or llama.cpp's [[id, bias|false], ...]. */
static int parse_logit_bias(const json_t *body, struct gen_request *r, struct arena *a,
                            struct error *err) {
    const json_t *v = json_object_get(body, "logit_bias");
    if (!v || json_is_null(v)) return 0;
    size_t n = json_is_object(v) ? json_object_size(v) : json_is_array(v) ? json_array_size(v) : 0;
    if (!json_is_object(v) && !json_is_array(v))
        return error_set(err, ERR_INVALID, "'logit_bias' must be an object of token id: bias");
    if (n > 4096) return error_set(err, ERR_INVALID, "'logit_bias' has more than 4096 entries");
    r->bias_ids = arena_array(a, n + 1, sizeof(int32_t));
    r->bias_vals = arena_array(a, n + 1, sizeof(float));
    if (!r->bias_ids || !r->bias_vals) return oom(err);
    if (json_is_object(v)) {
        const char *key;
        const json_t *b;
        json_object_foreach((json_t *)v, key, b) {
            char *end;
            long long id = strtoll(key, &end, 10);
            if (!*key || *end)
                return error_set(err, ERR_INVALID, "'logit_bias' key '%.40s' is not a token id",
                                 key);
            if (!json_is_number(b) || !(fabs(json_number_value(b)) <= 100))
                return error_set(err, ERR_INVALID,
                                 "'logit_bias' values must be numbers between -100 and 100");
            TRY(add_bias(r, id, json_number_value(b), 0, err));
        }
        return 0;
    }
    size_t i;
    const json_t *pair;
    json_array_foreach(v, i, pair) {
        const json_t *id = json_array_get(pair, 0), *b = json_array_get(pair, 1);
        if (!json_is_array(pair) || json_array_size(pair) != 2 || !json_is_integer(id) ||
            !(json_is_number(b) || json_is_false(b)))
            return error_set(err, ERR_INVALID, "'logit_bias[%zu]' must be [token id, bias]", i);
        double x = json_is_number(b) ? json_number_value(b) : 0;
        if (!(fabs(x) <= 100))
            return error_set(err, ERR_INVALID, "'logit_bias' values must be between -100 and 100");
        TRY(add_bias(r, json_integer_value(id), x, json_is_false(b), err));
    }
    return 0;
}

static int parse_sampling(const json_t *body, struct gen_request *r, struct error *err) {
    int64_t x;
    TRY(json_get_num(body, "temperature", 0, 100, &r->temperature, err));
    TRY(json_get_num(body, "top_p", 0, 1, &r->top_p, err));
    TRY(json_get_num(body, "min_p", 0, 1, &r->min_p, err));
    int got = json_get_int(body, "top_k", 0, 1 << 30, &x, err);
    if (got < 0) return got;
    if (got) r->top_k = (int)x;
    TRY(json_get_num(body, "presence_penalty", -2, 2, &r->presence_penalty, err));
    TRY(json_get_num(body, "frequency_penalty", -2, 2, &r->frequency_penalty, err));
    TRY(json_get_num(body, "repeat_penalty", 0, 10, &r->repeat_penalty, err));
    TRY(json_get_int(body, "seed", INT64_MIN, INT64_MAX, &r->seed, err));
    TRY(json_get_bool(body, "ignore_eos", &r->ignore_eos, err));
    return 0;
}

/* hearth's per-request speculation: {"speculative": {"mode": NAME, "draft_max": N}}. */
static int parse_speculative(const json_t *body, struct gen_request *r, struct error *err) {
    const json_t *v = json_object_get(body, "speculative");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_object(v))
        return error_set(err, ERR_INVALID,
                         "'speculative' must be an object like {\"mode\": \"ngram\", "
                         "\"draft_max\": 4}");
    int64_t x;
    int got;
    TRY(got = json_get_int(v, "draft_max", 0, SPEC_DRAFT_MAX, &x, err));
    if (got) r->spec_draft_max = (int)x;
    TRY(json_get_str(v, "mode", &r->spec_mode, NULL, err));
    return 0;
}

static int parse_max_tokens(const json_t *body, struct gen_request *r, struct error *err) {
    int64_t x;
    int got;
    TRY(got = json_get_int(body, "max_completion_tokens", 0, INT32_MAX, &x, err));
    if (!got) TRY(got = json_get_int(body, "max_tokens", 0, INT32_MAX, &x, err));
    if (got) {
        r->max_tokens = x;
        return 0;
    }
    /* llama.cpp's native name; -1 means no limit there */
    TRY(got = json_get_int(body, "n_predict", -1, INT32_MAX, &x, err));
    if (got) r->max_tokens = x;
    return 0;
}

static void set_defaults(struct gen_request *r, enum req_api api) {
    r->api = api;
    r->n = 1;
    r->max_tokens = -1;
    r->temperature = api == REQ_API_MESSAGES ? 1.0 : 0.8; /* llama-server's defaults */
    r->top_p = 0.95;
    r->min_p = 0.05;
    r->top_k = 40;
    r->repeat_penalty = 1.0;
    r->seed = -1;
    r->parallel_tool_calls = 1;
    r->spec_draft_max = -1;
}

/* ============================================================================================
 * OpenAI chat messages
 * ============================================================================================ */

/* Text of a content value: a string, or an array of text parts (joined with newlines). Other
 * part types are refused: this server reads text only. *out is a new string (or null when
 * allow_null and the content is null/absent). */
static int content_text(const json_t *c, const char *where, int allow_null, json_t **out,
                        struct error *err) {
    *out = NULL;
    if (!c || json_is_null(c)) {
        if (!allow_null) return error_set(err, ERR_INVALID, "'%s' is required", where);
        *out = json_null();
        return 0;
    }
    if (json_is_string(c)) {
        *out = json_incref((json_t *)c);
        return 0;
    }
    if (!json_is_array(c))
        return error_set(err, ERR_INVALID, "'%s' must be a string or an array of parts", where);
    struct buf b;
    buf_init(&b);
    size_t i;
    const json_t *part;
    int n_text = 0;
    json_array_foreach(c, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const json_t *text = json_object_get(part, "text");
        if (!json_is_object(part) || !type) {
            buf_free(&b);
            return error_set(err, ERR_INVALID, "'%s[%zu]' must be an object with a 'type'", where,
                             i);
        }
        if (strcmp(type, "text") != 0 && strcmp(type, "input_text") != 0) {
            buf_free(&b);
            return error_set(err, ERR_INVALID,
                             "'%s[%zu]': content of type '%.40s' is not supported (text only)",
                             where, i, type);
        }
        if (!json_is_string(text)) {
            buf_free(&b);
            return error_set(err, ERR_INVALID, "'%s[%zu].text' must be a string", where, i);
        }
        if (n_text++) buf_append_char(&b, '\n');
        buf_append(&b, json_string_value(text), json_string_length(text));
    }
    *out = b.failed ? NULL : json_stringn(b.data ? b.data : "", b.len);
    buf_free(&b);
    return *out ? 0 : oom(err);
}

static int set_new(json_t *obj, const char *key, json_t *v, struct error *err) {
    if (!v || json_object_set_new(obj, key, v) != 0) return oom(err);
    return 0;
}

/* Tool calls of an assistant message, with arguments as a JSON string. */
static int norm_tool_calls(const json_t *calls, const char *where, json_t *msg, struct error *err) {
    if (!json_is_array(calls))
        return error_set(err, ERR_INVALID, "'%s.tool_calls' must be an array", where);
    json_t *out = json_array();
    if (!out || json_object_set_new(msg, "tool_calls", out)) return oom(err);
    size_t i;
    const json_t *tc;
    json_array_foreach(calls, i, tc) {
        const json_t *fn = json_object_get(tc, "function");
        const json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
        const json_t *id = json_object_get(tc, "id");
        if (!json_is_object(tc) || !json_is_object(fn) || !json_is_string(name))
            return error_set(err, ERR_INVALID,
                             "'%s.tool_calls[%zu]' must have function.name (a string)", where, i);
        if (id && !json_is_null(id) && !json_is_string(id))
            return error_set(err, ERR_INVALID, "'%s.tool_calls[%zu].id' must be a string", where,
                             i);
        json_t *a;
        if (!args || json_is_null(args)) {
            a = json_string("{}");
        } else if (json_is_string(args)) {
            a = json_incref((json_t *)args);
        } else if (json_is_object(args)) {
            char *s = json_dump_str(args, JSON_COMPACT);
            a = s ? json_string(s) : NULL;
            mem_free(s);
        } else {
            return error_set(err, ERR_INVALID,
                             "'%s.tool_calls[%zu].function.arguments' must be a string", where, i);
        }
        /* json_*_set_new and append_new take the reference even when they fail */
        json_t *f = json_object();
        if (!f || !a || json_object_set_new(f, "name", json_incref((json_t *)name))) {
            json_decref(a);
            json_decref(f);
            return oom(err);
        }
        if (json_object_set_new(f, "arguments", a)) {
            json_decref(f);
            return oom(err);
        }
        json_t *c = json_object();
        if (!c ||
            set_new(c, "id", id && json_is_string(id) ? json_incref((json_t *)id) : json_string(""),
                    err) ||
            set_new(c, "type", json_string("function"), err)) {
            json_decref(c);
            json_decref(f);
            return oom(err);
        }
        if (json_object_set_new(c, "function", f)) {
            json_decref(c);
            return oom(err);
        }
        if (json_array_append_new(out, c)) return oom(err);
    }
    return 0;
}

static int parse_openai_messages(const json_t *body, struct gen_request *r, struct error *err) {
    const json_t *msgs = json_object_get(body, "messages");
    if (!msgs || json_is_null(msgs)) return error_set(err, ERR_INVALID, "'messages' is required");
    if (!json_is_array(msgs)) return error_set(err, ERR_INVALID, "'messages' must be an array");
    if (json_array_size(msgs) == 0)
        return error_set(err, ERR_INVALID, "'messages' must not be empty");
    r->messages = json_array();
    if (!r->messages) return oom(err);
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m) {
        char where[48];
        snprintf(where, sizeof(where), "messages[%zu]", i);
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !role)
            return error_set(err, ERR_INVALID, "'%s' must be an object with a 'role'", where);
        int is_asst = !strcmp(role, "assistant");
        if (!strcmp(role, "developer")) role = "system";
        if (strcmp(role, "system") && strcmp(role, "user") && !is_asst && strcmp(role, "tool"))
            return error_set(err, ERR_INVALID, "'%s.role' must be system, user, assistant or tool",
                             where);
        json_t *nm = json_object();
        if (!nm || json_array_append_new(r->messages, nm)) return oom(err); /* taken either way */
        TRY(set_new(nm, "role", json_string(role), err));
        const json_t *calls = json_object_get(m, "tool_calls");
        int has_calls = is_asst && calls && !json_is_null(calls);
        char cw[64];
        snprintf(cw, sizeof(cw), "%s.content", where);
        json_t *content;
        TRY(content_text(json_object_get(m, "content"), cw, is_asst, &content, err));
        TRY(set_new(nm, "content", content, err));
        if (is_asst) {
            const json_t *rc = json_object_get(m, "reasoning_content");
            if (!rc || json_is_null(rc)) rc = json_object_get(m, "reasoning");
            if (rc && !json_is_null(rc)) {
                if (!json_is_string(rc))
                    return error_set(err, ERR_INVALID, "'%s.reasoning_content' must be a string",
                                     where);
                TRY(set_new(nm, "reasoning_content", json_incref((json_t *)rc), err));
            }
            if (has_calls) TRY(norm_tool_calls(calls, where, nm, err));
        }
        const json_t *id = json_object_get(m, "tool_call_id"), *name = json_object_get(m, "name");
        if (id && !json_is_null(id)) {
            if (!json_is_string(id))
                return error_set(err, ERR_INVALID, "'%s.tool_call_id' must be a string", where);
            TRY(set_new(nm, "tool_call_id", json_incref((json_t *)id), err));
        }
        if (name && !json_is_null(name)) {
            if (!json_is_string(name))
                return error_set(err, ERR_INVALID, "'%s.name' must be a string", where);
            TRY(set_new(nm, "name", json_incref((json_t *)name), err));
        }
    }
    return 0;
}

/* ============================================================================================
 * Tools, tool choice, response format, template variables
 * ============================================================================================ */

static int tool_exists(const json_t *tools, const char *name) {
    size_t i;
    const json_t *t;
    json_array_foreach(tools, i, t) {
        const char *n = json_string_value(json_object_get(json_object_get(t, "function"), "name"));
        if (n && !strcmp(n, name)) return 1;
    }
    return 0;
}

static int parse_openai_tools(const json_t *body, struct gen_request *r, struct error *err) {
    const json_t *tools = json_object_get(body, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools)) return error_set(err, ERR_INVALID, "'tools' must be an array");
        size_t i;
        const json_t *t;
        json_array_foreach(tools, i, t) {
            const json_t *fn = json_object_get(t, "function");
            const char *type = json_string_value(json_object_get(t, "type"));
            const json_t *name = json_object_get(fn, "name"),
                         *params = json_object_get(fn, "parameters");
            if (!json_is_object(t) || (type && strcmp(type, "function")) || !json_is_object(fn))
                return error_set(
                    err, ERR_INVALID,
                    "'tools[%zu]' must be {\"type\": \"function\", \"function\": {...}}", i);
            if (!json_is_string(name) || json_string_length(name) == 0)
                return error_set(err, ERR_INVALID, "'tools[%zu].function.name' must be a string",
                                 i);
            if (params && !json_is_null(params) && !json_is_object(params))
                return error_set(err, ERR_INVALID,
                                 "'tools[%zu].function.parameters' must be an object", i);
        }
        if (json_array_size(tools)) r->tools = json_incref((json_t *)tools);
    }
    const json_t *tc = json_object_get(body, "tool_choice");
    if (tc && !json_is_null(tc)) {
        if (json_is_string(tc)) {
            const char *s = json_string_value(tc);
            if (!strcmp(s, "auto"))
                r->tool_choice = REQ_TOOLS_AUTO;
            else if (!strcmp(s, "none"))
                r->tool_choice = REQ_TOOLS_NONE;
            else if (!strcmp(s, "required"))
                r->tool_choice = REQ_TOOLS_REQUIRED;
            else
                return error_set(err, ERR_INVALID,
                                 "'tool_choice' must be auto, none, required or a function");
        } else {
            const char *name =
                json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
            if (!json_is_object(tc) || !name)
                return error_set(err, ERR_INVALID,
                                 "'tool_choice' must be auto, none, required or "
                                 "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            r->tool_choice = REQ_TOOLS_NAMED;
            r->tool_name = name;
        }
    }
    if ((r->tool_choice == REQ_TOOLS_REQUIRED || r->tool_choice == REQ_TOOLS_NAMED) && !r->tools)
        return error_set(err, ERR_INVALID, "'tool_choice' requires 'tools'");
    if (r->tool_choice == REQ_TOOLS_NAMED && !tool_exists(r->tools, r->tool_name))
        return error_set(err, ERR_INVALID, "'tool_choice' names '%.60s', which is not in 'tools'",
                         r->tool_name);
    TRY(json_get_bool(body, "parallel_tool_calls", &r->parallel_tool_calls, err));
    return 0;
}

static int parse_response_format(const json_t *body, struct gen_request *r, struct error *err) {
    const json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf)) {
        const char *type = json_string_value(json_object_get(rf, "type"));
        if (!json_is_object(rf) || !type)
            return error_set(err, ERR_INVALID, "'response_format' must be an object with a 'type'");
        if (!strcmp(type, "text")) {
            r->format = REQ_FORMAT_TEXT;
        } else if (!strcmp(type, "json_object")) {
            r->format = REQ_FORMAT_JSON_OBJECT;
            const json_t *s = json_object_get(rf, "schema");
            if (s && !json_is_null(s)) {
                if (!json_is_object(s))
                    return error_set(err, ERR_INVALID,
                                     "'response_format.schema' must be an object");
                r->format = REQ_FORMAT_JSON_SCHEMA;
                r->schema = s;
            }
        } else if (!strcmp(type, "json_schema")) {
            const json_t *js = json_object_get(rf, "json_schema");
            const json_t *s = json_object_get(js, "schema");
            if (!json_is_object(js))
                return error_set(err, ERR_INVALID, "'response_format.json_schema' is required");
            if (!s || json_is_null(s)) {
                r->format = REQ_FORMAT_JSON_OBJECT; /* a name without a schema: any object */
            } else {
                if (!json_is_object(s) && !json_is_boolean(s))
                    return error_set(err, ERR_INVALID,
                                     "'response_format.json_schema.schema' must be an object");
                r->format = REQ_FORMAT_JSON_SCHEMA;
                r->schema = s;
            }
        } else {
            return error_set(err, ERR_INVALID,
                             "'response_format.type' must be text, json_object or json_schema");
        }
    }
    const json_t *s = json_object_get(body, "json_schema"); /* llama.cpp extension */
    if (s && !json_is_null(s)) {
        if (!json_is_object(s))
            return error_set(err, ERR_INVALID, "'json_schema' must be an object");
        r->format = REQ_FORMAT_JSON_SCHEMA;
        r->schema = s;
    }
    return 0;
}

/* chat_template_kwargs, plus the thinking switches clients use (top-level enable_thinking,
 * reasoning_effort "none", Anthropic's thinking.type), in that order of precedence. */
static int parse_template_kwargs(const json_t *body, struct gen_request *r, int thinking,
                                 struct error *err) {
    const json_t *kw = json_object_get(body, "chat_template_kwargs");
    if (kw && !json_is_null(kw) && !json_is_object(kw))
        return error_set(err, ERR_INVALID, "'chat_template_kwargs' must be an object");
    r->template_kwargs = kw && json_is_object(kw) ? json_deep_copy(kw) : json_object();
    if (!r->template_kwargs) return oom(err);
    if (json_object_get(r->template_kwargs, "enable_thinking")) return 0;
    int et;
    int got = json_get_bool(body, "enable_thinking", &et, err);
    if (got < 0) return got;
    if (!got) {
        const char *effort = json_string_value(json_object_get(body, "reasoning_effort"));
        if (effort && !strcmp(effort, "none")) {
            et = 0;
            got = 1;
        } else if (thinking >= 0) {
            et = thinking;
            got = 1;
        }
    }
    if (got && json_object_set_new(r->template_kwargs, "enable_thinking", json_boolean(et)))
        return oom(err);
    return 0;
}

/* ============================================================================================
 * Per-API parsers
 * ============================================================================================ */

static int parse_common(const json_t *body, struct gen_request *r, struct arena *a,
                        struct error *err) {
    const char *model;
    int got = json_get_str(body, "model", &model, NULL, err);
    if (got < 0) return got;
    if (got) r->model = model;
    TRY(json_get_bool(body, "stream", &r->stream, err));
    const json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return error_set(err, ERR_INVALID, "'stream_options' must be an object");
        TRY(json_get_bool(so, "include_usage", &r->include_usage, err));
    }
    int64_t n;
    if ((got = json_get_int(body, "n", 1, REQ_MAX_N, &n, err)) < 0) return got;
    if (got) r->n = (int)n;
    TRY(parse_max_tokens(body, r, err));
    TRY(parse_sampling(body, r, err));
    TRY(parse_logit_bias(body, r, a, err));
    TRY(parse_speculative(body, r, err));
    return 0;
}

static int parse_chat(const json_t *body, struct gen_request *r, struct arena *a,
                      struct error *err) {
    TRY(parse_common(body, r, a, err));
    TRY(parse_stop(body, "stop", r, a, err));
    TRY(json_get_bool(body, "logprobs", &r->logprobs, err));
    int64_t k;
    int got = json_get_int(body, "top_logprobs", 0, REQ_MAX_PROBS, &k, err);
    if (got < 0) return got;
    if (got) {
        if (!r->logprobs)
            return error_set(err, ERR_INVALID, "'top_logprobs' needs 'logprobs': true");
        r->top_logprobs = (int)k;
    }
    TRY(parse_openai_messages(body, r, err));
    TRY(parse_openai_tools(body, r, err));
    TRY(parse_response_format(body, r, err));
    TRY(parse_template_kwargs(body, r, -1, err));
    return 0;
}

static int parse_prompt_ids(const json_t *arr, struct req_prompt *p, struct arena *a,
                            const char *where, struct error *err) {
    size_t n = json_array_size(arr);
    p->ids = arena_array(a, n + 1, sizeof(int32_t));
    if (!p->ids) return oom(err);
    size_t i;
    const json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            return error_set(err, ERR_INVALID, "'%s[%zu]' must be a token id", where, i);
        p->ids[i] = (int32_t)json_integer_value(v);
    }
    p->n_ids = (int)n;
    return 0;
}

static int parse_completion(const json_t *body, struct gen_request *r, struct arena *a,
                            struct error *err) {
    TRY(parse_common(body, r, a, err));
    TRY(parse_stop(body, "stop", r, a, err));
    int64_t k;
    int got = json_get_int(body, "logprobs", 0, REQ_MAX_PROBS, &k, err);
    if (got < 0) return got;
    if (got) {
        r->logprobs = 1;
        r->top_logprobs = (int)k;
    }
    int echo = 0;
    TRY(json_get_bool(body, "echo", &echo, err));
    if (echo) return error_set(err, ERR_INVALID, "'echo' is not supported");
    int64_t best_of = 1;
    TRY(json_get_int(body, "best_of", 1, REQ_MAX_N, &best_of, err));
    if (best_of != 1) return error_set(err, ERR_INVALID, "'best_of' is not supported");
    const json_t *suffix = json_object_get(body, "suffix");
    if (suffix && !json_is_null(suffix))
        return error_set(err, ERR_INVALID, "'suffix' is not supported");
    const json_t *p = json_object_get(body, "prompt");
    if (!p || json_is_null(p)) return error_set(err, ERR_INVALID, "'prompt' is required");
    if (json_is_string(p)) {
        r->prompts = arena_array(a, 1, sizeof(*r->prompts));
        if (!r->prompts) return oom(err);
        r->prompts[0].text = json_string_value(p);
        r->prompts[0].len = json_string_length(p);
        r->n_prompts = 1;
    } else if (json_is_array(p) && json_array_size(p) > 0) {
        const json_t *first = json_array_get(p, 0);
        if (json_is_integer(first)) { /* one prompt of token ids */
            r->prompts = arena_array(a, 1, sizeof(*r->prompts));
            if (!r->prompts) return oom(err);
            TRY(parse_prompt_ids(p, &r->prompts[0], a, "prompt", err));
            r->n_prompts = 1;
        } else {
            size_t n = json_array_size(p);
            if (n > REQ_MAX_N) return error_set(err, ERR_INVALID, "at most %d prompts", REQ_MAX_N);
            r->prompts = arena_array(a, n, sizeof(*r->prompts));
            if (!r->prompts) return oom(err);
            size_t i;
            const json_t *v;
            json_array_foreach(p, i, v) {
                char where[32];
                snprintf(where, sizeof(where), "prompt[%zu]", i);
                if (json_is_string(v)) {
                    r->prompts[i].text = json_string_value(v);
                    r->prompts[i].len = json_string_length(v);
                } else if (json_is_array(v) && json_array_size(v) > 0) {
                    TRY(parse_prompt_ids(v, &r->prompts[i], a, where, err));
                } else {
                    return error_set(err, ERR_INVALID,
                                     "'%s' must be a string or an array of token ids", where);
                }
            }
            r->n_prompts = (int)n;
        }
    } else {
        return error_set(err, ERR_INVALID,
                         "'prompt' must be a string, an array of strings or of token ids");
    }
    if (r->n_prompts * r->n > REQ_MAX_N)
        return error_set(err, ERR_INVALID, "at most %d completions per request", REQ_MAX_N);
    TRY(parse_response_format(body, r, err));
    return 0;
}

/* ---- Anthropic messages ---- */

/* Text of an Anthropic content value (string or text blocks); other block types refused unless
 * skip_other. A NULL *out means no text. */
static int anthropic_text(const json_t *c, const char *where, json_t **out, struct error *err) {
    *out = NULL;
    if (json_is_string(c)) {
        *out = json_incref((json_t *)c);
        return 0;
    }
    if (!json_is_array(c))
        return error_set(err, ERR_INVALID, "'%s' must be a string or an array of blocks", where);
    struct buf b;
    buf_init(&b);
    size_t i;
    const json_t *blk;
    int n = 0;
    json_array_foreach(c, i, blk) {
        const char *type = json_string_value(json_object_get(blk, "type"));
        const json_t *text = json_object_get(blk, "text");
        if (!type || strcmp(type, "text") || !json_is_string(text)) {
            buf_free(&b);
            return error_set(err, ERR_INVALID, "'%s[%zu]' must be a text block", where, i);
        }
        if (n++) buf_append_char(&b, '\n');
        buf_append(&b, json_string_value(text), json_string_length(text));
    }
    *out = b.failed ? NULL : json_stringn(b.data ? b.data : "", b.len);
    buf_free(&b);
    return *out ? 0 : oom(err);
}

static json_t *new_msg(json_t *msgs, const char *role) {
    json_t *m = json_object();
    if (!m || json_array_append_new(msgs, m) || json_object_set_new(m, "role", json_string(role)))
        return NULL;
    return m;
}

/* Claude Code puts a per-request billing line (x-anthropic-billing-header: ...; cch=<hash>) in
 * the first system block; it changes every request and would defeat prefix caching. */
static int is_billing_block(const char *s) {
    return !strncmp(s, "x-anthropic-billing-header", 26);
}

static int anthropic_system(const json_t *body, struct gen_request *r, struct error *err) {
    const json_t *sys = json_object_get(body, "system");
    if (!sys || json_is_null(sys)) return 0;
    struct buf b;
    buf_init(&b);
    if (json_is_string(sys)) {
        if (!is_billing_block(json_string_value(sys)))
            buf_append(&b, json_string_value(sys), json_string_length(sys));
    } else if (json_is_array(sys)) {
        size_t i;
        const json_t *blk;
        int n = 0;
        json_array_foreach(sys, i, blk) {
            const json_t *text = json_object_get(blk, "text");
            if (!json_is_object(blk) || !json_is_string(text)) {
                buf_free(&b);
                return error_set(err, ERR_INVALID, "'system[%zu]' must be a text block", i);
            }
            if (is_billing_block(json_string_value(text))) continue;
            if (n++) buf_append_char(&b, '\n');
            buf_append(&b, json_string_value(text), json_string_length(text));
        }
    } else {
        return error_set(err, ERR_INVALID, "'system' must be a string or an array of text blocks");
    }
    int rc = 0;
    if (b.failed) {
        rc = oom(err);
    } else if (b.len) {
        json_t *m = new_msg(r->messages, "system");
        if (!m || json_object_set_new(m, "content", json_stringn(b.data, b.len))) rc = oom(err);
    }
    buf_free(&b);
    return rc;
}

static int anthropic_user(const json_t *content, const char *where, struct gen_request *r,
                          struct error *err) {
    if (json_is_string(content)) {
        json_t *m = new_msg(r->messages, "user");
        if (!m || json_object_set(m, "content", (json_t *)content)) return oom(err);
        return 0;
    }
    if (!json_is_array(content))
        return error_set(err, ERR_INVALID, "'%s.content' must be a string or an array", where);
    struct buf b;
    buf_init(&b);
    size_t i;
    const json_t *blk;
    int n_text = 0, rc = 0;
    json_array_foreach(content, i, blk) {
        const char *type = json_string_value(json_object_get(blk, "type"));
        if (!json_is_object(blk) || !type) {
            rc = error_set(err, ERR_INVALID, "'%s.content[%zu]' must be a block with a 'type'",
                           where, i);
            break;
        }
        if (!strcmp(type, "text")) {
            const json_t *text = json_object_get(blk, "text");
            if (!json_is_string(text)) {
                rc = error_set(err, ERR_INVALID, "'%s.content[%zu].text' must be a string", where,
                               i);
                break;
            }
            if (n_text++) buf_append_char(&b, '\n');
            buf_append(&b, json_string_value(text), json_string_length(text));
        } else if (!strcmp(type, "tool_result")) {
            const json_t *id = json_object_get(blk, "tool_use_id");
            const json_t *c = json_object_get(blk, "content");
            char w[96];
            snprintf(w, sizeof(w), "%s.content[%zu].content", where, i);
            json_t *text = NULL;
            if (!json_is_string(id)) {
                rc = error_set(err, ERR_INVALID, "'%s.content[%zu].tool_use_id' must be a string",
                               where, i);
                break;
            }
            if (!c || json_is_null(c)) {
                text = json_string("");
            } else if ((rc = anthropic_text(c, w, &text, err)) < 0) {
                break;
            }
            json_t *m = new_msg(r->messages, "tool");
            if (!m) json_decref(text);
            if (!m || !text || json_object_set_new(m, "content", text) ||
                json_object_set(m, "tool_call_id", (json_t *)id)) {
                rc = oom(err);
                break;
            }
        } else if (!strcmp(type, "image") || !strcmp(type, "document")) {
            rc = error_set(err, ERR_INVALID,
                           "'%s.content[%zu]': %s blocks are not supported (text only)", where, i,
                           type);
            break;
        } /* other blocks (e.g. cache hints, server tool results) carry no prompt text */
    }
    if (!rc && n_text) {
        json_t *m = new_msg(r->messages, "user");
        if (b.failed || !m || json_object_set_new(m, "content", json_stringn(b.data, b.len)))
            rc = oom(err);
    }
    buf_free(&b);
    return rc;
}

static int anthropic_assistant(const json_t *content, const char *where, struct gen_request *r,
                               struct error *err) {
    json_t *m = new_msg(r->messages, "assistant");
    if (!m) return oom(err);
    if (json_is_string(content))
        return json_object_set(m, "content", (json_t *)content) ? oom(err) : 0;
    if (!json_is_array(content))
        return error_set(err, ERR_INVALID, "'%s.content' must be a string or an array", where);
    struct buf text, think;
    buf_init(&text);
    buf_init(&think);
    json_t *calls = NULL;
    size_t i;
    const json_t *blk;
    int rc = 0;
    json_array_foreach(content, i, blk) {
        const char *type = json_string_value(json_object_get(blk, "type"));
        if (!json_is_object(blk) || !type) {
            rc = error_set(err, ERR_INVALID, "'%s.content[%zu]' must be a block with a 'type'",
                           where, i);
            break;
        }
        if (!strcmp(type, "text")) {
            const json_t *t = json_object_get(blk, "text");
            if (!json_is_string(t)) {
                rc = error_set(err, ERR_INVALID, "'%s.content[%zu].text' must be a string", where,
                               i);
                break;
            }
            buf_append(&text, json_string_value(t), json_string_length(t));
        } else if (!strcmp(type, "thinking")) {
            const json_t *t = json_object_get(blk, "thinking");
            if (json_is_string(t)) buf_append(&think, json_string_value(t), json_string_length(t));
        } else if (!strcmp(type, "tool_use")) {
            const json_t *id = json_object_get(blk, "id"), *name = json_object_get(blk, "name");
            const json_t *input = json_object_get(blk, "input");
            if (!json_is_string(name) || (id && !json_is_string(id)) ||
                (input && !json_is_object(input))) {
                rc = error_set(err, ERR_INVALID,
                               "'%s.content[%zu]': tool_use needs a name, an id and an object "
                               "input",
                               where, i);
                break;
            }
            if (!calls && !(calls = json_array())) {
                rc = oom(err);
                break;
            }
            char *args = input ? json_dump_str(input, JSON_COMPACT) : NULL;
            json_t *c = json_pack("{s:O?,s:s,s:{s:O,s:s}}", "id", id, "type", "function",
                                  "function", "name", name, "arguments", args ? args : "{}");
            mem_free(args);
            if (!c || json_array_append_new(calls, c)) {
                rc = oom(err);
                break;
            }
        }
    }
    if (!rc) {
        if (text.failed || think.failed ||
            json_object_set_new(m, "content",
                                text.len ? json_stringn(text.data, text.len) : json_null()) ||
            (think.len &&
             json_object_set_new(m, "reasoning_content", json_stringn(think.data, think.len))) ||
            (calls && json_object_set(m, "tool_calls", calls)))
            rc = oom(err);
    }
    json_decref(calls);
    buf_free(&text);
    buf_free(&think);
    return rc;
}

static int anthropic_tools(const json_t *body, struct gen_request *r, struct error *err) {
    const json_t *tools = json_object_get(body, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools)) return error_set(err, ERR_INVALID, "'tools' must be an array");
        json_t *out = json_array();
        if (!out) return oom(err);
        size_t i;
        const json_t *t;
        json_array_foreach(tools, i, t) {
            const json_t *name = json_object_get(t, "name"),
                         *schema = json_object_get(t, "input_schema");
            const json_t *desc = json_object_get(t, "description");
            const char *type = json_string_value(json_object_get(t, "type"));
            if (!json_is_object(t) || !json_is_string(name)) {
                json_decref(out);
                return error_set(err, ERR_INVALID, "'tools[%zu].name' must be a string", i);
            }
            if (type && strcmp(type, "custom") && !schema) continue; /* server-side tools */
            if (schema && !json_is_object(schema)) {
                json_decref(out);
                return error_set(err, ERR_INVALID, "'tools[%zu].input_schema' must be an object",
                                 i);
            }
            json_t *fn = json_pack("{s:O}", "name", name);
            if (fn && desc && json_is_string(desc))
                json_object_set(fn, "description", (json_t *)desc);
            if (fn && schema) json_object_set(fn, "parameters", (json_t *)schema);
            json_t *ot = fn ? json_pack("{s:s,s:o}", "type", "function", "function", fn) : NULL;
            if (!ot || json_array_append_new(out, ot)) {
                json_decref(out);
                return oom(err);
            }
        }
        if (json_array_size(out))
            r->tools = out;
        else
            json_decref(out);
    }
    const json_t *tc = json_object_get(body, "tool_choice");
    if (tc && !json_is_null(tc)) {
        const char *type = json_string_value(json_object_get(tc, "type"));
        if (!json_is_object(tc) || !type)
            return error_set(err, ERR_INVALID, "'tool_choice' must be an object with a 'type'");
        if (!strcmp(type, "auto")) {
            r->tool_choice = REQ_TOOLS_AUTO;
        } else if (!strcmp(type, "any")) {
            r->tool_choice = REQ_TOOLS_REQUIRED;
        } else if (!strcmp(type, "none")) {
            r->tool_choice = REQ_TOOLS_NONE;
        } else if (!strcmp(type, "tool")) {
            r->tool_name = json_string_value(json_object_get(tc, "name"));
            if (!r->tool_name) return error_set(err, ERR_INVALID, "'tool_choice.name' is required");
            r->tool_choice = REQ_TOOLS_NAMED;
        } else {
            return error_set(err, ERR_INVALID,
                             "'tool_choice.type' must be auto, any, tool or none");
        }
        int dis = 0;
        TRY(json_get_bool(tc, "disable_parallel_tool_use", &dis, err));
        if (dis) r->parallel_tool_calls = 0;
    }
    if ((r->tool_choice == REQ_TOOLS_REQUIRED || r->tool_choice == REQ_TOOLS_NAMED) && !r->tools)
        return error_set(err, ERR_INVALID, "'tool_choice' requires 'tools'");
    if (r->tool_choice == REQ_TOOLS_NAMED && !tool_exists(r->tools, r->tool_name))
        return error_set(err, ERR_INVALID, "'tool_choice' names '%.60s', which is not in 'tools'",
                         r->tool_name);
    return 0;
}

static int parse_messages_api(const json_t *body, struct gen_request *r, struct arena *a,
                              struct error *err) {
    const char *model;
    int got = json_get_str(body, "model", &model, NULL, err);
    if (got < 0) return got;
    if (got) r->model = model;
    TRY(json_get_bool(body, "stream", &r->stream, err));
    int64_t x;
    TRY(got = json_get_int(body, "max_tokens", 0, INT32_MAX, &x, err));
    r->max_tokens = got ? x : 4096; /* required by Anthropic; llama-server's default */
    TRY(json_get_num(body, "temperature", 0, 2, &r->temperature, err));
    TRY(json_get_num(body, "top_p", 0, 1, &r->top_p, err));
    if ((got = json_get_int(body, "top_k", 0, 1 << 30, &x, err)) < 0) return got;
    if (got) r->top_k = (int)x;
    TRY(parse_stop(body, "stop_sequences", r, a, err));
    TRY(parse_speculative(body, r, err));
    int thinking = -1;
    const json_t *th = json_object_get(body, "thinking");
    if (th && !json_is_null(th)) {
        const char *type = json_string_value(json_object_get(th, "type"));
        if (!json_is_object(th) || !type)
            return error_set(err, ERR_INVALID, "'thinking' must be an object with a 'type'");
        thinking = strcmp(type, "disabled") != 0;
    }
    const json_t *msgs = json_object_get(body, "messages");
    if (!msgs || json_is_null(msgs)) return error_set(err, ERR_INVALID, "'messages' is required");
    if (!json_is_array(msgs)) return error_set(err, ERR_INVALID, "'messages' must be an array");
    if (json_array_size(msgs) == 0)
        return error_set(err, ERR_INVALID, "'messages' must not be empty");
    r->messages = json_array();
    if (!r->messages) return oom(err);
    TRY(anthropic_system(body, r, err));
    size_t i;
    const json_t *m;
    json_array_foreach(msgs, i, m) {
        char where[32];
        snprintf(where, sizeof(where), "messages[%zu]", i);
        const char *role = json_string_value(json_object_get(m, "role"));
        const json_t *content = json_object_get(m, "content");
        if (!json_is_object(m) || !role)
            return error_set(err, ERR_INVALID, "'%s' must be an object with a 'role'", where);
        if (!content || json_is_null(content))
            return error_set(err, ERR_INVALID, "'%s.content' is required", where);
        if (!strcmp(role, "user"))
            TRY(anthropic_user(content, where, r, err));
        else if (!strcmp(role, "assistant"))
            TRY(anthropic_assistant(content, where, r, err));
        else
            return error_set(err, ERR_INVALID, "'%s.role' must be user or assistant", where);
    }
    TRY(anthropic_tools(body, r, err));
    TRY(parse_template_kwargs(body, r, thinking, err));
    return 0;
}

/* ============================================================================================
 * Entry points
 * ============================================================================================ */

int req_parse(enum req_api api, const char *body, size_t len, struct arena *a,
              struct gen_request **out, struct error *err) {
    *out = NULL;
    struct gen_request *r = arena_alloc(a, sizeof(*r));
    if (!r) return oom(err);
    set_defaults(r, api);
    int rc = json_parse_object(body, len, &r->body, err);
    if (rc) return rc;
    switch (api) {
    case REQ_API_CHAT:
        rc = parse_chat(r->body, r, a, err);
        break;
    case REQ_API_COMPLETION:
        rc = parse_completion(r->body, r, a, err);
        break;
    case REQ_API_MESSAGES:
        rc = parse_messages_api(r->body, r, a, err);
        break;
    }
    if (rc) {
        req_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void req_free(struct gen_request *r) {
    if (!r) return;
    json_decref(r->messages);
    json_decref(r->tools);
    json_decref(r->template_kwargs);
    json_decref(r->body);
    r->messages = r->tools = r->template_kwargs = r->body = NULL;
}

int req_n_tasks(const struct gen_request *r) {
    return r->api == REQ_API_COMPLETION ? r->n_prompts * r->n : r->n;
}
