/* api_openai.c: POST /v1/chat/completions and /v1/completions, whole and streamed.
 *
 * Response shapes follow the OpenAI wire format as clients parse it (see
 * ../shared/docs/reference/openai-api.md §4-5): a chat stream opens with a role delta per
 * choice, then reasoning_content/content deltas, each tool call as a delta with its id, type and
 * name (arguments "") followed by one with its arguments, a final chunk with finish_reason, a
 * usage chunk with empty choices when stream_options.include_usage is set, then [DONE]. A
 * failure after the stream has started is sent as a data: {"error": ...} event.
 */
#include "api.h"

#include "../base/mem.h"

#include <math.h>
#include <string.h>

/* ============================================================================================
 * Pieces shared by whole and streamed responses
 * ============================================================================================ */

static json_t *token_bytes_json(const char *p, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) json_array_append_new(a, json_integer((unsigned char)p[i]));
    return a;
}

static json_t *token_json(struct server *s, int32_t id, float lp, struct buf *tmp) {
    buf_clear(tmp);
    engine_token_piece(s->e, id, 0, tmp);
    const char *p = tmp->data ? tmp->data : "";
    return json_pack("{s:o,s:f,s:o}", "token", json_str_lossy(p, tmp->len), "logprob",
                     isfinite(lp) ? (double)lp : -9999.0, "bytes", token_bytes_json(p, tmp->len));
}

/* Chat log-probs of toks[from..to): the "content" array entries. */
static json_t *chat_logprobs(struct server *s, const struct sched_tokens *toks, int from, int to) {
    json_t *arr = json_array();
    struct buf tmp;
    buf_init(&tmp);
    for (int i = from; arr && i < to; i++) {
        const struct sched_token *t = &toks->v[i];
        json_t *e = token_json(s, t->id, t->logprob, &tmp), *top = e ? json_array() : NULL;
        for (int k = 0; top && k < t->n_top; k++)
            json_array_append_new(top, token_json(s, t->top_id[k], t->top_logprob[k], &tmp));
        /* set_new/append_new take their value even when they fail */
        if (!e || json_object_set_new(e, "top_logprobs", top)) {
            json_decref(e);
            json_decref(arr);
            arr = NULL;
        } else if (json_array_append_new(arr, e)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    buf_free(&tmp);
    return arr ? json_pack("{s:o}", "content", arr) : NULL;
}

/* Legacy completions log-probs: parallel arrays. */
static json_t *completion_logprobs(struct server *s, const struct sched_tokens *toks, int from,
                                   int to, size_t offset0) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    struct buf tmp;
    buf_init(&tmp);
    size_t off = offset0;
    for (int i = from; i < to; i++) {
        const struct sched_token *t = &toks->v[i];
        buf_clear(&tmp);
        engine_token_piece(s->e, t->id, 0, &tmp);
        json_array_append_new(tokens, json_str_lossy(tmp.data ? tmp.data : "", tmp.len));
        json_array_append_new(lps, json_real(isfinite(t->logprob) ? t->logprob : -9999.0));
        json_array_append_new(offs, json_integer((json_int_t)off));
        off += tmp.len;
        json_t *top = json_object();
        for (int k = 0; top && k < t->n_top; k++) {
            buf_clear(&tmp);
            engine_token_piece(s->e, t->top_id[k], 0, &tmp);
            json_t *key = json_str_lossy(tmp.data ? tmp.data : "", tmp.len);
            if (key) json_object_set_new(top, json_string_value(key), json_real(t->top_logprob[k]));
            json_decref(key);
        }
        json_array_append_new(tops, top);
    }
    buf_free(&tmp);
    return json_pack("{s:o,s:o,s:o,s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs",
                     tops, "text_offset", offs);
}

static const char *finish_reason(const struct api_choice *c, int is_chat) {
    if (is_chat && c->n_calls) return "tool_calls";
    return c->res.finish == SCHED_LENGTH ? "length" : "stop";
}

static json_t *usage_json(const struct api_job *j) {
    int gen = api_job_completion_tokens(j);
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", j->n_prompt_total,
                     "completion_tokens", gen, "total_tokens", j->n_prompt_total + gen,
                     "prompt_tokens_details", "cached_tokens", api_job_cached_tokens(j));
}

/* llama-server's timings object (of the first choice), with its speculation counters: draft
 * tokens verified (draft_n) and accepted (draft_n_accepted). */
static json_t *timings_json(const struct api_job *j) {
    const struct sched_result *r = &j->choices[0].res;
    int prompt_n = r->n_prompt - r->n_cached;
    return json_pack("{s:i,s:i,s:f,s:f,s:i,s:f,s:f,s:i,s:i}", "cache_n", r->n_cached, "prompt_n",
                     prompt_n, "prompt_ms", r->t_prompt_ms, "prompt_per_second",
                     r->t_prompt_ms > 0 ? prompt_n * 1e3 / r->t_prompt_ms : 0.0, "predicted_n",
                     r->n_gen, "predicted_ms", r->t_gen_ms, "predicted_per_second",
                     r->t_gen_ms > 0 ? r->n_gen * 1e3 / r->t_gen_ms : 0.0, "draft_n", r->n_drafted,
                     "draft_n_accepted", r->n_accepted);
}

static const char *model_name(const struct api_job *j) {
    return j->r->model ? j->r->model : j->s->alias;
}

static json_t *tool_calls_json(const struct chat_message *m) {
    json_t *arr = json_array();
    for (int k = 0; arr && k < m->n_tool_calls; k++) {
        const struct chat_tool_call *t = &m->tool_calls[k];
        json_t *tc =
            json_pack("{s:s,s:s,s:{s:s,s:o}}", "id", t->id, "type", "function", "function", "name",
                      t->name, "arguments", json_str_lossy(t->arguments, t->arguments_len));
        if (!tc || json_array_append_new(arr, tc)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

/* Replies with the job's error if it failed or the client left; returns 1 then. */
static int reply_if_failed(struct server *s, struct http_req *req, struct api_job *j, int wait_rc) {
    struct api_err e = {0};
    if (wait_rc) api_err_set(&e, ERR_CANCELLED, "the client disconnected");
    if (wait_rc || api_job_error(j, &e)) {
        api_reply_error(s, req, j->flavor, &e);
        api_job_free(j);
        return 1;
    }
    return 0;
}

/* ============================================================================================
 * Streaming
 * ============================================================================================ */

static void sse(struct buf *out, json_t *v) {
    buf_append_str(out, "data: ");
    if (!v || json_dump_to(v, out)) out->failed = 1;
    buf_append_str(out, "\n\n");
    json_decref(v);
}

static json_t *chunk(struct api_job *j, const char *object, json_t *choices) {
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:o}", "id", j->id, "object", object, "created",
                     (json_int_t)j->created, "model", model_name(j), "system_fingerprint", "hearth",
                     "choices", choices);
}

static json_t *chat_choice(int index, json_t *delta, const char *finish, json_t *logprobs) {
    json_t *c = json_pack("{s:i,s:o,s:O?,s:s?}", "index", index, "delta", delta, "logprobs",
                          logprobs, "finish_reason", finish);
    json_decref(logprobs);
    return c;
}

static void send_chat_delta(struct api_job *j, struct buf *out, int index, json_t *delta,
                            const char *finish, json_t *logprobs) {
    sse(out, chunk(j, "chat.completion.chunk",
                   json_pack("[o]", chat_choice(index, delta, finish, logprobs))));
}

/* Sends the deltas choice c has decided since the last call, in order. Log-probs ride on the
 * first content chunk (or the finish chunk) after their tokens were taken. */
static void emit_chat(struct api_job *j, struct api_choice *c, int index, struct buf *out) {
    json_t *lp = NULL;
    int has_content = 0;
    for (int i = 0; i < c->n_dq; i++) has_content |= c->dq[i].type == CHAT_DELTA_CONTENT;
    if ((has_content || (c->done && !c->final_sent)) && j->r->logprobs &&
        c->toks.n > c->toks_sent) {
        lp = chat_logprobs(j->s, &c->toks, c->toks_sent, c->toks.n);
        c->toks_sent = c->toks.n;
    }
    for (int i = 0; i < c->n_dq; i++) {
        const struct api_delta *d = &c->dq[i];
        json_t *text = json_str_lossy(c->dbytes.data + d->off, d->len);
        json_t *delta = NULL;
        switch (d->type) {
        case CHAT_DELTA_CONTENT:
            delta = json_pack("{s:o}", "content", text);
            break;
        case CHAT_DELTA_REASONING:
            delta = json_pack("{s:o}", "reasoning_content", text);
            break;
        case CHAT_DELTA_TOOL_CALL: /* id, type and the whole name; arguments follow */
            delta = json_pack("{s:[{s:i,s:s,s:s,s:{s:o,s:s}}]}", "tool_calls", "index",
                              d->tool_index, "id", d->id, "type", "function", "function", "name",
                              text, "arguments", "");
            break;
        case CHAT_DELTA_TOOL_ARGS:
            delta = json_pack("{s:[{s:i,s:{s:o}}]}", "tool_calls", "index", d->tool_index,
                              "function", "arguments", text);
            break;
        }
        if (d->type == CHAT_DELTA_CONTENT) {
            send_chat_delta(j, out, index, delta, NULL, lp);
            lp = NULL;
        } else {
            send_chat_delta(j, out, index, delta, NULL, NULL);
        }
    }
    c->n_dq = 0;
    buf_clear(&c->dbytes);
    if (c->done && !c->final_sent) {
        c->final_sent = 1;
        send_chat_delta(j, out, index, json_object(), finish_reason(c, 1), lp);
        lp = NULL;
    }
    json_decref(lp);
}

static void emit_completion(struct api_job *j, struct api_choice *c, int index, struct buf *out) {
    int has_text = c->text.len > c->text_sent, has_lp = j->r->logprobs && c->toks.n > c->toks_sent;
    if (!has_text && !has_lp && !(c->done && !c->final_sent)) return;
    json_t *lp = NULL;
    if (has_lp) {
        lp = completion_logprobs(j->s, &c->toks, c->toks_sent, c->toks.n, c->text_sent);
        c->toks_sent = c->toks.n;
    }
    const char *finish = NULL;
    if (c->done && !c->final_sent) {
        c->final_sent = 1;
        finish = finish_reason(c, 0);
    }
    json_t *t =
        json_str_lossy(c->text.data ? c->text.data + c->text_sent : "", c->text.len - c->text_sent);
    c->text_sent = c->text.len;
    json_t *ch = json_pack("{s:i,s:o,s:o?,s:s?}", "index", index, "text", t, "logprobs", lp,
                           "finish_reason", finish);
    sse(out, chunk(j, "text_completion", json_pack("[o]", ch)));
}

static int openai_stream(void *ctx, struct http_req *req, struct buf *out) {
    (void)req;
    struct api_job *j = ctx;
    if (j->finished) return 0;
    if (!j->started) {
        j->started = 1;
        if (j->is_chat)
            for (int i = 0; i < j->n_choices; i++)
                send_chat_delta(j, out, i, json_pack("{s:s,s:n}", "role", "assistant", "content"),
                                NULL, NULL);
        return 1;
    }
    int all = api_job_poll(j, 100);
    struct api_err e = {0};
    if (api_job_error(j, &e)) {
        int status;
        sse(out, api_error_json(API_OPENAI, &e, &status));
        j->finished = 1;
        return 0;
    }
    for (int i = 0; i < j->n_choices; i++) {
        if (j->is_chat)
            emit_chat(j, &j->choices[i], i, out);
        else
            emit_completion(j, &j->choices[i], i, out);
    }
    if (!all) return 1;
    if (j->r->include_usage) {
        json_t *u =
            chunk(j, j->is_chat ? "chat.completion.chunk" : "text_completion", json_array());
        if (u) json_object_set_new(u, "usage", usage_json(j));
        if (u) json_object_set_new(u, "timings", timings_json(j));
        sse(out, u);
    }
    buf_append_str(out, "data: [DONE]\n\n");
    j->finished = 1;
    return 0;
}

static void openai_stream_close(void *ctx, int completed) {
    struct api_job *j = ctx;
    if (!completed) atomic_fetch_add(&j->s->n_disconnects, 1);
    api_job_free(j);
}

static void start_stream(struct http_req *req, struct api_job *j) {
    http_req_add_header(req, "Cache-Control", "no-cache");
    http_reply_stream(req, 200, "text/event-stream", openai_stream, openai_stream_close, j);
}

/* ============================================================================================
 * Endpoints
 * ============================================================================================ */

void api_openai_chat(struct server *s, struct http_req *req) {
    struct api_job *j;
    struct api_err e = {0};
    if (api_job_start(s, req, REQ_API_CHAT, API_OPENAI, &j, &e)) {
        api_reply_error(s, req, API_OPENAI, &e);
        return;
    }
    if (j->r->stream) {
        start_stream(req, j);
        return;
    }
    if (reply_if_failed(s, req, j, api_job_wait(j, req))) return;
    json_t *choices = json_array();
    for (int i = 0; choices && i < j->n_choices; i++) {
        struct api_choice *c = &j->choices[i];
        const struct chat_message *m = api_choice_message(c);
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        if (!msg || !m) {
            json_decref(msg);
            break;
        }
        json_object_set_new(msg, "content",
                            m->content_len || !m->n_tool_calls
                                ? json_str_lossy(m->content, m->content_len)
                                : json_null());
        if (m->reasoning_len)
            json_object_set_new(msg, "reasoning_content",
                                json_str_lossy(m->reasoning, m->reasoning_len));
        if (m->n_tool_calls) json_object_set_new(msg, "tool_calls", tool_calls_json(m));
        json_t *lp = j->r->logprobs ? chat_logprobs(s, &c->toks, 0, c->toks.n) : NULL;
        json_array_append_new(choices,
                              json_pack("{s:i,s:o,s:o?,s:s}", "index", i, "message", msg,
                                        "logprobs", lp, "finish_reason", finish_reason(c, 1)));
    }
    json_t *v =
        json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o,s:o}", "id", j->id, "object", "chat.completion",
                  "created", (json_int_t)j->created, "model", model_name(j), "system_fingerprint",
                  "hearth", "choices", choices, "usage", usage_json(j), "timings", timings_json(j));
    api_reply_json(s, req, 200, v);
    api_job_free(j);
}

void api_openai_completion(struct server *s, struct http_req *req) {
    struct api_job *j;
    struct api_err e = {0};
    if (api_job_start(s, req, REQ_API_COMPLETION, API_OPENAI, &j, &e)) {
        api_reply_error(s, req, API_OPENAI, &e);
        return;
    }
    if (j->r->stream) {
        start_stream(req, j);
        return;
    }
    if (reply_if_failed(s, req, j, api_job_wait(j, req))) return;
    json_t *choices = json_array();
    for (int i = 0; choices && i < j->n_choices; i++) {
        struct api_choice *c = &j->choices[i];
        json_t *lp = j->r->logprobs ? completion_logprobs(s, &c->toks, 0, c->toks.n, 0) : NULL;
        json_array_append_new(
            choices, json_pack("{s:i,s:o,s:o?,s:s}", "index", i, "text",
                               json_str_lossy(c->text.data ? c->text.data : "", c->text.len),
                               "logprobs", lp, "finish_reason", finish_reason(c, 0)));
    }
    json_t *v =
        json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:o,s:o}", "id", j->id, "object", "text_completion",
                  "created", (json_int_t)j->created, "model", model_name(j), "system_fingerprint",
                  "hearth", "choices", choices, "usage", usage_json(j), "timings", timings_json(j));
    api_reply_json(s, req, 200, v);
    api_job_free(j);
}
