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

static int err_from(struct api_err *e, const struct error *err) {
    return api_err_set(e, err->code ? err->code : ERR_INVALID, "%s", err->msg);
}

int api_chat_tokens(struct server *s, const struct gen_request *r, int32_t **ids, int64_t *n,
                    int *reasoning_open, struct api_err *e) {
    *ids = NULL;
    struct buf prompt;
    buf_init(&prompt);
    struct error err = {0};
    int rc = chat_prompt_render(&s->prompt_cfg, r, &prompt, reasoning_open, &err);
    if (rc) {
        buf_free(&prompt);
        return err_from(e, &err);
    }
    const char *p = prompt.data ? prompt.data : "";
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
    /* Grammar-constrained decoding (response_format json_object/json_schema, tool_choice
     * required/named) plugs in here as g->constraint once the chat branch's constraint lands
     * (TODO(chat): build it from r->format/r->schema/r->tools). */
}

static int submit(struct api_job *j, const int32_t *ids, int n, int choice, struct api_err *e) {
    struct sched_gen g;
    fill_gen(j->r, choice, &g);
    struct error err = {0};
    int rc = sched_submit(j->s->sched, j->ch, ids, n, &g, &j->choices[choice].task, &err);
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
    j->n_choices = req_n_tasks(j->r);
    j->choices = arena_array(&j->arena, (size_t)j->n_choices, sizeof(*j->choices));
    j->ch = sched_chan_create();
    if (!j->choices || !j->ch) {
        rc = api_err_set(e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    j->is_chat = api != REQ_API_COMPLETION;
    int parse_tools = j->r->tools && j->r->tool_choice != REQ_TOOLS_NONE;
    for (int i = 0; i < j->n_choices; i++) buf_init(&j->choices[i].text);
    if (j->is_chat) {
        int32_t *ids = NULL;
        int64_t n = 0;
        if ((rc = api_chat_tokens(s, j->r, &ids, &n, &j->reasoning_open, e))) goto fail;
        rc = check_fits(s, n, e);
        for (int i = 0; !rc && i < j->n_choices; i++) {
            chat_out_init(&j->choices[i].out, parse_tools, j->reasoning_open);
            rc = submit(j, ids, (int)n, i, e);
        }
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

static void feed(struct api_choice *c, size_t from, int is_chat) {
    if (!is_chat) return;
    if (c->text.len > from) chat_out_feed(&c->out, c->text.data + from, c->text.len - from);
    if (c->done) chat_out_finish(&c->out);
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
        feed(c, before, j->is_chat);
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
        if (j->choices[i].out.failed || j->choices[i].text.failed)
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

const char *api_job_call_id(struct api_job *j, struct api_choice *c, int k) {
    if (k >= c->n_call_ids) {
        int cap = k + 4;
        char(*v)[40] = arena_array(&j->arena, (size_t)cap, sizeof(*v));
        if (!v) return "call_0";
        if (c->n_call_ids) memcpy(v, c->call_ids, (size_t)c->n_call_ids * sizeof(*v));
        for (int i = c->n_call_ids; i < cap; i++)
            api_new_id(j->s, j->flavor == API_ANTHROPIC ? "toolu_" : "call_", v[i], sizeof(v[i]));
        c->call_ids = v;
        c->n_call_ids = cap;
    }
    return c->call_ids[k];
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
        if (j->is_chat) chat_out_free(&c->out);
    }
    sched_chan_free(j->ch);
    req_free(j->r);
    arena_free(&j->arena);
    mem_free(j);
}
