/* request.h: a generation request, parsed and validated from its JSON body.
 *
 * One parser per API shape (OpenAI chat completions, OpenAI legacy completions, Anthropic
 * messages) fills one struct: sampling settings, stop strings, logit bias, log-prob options,
 * and for chat the conversation normalised to the OpenAI chat shape (roles system, user,
 * assistant, tool; content a string or null; tool-call arguments a JSON string; Anthropic
 * blocks turned into tool calls, tool messages and reasoning). Everything the client got wrong
 * comes back as ERR_INVALID/ERR_FORMAT with a message naming the field. No engine, no HTTP:
 * the fuzz target drives this directly.
 *
 * Lifetime: the struct and its arrays live in the caller's arena; the JSON values it holds are
 * released by req_free (the arena does not own them).
 */
#ifndef HEARTH_SERVER_REQUEST_H
#define HEARTH_SERVER_REQUEST_H

#include "../base/error.h"
#include "arena.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

enum req_api { REQ_API_CHAT, REQ_API_COMPLETION, REQ_API_MESSAGES };
enum req_tool_choice { REQ_TOOLS_AUTO, REQ_TOOLS_NONE, REQ_TOOLS_REQUIRED, REQ_TOOLS_NAMED };
enum req_format { REQ_FORMAT_TEXT, REQ_FORMAT_JSON_OBJECT, REQ_FORMAT_JSON_SCHEMA };

#define REQ_MAX_N     16 /* completions per prompt */
#define REQ_MAX_STOP  16
#define REQ_MAX_PROBS 20

struct req_prompt {   /* one /v1/completions prompt: text or token ids */
    const char *text; /* borrowed from the body, or NULL */
    size_t len;
    int32_t *ids; /* [n_ids] when given as ids */
    int n_ids;
};

struct gen_request {
    enum req_api api;
    json_t *body;      /* the parsed body; borrowed strings point into it */
    const char *model; /* as sent, or NULL */
    int stream;
    int include_usage;  /* stream_options.include_usage */
    int n;              /* completions per prompt, 1..REQ_MAX_N */
    int64_t max_tokens; /* -1: until end of text or context */

    /* sampling */
    double temperature, top_p, min_p, presence_penalty, frequency_penalty, repeat_penalty;
    int top_k;
    int64_t seed; /* -1: random */
    int ignore_eos;
    const char **stop; /* [n_stop] non-empty */
    int n_stop;
    int32_t *bias_ids; /* [n_bias] */
    float *bias_vals;  /* [n_bias]; -INFINITY bans */
    int n_bias;
    int logprobs;     /* log-probs were asked for */
    int top_logprobs; /* alternatives per token, 0..REQ_MAX_PROBS */
    /* hearth extension "speculative": {"mode": "ngram", "draft_max": 4} (any field optional) */
    const char *spec_mode; /* the mode's name as sent (checked by the API layer), or NULL */
    int spec_draft_max;    /* 0..64, or -1 when not given */

    /* chat and messages: the conversation in OpenAI chat shape (owned references) */
    json_t *messages; /* array of message objects */
    json_t *tools;    /* array of {type:function, function:{name,...}} or NULL */
    enum req_tool_choice tool_choice;
    const char *tool_name;   /* REQ_TOOLS_NAMED */
    int parallel_tool_calls; /* default 1 */
    json_t *template_kwargs; /* object: chat_template_kwargs and what reasoning settings imply */
    enum req_format format;
    const json_t *schema; /* REQ_FORMAT_JSON_SCHEMA (or a schema given with json_object) */

    /* completions */
    struct req_prompt *prompts; /* [n_prompts] */
    int n_prompts;
};

/* Parses and validates body as a request of the given API. On success *out (in arena a) must be
 * released with req_free before the arena is freed. */
int req_parse(enum req_api api, const char *body, size_t len, struct arena *a,
              struct gen_request **out, struct error *err);
void req_free(struct gen_request *r); /* r may be NULL */

/* Number of generations the request asks for (n_prompts * n, or n for chat). */
int req_n_tasks(const struct gen_request *r);

#endif
