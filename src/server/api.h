/* api.h: what the endpoint files share (server.c, api_gen.c, api_openai.c, api_anthropic.c).
 *
 * struct server holds the loaded model, the scheduler, the chat template and the counters. A
 * generation request becomes a struct api_job: the parsed request and its per-request arena,
 * the rendered and tokenized prompt(s), the scheduler tasks (one per choice) and, per choice,
 * the text taken so far and its chat parser. The OpenAI and Anthropic files only format jobs.
 * Every error response goes through api_error_json/api_reply_error (the one mapping from
 * ERR_* to HTTP status and JSON).
 */
#ifndef HEARTH_SERVER_API_H
#define HEARTH_SERVER_API_H

#include "../base/buf.h"
#include "../base/error.h"
#include "../engine/engine.h"
#include "../engine/constraint.h"
#include "../text/chat.h"
#include "arena.h"
#include "chat_prompt.h"
#include "http.h"
#include "json.h"
#include "request.h"
#include "scheduler.h"
#include "server.h"

#include <stdatomic.h>
#include <stdint.h>

/* Error codes of the HTTP layer, beyond base/error.h's ERR_* (all mapped by api_error_json). */
enum api_err_code {
    API_ERR_AUTH = -100,      /* 401: missing or wrong API key */
    API_ERR_METHOD = -101,    /* 405 */
    API_ERR_TOO_LARGE = -102, /* 413: body over the limit */
    API_ERR_CONTEXT = -103,   /* 400 exceed_context_size_error: the prompt does not fit */
};

enum api_flavor { API_OPENAI, API_ANTHROPIC };

struct api_err {
    int code; /* ERR_* or API_ERR_* */
    char msg[512];
    int n_prompt; /* API_ERR_CONTEXT: tokens of the prompt */
    int n_ctx;    /* API_ERR_CONTEXT: positions available */
};

struct server {
    struct server_opts o;
    struct engine *e;
    struct engine_info info;
    struct engine *draft; /* --spec draft: the draft model, else NULL */
    char spec_desc[128];  /* server_spec_desc */
    struct sched *sched;
    struct http_server *http;
    struct chat_prompt_cfg prompt_cfg;
    struct chat_template *tpl;         /* NULL: built-in ChatML */
    char *tpl_src;                     /* its source (owned) */
    enum chat_tool_format tool_format; /* the call syntax the template teaches */
    int template_thinks;               /* the template knows <think> blocks */
    struct constraint_vocab *vocab;    /* token bytes for grammar-constrained decoding */
    char *bos_text, *eos_text;         /* token texts for templates */
    char *alias;
    int64_t t_start; /* unix seconds */
    atomic_uint_fast64_t id_seq;
    atomic_uint_fast64_t n_requests, n_errors_4xx, n_errors_5xx, n_disconnects;
};

/* ---- errors (server.c) ---- */
/* Sets e (code + formatted message); returns code. */
int api_err_set(struct api_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The error as a JSON object of the flavor's shape; *status gets the HTTP status. New ref. */
json_t *api_error_json(enum api_flavor f, const struct api_err *e, int *status);
void api_reply_error(struct server *s, struct http_req *req, enum api_flavor f,
                     const struct api_err *e);
void api_reply_json(struct server *s, struct http_req *req, int status, json_t *v);
/* A random id with the given prefix ("chatcmpl-", "call_", "msg_"...), into out. */
void api_new_id(struct server *s, const char *prefix, char *out, size_t cap);

/* ---- generation jobs (api_gen.c) ---- */

/* One decided piece of a chat choice's output, in order: what a stream sends next. Consecutive
 * pieces of one kind (and call) are merged. */
struct api_delta {
    enum chat_delta_type type;
    int tool_index;  /* TOOL_CALL / TOOL_ARGS */
    size_t off, len; /* bytes in api_choice.dbytes (TOOL_CALL: the name) */
    char id[40];     /* TOOL_CALL */
};

struct api_choice {
    struct sched_task *task;
    struct buf text;          /* every byte of text taken so far */
    size_t text_sent;         /* streaming: bytes already sent (completions) */
    struct sched_tokens toks; /* token records taken so far */
    int toks_sent;
    struct chat_parser *parser; /* chat only */
    struct api_delta *dq;       /* streaming: parser deltas not yet sent [n_dq] */
    int n_dq, cap_dq;
    struct buf dbytes; /* their bytes */
    int n_calls;       /* tool calls seen so far */
    int failed;        /* out of memory while parsing */
    int done;
    int final_sent; /* streaming: the finish chunk went out */
    struct sched_result res;
};

struct api_job {
    struct server *s;
    enum api_flavor flavor;
    struct arena arena;
    struct gen_request *r;
    struct sched_chan *ch;
    struct api_choice *choices; /* [n_choices] */
    int n_choices;
    int n_prompt_total;            /* usage: prompt tokens, each prompt counted once */
    int is_chat;                   /* parse content/reasoning/tool calls */
    int streaming;                 /* keep the parser's deltas for the stream */
    enum chat_reasoning reasoning; /* how the output starts (the prompt may open <think>) */
    int spec_override;             /* the request's "speculative" settings (checked) */
    enum spec_mode spec_mode;
    int draft_max;
    char id[64];
    int64_t created;
    /* streaming state */
    int started, finished, error_sent;
    int block_index, block_type; /* Anthropic: current content block (-1 none) */
};

/* Parses the request body, renders and tokenizes the prompt(s), and submits the tasks. On error
 * fills e (and returns its code); *out is NULL then. */
int api_job_start(struct server *s, struct http_req *req, enum req_api api, enum api_flavor f,
                  struct api_job **out, struct api_err *e);
/* Waits up to timeout_ms for news, takes every choice's new output (and feeds the chat parsers).
 * Returns 1 once every choice has finished. */
int api_job_poll(struct api_job *j, int timeout_ms);
/* Non-streaming: polls until done; returns 0, or ERR_CANCELLED if the client went away. */
int api_job_wait(struct api_job *j, struct http_req *req);
/* The first scheduler error among the choices, or 0. */
int api_job_error(const struct api_job *j, struct api_err *e);
int api_job_completion_tokens(const struct api_job *j);
int api_job_cached_tokens(const struct api_job *j);
void api_job_free(struct api_job *j); /* cancels unfinished tasks; j may be NULL */
/* The assembled message of a finished chat choice (valid while the job lives). */
const struct chat_message *api_choice_message(const struct api_choice *c);

/* Renders and tokenizes a chat request's prompt (used by count_tokens and jobs): *ids is
 * mem_alloc'ed; *reasoning (may be NULL) says how the output starts. */
int api_chat_tokens(struct server *s, const struct gen_request *r, int32_t **ids, int64_t *n,
                    enum chat_reasoning *reasoning, struct api_err *e);

/* ---- endpoints ---- */
void api_openai_chat(struct server *s, struct http_req *req);
void api_openai_completion(struct server *s, struct http_req *req);
void api_anthropic_messages(struct server *s, struct http_req *req);
void api_anthropic_count_tokens(struct server *s, struct http_req *req);

#endif
