/* server.c: server lifetime, routing, authentication, the error mapping, and the small
 * endpoints (/health, /v1/models, /metrics, /tokenize, /detokenize).
 *
 * Routes answer with and without the /v1 prefix (clients differ, llama-server does the same).
 * Authentication is checked before anything is parsed; /health stays public so supervisors can
 * probe it. Errors of every endpoint leave through api_error_json, the one mapping from error
 * codes to HTTP statuses and JSON bodies.
 */
#include "api.h"

#include "../base/log.h"
#include "../base/mem.h"
#include "../text/chat_template.h"
#include "utf8.h"

#include <stdio.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ============================================================================================
 * Errors
 * ============================================================================================ */

int api_err_set(struct api_err *e, int code, const char *fmt, ...) {
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return code;
}

json_t *api_error_json(enum api_flavor f, const struct api_err *e, int *status) {
    int st;
    const char *type, *atype; /* OpenAI/llama-server type, Anthropic type */
    switch (e->code) {
    case ERR_FORMAT:
    case ERR_INVALID:
    case ERR_RANGE:
    case ERR_UNSUPPORTED:
        st = 400, type = "invalid_request_error", atype = "invalid_request_error";
        break;
    case API_ERR_CONTEXT:
        st = 400, type = "exceed_context_size_error", atype = "invalid_request_error";
        break;
    case API_ERR_AUTH:
        st = 401, type = "authentication_error", atype = type;
        break;
    case ERR_NOT_FOUND:
        st = 404, type = "not_found_error", atype = type;
        break;
    case API_ERR_METHOD:
        st = 405, type = "invalid_request_error", atype = "invalid_request_error";
        break;
    case API_ERR_TOO_LARGE:
        st = 413, type = "invalid_request_error", atype = "request_too_large";
        break;
    case ERR_CANCELLED:
        st = 503, type = "unavailable_error", atype = "overloaded_error";
        break;
    default:
        st = 500, type = "server_error", atype = "api_error";
        break;
    }
    *status = st;
    json_t *msg = json_str_lossy(e->msg, strlen(e->msg));
    json_t *v;
    if (f == API_ANTHROPIC) {
        v = json_pack("{s:s,s:{s:s,s:o}}", "type", "error", "error", "type", atype, "message", msg);
    } else {
        v = json_pack("{s:{s:o,s:s,s:n,s:i}}", "error", "message", msg, "type", type, "param",
                      "code", st);
        if (v && e->code == API_ERR_CONTEXT) {
            json_t *o = json_object_get(v, "error");
            json_object_set_new(o, "n_prompt_tokens", json_integer(e->n_prompt));
            json_object_set_new(o, "n_ctx", json_integer(e->n_ctx));
        }
    }
    return v;
}

void api_reply_json(struct server *s, struct http_req *req, int status, json_t *v) {
    (void)s;
    struct buf b;
    buf_init(&b);
    if (!v || json_dump_to(v, &b)) {
        buf_free(&b);
        json_decref(v);
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"server_error\",\"code\":500}}";
        http_reply(req, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    buf_append_char(&b, '\n');
    http_reply(req, status, "application/json", b.data, b.len);
    buf_free(&b);
    json_decref(v);
}

void api_reply_error(struct server *s, struct http_req *req, enum api_flavor f,
                     const struct api_err *e) {
    int status;
    json_t *v = api_error_json(f, e, &status);
    if (status >= 500)
        atomic_fetch_add(&s->n_errors_5xx, 1);
    else
        atomic_fetch_add(&s->n_errors_4xx, 1);
    LOG_INFO("%s %s -> %d: %s", http_req_method(req), http_req_path(req), status, e->msg);
    api_reply_json(s, req, status, v);
}

static uint64_t splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void api_new_id(struct server *s, const char *prefix, char *out, size_t cap) {
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = splitmix(atomic_fetch_add(&s->id_seq, 1) ^ (uint64_t)ts.tv_nsec ^
                          ((uint64_t)ts.tv_sec << 30));
    size_t n = strlen(prefix);
    if (n >= cap) n = cap - 1;
    memcpy(out, prefix, n);
    for (int i = 0; i < 24 && n + 1 < cap; i++) {
        if (i == 12) x = splitmix(x);
        out[n++] = alnum[x % 62];
        x /= 62;
    }
    out[n] = 0;
}

/* ============================================================================================
 * Small endpoints
 * ============================================================================================ */

static void ep_health(struct server *s, struct http_req *req) {
    api_reply_json(s, req, 200, json_pack("{s:s}", "status", "ok"));
}

static void ep_models(struct server *s, struct http_req *req) {
    json_t *meta = json_pack("{s:s,s:i,s:i,s:i,s:I,s:I,s:i}", "arch", s->info.arch, "n_vocab",
                             s->info.n_vocab, "n_ctx_train", s->info.n_ctx_train, "n_ctx",
                             sched_n_ctx(s->sched), "n_params", (json_int_t)s->info.n_params,
                             "size", (json_int_t)s->info.file_bytes, "n_parallel", s->o.n_parallel);
    json_t *m = json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", s->alias, "object", "model", "created",
                          (json_int_t)s->t_start, "owned_by", "hearth", "meta", meta);
    api_reply_json(s, req, 200, json_pack("{s:s,s:[o]}", "object", "list", "data", m));
}

static void metric(struct buf *b, const char *name, const char *type, const char *help, double v) {
    buf_printf(b, "# HELP hearth_%s %s\n# TYPE hearth_%s %s\nhearth_%s %.17g\n", name, help, name,
               type, name, v);
}

/* A metric with one value per drafter (label drafter="ngram"|"draft"|"mtp"). */
static void metric_by_drafter(struct buf *b, const char *name, const char *help,
                              const uint64_t *v) {
    buf_printf(b, "# HELP hearth_%s %s\n# TYPE hearth_%s counter\n", name, help, name);
    for (int i = 0; i < SPEC_SRC_COUNT; i++)
        buf_printf(b, "hearth_%s{drafter=\"%s\"} %llu\n", name,
                   spec_source_name((enum spec_source)i), (unsigned long long)v[i]);
}

static void ep_metrics(struct server *s, struct http_req *req) {
    struct sched_stats st;
    sched_get_stats(s->sched, &st);
    struct buf b;
    buf_init(&b);
    metric(&b, "requests_total", "counter", "HTTP requests received.",
           (double)atomic_load(&s->n_requests));
    metric(&b, "requests_errors_4xx_total", "counter", "Requests answered with a 4xx error.",
           (double)atomic_load(&s->n_errors_4xx));
    metric(&b, "requests_errors_5xx_total", "counter", "Requests answered with a 5xx error.",
           (double)atomic_load(&s->n_errors_5xx));
    metric(&b, "requests_disconnected_total", "counter",
           "Generations stopped because the client went away.",
           (double)atomic_load(&s->n_disconnects));
    metric(&b, "generations_total", "counter", "Generations finished (one per choice).",
           (double)st.tasks_done);
    metric(&b, "prompt_tokens_total", "counter", "Prompt tokens evaluated.",
           (double)st.prompt_tokens);
    metric(&b, "prompt_tokens_cached_total", "counter", "Prompt tokens reused from the cache.",
           (double)st.prompt_tokens_cached);
    metric(&b, "prompt_cache_hits_total", "counter", "Generations that reused a cached prefix.",
           (double)st.cache_hits);
    metric(&b, "prompt_seconds_total", "counter", "Time spent on prompt tokens.",
           st.prompt_seconds);
    metric(&b, "tokens_predicted_total", "counter", "Tokens generated.",
           (double)st.tokens_generated);
    metric(&b, "tokens_predicted_seconds_total", "counter", "Time spent on generated tokens.",
           st.gen_seconds);
    metric(&b, "prompt_tokens_seconds", "gauge", "Average prompt throughput (tokens/s).",
           st.prompt_seconds > 0 ? (double)st.prompt_tokens / st.prompt_seconds : 0);
    metric(&b, "predicted_tokens_seconds", "gauge", "Average generation throughput (tokens/s).",
           st.gen_seconds > 0 ? (double)st.tokens_generated / st.gen_seconds : 0);
    metric(&b, "requests_processing", "gauge", "Slots generating now.", st.n_busy);
    metric(&b, "requests_deferred", "gauge", "Generations waiting for a slot.", st.n_queued);
    metric(&b, "slots_total", "gauge", "Slots (--parallel).", st.n_slots);
    metric(&b, "decode_total", "counter", "Forward passes.", (double)st.n_steps);
    metric(&b, "busy_slots_per_decode", "gauge", "Average sequences served per forward pass.",
           st.n_steps ? (double)st.busy_slot_steps / (double)st.n_steps : 0);
    metric(&b, "prompt_cache_entries", "gauge", "Saved prefixes in the RAM cache.",
           st.n_cache_entries);
    metric(&b, "prompt_cache_bytes", "gauge", "Bytes held by the RAM prefix cache.",
           (double)st.cache_bytes);
    metric(&b, "n_tokens_max", "counter", "Longest sequence held by a slot.", st.n_ctx_max);
    uint64_t drafted = 0, accepted = 0;
    for (int i = 0; i < SPEC_SRC_COUNT; i++) {
        drafted += st.spec_drafted[i];
        accepted += st.spec_accepted[i];
    }
    metric(&b, "spec_drafts_total", "counter",
           "Speculative verify passes (a slot's step that carried a draft).",
           (double)st.spec_drafts);
    metric(&b, "spec_draft_tokens_total", "counter", "Draft tokens verified.", (double)drafted);
    metric(&b, "spec_accepted_tokens_total", "counter", "Draft tokens accepted.", (double)accepted);
    metric(&b, "spec_acceptance_rate", "gauge", "Accepted over verified draft tokens.",
           drafted ? (double)accepted / (double)drafted : 0);
    metric_by_drafter(&b, "spec_drafter_draft_tokens_total", "Draft tokens verified, per drafter.",
                      st.spec_drafted);
    metric_by_drafter(&b, "spec_drafter_accepted_tokens_total",
                      "Draft tokens accepted, per drafter.", st.spec_accepted);
    if (b.failed) {
        buf_free(&b);
        struct api_err e;
        api_err_set(&e, ERR_NOMEM, "out of memory");
        api_reply_error(s, req, API_OPENAI, &e);
        return;
    }
    http_reply(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    buf_free(&b);
}

static json_t *piece_json(struct server *s, int32_t id) {
    struct buf p;
    buf_init(&p);
    engine_token_piece(s->e, id, 1, &p);
    json_t *v;
    if (utf8_valid(p.data ? p.data : "", p.len)) {
        v = json_stringn(p.data ? p.data : "", p.len);
    } else { /* not text on its own: the bytes, as llama-server does */
        v = json_array();
        for (size_t i = 0; v && i < p.len; i++)
            json_array_append_new(v, json_integer((unsigned char)p.data[i]));
    }
    buf_free(&p);
    return v;
}

static void ep_tokenize(struct server *s, struct http_req *req) {
    size_t len;
    const char *body = http_req_body(req, &len);
    struct error err = {0};
    struct api_err e = {0};
    json_t *v = NULL, *out = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    const char *content;
    size_t clen = 0;
    int add_special = 0, parse_special = 1, with_pieces = 0, got;
    if (json_parse_object(body, len, &v, &err) ||
        (got = json_get_str(v, "content", &content, &clen, &err)) < 0 ||
        json_get_bool(v, "add_special", &add_special, &err) < 0 ||
        json_get_bool(v, "parse_special", &parse_special, &err) < 0 ||
        json_get_bool(v, "with_pieces", &with_pieces, &err) < 0) {
        api_err_set(&e, err.code, "%s", err.msg);
        goto fail;
    }
    if (!got) {
        api_err_set(&e, ERR_INVALID, "'content' is required");
        goto fail;
    }
    if (engine_tokenize(s->e, content, clen, add_special && engine_add_bos(s->e), parse_special,
                        &ids, &n, &err)) {
        api_err_set(&e, err.code, "%s", err.msg);
        goto fail;
    }
    json_t *toks = json_array();
    for (int64_t i = 0; toks && i < n; i++) {
        json_t *t = with_pieces
                        ? json_pack("{s:i,s:o}", "id", ids[i], "piece", piece_json(s, ids[i]))
                        : json_integer(ids[i]);
        if (!t || json_array_append_new(toks, t)) {
            json_decref(toks);
            toks = NULL;
        }
    }
    mem_free(ids);
    json_decref(v);
    out = toks ? json_pack("{s:o}", "tokens", toks) : NULL;
    api_reply_json(s, req, 200, out);
    return;
fail:
    json_decref(v);
    api_reply_error(s, req, API_OPENAI, &e);
}

static void ep_detokenize(struct server *s, struct http_req *req) {
    size_t len;
    const char *body = http_req_body(req, &len);
    struct error err = {0};
    struct api_err e = {0};
    json_t *v = NULL;
    if (json_parse_object(body, len, &v, &err)) {
        api_err_set(&e, err.code, "%s", err.msg);
        api_reply_error(s, req, API_OPENAI, &e);
        return;
    }
    const json_t *toks = json_object_get(v, "tokens");
    if (!json_is_array(toks)) {
        json_decref(v);
        api_err_set(&e, ERR_INVALID, "'tokens' must be an array of token ids");
        api_reply_error(s, req, API_OPENAI, &e);
        return;
    }
    size_t n = json_array_size(toks);
    int32_t *ids = mem_alloc((n ? n : 1) * sizeof(int32_t));
    if (!ids) {
        json_decref(v);
        api_err_set(&e, ERR_NOMEM, "out of memory");
        api_reply_error(s, req, API_OPENAI, &e);
        return;
    }
    size_t i;
    const json_t *t;
    json_array_foreach(toks, i, t) {
        json_int_t id = json_is_integer(t) ? json_integer_value(t) : -1;
        if (id < 0 || id >= s->info.n_vocab) {
            api_err_set(&e, ERR_INVALID, "'tokens[%zu]' is not a token id (vocabulary: %d)", i,
                        s->info.n_vocab);
            break;
        }
        ids[i] = (int32_t)id;
    }
    json_decref(v);
    if (e.code) {
        mem_free(ids);
        api_reply_error(s, req, API_OPENAI, &e);
        return;
    }
    struct buf text;
    buf_init(&text);
    engine_detokenize(s->e, ids, (int64_t)n, 0, &text);
    mem_free(ids);
    json_t *c = json_str_lossy(text.data ? text.data : "", text.len);
    buf_free(&text);
    api_reply_json(s, req, 200, c ? json_pack("{s:o}", "content", c) : NULL);
}

/* The rendered prompt of a chat request, without generating (llama-server's /apply-template):
 * for debugging templates and prompt caching. */
static void ep_apply_template(struct server *s, struct http_req *req) {
    struct arena a;
    arena_init(&a);
    struct gen_request *r = NULL;
    struct error err = {0};
    struct api_err e = {0};
    size_t len;
    const char *body = http_req_body(req, &len);
    struct buf prompt;
    buf_init(&prompt);
    if (req_parse(REQ_API_CHAT, body, len, &a, &r, &err) ||
        chat_prompt_render(&s->prompt_cfg, r, &prompt, &err)) {
        api_err_set(&e, err.code, "%s", err.msg);
        api_reply_error(s, req, API_OPENAI, &e);
    } else {
        json_t *p = json_str_lossy(prompt.data ? prompt.data : "", prompt.len);
        api_reply_json(s, req, 200, p ? json_pack("{s:o}", "prompt", p) : NULL);
    }
    buf_free(&prompt);
    req_free(r);
    arena_free(&a);
}

/* ============================================================================================
 * Routing and authentication
 * ============================================================================================ */

typedef void (*route_fn)(struct server *s, struct http_req *req);

struct route {
    const char *path; /* without the optional /v1 prefix */
    const char *method;
    route_fn fn;
    enum api_flavor flavor; /* shape of its errors */
    int is_public;          /* no API key needed */
};

static const struct route g_routes[] = {
    {"/health", "GET", ep_health, API_OPENAI, 1},
    {"/models", "GET", ep_models, API_OPENAI, 0},
    {"/metrics", "GET", ep_metrics, API_OPENAI, 0},
    {"/tokenize", "POST", ep_tokenize, API_OPENAI, 0},
    {"/detokenize", "POST", ep_detokenize, API_OPENAI, 0},
    {"/apply-template", "POST", ep_apply_template, API_OPENAI, 0},
    {"/chat/completions", "POST", api_openai_chat, API_OPENAI, 0},
    {"/completions", "POST", api_openai_completion, API_OPENAI, 0},
    {"/messages", "POST", api_anthropic_messages, API_ANTHROPIC, 0},
    {"/messages/count_tokens", "POST", api_anthropic_count_tokens, API_ANTHROPIC, 0},
};

/* Constant-time comparison of a presented key with the configured one. */
static int key_matches(const char *given, const char *want) {
    if (!given) return 0;
    size_t lg = strlen(given), lw = strlen(want);
    unsigned diff = (unsigned)(lg ^ lw);
    for (size_t i = 0; i < lw; i++)
        diff |= (unsigned char)(i < lg ? given[i] : 0) ^ (unsigned char)want[i];
    return diff == 0;
}

static int authorized(struct server *s, struct http_req *req) {
    if (!s->o.api_key || !*s->o.api_key) return 1;
    const char *auth = http_req_header(req, "Authorization");
    if (auth && !strncasecmp(auth, "Bearer ", 7) && key_matches(auth + 7, s->o.api_key)) return 1;
    return key_matches(http_req_header(req, "x-api-key"), s->o.api_key);
}

static void on_request(void *ud, struct http_req *req) {
    struct server *s = ud;
    atomic_fetch_add(&s->n_requests, 1);
    const char *path = http_req_path(req), *method = http_req_method(req);
    const char *p = !strncmp(path, "/v1/", 4) ? path + 3 : path;
    const struct route *match = NULL;
    int path_known = 0;
    for (size_t i = 0; i < sizeof(g_routes) / sizeof(g_routes[0]); i++) {
        if (strcmp(p, g_routes[i].path)) continue;
        path_known = 1;
        if (!strcmp(method, g_routes[i].method)) match = &g_routes[i];
    }
    enum api_flavor f =
        !strcmp(p, "/messages") || !strncmp(p, "/messages/", 10) ? API_ANTHROPIC : API_OPENAI;
    struct api_err e = {0};
    if (http_req_too_large(req)) {
        api_err_set(&e, API_ERR_TOO_LARGE, "the request body is larger than %zu bytes",
                    s->o.max_body_bytes);
    } else if (!match && path_known) {
        api_err_set(&e, API_ERR_METHOD, "%s is not allowed on %s", method, path);
    } else if (!match) {
        api_err_set(&e, ERR_NOT_FOUND, "no endpoint %s %s", method, path);
    } else if (!match->is_public && !authorized(s, req)) {
        api_err_set(&e, API_ERR_AUTH, "invalid or missing API key");
    } else {
        match->fn(s, req);
        return;
    }
    api_reply_error(s, req, f, &e);
}

/* ============================================================================================
 * Lifetime
 * ============================================================================================ */

void server_opts_default(struct server_opts *o) {
    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = 8080;
    o->n_parallel = 2;
    o->n_batch = 512;
    o->kv_type = KV_TYPE_F16;
    o->max_body_bytes = (size_t)64 << 20;
    o->cache_bytes = (size_t)4 << 30;
    o->cache_min_tokens = 16;
    o->spec_mode = SPEC_AUTO;
    o->draft_max = -1;
}

static char *token_text(struct engine *e, int32_t id) {
    struct buf b;
    buf_init(&b);
    if (id >= 0) engine_token_piece(e, id, 1, &b);
    return buf_detach(&b);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct buf b;
    buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) buf_append(&b, chunk, n);
    int bad = ferror(f);
    fclose(f);
    if (bad || b.failed) {
        buf_free(&b);
        return NULL;
    }
    return buf_detach(&b);
}

/* The chat template: --chat-template-file (an error if it does not parse), else the GGUF's
 * (a warning and the built-in ChatML if it does not parse), else the built-in ChatML. */
static int load_template(struct server *s, struct error *err) {
    const char *file = s->o.chat_template_file;
    const char *src = engine_chat_template(s->e);
    if (file) {
        s->tpl_src = read_file(file);
        if (!s->tpl_src) return error_set(err, ERR_IO, "cannot read chat template %s", file);
    } else if (src) {
        s->tpl_src = mem_strdup(src);
        if (!s->tpl_src) return error_set(err, ERR_NOMEM, "out of memory");
    } else {
        LOG_INFO("the model has no chat template: using built-in ChatML");
        return 0;
    }
    struct error perr = {0};
    if (chat_template_parse(&s->tpl, s->tpl_src, strlen(s->tpl_src), &perr)) {
        if (file) return error_set(err, ERR_FORMAT, "chat template %s: %s", file, perr.msg);
        LOG_WARN("the model's chat template does not parse (%s): using built-in ChatML", perr.msg);
        mem_free(s->tpl_src);
        s->tpl_src = NULL;
        s->tpl = NULL;
    }
    s->prompt_cfg.tpl = s->tpl;
    if (s->tpl) {
        s->tool_format = chat_tool_format_detect(s->tpl_src, strlen(s->tpl_src));
        s->template_thinks = strstr(s->tpl_src, "<think>") != NULL;
    }
    return 0;
}

int server_open(struct server **out, const struct server_opts *o, struct error *err) {
    *out = NULL;
    json_use_mem();
    struct server *s = mem_calloc(1, sizeof(*s));
    if (!s) return error_set(err, ERR_NOMEM, "out of memory");
    s->o = *o;
    s->t_start = (int64_t)time(NULL);
    int rc;
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = o->n_threads;
    ep.load = o->load;
    if (o->n_batch > 0) ep.n_batch = o->n_batch;
    if ((rc = engine_open(&s->e, o->model_path, &ep, err))) goto fail;
    engine_get_info(s->e, &s->info);
    const char *base = strrchr(o->model_path, '/');
    s->alias = mem_strdup(o->alias ? o->alias : base ? base + 1 : o->model_path);
    s->bos_text = token_text(s->e, engine_token_bos(s->e));
    s->eos_text = token_text(s->e, engine_token_eos(s->e));
    if (!s->alias || !s->bos_text || !s->eos_text) {
        rc = error_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    s->prompt_cfg.bos_text = s->bos_text;
    s->prompt_cfg.eos_text = s->eos_text;
    s->tool_format = CHAT_TOOL_FORMAT_JSON; /* the built-in ChatML teaches JSON calls */
    if ((rc = load_template(s, err))) goto fail;
    if ((rc = constraint_vocab_create(&s->vocab, s->e, err))) goto fail;
    struct sched_params sp = {0};
    sp.n_slots = o->n_parallel;
    sp.n_ctx = o->n_ctx > 0                                             ? o->n_ctx
               : s->info.n_ctx_train > 0 && s->info.n_ctx_train < 32768 ? s->info.n_ctx_train
                                                                        : 32768;
    sp.n_batch = ep.n_batch;
    sp.kv_type = o->kv_type;
    sp.cache_bytes = o->cache_bytes;
    sp.cache_min_tokens = o->cache_min_tokens;
    spec_params_default(&sp.spec);
    sp.spec.mode = o->spec_mode;
    if (o->draft_max >= 0) sp.spec.draft_max = sp.spec.mtp_max = o->draft_max;
    if (o->spec_mode == SPEC_DRAFT) {
        if (!o->draft_model_path) {
            rc = error_set(err, ERR_INVALID, "--spec draft needs --draft-model FILE");
            goto fail;
        }
        if ((rc = engine_open(&s->draft, o->draft_model_path, &ep, err))) goto fail;
        sp.spec.draft_engine = s->draft;
    } else if (o->draft_model_path) {
        rc = error_set(err, ERR_INVALID, "--draft-model is for --spec draft (not %s)",
                       spec_mode_name(o->spec_mode));
        goto fail;
    }
    if ((rc = sched_create(&s->sched, s->e, &sp, err))) goto fail;
    const char *mode = spec_mode_name(o->spec_mode);
    if (o->spec_mode == SPEC_AUTO)
        snprintf(s->spec_desc, sizeof(s->spec_desc), "auto: %s",
                 s->info.has_mtp ? "MTP head + n-gram" : "n-gram (the model has no MTP block)");
    else if (o->spec_mode == SPEC_DRAFT)
        snprintf(s->spec_desc, sizeof(s->spec_desc), "draft: %s", o->draft_model_path);
    else
        snprintf(s->spec_desc, sizeof(s->spec_desc), "%s", mode);
    struct http_params hp = {o->host, o->port, o->max_body_bytes, 256, 600};
    if ((rc = http_open(&s->http, &hp, on_request, s, err))) goto fail;
    *out = s;
    return 0;
fail:
    server_close(s);
    return rc;
}

int server_port(const struct server *s) {
    return http_port(s->http);
}

const char *server_spec_desc(const struct server *s) {
    return s->spec_desc;
}

void server_close(struct server *s) {
    if (!s) return;
    if (s->sched) sched_shutdown(s->sched); /* waiting handlers see their tasks end */
    http_close(s->http);
    sched_free(s->sched);
    engine_close(s->draft);
    engine_close(s->e);
    constraint_vocab_free(s->vocab);
    chat_template_free(s->tpl);
    mem_free(s->tpl_src);
    mem_free(s->alias);
    mem_free(s->bos_text);
    mem_free(s->eos_text);
    mem_free(s);
}
