/* api_gen.c: generation jobs, shared by the OpenAI and Anthropic endpoints (see api.h).
 *
 * A job runs on the request's connection thread: it parses and validates the body, builds the
 * prompt (chat: template + tokenizer; completions: text or ids), checks it fits a slot, and
 * submits one scheduler task per choice. Polling moves each task's new text into the choice and,
 * for chat, through the incremental chat parser, so streaming and non-streaming responses are
 * built from the same decided content/reasoning/tool calls.
 */
#include "api.h"

#include "../base/log.h"
#include "../base/mem.h"

#include <math.h>
#include <string.h>
#include <time.h>

/* ============================================================================================
 * Prompts
 *
 * Chat prompts are rendered and tokenized here, on the request's thread, not the scheduler's:
 * the template and the tokenizer are read-only and thread-safe, so long renders never hold up
 * the decode loop, and a prompt that does not fit is refused before anything is queued.
 * ============================================================================================ */

static int err_from(struct api_err *e, const struct error *err) {
    return api_err_set(e, err->code ? err->code : ERR_INVALID, "%s", err->msg);
}

int api_chat_tokens(struct server *s, const struct gen_request *r, int32_t **ids, int64_t *n,
                    enum chat_reasoning *reasoning, struct api_err *e) {
    *ids = NULL;
    struct buf prompt;
    buf_init(&prompt);
    struct error err = {0};
    int rc = chat_prompt_render(&s->prompt_cfg, r, &prompt, &err);
    if (rc) {
        buf_free(&prompt);
        return err_from(e, &err);
    }
    const char *p = prompt.data ? prompt.data : "";
    if (reasoning) *reasoning = chat_reasoning_detect(p, prompt.len);
    /* templates that write the BOS text themselves get no second one */
    size_t lb = strlen(s->bos_text);
    int add_bos = engine_add_bos(s->e) && !(lb && !strncmp(p, s->bos_text, lb));
    rc = engine_tokenize(s->e, p, prompt.len, add_bos, 1, ids, n, &err);
    buf_free(&prompt);
    if (rc) return err_from(e, &err);
    return 0;
}

static int check_fits(struct server *s, int64_t n, struct api_err *e) {
    int n_ctx = sched_n_ctx(s->sched);
    if (n == 0) return api_err_set(e, ERR_INVALID, "the prompt is empty");
    if (n >= n_ctx) {
        api_err_set(e, API_ERR_CONTEXT,
                    "the request has %lld prompt tokens but the context holds %d (-c per slot); "
                    "shorten the conversation or restart the server with a larger context",
                    (long long)n, n_ctx);
        e->n_prompt = (int)n;
        e->n_ctx = n_ctx;
        return API_ERR_CONTEXT;
    }
    return 0;
}

/* ============================================================================================
 * Grammar-constrained decoding
 *
 * The chat module compiles the grammar (tools or a JSON schema) and the token mask; the
 * scheduler only knows struct sched_constraint (mask, accept, free). Each choice gets its own
 * grammar and matcher, since a matcher's state is per generation.
 * ============================================================================================ */

/* A scheduler constraint over one task: the grammar and its matcher-backed token mask (lazy
 * for tool_choice auto: free text until the model opens a tool call, then the call's
 * grammar, so a call once begun is well formed, matches its tool's schema, and only more calls
 * may follow it). */
struct api_constraint {
    struct sched_constraint sc; /* sc.ctx points back here */
    struct grammar *g;
    struct constraint *c;
    int stop_when_complete; /* end as soon as the output is a whole sentence */
};

static void cons_mask(void *ctx, float *logits, int n_vocab) {
    (void)n_vocab;
    struct api_constraint *ac = ctx;
    constraint_apply(ac->c, logits);
}

static int cons_accept(void *ctx, int32_t id) {
    struct api_constraint *ac = ctx;
    constraint_accept(ac->c, id);
    return ac->stop_when_complete && constraint_is_complete(ac->c);
}

static void cons_free(void *ctx) {
    struct api_constraint *ac = ctx;
    constraint_free(ac->c);
    grammar_free(ac->g);
    mem_free(ac);
}

/* The grammar a request asks for: tool_choice required/named forces calls (matching each
 * tool's parameter schema); else response_format json_object/json_schema forces one JSON value;
 * else tool_choice auto gets the calls' grammar lazily (struct api_constraint). *out stays NULL
 * when nothing is constrained. A schema the compiler refuses is the client's 400 when the
 * request forces output: it never runs unconstrained (llama.cpp #19051 "fails open"); with
 * tool_choice auto such a request runs as before, unconstrained, with a warning in the log. */
static int make_constraint(struct api_job *j, struct sched_constraint **out, struct api_err *e) {
    *out = NULL;
    const struct gen_request *r = j->r;
    struct grammar *g = NULL;
    struct error err = {0};
    int rc = 0, stop_when_complete = 1;
    /* A thinking block is allowed before the forced part only for templates that think and
     * when the request did not turn thinking off: a model that never closes the block must not
     * be able to escape the grammar into it. */
    enum chat_reasoning reasoning = j->reasoning;
    if (!j->s->template_thinks ||
        json_is_false(json_object_get(r->template_kwargs, "enable_thinking")))
        reasoning = CHAT_REASONING_NONE;
    int force_tools = j->is_chat && r->tools &&
                      (r->tool_choice == REQ_TOOLS_REQUIRED || r->tool_choice == REQ_TOOLS_NAMED);
    int lazy_tools =
        j->is_chat && r->tools && r->tool_choice == REQ_TOOLS_AUTO && r->format == REQ_FORMAT_TEXT;
    if (force_tools || lazy_tools) {
        char *tools = json_dump_str(r->tools, JSON_COMPACT);
        if (!tools) return api_err_set(e, ERR_NOMEM, "out of memory");
        struct chat_grammar_params gp = {0};
        gp.tool_format = j->s->tool_format == CHAT_TOOL_FORMAT_XML ? CHAT_TOOL_FORMAT_XML
                                                                   : CHAT_TOOL_FORMAT_JSON;
        gp.reasoning = lazy_tools ? CHAT_REASONING_NONE : reasoning; /* lazy: from the tag on */
        gp.tools_json = tools;
        gp.tools_json_len = strlen(tools);
        gp.tool_name = r->tool_choice == REQ_TOOLS_NAMED ? r->tool_name : NULL;
        gp.parallel_tool_calls = r->parallel_tool_calls;
        rc = chat_grammar_tools(&g, &gp, &err);
        mem_free(tools);
        stop_when_complete = !r->parallel_tool_calls;
    } else if (r->format != REQ_FORMAT_TEXT) {
        char *schema =
            r->format == REQ_FORMAT_JSON_SCHEMA ? json_dump_str(r->schema, JSON_COMPACT) : NULL;
        if (r->format == REQ_FORMAT_JSON_SCHEMA && !schema)
            return api_err_set(e, ERR_NOMEM, "out of memory");
        rc = chat_grammar_json(&g, j->is_chat ? reasoning : CHAT_REASONING_NONE, schema,
                               schema ? strlen(schema) : 0, &err);
        mem_free(schema);
    } else {
        return 0;
    }
    if (rc && lazy_tools && rc != ERR_NOMEM) {
        LOG_WARN("tool_choice auto: tool calls not constrained: %s", err.msg);
        return 0;
    }
    if (rc) {
        if (rc != ERR_NOMEM) error_prefix(&err, force_tools ? "tools" : "response_format");
        return api_err_set(e, rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVALID, "%s", err.msg);
    }
    struct api_constraint *ac = mem_calloc(1, sizeof(*ac));
    if (!ac || constraint_create(&ac->c, j->s->vocab, g, &err)) {
        mem_free(ac);
        grammar_free(g);
        return api_err_set(e, ERR_NOMEM, "out of memory");
    }
    ac->g = g;
    ac->stop_when_complete = stop_when_complete;
    if (lazy_tools) /* the tool grammar (reasoning NONE) starts with the tag */
        CHECK(constraint_set_lazy(ac->c, "<tool_call>", "<think>", "</think>",
                                  reasoning == CHAT_REASONING_FORCED) == 0);
    ac->sc = (struct sched_constraint){ac, cons_mask, cons_accept, cons_free};
    *out = &ac->sc;
    return 0;
}

static void fill_gen(const struct gen_request *r, int choice, struct sched_gen *g) {
    memset(g, 0, sizeof(*g));
    sampler_params_default(&g->sp);
    g->sp.temperature = (float)r->temperature;
    g->sp.top_k = r->top_k;
    g->sp.top_p = (float)r->top_p;
    g->sp.min_p = (float)r->min_p;
    g->sp.presence_penalty = (float)r->presence_penalty;
    g->sp.frequency_penalty = (float)r->frequency_penalty;
    g->sp.repeat_penalty = (float)r->repeat_penalty;
    /* n > 1 with a fixed seed: different but reproducible choices */
    g->sp.seed = r->seed < 0 ? SAMPLER_SEED_RANDOM : (uint64_t)r->seed + (uint64_t)choice;
    g->max_tokens = r->max_tokens < 0 ? -1 : (int)r->max_tokens;
    g->stop = r->stop;
    g->n_stop = r->n_stop;
    g->bias_ids = r->bias_ids;
    g->bias_vals = r->bias_vals;
    g->n_bias = r->n_bias;
    g->n_probs = r->logprobs ? r->top_logprobs : -1;
    g->ignore_eos = r->ignore_eos;
}

/* ============================================================================================
 * Jobs
 *
 * One task per choice, all on one channel. Each chat choice has its own incremental parser;
 * when the request streams, the parser's deltas are queued in order so the stream sends
 * reasoning, text and tool-call pieces exactly as they were decided.
 * ============================================================================================ */

/* The request's "speculative" object against what the server's slots can do (the rules of
 * generator_begin): "auto" is the server's own setting, "none" always works, "ngram" unless
 * the server runs without speculation, "mtp" and "draft" only with that drafter loaded. */
static int check_spec(struct api_job *j, struct api_err *e) {
    const struct gen_request *r = j->r;
    if (!r->spec_mode && r->spec_draft_max < 0) return 0;
    enum spec_mode m = SPEC_AUTO, have = j->s->o.spec_mode;
    if (r->spec_mode && spec_mode_parse(r->spec_mode, &m))
        return api_err_set(e, ERR_INVALID,
                           "'speculative.mode' must be none, ngram, draft, mtp or auto");
    int ok = m == SPEC_AUTO || m == SPEC_NONE || m == have ||
             (m == SPEC_NGRAM && have != SPEC_NONE) ||
             (m == SPEC_MTP && have == SPEC_AUTO && j->s->info.has_mtp);
    if (!ok)
        return api_err_set(e, ERR_INVALID,
                           "'speculative.mode': %s is not available on this server (%s)",
                           spec_mode_name(m), j->s->spec_desc);
    j->spec_override = 1;
    j->spec_mode = m;
    j->draft_max = r->spec_draft_max;
    return 0;
}

static int submit(struct api_job *j, const int32_t *ids, int n, int choice, struct api_err *e) {
    struct sched_gen g;
    fill_gen(j->r, choice, &g);
    g.spec_override = j->spec_override;
    g.spec_mode = j->spec_mode;
    g.draft_max = j->draft_max;
    int rc = make_constraint(j, &g.constraint, e);
    if (rc) return rc;
    struct error err = {0};
    rc = sched_submit(j->s->sched, j->ch, ids, n, &g, &j->choices[choice].task, &err);
    if (rc) return err_from(e, &err);
    return 0;
}

/* The output parser of a chat choice: the call syntax the template teaches (both are read),
 * the request's tools for typing XML values, and how the reasoning starts. */
static int make_parser(struct api_job *j, struct api_choice *c, struct api_err *e) {
    const struct gen_request *r = j->r;
    struct chat_parser_params pp = {0};
    char *tools = NULL;
    if (r->tools && r->tool_choice != REQ_TOOLS_NONE) {
        pp.tool_format = j->s->tool_format == CHAT_TOOL_FORMAT_XML ? CHAT_TOOL_FORMAT_XML
                                                                   : CHAT_TOOL_FORMAT_JSON;
        tools = json_dump_str(r->tools, JSON_COMPACT);
        if (!tools) return api_err_set(e, ERR_NOMEM, "out of memory");
        pp.tools_json = tools;
        pp.tools_json_len = strlen(tools);
    }
    pp.reasoning = j->reasoning;
    char seed[32];
    api_new_id(j->s, "", seed, sizeof(seed));
    for (const char *q = seed; *q; q++) pp.id_seed = pp.id_seed * 131 + (unsigned char)*q;
    struct error err = {0};
    int rc = chat_parser_create(&c->parser, &pp, &err);
    mem_free(tools);
    if (rc) return err_from(e, &err);
    return 0;
}

static int check_ids(struct server *s, const struct req_prompt *p, int index, struct api_err *e) {
    for (int i = 0; i < p->n_ids; i++)
        if (p->ids[i] >= s->info.n_vocab)
            return api_err_set(e, ERR_INVALID,
                               "'prompt%s': token id %d out of range (vocabulary %d)",
                               index ? "[...]" : "", p->ids[i], s->info.n_vocab);
    return 0;
}

int api_job_start(struct server *s, struct http_req *req, enum req_api api, enum api_flavor f,
                  struct api_job **out, struct api_err *e) {
    *out = NULL;
    struct api_job *j = mem_calloc(1, sizeof(*j));
    if (!j) return api_err_set(e, ERR_NOMEM, "out of memory");
    j->s = s;
    j->flavor = f;
    j->block_type = -1;
    arena_init(&j->arena);
    j->created = (int64_t)time(NULL);
    api_new_id(s,
               f == API_ANTHROPIC    ? "msg_"
               : api == REQ_API_CHAT ? "chatcmpl-"
                                     : "cmpl-",
               j->id, sizeof(j->id));
    size_t len;
    const char *body = http_req_body(req, &len);
    struct error err = {0};
    int rc = req_parse(api, body, len, &j->arena, &j->r, &err);
    if (rc) {
        err_from(e, &err);
        goto fail;
    }
    for (int i = 0; i < j->r->n_bias; i++)
        if (j->r->bias_ids[i] >= s->info.n_vocab) {
            rc = api_err_set(e, ERR_INVALID,
                             "'logit_bias': token id %d out of range (vocabulary %d)",
                             j->r->bias_ids[i], s->info.n_vocab);
            goto fail;
        }
    if ((rc = check_spec(j, e))) goto fail;
    j->n_choices = req_n_tasks(j->r);
    j->choices = arena_array(&j->arena, (size_t)j->n_choices, sizeof(*j->choices));
    j->ch = sched_chan_create();
    if (!j->choices || !j->ch) {
        rc = api_err_set(e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    j->is_chat = api != REQ_API_COMPLETION;
    j->streaming = j->r->stream;
    for (int i = 0; i < j->n_choices; i++) {
        buf_init(&j->choices[i].text);
        buf_init(&j->choices[i].dbytes);
    }
    if (j->is_chat) {
        int32_t *ids = NULL;
        int64_t n = 0;
        if ((rc = api_chat_tokens(s, j->r, &ids, &n, &j->reasoning, e))) goto fail;
        rc = check_fits(s, n, e);
        for (int i = 0; !rc && i < j->n_choices; i++)
            if (!(rc = make_parser(j, &j->choices[i], e))) rc = submit(j, ids, (int)n, i, e);
        j->n_prompt_total = (int)n;
        mem_free(ids);
        if (rc) goto fail;
    } else {
        for (int p = 0; p < j->r->n_prompts; p++) {
            const struct req_prompt *pr = &j->r->prompts[p];
            int32_t *ids = NULL;
            int64_t n = 0;
            if (pr->ids) {
                if ((rc = check_ids(s, pr, p, e))) goto fail;
                n = pr->n_ids;
            } else if ((rc = engine_tokenize(s->e, pr->text, pr->len, engine_add_bos(s->e), 1, &ids,
                                             &n, &err))) {
                err_from(e, &err);
                goto fail;
            }
            const int32_t *use = pr->ids ? pr->ids : ids;
            rc = check_fits(s, n, e);
            for (int k = 0; !rc && k < j->r->n; k++)
                rc = submit(j, use, (int)n, p * j->r->n + k, e);
            j->n_prompt_total += (int)n;
            mem_free(ids);
            if (rc) goto fail;
        }
    }
    *out = j;
    return 0;
fail:
    api_job_free(j);
    return e->code;
}

/* Keeps a parser delta for the stream, merged into the previous one when it continues it. */
static void queue_delta(struct api_choice *c, const struct chat_delta *d) {
    struct api_delta *last = c->n_dq ? &c->dq[c->n_dq - 1] : NULL;
    size_t off = c->dbytes.len;
    buf_append(&c->dbytes, d->text, d->len);
    if (d->type != CHAT_DELTA_TOOL_CALL && last && last->type == d->type &&
        last->tool_index == d->tool_index && last->off + last->len == off) {
        last->len += d->len;
        return;
    }
    if (c->n_dq == c->cap_dq) {
        int cap = c->cap_dq ? 2 * c->cap_dq : 16;
        struct api_delta *v = mem_realloc(c->dq, (size_t)cap * sizeof(*v));
        if (!v) {
            c->failed = 1;
            return;
        }
        c->dq = v;
        c->cap_dq = cap;
    }
    struct api_delta *q = &c->dq[c->n_dq++];
    memset(q, 0, sizeof(*q));
    q->type = d->type;
    q->tool_index = d->tool_index;
    q->off = off;
    q->len = d->len;
    if (d->id) snprintf(q->id, sizeof(q->id), "%s", d->id);
}

static void take_deltas(struct api_job *j, struct api_choice *c, const struct chat_delta *d,
                        int n) {
    for (int i = 0; i < n; i++) {
        if (d[i].type == CHAT_DELTA_TOOL_CALL) c->n_calls++;
        if (j->streaming) queue_delta(c, &d[i]);
    }
}

static void feed(struct api_job *j, struct api_choice *c, size_t from) {
    if (!j->is_chat || !c->parser) return;
    const struct chat_delta *d;
    int n;
    if (c->text.len > from) {
        if (chat_parser_feed(c->parser, c->text.data + from, c->text.len - from, &d, &n))
            c->failed = 1;
        else
            take_deltas(j, c, d, n);
    }
    if (c->done) {
        if (chat_parser_finish(c->parser, &d, &n))
            c->failed = 1;
        else
            take_deltas(j, c, d, n);
    }
    if (c->dbytes.failed || c->text.failed) c->failed = 1;
}

const struct chat_message *api_choice_message(const struct api_choice *c) {
    return chat_parser_message(c->parser);
}

int api_job_poll(struct api_job *j, int timeout_ms) {
    int all = 1;
    for (int i = 0; i < j->n_choices; i++) all &= j->choices[i].done;
    if (all) return 1;
    sched_chan_wait(j->ch, timeout_ms);
    all = 1;
    for (int i = 0; i < j->n_choices; i++) {
        struct api_choice *c = &j->choices[i];
        if (c->done) continue;
        size_t before = c->text.len;
        c->done = sched_task_take(c->task, &c->text, j->r->logprobs ? &c->toks : NULL, &c->res);
        feed(j, c, before);
        all &= c->done;
    }
    return all;
}

int api_job_wait(struct api_job *j, struct http_req *req) {
    while (!api_job_poll(j, 50))
        if (http_req_disconnected(req)) {
            atomic_fetch_add(&j->s->n_disconnects, 1);
            for (int i = 0; i < j->n_choices; i++) sched_task_cancel(j->choices[i].task);
            return ERR_CANCELLED;
        }
    return 0;
}

int api_job_error(const struct api_job *j, struct api_err *e) {
    for (int i = 0; i < j->n_choices; i++) {
        const struct sched_result *r = &j->choices[i].res;
        if (r->finish == SCHED_ERROR)
            return api_err_set(e, r->err.code ? r->err.code : ERR_IO, "generation failed: %s",
                               r->err.msg);
        if (r->finish == SCHED_CANCELLED)
            return api_err_set(e, ERR_CANCELLED, "the generation was cancelled (server stopping)");
        if (j->choices[i].failed || j->choices[i].text.failed)
            return api_err_set(e, ERR_NOMEM, "out of memory");
    }
    return 0;
}

int api_job_completion_tokens(const struct api_job *j) {
    int n = 0;
    for (int i = 0; i < j->n_choices; i++) n += j->choices[i].res.n_gen;
    return n;
}

int api_job_cached_tokens(const struct api_job *j) {
    int n = 0, per = j->is_chat ? j->n_choices : j->r->n;
    for (int i = 0; i < j->n_choices; i += per) n += j->choices[i].res.n_cached;
    return n;
}

void api_job_free(struct api_job *j) {
    if (!j) return;
    for (int i = 0; j->choices && i < j->n_choices; i++) {
        struct api_choice *c = &j->choices[i];
        if (c->task) {
            if (!c->done) sched_task_cancel(c->task);
            sched_task_release(c->task);
        }
        buf_free(&c->text);
        mem_free(c->toks.v);
        chat_parser_free(c->parser);
        mem_free(c->dq);
        buf_free(&c->dbytes);
    }
    sched_chan_free(j->ch);
    req_free(j->r);
    arena_free(&j->arena);
    mem_free(j);
}
