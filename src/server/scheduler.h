/* scheduler.h: the thread that owns the engine's sessions and runs every generation.
 *
 * HTTP threads submit tasks (a tokenized prompt plus generation settings) and read results; the
 * scheduler thread alone touches the engine, the slots' sessions and the prefix cache. Each
 * step it builds one batch with the pending token (plus a speculative draft, when its generator
 * proposes one) of every generating slot and a chunk of prompt for slots still reading theirs
 * (engine_eval_batch: one forward pass serves everyone), then lets every slot with fresh logits
 * verify its draft and emit its tokens (engine/speculative.h: generator_plan, generator_commit,
 * the same code `hearth run` uses). A slot keeps its sequence after a task ends; a
 * new task takes the idle slot, or the saved prefix (the RAM prefix cache), that shares the
 * longest token prefix with its prompt and evaluates only the rest.
 *
 * Output is text, already cut at stop strings (never emitted, even across token boundaries)
 * and released only in whole UTF-8 characters. Tasks of one HTTP request share a channel:
 * the request waits on the channel and takes each task's new output.
 *
 * Lifetimes: a task lives until both sides let go (sched_task_release by the caller, the end
 * of the generation on the scheduler side); a channel until its creator frees it and all its
 * tasks are gone. Not here: prompts, JSON, tool calls (the API layer).
 */
#ifndef HEARTH_SERVER_SCHEDULER_H
#define HEARTH_SERVER_SCHEDULER_H

#include "../base/buf.h"
#include "../base/error.h"
#include "../engine/engine.h"

#include <stddef.h>
#include <stdint.h>

struct sched;
struct sched_chan;
struct sched_task;

struct sched_params {
    int n_slots;             /* sequences generated in parallel (--parallel) */
    int n_ctx;               /* positions per slot */
    int n_batch;             /* tokens per step for prompt chunks; 0 = 512 */
    enum kv_type kv_type;    /* KV cache type of every slot */
    size_t cache_bytes;      /* RAM for saved prefixes beyond the slots' own; 0 = none */
    int cache_min_tokens;    /* shorter sequences are not saved */
    struct spec_params spec; /* speculative decoding in every slot (zeroed: SPEC_NONE); a
                                draft_engine is borrowed and must outlive the scheduler */
};

/* A constraint on which tokens may come next (grammar, JSON schema). The scheduler owns it once
 * submitted and calls free when the task ends. */
struct sched_constraint {
    void *ctx;
    /* Sets logits[id] = -INFINITY for every id that may not come next. */
    void (*mask)(void *ctx, float *logits, int n_vocab);
    /* Advances past the sampled id; returns 1 when the constrained text is complete (the
     * generation then ends as if by end of text), else 0. */
    int (*accept)(void *ctx, int32_t id);
    void (*free)(void *ctx);
};

struct sched_gen {
    struct sampler_params sp;
    int max_tokens;          /* -1: until the context is full; capped to what the slot has left */
    const char *const *stop; /* [n_stop] non-empty stop strings (copied) */
    int n_stop;
    const int32_t *bias_ids; /* [n_bias] logit bias (copied) */
    const float *bias_vals;  /* [n_bias] added to the logit; -INFINITY bans */
    int n_bias;
    int n_probs;    /* top log-probs recorded per token (0..SCHED_MAX_PROBS); -1: none */
    int ignore_eos; /* keep going after end-of-generation tokens */
    struct sched_constraint *constraint; /* optional; ownership passes to the scheduler */
    int spec_override;                   /* 1: spec_mode/draft_max below apply to this task */
    enum spec_mode spec_mode; /* narrows the scheduler's speculation (generator_begin rules;
                                 SPEC_AUTO: the scheduler's own) */
    int draft_max;            /* -1: the scheduler's; else capped to it */
};

enum sched_finish {
    SCHED_RUNNING = 0,
    SCHED_STOP_EOS,  /* end-of-generation token (or the constraint completed) */
    SCHED_STOP_WORD, /* a stop string matched (stop_index) */
    SCHED_LENGTH,    /* max_tokens or the end of the context */
    SCHED_CANCELLED, /* the client went away or the server is stopping */
    SCHED_ERROR,     /* err says why */
};

#define SCHED_MAX_PROBS 20

/* One generated token, for log-probs (log-softmax of the logits it was sampled from). */
struct sched_token {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[SCHED_MAX_PROBS]; /* most likely first */
    float top_logprob[SCHED_MAX_PROBS];
};

struct sched_tokens { /* a growable array; free v with mem_free */
    struct sched_token *v;
    int n, cap;
};

struct sched_result {
    enum sched_finish finish;
    int stop_index; /* SCHED_STOP_WORD: index into the task's stop list */
    int n_prompt;   /* prompt tokens */
    int n_cached;   /* of which reused from a cached prefix */
    int n_gen;      /* tokens generated (the end-of-generation token included) */
    double t_queue_ms, t_prompt_ms, t_gen_ms;
    int n_drafted;    /* speculative draft tokens verified for this task */
    int n_accepted;   /* of which accepted */
    struct error err; /* SCHED_ERROR */
};

struct sched_stats {
    uint64_t tasks_done;           /* tasks finished (any reason) */
    uint64_t prompt_tokens;        /* prompt tokens evaluated */
    uint64_t prompt_tokens_cached; /* prompt tokens reused from a cached prefix */
    uint64_t cache_hits;           /* tasks that reused at least one token */
    uint64_t tokens_generated;
    double prompt_seconds, gen_seconds; /* step time, split by token share */
    uint64_t n_steps;                   /* forward passes (engine_eval_batch calls) */
    uint64_t busy_slot_steps;           /* sum over steps of the slots served */
    int n_slots, n_busy, n_queued;
    int n_cache_entries;
    size_t cache_bytes;
    int n_ctx_max;                          /* largest sequence seen in a slot */
    uint64_t spec_drafts;                   /* verify passes of a slot that carried a draft */
    uint64_t spec_drafted[SPEC_SRC_COUNT];  /* draft tokens verified, per drafter */
    uint64_t spec_accepted[SPEC_SRC_COUNT]; /* of which accepted */
};

int sched_create(struct sched **out, struct engine *e, const struct sched_params *p,
                 struct error *err);
/* Cancels every task, stops the thread and frees the slots. s may be NULL. */
void sched_free(struct sched *s);
/* Cancels every running and queued task and refuses new ones (callers waiting see
 * SCHED_CANCELLED soon); the thread keeps running until sched_free. */
void sched_shutdown(struct sched *s);
int sched_n_ctx(const struct sched *s); /* positions per slot */
void sched_get_stats(struct sched *s, struct sched_stats *st);

struct sched_chan *sched_chan_create(void);  /* NULL when out of memory */
void sched_chan_free(struct sched_chan *ch); /* ch may be NULL; its tasks may outlive it */

/* Queues a generation. The prompt and everything g points to are copied (the constraint is
 * taken). ERR_RANGE when n_prompt >= n_ctx (callers check first to word the error),
 * ERR_CANCELLED after shutdown, ERR_NOMEM. */
int sched_submit(struct sched *s, struct sched_chan *ch, const int32_t *prompt, int n_prompt,
                 const struct sched_gen *g, struct sched_task **out, struct error *err);

/* Waits until a task of the channel has news or timeout_ms passed. */
void sched_chan_wait(struct sched_chan *ch, int timeout_ms);
/* Moves a task's new output to the caller: text (valid UTF-8, whole characters) appended to
 * text, token records appended to toks (may be NULL). Returns 1 once the task has finished and
 * all its output has been taken (res filled), else 0. */
int sched_task_take(struct sched_task *t, struct buf *text, struct sched_tokens *toks,
                    struct sched_result *res);
void sched_task_cancel(struct sched_task *t);  /* the generation stops within one step */
void sched_task_release(struct sched_task *t); /* the caller is done with t; t may be NULL */

#endif
