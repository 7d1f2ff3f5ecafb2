/* api_anthropic.c: POST /v1/messages and /v1/messages/count_tokens (the Anthropic Messages
 * API, as Claude Code uses it).
 *
 * The request was translated to the OpenAI chat shape by request.c; here the decided parts of
 * the output become content blocks: thinking, text, tool_use (input as an object). A stream is
 * a sequence of named events: message_start, for each block content_block_start / _delta /
 * _stop, then message_delta (stop_reason, usage) and message_stop. Usage follows Anthropic's
 * split: input_tokens are the prompt tokens evaluated now, cache_read_input_tokens the ones
 * reused from the prefix cache.
 */
#include "api.h"

#include "../base/mem.h"

#include <string.h>

enum { BLOCK_THINKING, BLOCK_TEXT, BLOCK_TOOL };

static const char *model_name(const struct api_job *j) {
    return j->r->model ? j->r->model : j->s->alias;
}

static const char *stop_reason(const struct api_choice *c) {
    if (c->n_calls) return "tool_use";
    switch (c->res.finish) {
    case SCHED_LENGTH:
        return "max_tokens";
    case SCHED_STOP_WORD:
        return "stop_sequence";
    default:
        return "end_turn";
    }
}

static json_t *stop_sequence(const struct api_job *j, const struct api_choice *c) {
    if (c->res.finish != SCHED_STOP_WORD || c->res.stop_index < 0 ||
        c->res.stop_index >= j->r->n_stop)
        return json_null();
    return json_string(j->r->stop[c->res.stop_index]);
}

static json_t *usage_json(const struct api_job *j, int with_output) {
    const struct sched_result *r = &j->choices[0].res;
    json_t *u = json_pack("{s:i,s:i,s:i}", "input_tokens", j->n_prompt_total - r->n_cached,
                          "cache_creation_input_tokens", 0, "cache_read_input_tokens", r->n_cached);
    if (u) json_object_set_new(u, "output_tokens", json_integer(with_output ? r->n_gen : 0));
    return u;
}

/* The call's arguments as an object (the parser always gives valid JSON, normally an object). */
static json_t *call_input(const struct chat_tool_call *call) {
    json_t *v = json_loadb(call->arguments, call->arguments_len, 0, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        v = json_object();
    }
    return v;
}

/* ============================================================================================
 * Whole responses
 * ============================================================================================ */

static json_t *content_blocks(const struct chat_message *m) {
    json_t *arr = json_array();
    if (!arr || !m) {
        json_decref(arr);
        return NULL;
    }
    if (m->reasoning_len)
        json_array_append_new(arr, json_pack("{s:s,s:o,s:s}", "type", "thinking", "thinking",
                                             json_str_lossy(m->reasoning, m->reasoning_len),
                                             "signature", ""));
    if (m->content_len || !m->n_tool_calls)
        json_array_append_new(arr, json_pack("{s:s,s:o}", "type", "text", "text",
                                             json_str_lossy(m->content, m->content_len)));
    for (int k = 0; k < m->n_tool_calls; k++)
        json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:o}", "type", "tool_use", "id",
                                             m->tool_calls[k].id, "name", m->tool_calls[k].name,
                                             "input", call_input(&m->tool_calls[k])));
    return arr;
}

/* ============================================================================================
 * Streaming
 * ============================================================================================ */

static void event(struct buf *out, const char *name, json_t *v) {
    buf_printf(out, "event: %s\ndata: ", name);
    if (!v || json_dump_to(v, out)) out->failed = 1;
    buf_append_str(out, "\n\n");
    json_decref(v);
}

static void close_block(struct api_job *j, struct buf *out) {
    if (j->block_type < 0) return;
    event(out, "content_block_stop",
          json_pack("{s:s,s:i}", "type", "content_block_stop", "index", j->block_index));
    j->block_index++;
    j->block_type = -1;
}

/* Opens a block of the given type unless it is the current one (tool blocks always open). */
static void open_block(struct api_job *j, struct buf *out, int type, json_t *content_block) {
    close_block(j, out);
    j->block_type = type;
    event(out, "content_block_start",
          json_pack("{s:s,s:i,s:o}", "type", "content_block_start", "index", j->block_index,
                    "content_block", content_block));
}

static void block_delta(struct api_job *j, struct buf *out, json_t *delta) {
    event(out, "content_block_delta",
          json_pack("{s:s,s:i,s:o}", "type", "content_block_delta", "index", j->block_index,
                    "delta", delta));
}

static void text_delta(struct api_job *j, struct buf *out, int type, const char *s, size_t n) {
    if (j->block_type != type)
        open_block(j, out, type,
                   type == BLOCK_THINKING ? json_pack("{s:s,s:s,s:s}", "type", "thinking",
                                                      "thinking", "", "signature", "")
                                          : json_pack("{s:s,s:s}", "type", "text", "text", ""));
    block_delta(
        j, out,
        type == BLOCK_THINKING
            ? json_pack("{s:s,s:o}", "type", "thinking_delta", "thinking", json_str_lossy(s, n))
            : json_pack("{s:s,s:o}", "type", "text_delta", "text", json_str_lossy(s, n)));
}

static int messages_stream(void *ctx, struct http_req *req, struct buf *out) {
    (void)req;
    struct api_job *j = ctx;
    struct api_choice *c = &j->choices[0];
    if (j->finished) return 0;
    if (!j->started) {
        j->started = 1;
        json_t *msg = json_pack("{s:s,s:s,s:s,s:s,s:[],s:n,s:n,s:o}", "id", j->id, "type",
                                "message", "role", "assistant", "model", model_name(j), "content",
                                "stop_reason", "stop_sequence", "usage", usage_json(j, 0));
        event(out, "message_start",
              json_pack("{s:s,s:o}", "type", "message_start", "message", msg));
        return 1;
    }
    int all = api_job_poll(j, 100);
    struct api_err e = {0};
    if (api_job_error(j, &e)) {
        int status;
        event(out, "error", api_error_json(API_ANTHROPIC, &e, &status));
        j->finished = 1;
        return 0;
    }
    for (int i = 0; i < c->n_dq; i++) {
        const struct api_delta *d = &c->dq[i];
        const char *text = c->dbytes.data + d->off;
        switch (d->type) {
        case CHAT_DELTA_REASONING:
            text_delta(j, out, BLOCK_THINKING, text, d->len);
            break;
        case CHAT_DELTA_CONTENT:
            text_delta(j, out, BLOCK_TEXT, text, d->len);
            break;
        case CHAT_DELTA_TOOL_CALL:
            open_block(j, out, BLOCK_TOOL,
                       json_pack("{s:s,s:s,s:o,s:{}}", "type", "tool_use", "id", d->id, "name",
                                 json_str_lossy(text, d->len), "input"));
            break;
        case CHAT_DELTA_TOOL_ARGS:
            if (j->block_type == BLOCK_TOOL)
                block_delta(j, out,
                            json_pack("{s:s,s:o}", "type", "input_json_delta", "partial_json",
                                      json_str_lossy(text, d->len)));
            break;
        }
    }
    c->n_dq = 0;
    buf_clear(&c->dbytes);
    if (!all) return 1;
    if (j->block_index == 0 && j->block_type < 0) /* an empty answer still gets a text block */
        text_delta(j, out, BLOCK_TEXT, "", 0);
    close_block(j, out);
    json_t *md =
        json_pack("{s:s,s:{s:s,s:o},s:o}", "type", "message_delta", "delta", "stop_reason",
                  stop_reason(c), "stop_sequence", stop_sequence(j, c), "usage", usage_json(j, 1));
    event(out, "message_delta", md);
    event(out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    j->finished = 1;
    return 0;
}

static void messages_stream_close(void *ctx, int completed) {
    struct api_job *j = ctx;
    if (!completed) atomic_fetch_add(&j->s->n_disconnects, 1);
    api_job_free(j);
}

/* ============================================================================================
 * Endpoints
 * ============================================================================================ */

void api_anthropic_messages(struct server *s, struct http_req *req) {
    struct api_job *j;
    struct api_err e = {0};
    if (api_job_start(s, req, REQ_API_MESSAGES, API_ANTHROPIC, &j, &e)) {
        api_reply_error(s, req, API_ANTHROPIC, &e);
        return;
    }
    if (j->r->stream) {
        http_req_add_header(req, "Cache-Control", "no-cache");
        http_reply_stream(req, 200, "text/event-stream", messages_stream, messages_stream_close, j);
        return;
    }
    int rc = api_job_wait(j, req);
    if (rc) api_err_set(&e, ERR_CANCELLED, "the client disconnected");
    if (rc || api_job_error(j, &e)) {
        api_reply_error(s, req, API_ANTHROPIC, &e);
        api_job_free(j);
        return;
    }
    struct api_choice *c = &j->choices[0];
    json_t *v = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:o,s:o}", "id", j->id, "type", "message",
                          "role", "assistant", "model", model_name(j), "content",
                          content_blocks(api_choice_message(c)), "stop_reason", stop_reason(c),
                          "stop_sequence", stop_sequence(j, c), "usage", usage_json(j, 1));
    api_reply_json(s, req, 200, v);
    api_job_free(j);
}

void api_anthropic_count_tokens(struct server *s, struct http_req *req) {
    struct arena a;
    arena_init(&a);
    struct gen_request *r = NULL;
    struct error err = {0};
    struct api_err e = {0};
    size_t len;
    const char *body = http_req_body(req, &len);
    if (req_parse(REQ_API_MESSAGES, body, len, &a, &r, &err)) {
        api_err_set(&e, err.code, "%s", err.msg);
    } else {
        int32_t *ids = NULL;
        int64_t n = 0;
        if (!api_chat_tokens(s, r, &ids, &n, NULL, &e)) {
            api_reply_json(s, req, 200, json_pack("{s:I}", "input_tokens", (json_int_t)n));
            mem_free(ids);
        }
    }
    if (e.code) api_reply_error(s, req, API_ANTHROPIC, &e);
    req_free(r);
    arena_free(&a);
}
