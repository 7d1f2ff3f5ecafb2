/* scheduler.c: slots, continuous batching, prefix reuse and text release (see scheduler.h).
 *
 * Threads: HTTP threads call sched_submit / sched_task_* / sched_chan_*; the scheduler thread
 * runs sched_main. The queue and the statistics are guarded by sched.mu; a task's output by its
 * channel's mutex; slots, sessions and cache entries are touched by the scheduler thread only
 * (after sched_create has built them), so they need no lock.
 */
#include "scheduler.h"

#include "../base/log.h"
#include "../base/mem.h"
#include "utf8.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

/* ============================================================================================
 * Channels and tasks
 *
 * A task is shared by two owners, the HTTP request and the scheduler, and it reports into a
 * channel shared by the request's tasks, so one wait covers all of them (n > 1, several
 * prompts). Reference counts decide who frees: a task holds a reference on its channel, and
 * every count changes under the channel's mutex.
 * ============================================================================================ */

struct sched_chan {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;    /* creator + live tasks */
    int version; /* bumped on every change, so waiters can tell news from timeouts */
};

struct sched_task {
    struct sched_chan *ch;
    struct sched_task *next; /* queue link (sched.mu) */
    int refs;                /* caller + scheduler (ch->mu) */
    atomic_int cancelled;

    /* inputs, immutable after submit */
    int32_t *prompt; /* [n_prompt] */
    int n_prompt;
    struct sched_gen gen; /* stop/bias point into the task's own copies */
    char **stop;          /* [gen.n_stop] */
    size_t stop_max;      /* longest stop string, bytes */
    double t_submit;      /* ms */

    /* output, guarded by ch->mu */
    struct buf out_text;
    struct sched_tokens out_toks;
    int finished;
    struct sched_result res;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

struct sched_chan *sched_chan_create(void) {
    struct sched_chan *ch = mem_calloc(1, sizeof(*ch));
    if (!ch) return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ch->mu, NULL);
    pthread_cond_init(&ch->cv, &ca);
    pthread_condattr_destroy(&ca);
    ch->refs = 1;
    return ch;
}

static void chan_unref(struct sched_chan *ch) {
    pthread_mutex_lock(&ch->mu);
    int last = --ch->refs == 0;
    pthread_mutex_unlock(&ch->mu);
    if (!last) return;
    pthread_mutex_destroy(&ch->mu);
    pthread_cond_destroy(&ch->cv);
    mem_free(ch);
}

void sched_chan_free(struct sched_chan *ch) {
    if (ch) chan_unref(ch);
}

void sched_chan_wait(struct sched_chan *ch, int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ch->mu);
    int v = ch->version;
    while (ch->version == v)
        if (pthread_cond_timedwait(&ch->cv, &ch->mu, &ts) != 0) break;
    pthread_mutex_unlock(&ch->mu);
}

static void task_free(struct sched_task *t) {
    if (t->gen.constraint && t->gen.constraint->free)
        t->gen.constraint->free(t->gen.constraint->ctx);
    for (int i = 0; i < t->gen.n_stop; i++) mem_free(t->stop[i]);
    mem_free(t->stop);
    mem_free(t->prompt);
    mem_free((void *)t->gen.bias_ids);
    mem_free((void *)t->gen.bias_vals);
    buf_free(&t->out_text);
    mem_free(t->out_toks.v);
    mem_free(t);
}

static void task_unref(struct sched_task *t) {
    struct sched_chan *ch = t->ch;
    pthread_mutex_lock(&ch->mu);
    int last = --t->refs == 0;
    pthread_mutex_unlock(&ch->mu);
    if (!last) return;
    task_free(t);
    chan_unref(ch);
}

void sched_task_release(struct sched_task *t) {
    if (t) task_unref(t);
}

int sched_task_take(struct sched_task *t, struct buf *text, struct sched_tokens *toks,
                    struct sched_result *res) {
    pthread_mutex_lock(&t->ch->mu);
    if (t->out_text.len) {
        buf_append(text, t->out_text.data, t->out_text.len);
        buf_clear(&t->out_text);
    }
    if (toks && t->out_toks.n) {
        int need = toks->n + t->out_toks.n;
        if (need > toks->cap) {
            int cap = need > 2 * toks->cap ? need : 2 * toks->cap;
            struct sched_token *v = mem_realloc(toks->v, (size_t)cap * sizeof(*v));
            if (v) {
                toks->v = v;
                toks->cap = cap;
            }
        }
        if (need <= toks->cap) {
            memcpy(toks->v + toks->n, t->out_toks.v, (size_t)t->out_toks.n * sizeof(*toks->v));
            toks->n = need;
        }
    }
    t->out_toks.n = 0;
    int done = t->finished;
    if (done && res) *res = t->res;
    pthread_mutex_unlock(&t->ch->mu);
    return done;
}

/* ============================================================================================
 * Scheduler state
 *
 * A slot is one session of n_ctx positions plus the state of the task it serves. Its session
 * keeps the tokens of its last task after that task ends: that is the first level of the
 * prefix cache. The second level is a list of saved sequences (sessions sized to their
 * content) that a slot's sequence is copied into before a new task overwrites it, bounded by
 * cache_bytes and evicted least recently used first.
 * ============================================================================================ */

struct slot {
    int id;
    struct sched *sched; /* owner (the sampler hook's way back) */
    struct session *ses;
    struct sched_task *task; /* NULL when idle */
    struct sampler *smp;
    struct generator *loop;    /* the decode loop with speculation, sized once at creation */
    int max_step;              /* most tokens one step evaluates or emits (1 + draft_max) */
    int32_t *emit;             /* [max_step] tokens of the last commit */
    struct sched_token *stage; /* [max_step] log-prob records of the last commit's tokens,
                                  computed by the sampler hook as each was picked */
    int n_picked;              /* tokens the sampler picked in this task (hook accepts) */
    int pick_base;             /* n_picked when the current commit started */
    int complete_at;           /* pick index at which the constraint completed, -1 */
    struct spec_stats st0;     /* generator statistics at assignment */
    struct spec_stats st_seen; /* ... when last added to the scheduler's counters */
    int n_prompt_done;         /* prompt positions in the session */
    int32_t next;              /* last emitted token, still to be evaluated; -1 none */
    int prefill_take;          /* prompt tokens in the current step's batch */
    int n_gen;
    struct buf gen;           /* the task's generated bytes */
    size_t released;          /* bytes of gen already handed out */
    struct sched_token *toks; /* [n_toks] token records not yet handed out */
    size_t *tok_end;          /* [n_toks] end offset of each record's piece in gen */
    int n_toks, cap_toks;
    uint64_t last_used;      /* tick of the last assignment/finish (LRU) */
    uint64_t assigned;       /* tick of assignment: prompt chunks go in this order */
    double t_start, t_first; /* ms */
    float *work;             /* [n_vocab] logits for constraints / log-probs */
};

struct cache_entry {
    struct session *ses; /* n_ctx = its sequence length */
    size_t bytes;
    uint64_t last_used;
};

struct sched {
    struct engine *e;
    struct sched_params p;
    int n_vocab;
    int mtp; /* slots draft with the MTP head: saved prefixes keep its cache too */
    pthread_t thread;
    int started;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sched_task *q_head, *q_tail; /* FIFO of tasks waiting for a slot */
    int n_queued;
    int stopping;
    struct sched_stats stats;

    struct slot *slots; /* [n_slots] */
    struct cache_entry *cache;
    int n_cache, cap_cache;
    size_t cache_bytes;
    uint64_t tick;

    struct sched_task **fresh;        /* [n_slots] tasks taken from the queue this step */
    struct session_batch_item *items; /* [n_slots] */
    struct slot **item_slot;          /* [n_slots] */
    struct buf piece;
};

static void stats_locked(struct sched *s, void (*fn)(struct sched *s, void *arg), void *arg) {
    pthread_mutex_lock(&s->mu);
    fn(s, arg);
    pthread_mutex_unlock(&s->mu);
}

/* ============================================================================================
 * Text release
 *
 * The generated bytes of a slot grow by one token piece per step. What may leave is the part
 * that (1) contains no stop string, (2) does not end with the beginning of one (it might still
 * become one), and (3) does not end inside a UTF-8 character. Stops are searched only from the
 * released offset on: by (2), a stop string can never start inside released text.
 * ============================================================================================ */

static void release_to(struct sched *s, struct slot *sl, size_t upto, int final) {
    struct sched_task *t = sl->task;
    struct sched_chan *ch = t->ch;
    (void)s;
    pthread_mutex_lock(&ch->mu);
    if (upto > sl->released) {
        utf8_repair(sl->gen.data + sl->released, upto - sl->released, &t->out_text);
        sl->released = upto;
    }
    int n_out = 0;
    while (n_out < sl->n_toks && (sl->tok_end[n_out] <= upto || final)) n_out++;
    if (n_out && t->gen.n_probs >= 0) {
        struct sched_tokens *o = &t->out_toks;
        if (o->n + n_out > o->cap) {
            int cap = o->n + n_out > 2 * o->cap ? o->n + n_out : 2 * o->cap;
            struct sched_token *v = mem_realloc(o->v, (size_t)cap * sizeof(*v));
            if (v) {
                o->v = v;
                o->cap = cap;
            }
        }
        if (o->n + n_out <= o->cap) {
            memcpy(o->v + o->n, sl->toks, (size_t)n_out * sizeof(*sl->toks));
            o->n += n_out;
        }
    }
    if (n_out) {
        memmove(sl->toks, sl->toks + n_out, (size_t)(sl->n_toks - n_out) * sizeof(*sl->toks));
        memmove(sl->tok_end, sl->tok_end + n_out,
                (size_t)(sl->n_toks - n_out) * sizeof(*sl->tok_end));
        sl->n_toks -= n_out;
    }
    ch->version++;
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
}

/* Earliest stop-string match at or after the released offset: returns its index or -1. */
static int find_stop(const struct slot *sl, size_t *at) {
    const struct sched_task *t = sl->task;
    int best = -1;
    size_t best_at = 0;
    const char *hay = sl->gen.data + sl->released;
    size_t n = sl->gen.len - sl->released;
    for (int i = 0; i < t->gen.n_stop; i++) {
        const char *m = memmem(hay, n, t->stop[i], strlen(t->stop[i]));
        if (m && (best < 0 || (size_t)(m - hay) < best_at)) {
            best = i;
            best_at = (size_t)(m - hay);
        }
    }
    *at = sl->released + best_at;
    return best;
}

/* Bytes at the end of gen that are a proper prefix of some stop string. */
static size_t stop_hold(const struct slot *sl) {
    const struct sched_task *t = sl->task;
    size_t avail = sl->gen.len - sl->released, hold = 0;
    const char *end = sl->gen.data + sl->gen.len;
    for (int i = 0; i < t->gen.n_stop; i++) {
        size_t ls = strlen(t->stop[i]);
        size_t kmax = ls - 1 < avail ? ls - 1 : avail;
        for (size_t k = kmax; k > hold; k--)
            if (memcmp(end - k, t->stop[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

static void hook_mask(void *ctx, float *logits, int n_vocab);
static void hook_accept(void *ctx, int32_t id);

/* ============================================================================================
 * Finishing and the prefix cache
 * ============================================================================================ */

static void stats_task_done(struct sched *s, void *arg) {
    const struct slot *sl = arg;
    s->stats.tasks_done++;
    s->stats.n_busy--;
    int n = session_n_past(sl->ses);
    if (n > s->stats.n_ctx_max) s->stats.n_ctx_max = n;
}

/* Ends the slot's task: flushes held text (unless a stop string cut it), reports the result,
 * and makes the slot idle. */
static void slot_finish(struct sched *s, struct slot *sl, enum sched_finish why, int stop_index,
                        size_t stop_at, const struct error *e) {
    struct sched_task *t = sl->task;
    double now = now_ms();
    if (why == SCHED_STOP_WORD)
        release_to(s, sl, stop_at, 0);
    else if (why != SCHED_CANCELLED && why != SCHED_ERROR)
        release_to(s, sl, sl->gen.len, 1);
    pthread_mutex_lock(&t->ch->mu);
    struct spec_stats st;
    generator_stats(sl->loop, &st);
    t->res.finish = why;
    t->res.stop_index = stop_index;
    t->res.n_gen = sl->n_gen;
    t->res.n_drafted = (int)(st.n_drafted - sl->st0.n_drafted);
    t->res.n_accepted = (int)(st.n_accepted - sl->st0.n_accepted);
    if (sl->t_first > 0) {
        t->res.t_prompt_ms = sl->t_first - sl->t_start;
        t->res.t_gen_ms = now - sl->t_first;
    } else {
        t->res.t_prompt_ms = now - sl->t_start;
    }
    if (e) t->res.err = *e;
    t->finished = 1;
    t->ch->version++;
    pthread_cond_broadcast(&t->ch->cv);
    pthread_mutex_unlock(&t->ch->mu);
    sampler_free(sl->smp);
    sl->smp = NULL;
    sl->task = NULL;
    sl->next = -1;
    sl->last_used = ++s->tick;
    buf_clear(&sl->gen);
    sl->n_toks = 0;
    stats_locked(s, stats_task_done, sl);
    task_unref(t);
}

/* A task that never reached a slot (cancelled while queued, or at shutdown). */
static void task_finish_unassigned(struct sched_task *t, enum sched_finish why) {
    pthread_mutex_lock(&t->ch->mu);
    t->res.finish = why;
    t->finished = 1;
    t->ch->version++;
    pthread_cond_broadcast(&t->ch->cv);
    pthread_mutex_unlock(&t->ch->mu);
    task_unref(t);
}

static void cache_remove(struct sched *s, int i) {
    session_free(s->cache[i].ses);
    s->cache_bytes -= s->cache[i].bytes;
    s->cache[i] = s->cache[--s->n_cache];
}

/* Saves a slot's sequence before a new task overwrites it, unless it is short, already saved
 * (an entry holds all of it), or larger than the whole budget. Entries it extends are dropped;
 * the least recently used ones go until it fits. */
static void cache_save(struct sched *s, struct slot *sl) {
    int n = session_n_past(sl->ses);
    if (s->p.cache_bytes == 0 || n < s->p.cache_min_tokens || n == 0) return;
    const int32_t *toks = session_tokens(sl->ses);
    for (int i = 0; i < s->n_cache; i++) {
        int m = session_common_prefix(s->cache[i].ses, toks, n);
        if (m == n) {
            s->cache[i].last_used = ++s->tick;
            return;
        }
    }
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = n;
    sp.kv_type = s->p.kv_type;
    sp.mtp = s->mtp;
    struct session *c = NULL;
    struct error err = {0};
    if (session_create(&c, s->e, &sp, &err)) {
        LOG_WARN("prefix cache: %s", err.msg);
        return;
    }
    size_t bytes = session_bytes(c);
    if (bytes > s->p.cache_bytes) {
        session_free(c);
        return;
    }
    for (int i = 0; i < s->n_cache;) { /* drop entries that are prefixes of this sequence */
        struct session *e = s->cache[i].ses;
        if (session_common_prefix(e, toks, n) == session_n_past(e))
            cache_remove(s, i);
        else
            i++;
    }
    while (s->n_cache && s->cache_bytes + bytes > s->p.cache_bytes) {
        int lru = 0;
        for (int i = 1; i < s->n_cache; i++)
            if (s->cache[i].last_used < s->cache[lru].last_used) lru = i;
        cache_remove(s, lru);
    }
    if (s->n_cache == s->cap_cache) {
        int cap = s->cap_cache ? 2 * s->cap_cache : 8;
        struct cache_entry *v = mem_realloc(s->cache, (size_t)cap * sizeof(*v));
        if (!v) {
            session_free(c);
            return;
        }
        s->cache = v;
        s->cap_cache = cap;
    }
    if (session_copy_prefix(c, sl->ses, n, &err)) {
        LOG_WARN("prefix cache: %s", err.msg);
        session_free(c);
        return;
    }
    s->cache[s->n_cache++] = (struct cache_entry){c, bytes, ++s->tick};
    s->cache_bytes += bytes;
    LOG_DEBUG("prefix cache: saved %d tokens from slot %d (%d entries, %.1f MiB)", n, sl->id,
              s->n_cache, (double)s->cache_bytes / (1024.0 * 1024.0));
}

struct assign_stats {
    int reused, hit;
};

static void stats_assign(struct sched *s, void *arg) {
    const struct assign_stats *a = arg;
    s->stats.prompt_tokens_cached += (uint64_t)a->reused;
    if (a->hit) s->stats.cache_hits++;
    s->stats.n_busy++;
    s->stats.n_cache_entries = s->n_cache;
    s->stats.cache_bytes = s->cache_bytes;
}

/* Puts a task on an idle slot, starting from the longest cached prefix of its prompt: the idle
 * slot that shares most (ties: least recently used), or a saved entry that shares more, copied
 * into the least recently used idle slot. At least one prompt token is always evaluated, for
 * fresh logits. Returns 0 or an error for the task. */
static int slot_assign(struct sched *s, struct sched_task *t, struct error *err) {
    struct slot *best = NULL, *lru = NULL;
    int best_lcp = -1;
    for (int i = 0; i < s->p.n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->task) continue;
        int m = session_common_prefix(sl->ses, t->prompt, t->n_prompt);
        if (m > best_lcp || (m == best_lcp && sl->last_used < best->last_used)) {
            best = sl;
            best_lcp = m;
        }
        if (!lru || sl->last_used < lru->last_used) lru = sl;
    }
    CHECK(best);
    int ent = -1, ent_lcp = 0;
    for (int i = 0; i < s->n_cache; i++) {
        int m = session_common_prefix(s->cache[i].ses, t->prompt, t->n_prompt);
        if (m > ent_lcp) {
            ent = i;
            ent_lcp = m;
        }
    }
    struct slot *sl = best;
    int lcp = best_lcp;
    if (ent >= 0 && ent_lcp > best_lcp) {
        sl = lru;
        struct session *src = s->cache[ent].ses;
        s->cache[ent].last_used = ++s->tick;
        if (session_common_prefix(sl->ses, session_tokens(src), session_n_past(src)) <
            session_n_past(sl->ses))
            cache_save(s, sl);
        int rc = session_copy_prefix(sl->ses, src, ent_lcp, err);
        if (rc) return rc;
        lcp = ent_lcp;
    } else if (lcp < session_n_past(sl->ses)) {
        cache_save(s, sl);
    }
    int reuse = lcp < t->n_prompt - 1 ? lcp : t->n_prompt - 1;
    int rc = session_truncate(sl->ses, reuse, err);
    if (rc) return rc;

    rc = sampler_create(&sl->smp, &t->gen.sp, s->n_vocab, err);
    if (rc) return rc;
    for (int i = 0; i < t->gen.n_bias; i++)
        sampler_set_logit_bias(sl->smp, t->gen.bias_ids[i], t->gen.bias_vals[i]);
    for (int i = 0; i < t->n_prompt; i++) sampler_accept(sl->smp, t->prompt[i]);
    if (t->gen.constraint || t->gen.n_probs >= 0) {
        struct sampler_constraint hook = {sl, hook_mask, hook_accept};
        if (sampler_set_constraint(sl->smp, &hook)) {
            rc = error_set(err, ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    rc = generator_begin(sl->loop, sl->smp, t->gen.spec_override ? t->gen.spec_mode : SPEC_AUTO,
                         t->gen.spec_override ? t->gen.draft_max : -1, err);
    if (rc) goto fail;
    sl->n_picked = sl->pick_base = 0;
    sl->complete_at = -1;
    generator_stats(sl->loop, &sl->st0);
    sl->st_seen = sl->st0;

    sl->task = t;
    sl->n_prompt_done = reuse;
    sl->next = -1;
    sl->n_gen = 0;
    buf_clear(&sl->gen);
    sl->released = 0;
    sl->n_toks = 0;
    sl->assigned = sl->last_used = ++s->tick;
    sl->t_start = now_ms();
    sl->t_first = 0;
    int room = s->p.n_ctx - t->n_prompt;
    if (t->gen.max_tokens < 0 || t->gen.max_tokens > room) t->gen.max_tokens = room;
    pthread_mutex_lock(&t->ch->mu);
    t->res.n_prompt = t->n_prompt;
    t->res.n_cached = reuse;
    t->res.t_queue_ms = sl->t_start - t->t_submit;
    pthread_mutex_unlock(&t->ch->mu);
    struct assign_stats a = {reuse, reuse > 0};
    stats_locked(s, stats_assign, &a);
    LOG_DEBUG("slot %d: task with %d prompt tokens, %d reused", sl->id, t->n_prompt, reuse);
    return 0;
fail:
    sampler_free(sl->smp);
    sl->smp = NULL;
    return rc;
}

/* ============================================================================================
 * Sampling
 *
 * The slot's generator samples (and, with speculation, verifies drafts) through the slot's
 * sampler; a hook on that sampler sees every row it samples from and every token it picks, in
 * order, drafts included. So the grammar masks each verify row with the state after the tokens
 * accepted before it (a draft the grammar forbids has probability 0 and is rejected), is
 * advanced by each emitted token, and the log-probs of each token come from its own row.
 * Tokens a commit emits past the end of the task (end of text, a stop string, the grammar
 * complete, max_tokens) are dropped; the session may hold some of them, which is harmless: they
 * are the model's own tokens and only extend the slot's cached sequence.
 * ============================================================================================ */

/* Log-softmax of logits[n] at id and the k most likely alternatives, into r. */
static void probs_compute(int n, int k, const float *logits, int32_t id, struct sched_token *r) {
    memset(r, 0, sizeof(*r));
    r->id = id;
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = fmaxf(mx, logits[i]);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    float lse = mx + (float)log(sum);
    r->logprob = logits[id] - lse;
    /* top k by insertion into a small sorted array (k <= 20) */
    for (int i = 0; i < n; i++) {
        float l = logits[i];
        if (l == -INFINITY) continue;
        if (r->n_top == k && (k == 0 || l <= r->top_logprob[k - 1])) continue;
        int j = r->n_top < k ? r->n_top++ : k - 1;
        while (j > 0 && r->top_logprob[j - 1] < l) {
            r->top_logprob[j] = r->top_logprob[j - 1];
            r->top_id[j] = r->top_id[j - 1];
            j--;
        }
        r->top_logprob[j] = l;
        r->top_id[j] = i;
    }
    for (int j = 0; j < r->n_top; j++) r->top_logprob[j] -= lse;
}

/* Appends a token record whose piece ends the generated text so far. */
static void push_record(struct slot *sl, const struct sched_token *r) {
    if (sl->n_toks == sl->cap_toks) {
        int cap = sl->cap_toks ? 2 * sl->cap_toks : 16;
        struct sched_token *v = mem_realloc(sl->toks, (size_t)cap * sizeof(*v));
        if (v) sl->toks = v;
        size_t *w = v ? mem_realloc(sl->tok_end, (size_t)cap * sizeof(*w)) : NULL;
        if (!w) return; /* the record is dropped; text is unaffected */
        sl->tok_end = w;
        sl->cap_toks = cap;
    }
    sl->toks[sl->n_toks] = *r;
    sl->tok_end[sl->n_toks++] = sl->gen.len;
}

/* The sampler hook (installed for tasks with a constraint or log-probs): mask runs on the
 * sampler's copy of each row's logits before the chain, accept on each picked token. */
static void hook_mask(void *ctx, float *logits, int n_vocab) {
    struct slot *sl = ctx;
    const struct sched_gen *g = &sl->task->gen;
    if (g->constraint) g->constraint->mask(g->constraint->ctx, logits, n_vocab);
    if (g->n_probs >= 0) memcpy(sl->work, logits, (size_t)n_vocab * sizeof(float));
}

static void hook_accept(void *ctx, int32_t id) {
    struct slot *sl = ctx;
    const struct sched_gen *g = &sl->task->gen;
    int k = sl->n_picked++, j = k - sl->pick_base;
    if (g->constraint && g->constraint->accept(g->constraint->ctx, id) && sl->complete_at < 0)
        sl->complete_at = k;
    if (g->n_probs >= 0 && j >= 0 && j < sl->max_step)
        probs_compute(sl->sched->n_vocab, g->n_probs, sl->work, id, &sl->stage[j]);
}

static void stats_token(struct sched *s, void *arg) {
    (void)arg;
    s->stats.tokens_generated++;
}

/* Adds a commit's speculation counters (a delta of the generator's statistics). */
static void stats_commit(struct sched *s, void *arg) {
    const struct spec_stats *d = arg;
    s->stats.spec_drafts += (uint64_t)d->n_drafts;
    for (int i = 0; i < SPEC_SRC_COUNT; i++) {
        s->stats.spec_drafted[i] += (uint64_t)d->n_drafted_by[i];
        s->stats.spec_accepted[i] += (uint64_t)d->n_accepted_by[i];
    }
}

/* Takes one emitted token (the j-th of the commit, pick index k): appends its text and record,
 * and ends the task on end of text, a stop string, a completed constraint or max_tokens.
 * Returns 1 when the task ended. */
static int slot_emit(struct sched *s, struct slot *sl, int32_t id, int j, int k) {
    struct sched_task *t = sl->task;
    sl->n_gen++;
    stats_locked(s, stats_token, NULL); /* before the task's end is reported */
    if (!t->gen.ignore_eos && engine_token_is_eog(s->e, id)) {
        slot_finish(s, sl, SCHED_STOP_EOS, -1, 0, NULL);
        return 1;
    }
    buf_clear(&s->piece);
    engine_token_piece(s->e, id, 0, &s->piece);
    buf_append(&sl->gen, s->piece.data ? s->piece.data : "", s->piece.len);
    if (t->gen.n_probs >= 0 && j < sl->max_step) push_record(sl, &sl->stage[j]);
    size_t at;
    int which = find_stop(sl, &at);
    if (which >= 0) {
        slot_finish(s, sl, SCHED_STOP_WORD, which, at, NULL);
        return 1;
    }
    if (sl->complete_at >= 0 && sl->complete_at <= k) {
        slot_finish(s, sl, SCHED_STOP_EOS, -1, 0, NULL);
        return 1;
    }
    if (sl->n_gen >= t->gen.max_tokens) {
        slot_finish(s, sl, SCHED_LENGTH, -1, 0, NULL);
        return 1;
    }
    sl->next = id;
    return 0;
}

/* Completes the slot's planned step (its tokens were evaluated, or it is the first token after
 * the prompt): the generator verifies and emits, the slot takes the tokens in order, releases
 * what text it can, and ends the task when the context is full. */
static void slot_commit(struct sched *s, struct slot *sl) {
    struct error err = {0};
    sl->pick_base = sl->n_picked;
    int n = generator_commit(sl->loop, sl->emit, &err);
    if (n < 0) {
        session_truncate(sl->ses, 0, NULL);
        slot_finish(s, sl, SCHED_ERROR, -1, 0, &err);
        return;
    }
    if (sl->t_first == 0) sl->t_first = now_ms();
    struct spec_stats st, d = {0};
    generator_stats(sl->loop, &st);
    d.n_drafts = st.n_drafts - sl->st_seen.n_drafts;
    for (int i = 0; i < SPEC_SRC_COUNT; i++) {
        d.n_drafted_by[i] = st.n_drafted_by[i] - sl->st_seen.n_drafted_by[i];
        d.n_accepted_by[i] = st.n_accepted_by[i] - sl->st_seen.n_accepted_by[i];
    }
    sl->st_seen = st;
    if (d.n_drafts) stats_locked(s, stats_commit, &d);
    int done = 0;
    for (int j = 0; j < n && !done; j++) done = slot_emit(s, sl, sl->emit[j], j, sl->pick_base + j);
    if (done) return;
    if (session_n_past(sl->ses) >= session_n_ctx(sl->ses)) {
        slot_finish(s, sl, SCHED_LENGTH, -1, 0, NULL);
        return;
    }
    size_t upto = sl->gen.len - stop_hold(sl);
    upto = sl->released + utf8_complete(sl->gen.data + sl->released, upto - sl->released);
    if (upto > sl->released) release_to(s, sl, upto, 0);
}

/* The prompt is in: the first token comes from its logits (a plan with nothing to evaluate). */
static void slot_first(struct sched *s, struct slot *sl) {
    if (sl->n_gen >= sl->task->gen.max_tokens) {
        slot_finish(s, sl, SCHED_LENGTH, -1, 0, NULL);
        return;
    }
    struct generator_plan plan;
    struct error err = {0};
    if (generator_plan(sl->loop, 1, &plan, &err)) {
        slot_finish(s, sl, SCHED_ERROR, -1, 0, &err);
        return;
    }
    CHECK(plan.n == 0);
    slot_commit(s, sl);
}

/* ============================================================================================
 * The loop
 *
 * One step = one engine_eval_batch. Generating slots come first, each with its pending token and
 * the draft its generator planned (drafts share what n_batch leaves after one token per
 * generating slot); the rest of the n_batch budget goes to prompt chunks in assignment order,
 * so a long prompt advances up to n_batch tokens per step while everyone else keeps decoding
 * (at least n_batch/4 prompt tokens per step, so prompts never starve behind many decoders).
 * Cancellation is checked before every step, so a cancelled task stops within one step, in its
 * prompt or its generation.
 * ============================================================================================ */

struct step_stats {
    int n_prompt, n_decode, n_slots;
    double dt_s;
};

static void stats_step(struct sched *s, void *arg) {
    const struct step_stats *a = arg;
    int total = a->n_prompt + a->n_decode;
    s->stats.n_steps++;
    s->stats.busy_slot_steps += (uint64_t)a->n_slots;
    s->stats.prompt_tokens += (uint64_t)a->n_prompt;
    if (total > 0) {
        s->stats.prompt_seconds += a->dt_s * a->n_prompt / total;
        s->stats.gen_seconds += a->dt_s * a->n_decode / total;
    }
}

static void step(struct sched *s) {
    for (int i = 0; i < s->p.n_slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->task && atomic_load(&sl->task->cancelled))
            slot_finish(s, sl, SCHED_CANCELLED, -1, 0, NULL);
    }
    int n_items = 0, n_decode = 0, n_prompt = 0, n_generating = 0;
    for (int i = 0; i < s->p.n_slots; i++)
        n_generating += s->slots[i].task && s->slots[i].next >= 0;
    int share = n_generating ? (s->p.n_batch - n_generating) / n_generating : 0;
    for (int i = 0; i < s->p.n_slots; i++) {
        struct slot *sl = &s->slots[i];
        sl->prefill_take = 0;
        if (!sl->task || sl->next < 0) continue;
        int left = sl->task->gen.max_tokens - sl->n_gen;
        struct generator_plan plan;
        struct error err = {0};
        int rc = generator_plan(sl->loop, left < 1 + share ? left : 1 + share, &plan, &err);
        if (rc) {
            slot_finish(s, sl, rc == ERR_RANGE ? SCHED_LENGTH : SCHED_ERROR, -1, 0,
                        rc == ERR_RANGE ? NULL : &err);
            continue;
        }
        CHECK(plan.n >= 1);
        s->items[n_items] = (struct session_batch_item){sl->ses, plan.ids, plan.n, plan.logits};
        s->item_slot[n_items++] = sl;
        n_decode += plan.n;
    }
    int budget = s->p.n_batch - n_decode, floor = s->p.n_batch / 4 > 0 ? s->p.n_batch / 4 : 1;
    if (budget < floor) budget = floor;
    for (;;) { /* prompt chunks, oldest assignment first */
        struct slot *pick = NULL;
        for (int i = 0; i < s->p.n_slots; i++) {
            struct slot *sl = &s->slots[i];
            if (!sl->task || sl->next >= 0 || sl->prefill_take ||
                sl->n_prompt_done >= sl->task->n_prompt)
                continue;
            if (!pick || sl->assigned < pick->assigned) pick = sl;
        }
        if (!pick || budget <= 0) break;
        int left = pick->task->n_prompt - pick->n_prompt_done;
        int take = left < budget ? left : budget;
        pick->prefill_take = take;
        s->items[n_items] = (struct session_batch_item){
            pick->ses, pick->task->prompt + pick->n_prompt_done, take, NULL};
        s->item_slot[n_items++] = pick;
        budget -= take;
        n_prompt += take;
    }
    if (n_items == 0) return;
    struct error err = {0};
    double t0 = now_ms();
    int rc = engine_eval_batch(s->e, s->items, n_items, &err);
    struct step_stats st = {n_prompt, n_decode, n_items, (now_ms() - t0) * 1e-3};
    stats_locked(s, stats_step, &st);
    if (rc) {
        LOG_ERROR("scheduler: %s", err.msg);
        for (int i = 0; i < n_items; i++) {
            struct slot *sl = s->item_slot[i];
            session_truncate(sl->ses, 0, NULL);
            slot_finish(s, sl, SCHED_ERROR, -1, 0, &err);
        }
        return;
    }
    for (int i = 0; i < n_items; i++) {
        struct slot *sl = s->item_slot[i];
        if (sl->prefill_take) {
            sl->n_prompt_done += sl->prefill_take;
            if (sl->n_prompt_done < sl->task->n_prompt) continue;
            slot_first(s, sl);
        } else {
            slot_commit(s, sl);
        }
    }
}

static void *sched_main(void *arg) {
    struct sched *s = arg;
    struct sched_task **fresh = s->fresh;
    for (;;) {
        int n_busy = 0;
        for (int i = 0; i < s->p.n_slots; i++) n_busy += s->slots[i].task != NULL;
        pthread_mutex_lock(&s->mu);
        while (!s->stopping && n_busy == 0 && !s->q_head) pthread_cond_wait(&s->cv, &s->mu);
        if (s->stopping) {
            pthread_mutex_unlock(&s->mu);
            break;
        }
        int n_fresh = 0;
        while (s->q_head && n_busy + n_fresh < s->p.n_slots) {
            struct sched_task *t = s->q_head;
            s->q_head = t->next;
            if (!s->q_head) s->q_tail = NULL;
            s->n_queued--;
            fresh[n_fresh++] = t;
        }
        s->stats.n_queued = s->n_queued;
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; i < n_fresh; i++) {
            struct sched_task *t = fresh[i];
            if (atomic_load(&t->cancelled)) {
                task_finish_unassigned(t, SCHED_CANCELLED);
                continue;
            }
            struct error err = {0};
            if (slot_assign(s, t, &err)) {
                pthread_mutex_lock(&t->ch->mu);
                t->res.err = err;
                pthread_mutex_unlock(&t->ch->mu);
                task_finish_unassigned(t, SCHED_ERROR);
            }
        }
        step(s);
    }
    for (int i = 0; i < s->p.n_slots; i++)
        if (s->slots[i].task) slot_finish(s, &s->slots[i], SCHED_CANCELLED, -1, 0, NULL);
    return NULL;
}

/* ============================================================================================
 * Public API
 * ============================================================================================ */

int sched_create(struct sched **out, struct engine *e, const struct sched_params *p,
                 struct error *err) {
    *out = NULL;
    if (p->n_slots < 1 || p->n_slots > 256)
        return error_set(err, ERR_INVALID, "--parallel must be between 1 and 256");
    struct sched *s = mem_calloc(1, sizeof(*s));
    if (!s) return error_set(err, ERR_NOMEM, "out of memory");
    s->e = e;
    s->p = *p;
    if (s->p.n_batch <= 0) s->p.n_batch = 512;
    struct engine_info info;
    engine_get_info(e, &info);
    s->n_vocab = info.n_vocab;
    s->mtp = info.has_mtp && (p->spec.mode == SPEC_MTP || p->spec.mode == SPEC_AUTO);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    buf_init(&s->piece);
    int rc = 0;
    s->slots = mem_calloc((size_t)p->n_slots, sizeof(*s->slots));
    s->items = mem_calloc((size_t)p->n_slots, sizeof(*s->items));
    s->item_slot = mem_calloc((size_t)p->n_slots, sizeof(*s->item_slot));
    s->fresh = mem_calloc((size_t)p->n_slots, sizeof(*s->fresh));
    if (!s->slots || !s->items || !s->item_slot || !s->fresh) {
        rc = error_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < p->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        sl->id = i;
        sl->sched = s;
        sl->next = -1;
        buf_init(&sl->gen);
        struct session_params sp;
        session_params_default(&sp);
        sp.n_ctx = p->n_ctx;
        sp.kv_type = p->kv_type;
        if ((rc = session_create(&sl->ses, e, &sp, err))) goto fail;
        /* before any prompt: the MTP head's cache fills with every evaluated token */
        if ((rc = generator_create(&sl->loop, sl->ses, NULL, &p->spec, err))) goto fail;
        sl->max_step = generator_max_step(sl->loop);
        sl->emit = mem_alloc((size_t)sl->max_step * sizeof(int32_t));
        sl->stage = mem_alloc((size_t)sl->max_step * sizeof(struct sched_token));
        sl->work = mem_alloc((size_t)s->n_vocab * sizeof(float));
        if (!sl->work || !sl->emit || !sl->stage) {
            rc = error_set(err, ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    s->p.n_ctx = session_n_ctx(s->slots[0].ses);
    s->stats.n_slots = p->n_slots;
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        rc = error_set(err, ERR_NOMEM, "cannot start the scheduler thread");
        goto fail;
    }
    s->started = 1;
    *out = s;
    return 0;
fail:
    sched_free(s);
    return rc;
}

void sched_shutdown(struct sched *s) {
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    struct sched_task *q = s->q_head;
    s->q_head = s->q_tail = NULL;
    s->n_queued = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    while (q) {
        struct sched_task *next = q->next;
        task_finish_unassigned(q, SCHED_CANCELLED);
        q = next;
    }
}

void sched_free(struct sched *s) {
    if (!s) return;
    if (s->started) {
        sched_shutdown(s);
        pthread_join(s->thread, NULL);
    }
    for (int i = 0; s->slots && i < s->p.n_slots; i++) {
        struct slot *sl = &s->slots[i];
        generator_free(sl->loop);
        session_free(sl->ses);
        mem_free(sl->emit);
        mem_free(sl->stage);
        sampler_free(sl->smp);
        buf_free(&sl->gen);
        mem_free(sl->toks);
        mem_free(sl->tok_end);
        mem_free(sl->work);
    }
    while (s->n_cache) cache_remove(s, s->n_cache - 1);
    mem_free(s->cache);
    mem_free(s->slots);
    mem_free(s->items);
    mem_free(s->item_slot);
    mem_free(s->fresh);
    buf_free(&s->piece);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    mem_free(s);
}

int sched_n_ctx(const struct sched *s) {
    return s->p.n_ctx;
}

void sched_get_stats(struct sched *s, struct sched_stats *st) {
    pthread_mutex_lock(&s->mu);
    *st = s->stats;
    pthread_mutex_unlock(&s->mu);
}

int sched_submit(struct sched *s, struct sched_chan *ch, const int32_t *prompt, int n_prompt,
                 const struct sched_gen *g, struct sched_task **out, struct error *err) {
    *out = NULL;
    if (n_prompt <= 0) {
        if (g->constraint && g->constraint->free) g->constraint->free(g->constraint->ctx);
        return error_set(err, ERR_INVALID, "the prompt is empty");
    }
    if (n_prompt >= s->p.n_ctx) {
        if (g->constraint && g->constraint->free) g->constraint->free(g->constraint->ctx);
        return error_set(err, ERR_RANGE, "the prompt has %d tokens, the context %d", n_prompt,
                         s->p.n_ctx);
    }
    struct sched_task *t = mem_calloc(1, sizeof(*t));
    if (!t) {
        if (g->constraint && g->constraint->free) g->constraint->free(g->constraint->ctx);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    t->gen = *g;
    t->gen.stop = NULL;
    t->gen.bias_ids = NULL;
    t->gen.bias_vals = NULL;
    t->gen.n_stop = 0;
    t->gen.n_bias = 0;
    if (t->gen.n_probs > SCHED_MAX_PROBS) t->gen.n_probs = SCHED_MAX_PROBS;
    buf_init(&t->out_text);
    t->prompt = mem_alloc((size_t)n_prompt * sizeof(int32_t));
    t->stop = g->n_stop ? mem_calloc((size_t)g->n_stop, sizeof(char *)) : NULL;
    int32_t *bi = g->n_bias ? mem_alloc((size_t)g->n_bias * sizeof(int32_t)) : NULL;
    float *bv = g->n_bias ? mem_alloc((size_t)g->n_bias * sizeof(float)) : NULL;
    t->gen.bias_ids = bi;
    t->gen.bias_vals = bv;
    int ok = t->prompt && (!g->n_stop || t->stop) && (!g->n_bias || (bi && bv));
    for (int i = 0; ok && i < g->n_stop; i++) {
        t->stop[i] = mem_strdup(g->stop[i]);
        if (!t->stop[i]) ok = 0;
        t->gen.n_stop = i + 1;
        size_t l = t->stop[i] ? strlen(t->stop[i]) : 0;
        if (l == 0) ok = 0;
        if (l > t->stop_max) t->stop_max = l;
    }
    if (!ok) {
        task_free(t);
        return error_set(err, ERR_NOMEM, "out of memory");
    }
    memcpy(t->prompt, prompt, (size_t)n_prompt * sizeof(int32_t));
    t->n_prompt = n_prompt;
    if (g->n_bias) {
        memcpy(bi, g->bias_ids, (size_t)g->n_bias * sizeof(int32_t));
        memcpy(bv, g->bias_vals, (size_t)g->n_bias * sizeof(float));
        t->gen.n_bias = g->n_bias;
    }
    t->ch = ch;
    t->refs = 2;
    t->t_submit = now_ms();
    pthread_mutex_lock(&ch->mu);
    ch->refs++;
    pthread_mutex_unlock(&ch->mu);
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->mu);
        t->refs = 1;
        task_unref(t);
        return error_set(err, ERR_CANCELLED, "the server is shutting down");
    }
    if (s->q_tail)
        s->q_tail->next = t;
    else
        s->q_head = t;
    s->q_tail = t;
    s->n_queued++;
    s->stats.n_queued = s->n_queued;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *out = t;
    return 0;
}

void sched_task_cancel(struct sched_task *t) {
    if (t) atomic_store(&t->cancelled, 1);
}
