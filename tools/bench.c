/* bench.c: `hearth bench` — prompt-processing and generation speed, in the style of llama-bench.
 *
 * `hearth bench -m MODEL [-p 512] [-n 128] [-t N] [-r 3] [-b 512] [--cache-type f16] [--json]
 *  [--spec none,ngram,draft,mtp,auto] [--draft-max N] [--draft-model FILE] [--prompt TEXT]`
 * runs, for every combination of the (comma-listed) thread counts, prompt lengths and
 * generation lengths, one warm-up and then -r timed repetitions, each from an empty KV cache:
 *   ppN  one session_eval of N random tokens (split into -b sized batches), N / seconds;
 *   tgN  N single-token evals (random tokens, no sampling, as llama-bench), N / seconds.
 * Model load and session creation are outside every timing. The table gives mean ± sample
 * standard deviation of tokens/s over the repetitions.
 *
 * With --spec MODE[,MODE...] the generation test decodes instead: per mode, tgN is N tokens
 * sampled greedily through the generator (src/engine/speculative.h) after a prompt (BOS, or
 * --prompt TEXT; evaluated, with the first token taken from its logits, outside the timing), so
 * n-gram lookup has the model's own text to draw on. tokens/s is then the effective rate: N /
 * the wall time of the whole decode, drafting, verification and rollback included. The modes'
 * repetitions alternate (none, ngram, none, ngram, ...) so that load drift hits them alike; each
 * record adds the drafted and accepted counts, the acceptance rate and the tokens per target
 * pass, and when `none` is in the list every other mode's tokens are compared with its tokens
 * (greedy speculation must reproduce them exactly).
 *
 * For generation it also prints the memory-bandwidth bound: bytes read per generated token
 * (every weight matrix once, only the active experts' share of MoE expert stacks, one row of
 * an untied token_embd, plus the F16/F32/Q8_0 KV rows at the mean context length of the run)
 * divided by the read bandwidth this process measures itself (each thread sums its slice of a
 * 1 GiB buffer, best of 5; measured before the tests and again right after each generation
 * test, the higher figure counts: on a shared machine one reading can come from a slow
 * moment), and the fraction of that bound reached.
 *
 * --json prints a JSON array with llama-bench's record fields (n_prompt, n_gen, n_threads,
 * avg_ts, stddev_ts, model_size, model_type, samples_ts, ...) so llama-bench tooling can read
 * it, plus hearth's own fields (bw_gbs, bytes_per_token, bound_ts, bound_frac, rss_bytes, and
 * cpu_share: process CPU time / (wall time x threads), well below 1 when other processes had the
 * cores; spinning threads count as busy), and with --spec: spec_mode, draft_max, n_drafted,
 * n_accepted, acceptance_rate, n_passes, tokens_per_pass, identical (null when not compared).
 */
#include "tools.h"

#include "../src/base/mem.h"
#include "../src/base/threads.h"
#include "../src/engine/engine.h"
#include "../src/gguf/gguf.h"
#include "../src/tensor/dtype.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_MAX_LIST 16
#define BENCH_MAX_SPEC 5

struct bench_opts {
    const char *model;
    int pp[BENCH_MAX_LIST], n_pp;
    int tg[BENCH_MAX_LIST], n_tg;
    int threads[BENCH_MAX_LIST], n_threads;
    int reps;
    int n_batch;
    enum kv_type kv;
    int json;
    int bw_mib; /* size of the bandwidth test buffer; 0 = skip the measurement */
    int load;   /* enum gguf_load */
    enum spec_mode spec[BENCH_MAX_SPEC]; /* --spec list; n_spec 0: tg is llama-bench's loop */
    int n_spec;
    int draft_max;           /* --draft-max, 0 = the generator's defaults (8; MTP 3) */
    const char *draft_model; /* --draft-model, for --spec draft */
    const char *prompt;      /* --prompt: text before the generation (NULL: BOS alone) */
};

/* One result row. */
struct bench_result {
    int n_prompt, n_gen, n_threads;
    double samples_ns[64]; /* per repetition */
    int n_samples;
    double avg_ts, stddev_ts, avg_ns, stddev_ns;
    double bytes_per_token; /* tg only */
    double bound_ts;        /* tg only: bw / bytes_per_token */
    long long rss_bytes;    /* VmRSS after the test */
    double cpu_share;       /* process CPU time / (wall time * threads) over the timed runs */
    char test_time[32];     /* ISO 8601 UTC */
    /* tg through the generator (--spec given); counts are sums over the timed repetitions */
    int is_gen;
    enum spec_mode spec;
    int draft_max;        /* longest draft the generator was created for (0: none) */
    long long n_drafted;  /* draft tokens verified */
    long long n_accepted; /* of which accepted */
    long long n_passes;   /* target forward passes */
    long long n_tokens;   /* tokens generated (n_gen per repetition) */
    int n_prompt_gen;     /* prompt tokens before the generation */
    int identical;        /* tokens equal to spec none's: 1, 0, or -1 (not compared) */
};

/* CPU time of the whole process (all threads), ns. */
static double cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ============================================================================================
 * Options
 * ============================================================================================ */

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: hearth bench -m MODEL [options]\n"
        "  -p N[,N...]        prompt lengths to time (default 512; 0 = none)\n"
        "  -n N[,N...]        generation lengths to time (default 128; 0 = none)\n"
        "  -t N[,N...]        threads (default: all CPUs)\n"
        "  -r N               repetitions per test (default 3)\n"
        "  -b N               batch size for prompt processing (default 512)\n"
        "  --cache-type T     KV cache: f16 (default), f32, q8_0\n"
        "  --bw-mib N         bandwidth test buffer in MiB (default 1024; 0 = skip)\n"
        "  --no-mmap, --mmap  read the model into (huge-page) memory / map the file (default:\n"
        "                     read it when it fits in 3/4 of the free memory)\n"
        "  --json             print a JSON array of llama-bench style records\n"
        "  --spec M[,M...]    decode tgN greedily through the speculative generator, once per\n"
        "                     mode: none, ngram, draft, mtp, auto (e.g. --spec none,ngram).\n"
        "                     tgN is then N tokens generated after the prompt (timed: drafting,\n"
        "                     verification and rollback included; the prompt is not), with\n"
        "                     acceptance figures; other modes' tokens are checked against none's\n"
        "  --draft-max N      most drafted tokens per step, 1..62 (default 8; MTP 3)\n"
        "  --draft-model F    draft model for --spec draft (same vocabulary)\n"
        "  --prompt TEXT      text before the generation with --spec (default: BOS alone)\n");
}

/* Parses "a,b,c" of integers in [lo, hi] into out (at most BENCH_MAX_LIST); count or -1. */
static int parse_list(const char *s, int lo, int hi, int *out) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < lo || v > hi || n == BENCH_MAX_LIST) return -1;
        out[n++] = (int)v;
        if (*end == 0) return n;
        if (*end != ',') return -1;
        p = end + 1;
    }
}

/* Parses "none,ngram,..." into out (at most BENCH_MAX_SPEC, no repeats); count or -1. */
static int parse_spec_list(const char *s, enum spec_mode *out) {
    int n = 0;
    char name[16];
    for (const char *p = s;;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof(name) || n == BENCH_MAX_SPEC) return -1;
        memcpy(name, p, len);
        name[len] = 0;
        if (spec_mode_parse(name, &out[n])) return -1;
        for (int k = 0; k < n; k++)
            if (out[k] == out[n]) return -1;
        n++;
        if (p[len] == 0) return n;
        p += len + 1;
    }
}

static int parse_opts(int argc, char **argv, struct bench_opts *o) {
    memset(o, 0, sizeof(*o));
    o->pp[0] = 512;
    o->n_pp = 1;
    o->tg[0] = 128;
    o->n_tg = 1;
    o->threads[0] = threads_n_cpus();
    o->n_threads = 1;
    o->reps = 3;
    o->n_batch = 512;
    o->kv = KV_TYPE_F16;
    o->bw_mib = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int n;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        } else if (!strcmp(a, "--no-mmap") || !strcmp(a, "--mmap")) {
            o->load = a[2] == 'n' ? GGUF_LOAD_COPY : GGUF_LOAD_MMAP;
            continue;
        }
        if (!v) {
            fprintf(stderr, "hearth bench: %s needs a value\n", a);
            return -1;
        }
        i++;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) {
            if ((n = parse_list(v, 0, 1 << 20, o->pp)) < 0) goto bad;
            o->n_pp = n;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) {
            if ((n = parse_list(v, 0, 1 << 20, o->tg)) < 0) goto bad;
            o->n_tg = n;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if ((n = parse_list(v, 1, 512, o->threads)) < 0) goto bad;
            o->n_threads = n;
        } else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) {
            if (parse_list(v, 1, 64, &o->reps) != 1) goto bad;
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) {
            if (parse_list(v, 1, 1 << 16, &o->n_batch) != 1) goto bad;
        } else if (!strcmp(a, "--spec")) {
            if ((n = parse_spec_list(v, o->spec)) < 0) {
                fprintf(stderr,
                        "hearth bench: --spec: bad value '%s' (a comma list of none, ngram, draft, "
                        "mtp, auto)\n",
                        v);
                return -1;
            }
            o->n_spec = n;
        } else if (!strcmp(a, "--draft-max")) {
            if (parse_list(v, 1, SPEC_DRAFT_MAX, &o->draft_max) != 1) {
                fprintf(stderr, "hearth bench: --draft-max: bad value '%s' (an integer in 1..%d)\n",
                        v, SPEC_DRAFT_MAX);
                return -1;
            }
        } else if (!strcmp(a, "--draft-model") || !strcmp(a, "-md")) {
            o->draft_model = v;
        } else if (!strcmp(a, "--prompt")) {
            o->prompt = v;
        } else if (!strcmp(a, "--bw-mib")) {
            if (parse_list(v, 0, 1 << 16, &o->bw_mib) != 1) goto bad;
        } else if (!strcmp(a, "--cache-type") || !strcmp(a, "-ctk")) {
            if (!strcmp(v, "f16"))
                o->kv = KV_TYPE_F16;
            else if (!strcmp(v, "f32"))
                o->kv = KV_TYPE_F32;
            else if (!strcmp(v, "q8_0"))
                o->kv = KV_TYPE_Q8_0;
            else
                goto bad;
        } else {
            fprintf(stderr, "hearth bench: unknown option '%s' (see hearth bench --help)\n", a);
            return -1;
        }
        continue;
    bad:
        fprintf(stderr, "hearth bench: %s: bad value '%s'\n", a, v);
        return -1;
    }
    if (!o->model) {
        fprintf(stderr, "hearth bench: no model given (-m MODEL)\n");
        return -1;
    }
    for (int k = 0; k < o->n_spec; k++)
        if (o->spec[k] == SPEC_DRAFT && !o->draft_model) {
            fprintf(stderr, "hearth bench: --spec draft needs --draft-model FILE\n");
            return -1;
        }
    return 0;
}

/* ============================================================================================
 * What a generated token reads, and how fast this machine can read
 * The bound is only as good as the byte count, so it follows the forward pass: every matrix
 * is read once per token, except token_embd (one row, unless it is also the LM head) and MoE
 * expert stacks (n_expert_used of n_expert slices). KV rows are read once per layer and
 * position of the context.
 * ============================================================================================ */

struct model_bytes {
    double weights;      /* bytes of weights read per generated token */
    double kv_per_pos;   /* KV bytes read per token per context position (all layers) */
    uint64_t file_bytes; /* model_size: tensor data bytes */
    char ftype[32];      /* "Q4_K - Medium" */
};

static const char *ftype_label(int64_t ft) {
    switch (ft) { /* llama.cpp's llama_model_ftype_name */
    case 0:
        return "all F32";
    case 1:
        return "F16";
    case 2:
        return "Q4_0";
    case 3:
        return "Q4_1";
    case 7:
        return "Q8_0";
    case 8:
        return "Q5_0";
    case 9:
        return "Q5_1";
    case 10:
        return "Q2_K - Medium";
    case 11:
        return "Q3_K - Small";
    case 12:
        return "Q3_K - Medium";
    case 13:
        return "Q3_K - Large";
    case 14:
        return "Q4_K - Small";
    case 15:
        return "Q4_K - Medium";
    case 16:
        return "Q5_K - Small";
    case 17:
        return "Q5_K - Medium";
    case 18:
        return "Q6_K";
    case 25:
        return "IQ4_NL - 4.5 bpw";
    case 30:
        return "IQ4_XS - 4.25 bpw";
    case 32:
        return "BF16";
    default:
        return "?";
    }
}

static int count_bytes(const char *path, const struct engine_info *info, enum kv_type kv,
                       struct model_bytes *mb, struct error *err) {
    memset(mb, 0, sizeof(*mb));
    struct gguf *g = NULL;
    int rc = gguf_open(&g, path, err);
    if (rc) return rc;
    int has_output = gguf_find_tensor(g, "output.weight") != NULL;
    double kv_elems = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor_info *t = gguf_tensor(g, i);
        double b = (double)t->n_bytes;
        mb->file_bytes += t->n_bytes;
        if (!strcmp(t->name, "token_embd.weight") && has_output)
            b /= (double)t->ne[1]; /* get_rows reads one row */
        else if (strstr(t->name, "_exps.") && info->n_expert > 0)
            b *= (double)info->n_expert_used / (double)info->n_expert;
        mb->weights += b;
        const char *dot = strrchr(t->name, '.');
        if (!strncmp(t->name, "blk.", 4) && dot && !strcmp(dot, ".weight") &&
            (strstr(t->name, ".attn_k.") || strstr(t->name, ".attn_v.")))
            kv_elems += (double)t->ne[1]; /* kv_dim of this layer's K or V */
    }
    double per_elem = kv == KV_TYPE_F32 ? 4.0 : kv == KV_TYPE_Q8_0 ? 34.0 / 32.0 : 2.0;
    mb->kv_per_pos = kv_elems * per_elem;
    int64_t ft = -1;
    if (gguf_get_int(g, "general.file_type", &ft) == 0) {
        snprintf(mb->ftype, sizeof(mb->ftype), "%s", ftype_label(ft));
    } else { /* as llama.cpp: the most common type of the 2-D tensors, marked as a guess */
        int count[DTYPE_COUNT] = {0}, best = 0;
        for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
            const struct gguf_tensor_info *t = gguf_tensor(g, i);
            if (t->n_dims >= 2 && t->type < DTYPE_COUNT) count[t->type]++;
        }
        for (int t = 1; t < DTYPE_COUNT; t++)
            if (count[t] > count[best]) best = t;
        snprintf(mb->ftype, sizeof(mb->ftype), "%s (guessed)",
                 best == 0 ? "all F32" : dtype_name((uint32_t)best));
    }
    gguf_close(g);
    return 0;
}

struct bw_args {
    const uint64_t *buf;
    size_t n_words;
    uint64_t sums[512];
};

static void bw_task(void *p, int ith, int nth) {
    struct bw_args *a = p;
    size_t per = (a->n_words + (size_t)nth - 1) / (size_t)nth;
    size_t lo = per * (size_t)ith, hi = lo + per < a->n_words ? lo + per : a->n_words;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
    for (size_t i = lo; i + 8 <= hi; i += 8) {
        s0 += a->buf[i];
        s1 += a->buf[i + 1];
        s2 += a->buf[i + 2];
        s3 += a->buf[i + 3];
        s4 += a->buf[i + 4];
        s5 += a->buf[i + 5];
        s6 += a->buf[i + 6];
        s7 += a->buf[i + 7];
    }
    a->sums[ith] = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
}

/* Read bandwidth in bytes/s with n_threads threads over a buffer of mib MiB (best of 5);
 * 0 when it cannot allocate. */
static double measure_bandwidth(int n_threads, int mib) {
    size_t n_bytes = (size_t)mib << 20;
    uint64_t *buf = mem_alloc_aligned(64, n_bytes);
    struct threadpool *pool = NULL;
    double best = 0;
    if (!buf || threadpool_create(&pool, n_threads) != 0) goto done;
    for (size_t i = 0; i < n_bytes / 8; i++) buf[i] = i; /* fault every page in */
    struct bw_args a = {buf, n_bytes / 8, {0}};
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_ns();
        threadpool_run(pool, bw_task, &a);
        double dt = now_ns() - t0;
        if (dt > 0 && (double)n_bytes / dt * 1e9 > best) best = (double)n_bytes / dt * 1e9;
    }
done:
    threadpool_free(pool);
    mem_free(buf);
    return best;
}

static long long rss_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    long long kb = 0;
    while (fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atoll(line + 6);
    fclose(f);
    return kb * 1024;
}

static void cpu_name(char *out, size_t cap) {
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "model name", 10)) continue;
        const char *c = strchr(line, ':');
        if (!c) break;
        c++;
        while (*c == ' ') c++;
        snprintf(out, cap, "%s", c);
        out[strcspn(out, "\n")] = 0;
        break;
    }
    fclose(f);
}

/* ============================================================================================
 * Timed runs
 * ============================================================================================ */

static uint32_t next_rand(uint64_t *state) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*state >> 33);
}

/* One repetition: from an empty cache, n_prompt tokens in one eval, or n_gen single-token
 * evals. Returns elapsed ns, or -1 with err set. */
static double run_once(struct session *s, int n_vocab, int n_prompt, int n_gen, uint64_t *rng,
                       int32_t *ids, struct error *err) {
    if (session_truncate(s, 0, err)) return -1;
    int n = n_prompt > 0 ? n_prompt : n_gen;
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(next_rand(rng) % (uint32_t)n_vocab);
    double t0 = now_ns();
    if (n_prompt > 0) {
        if (session_eval(s, ids, n_prompt, NULL, err)) return -1;
    } else {
        for (int i = 0; i < n_gen; i++)
            if (session_eval(s, &ids[i], 1, NULL, err)) return -1;
    }
    return now_ns() - t0;
}

static void iso_time(char *out, size_t cap) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int run_test(struct engine *e, const struct bench_opts *o, int n_threads, int n_prompt,
                    int n_gen, struct bench_result *r, struct error *err) {
    struct engine_info info;
    engine_get_info(e, &info);
    int n = n_prompt > 0 ? n_prompt : n_gen;
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = n + 1;
    sp.kv_type = o->kv;
    struct session *s = NULL;
    int32_t *ids = mem_alloc((size_t)n * sizeof(int32_t));
    if (!ids) return error_set(err, ERR_NOMEM, "out of memory");
    int rc = session_create(&s, e, &sp, err);
    if (rc) goto done;
    uint64_t rng = 1234;
    iso_time(r->test_time, sizeof(r->test_time));
    /* warm-up: pages of the mapping faulted in, caches and the thread pool warm */
    if (run_once(s, info.n_vocab, n_prompt, n_prompt > 0 ? 0 : (n_gen < 8 ? n_gen : 8), &rng, ids,
                 err) < 0) {
        rc = err->code ? err->code : ERR_INVALID;
        goto done;
    }
    r->n_prompt = n_prompt;
    r->n_gen = n_gen;
    r->n_threads = n_threads;
    r->n_samples = 0;
    double sum_ts = 0, sum_ns = 0, cpu_sum = 0;
    double ts[64];
    for (int rep = 0; rep < o->reps; rep++) {
        double cpu0 = cpu_ns();
        double ns = run_once(s, info.n_vocab, n_prompt, n_gen, &rng, ids, err);
        cpu_sum += cpu_ns() - cpu0;
        if (ns < 0) {
            rc = err->code ? err->code : ERR_INVALID;
            goto done;
        }
        r->samples_ns[r->n_samples] = ns;
        ts[r->n_samples++] = (double)n / (ns * 1e-9);
        sum_ts += ts[rep];
        sum_ns += ns;
    }
    r->avg_ts = sum_ts / r->n_samples;
    r->avg_ns = sum_ns / r->n_samples;
    double v_ts = 0, v_ns = 0;
    for (int i = 0; i < r->n_samples; i++) {
        v_ts += (ts[i] - r->avg_ts) * (ts[i] - r->avg_ts);
        v_ns += (r->samples_ns[i] - r->avg_ns) * (r->samples_ns[i] - r->avg_ns);
    }
    r->stddev_ts = r->n_samples > 1 ? sqrt(v_ts / (r->n_samples - 1)) : 0;
    r->stddev_ns = r->n_samples > 1 ? sqrt(v_ns / (r->n_samples - 1)) : 0;
    r->rss_bytes = rss_bytes();
    r->cpu_share = cpu_sum / (sum_ns * n_threads);
done:
    session_free(s);
    mem_free(ids);
    return rc;
}

/* ============================================================================================
 * Timed decoding (--spec)
 * One context per mode (session, greedy sampler, generator), created before anything is
 * evaluated (MTP needs that) and reused: each repetition truncates the session to empty,
 * restarts the generator (its acceptance estimates too), evaluates the prompt and takes the
 * first token from its logits, all untimed, then times the decode of n_gen more tokens.
 * ============================================================================================ */

struct gen_ctx {
    enum spec_mode mode;
    struct session *s;
    struct sampler *smp;
    struct generator *g;
    int32_t *tok;  /* [n_gen] the first timed repetition's tokens */
    int32_t *tmp;  /* [n_gen] later repetitions' */
    int is_stable; /* every repetition gave tok */
    double ts[64];
    double sum_ns, cpu_ns;
};

static void gen_ctx_free(struct gen_ctx *c) {
    generator_free(c->g);
    sampler_free(c->smp);
    session_free(c->s);
    mem_free(c->tok);
    mem_free(c->tmp);
    memset(c, 0, sizeof(*c));
}

static int gen_ctx_create(struct gen_ctx *c, struct engine *e, struct engine *draft,
                          const struct bench_opts *o, enum spec_mode mode, int n_ctx, int n_gen,
                          struct error *err) {
    memset(c, 0, sizeof(*c));
    c->mode = mode;
    c->is_stable = 1;
    struct engine_info info;
    engine_get_info(e, &info);
    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = n_ctx;
    sp.kv_type = o->kv;
    struct sampler_params smp;
    sampler_params_default(&smp);
    smp.temperature = 0; /* greedy: the modes must agree token for token */
    struct spec_params spp;
    spec_params_default(&spp);
    spp.mode = mode;
    if (o->draft_max > 0) spp.draft_max = spp.mtp_max = o->draft_max;
    spp.draft_engine = mode == SPEC_DRAFT ? draft : NULL;
    c->tok = mem_alloc((size_t)n_gen * sizeof(int32_t));
    c->tmp = mem_alloc((size_t)n_gen * sizeof(int32_t));
    if (!c->tok || !c->tmp) return error_set(err, ERR_NOMEM, "out of memory");
    int rc = session_create(&c->s, e, &sp, err);
    if (!rc) rc = sampler_create(&c->smp, &smp, info.n_vocab, err);
    if (!rc) rc = generator_create(&c->g, c->s, c->smp, &spp, err);
    return rc;
}

/* One repetition: n_gen tokens into out after the prompt; elapsed ns of the decode, or -1 with
 * err set. st gets the generator's statistics of the timed part. */
static double gen_once(struct gen_ctx *c, const int32_t *prompt, int n_prompt, int n_gen,
                       int32_t *out, struct spec_stats *st, struct error *err) {
    if (session_truncate(c->s, 0, err)) return -1;
    sampler_reset(c->smp);
    if (generator_begin(c->g, c->smp, c->mode, -1, err)) return -1;
    if (generator_prefill(c->g, prompt, n_prompt, err)) return -1;
    int32_t first;
    if (generator_next(c->g, &first, 1, err) != 1) return -1;
    struct spec_stats st0;
    generator_stats(c->g, &st0);
    double t0 = now_ns();
    for (int n = 0; n < n_gen;) {
        int k = generator_next(c->g, out + n, n_gen - n, err);
        if (k < 0) return -1;
        n += k;
    }
    double dt = now_ns() - t0;
    generator_stats(c->g, st);
    st->n_steps -= st0.n_steps;
    st->n_drafted -= st0.n_drafted;
    st->n_accepted -= st0.n_accepted;
    st->n_emitted -= st0.n_emitted;
    return dt;
}

/* The generation test of every --spec mode for one (threads, n_gen), repetitions alternating
 * between the modes; r[k] gets mode k's result. */
static int run_gen_test(struct engine *e, struct engine *draft, const struct bench_opts *o,
                        int n_threads, const int32_t *prompt, int n_prompt, int n_gen,
                        struct bench_result *r, struct error *err) {
    struct gen_ctx c[BENCH_MAX_SPEC];
    memset(c, 0, sizeof(c));
    int n_ctx = n_prompt + n_gen + 2 + (o->draft_max > 0 ? o->draft_max : 8), rc = 0;
    int i_none = -1;
    for (int k = 0; k < o->n_spec; k++) {
        if ((rc = gen_ctx_create(&c[k], e, draft, o, o->spec[k], n_ctx, n_gen, err))) goto done;
        if (o->spec[k] == SPEC_NONE) i_none = k;
        struct bench_result *rk = &r[k];
        memset(rk, 0, sizeof(*rk));
        rk->n_gen = n_gen;
        rk->n_threads = n_threads;
        rk->is_gen = 1;
        rk->spec = o->spec[k];
        rk->draft_max = generator_max_step(c[k].g) - 1;
        rk->n_prompt_gen = n_prompt;
        iso_time(rk->test_time, sizeof(rk->test_time));
        struct spec_stats st;
        int n_warm = n_gen < 8 ? n_gen : 8;
        if (gen_once(&c[k], prompt, n_prompt, n_warm, c[k].tmp, &st, err) < 0) goto failed;
    }
    for (int rep = 0; rep < o->reps; rep++) {
        for (int k = 0; k < o->n_spec; k++) {
            struct spec_stats st;
            int32_t *out = rep == 0 ? c[k].tok : c[k].tmp;
            double cpu0 = cpu_ns();
            double ns = gen_once(&c[k], prompt, n_prompt, n_gen, out, &st, err);
            c[k].cpu_ns += cpu_ns() - cpu0;
            if (ns < 0) goto failed;
            if (rep > 0 && memcmp(c[k].tok, c[k].tmp, (size_t)n_gen * sizeof(int32_t)))
                c[k].is_stable = 0;
            struct bench_result *rk = &r[k];
            rk->samples_ns[rk->n_samples] = ns;
            c[k].ts[rk->n_samples++] = (double)n_gen / (ns * 1e-9);
            c[k].sum_ns += ns;
            rk->n_drafted += st.n_drafted;
            rk->n_accepted += st.n_accepted;
            rk->n_passes += st.n_steps;
            rk->n_tokens += n_gen;
        }
    }
    for (int k = 0; k < o->n_spec; k++) {
        struct bench_result *rk = &r[k];
        double sum_ts = 0, v_ts = 0, v_ns = 0;
        for (int i = 0; i < rk->n_samples; i++) sum_ts += c[k].ts[i];
        rk->avg_ts = sum_ts / rk->n_samples;
        rk->avg_ns = c[k].sum_ns / rk->n_samples;
        for (int i = 0; i < rk->n_samples; i++) {
            v_ts += (c[k].ts[i] - rk->avg_ts) * (c[k].ts[i] - rk->avg_ts);
            v_ns += (rk->samples_ns[i] - rk->avg_ns) * (rk->samples_ns[i] - rk->avg_ns);
        }
        rk->stddev_ts = rk->n_samples > 1 ? sqrt(v_ts / (rk->n_samples - 1)) : 0;
        rk->stddev_ns = rk->n_samples > 1 ? sqrt(v_ns / (rk->n_samples - 1)) : 0;
        rk->rss_bytes = rss_bytes();
        rk->cpu_share = c[k].cpu_ns / (c[k].sum_ns * n_threads);
        rk->identical = -1;
        if (i_none >= 0 && k != i_none)
            rk->identical = c[k].is_stable && c[i_none].is_stable &&
                            !memcmp(c[k].tok, c[i_none].tok, (size_t)n_gen * sizeof(int32_t));
    }
    goto done;
failed:
    rc = err->code ? err->code : ERR_INVALID;
done:
    for (int k = 0; k < o->n_spec; k++) gen_ctx_free(&c[k]);
    return rc;
}

/* ============================================================================================
 * Output
 * ============================================================================================ */

static void size_label(uint64_t n_params, char *out, size_t cap) {
    double b = (double)n_params / 1e9;
    if (b >= 10)
        snprintf(out, cap, "%.0fB", b);
    else if (b >= 0.1)
        snprintf(out, cap, "%.1fB", b);
    else
        snprintf(out, cap, "%.1fM", b * 1e3);
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static const char *kv_name(enum kv_type kv) {
    return kv == KV_TYPE_F32 ? "f32" : kv == KV_TYPE_Q8_0 ? "q8_0" : "f16";
}

static void print_json(FILE *f, const struct bench_opts *o, const struct engine_info *info,
                       const struct model_bytes *mb, const char *model_type, const char *cpu,
                       double bw, const struct bench_result *r, int first) {
    const char *commit = getenv("HEARTH_COMMIT");
    fprintf(f, "%s  {\n", first ? "" : ",\n");
    fprintf(f, "    \"build_commit\": ");
    json_str(f, commit && *commit ? commit : "unknown");
    fprintf(f, ",\n    \"build_number\": 0,\n    \"cpu_info\": ");
    json_str(f, cpu);
    fprintf(f, ",\n    \"gpu_info\": \"\",\n    \"backends\": \"CPU\",\n    \"model_filename\": ");
    json_str(f, o->model);
    fprintf(f, ",\n    \"model_type\": ");
    json_str(f, model_type);
    fprintf(f,
            ",\n    \"model_size\": %llu,\n    \"model_n_params\": %llu,\n"
            "    \"n_batch\": %d,\n    \"n_ubatch\": %d,\n    \"n_threads\": %d,\n"
            "    \"cpu_mask\": \"0x0\",\n    \"cpu_strict\": false,\n    \"poll\": 50,\n"
            "    \"type_k\": \"%s\",\n    \"type_v\": \"%s\",\n    \"n_gpu_layers\": 0,\n"
            "    \"split_mode\": \"layer\",\n    \"main_gpu\": 0,\n    \"no_kv_offload\": false,\n"
            "    \"flash_attn\": true,\n    \"tensor_split\": \"0.00\",\n    \"use_mmap\": true,\n"
            "    \"embeddings\": false,\n    \"n_prompt\": %d,\n    \"n_gen\": %d,\n"
            "    \"n_depth\": 0,\n    \"test_time\": \"%s\",\n",
            (unsigned long long)mb->file_bytes, (unsigned long long)info->n_params, o->n_batch,
            o->n_batch, r->n_threads, kv_name(o->kv), kv_name(o->kv), r->n_prompt, r->n_gen,
            r->test_time);
    fprintf(f,
            "    \"avg_ns\": %.0f,\n    \"stddev_ns\": %.0f,\n    \"avg_ts\": %.6f,\n"
            "    \"stddev_ts\": %.6f,\n    \"samples_ns\": [",
            r->avg_ns, r->stddev_ns, r->avg_ts, r->stddev_ts);
    int n = r->n_prompt > 0 ? r->n_prompt : r->n_gen;
    for (int i = 0; i < r->n_samples; i++) fprintf(f, "%s%.0f", i ? ", " : " ", r->samples_ns[i]);
    fprintf(f, " ],\n    \"samples_ts\": [");
    for (int i = 0; i < r->n_samples; i++)
        fprintf(f, "%s%.6g", i ? ", " : " ", (double)n / (r->samples_ns[i] * 1e-9));
    fprintf(f, " ],\n    \"kernels\": ");
    json_str(f, info->kernels);
    fprintf(f, ",\n    \"rss_bytes\": %lld,\n    \"cpu_share\": %.3f,\n    \"bw_gbs\": %.3f",
            r->rss_bytes, r->cpu_share, bw / 1e9);
    if (r->n_gen > 0)
        fprintf(f,
                ",\n    \"bytes_per_token\": %.0f,\n    \"bound_ts\": %.6f,\n"
                "    \"bound_frac\": %.4f",
                r->bytes_per_token, r->bound_ts, r->bound_ts > 0 ? r->avg_ts / r->bound_ts : 0);
    if (o->n_spec > 0) { /* --spec: every record says how it decoded (pp rows: none) */
        fprintf(f, ",\n    \"spec_mode\": \"%s\",\n    \"draft_max\": %d,\n    \"draft_model\": ",
                spec_mode_name(r->spec), r->draft_max);
        json_str(f, r->spec == SPEC_DRAFT && o->draft_model ? o->draft_model : "");
        fprintf(
            f,
            ",\n    \"n_gen_prompt\": %d,\n    \"n_drafted\": %lld,\n    \"n_accepted\": %lld,\n"
            "    \"acceptance_rate\": %.4f,\n    \"n_passes\": %lld,\n"
            "    \"tokens_per_pass\": %.4f,\n    \"identical\": %s",
            r->n_prompt_gen, r->n_drafted, r->n_accepted,
            r->n_drafted ? (double)r->n_accepted / (double)r->n_drafted : 0.0, r->n_passes,
            r->n_passes ? (double)r->n_tokens / (double)r->n_passes : 0.0,
            r->identical < 0 ? "null"
            : r->identical   ? "true"
                             : "false");
    }
    fprintf(f, "\n  }");
}

static void print_md_header(FILE *f, int with_spec) {
    fprintf(f, "| %-30s | %10s | %10s | %-7s | %7s | %8s | %18s | %9s | %8s | %10s | %4s |",
            "model", "size", "params", "backend", "threads", "test", "t/s", "bound t/s", "of bound",
            "RSS", "CPU");
    if (with_spec)
        fprintf(f, " %-5s | %8s | %13s | %8s | %6s |", "spec", "accept", "acc/drafted", "tok/pass",
                "= none");
    fprintf(f,
            "\n| %.30s | %.9s: | %.9s: | %.7s | %.6s: | %.7s: | %.17s: | %.8s: | %.7s: | %.9s: | "
            "%.3s: |",
            "------------------------------", "----------", "----------", "-------", "-------",
            "--------", "------------------", "---------", "--------", "----------", "----");
    if (with_spec) fprintf(f, " ----- | -------: | ------------: | -------: | -----: |");
    fprintf(f, "\n");
}

static void print_md_row(FILE *f, const char *model_type, const struct model_bytes *mb,
                         const struct engine_info *info, const struct bench_result *r,
                         int with_spec) {
    char size[32], params[32], test[32], ts[48], bound[32] = "", frac[32] = "";
    snprintf(size, sizeof(size), "%.2f GiB", (double)mb->file_bytes / (1024.0 * 1024 * 1024));
    if (mb->file_bytes < (1ull << 30))
        snprintf(size, sizeof(size), "%.2f MiB", (double)mb->file_bytes / (1024.0 * 1024));
    snprintf(params, sizeof(params), "%.2f %s",
             info->n_params >= 1000000000 ? (double)info->n_params / 1e9
                                          : (double)info->n_params / 1e6,
             info->n_params >= 1000000000 ? "B" : "M");
    if (r->n_prompt > 0)
        snprintf(test, sizeof(test), "pp%d", r->n_prompt);
    else
        snprintf(test, sizeof(test), "tg%d", r->n_gen);
    snprintf(ts, sizeof(ts), "%.2f ± %.2f", r->avg_ts, r->stddev_ts);
    if (r->n_gen > 0 && r->bound_ts > 0) {
        snprintf(bound, sizeof(bound), "%.2f", r->bound_ts);
        snprintf(frac, sizeof(frac), "%.0f%%", 100.0 * r->avg_ts / r->bound_ts);
    }
    fprintf(f,
            "| %-30s | %10s | %10s | %-7s | %7d | %8s | %18s | %9s | %8s | %6.0f MiB | %3.0f%% |",
            model_type, size, params, "CPU", r->n_threads, test, ts, bound, frac,
            (double)r->rss_bytes / (1024.0 * 1024), 100.0 * r->cpu_share);
    if (with_spec && !r->is_gen) {
        fprintf(f, " %-5s | %8s | %13s | %8s | %6s |", "", "", "", "", "");
    } else if (with_spec) {
        char acc[32] = "", drafted[32] = "", per[32];
        if (r->spec != SPEC_NONE) {
            snprintf(acc, sizeof(acc), "%.1f%%",
                     r->n_drafted ? 100.0 * (double)r->n_accepted / (double)r->n_drafted : 0.0);
            snprintf(drafted, sizeof(drafted), "%lld/%lld", r->n_accepted, r->n_drafted);
        }
        snprintf(per, sizeof(per), "%.2f",
                 r->n_passes ? (double)r->n_tokens / (double)r->n_passes : 0.0);
        fprintf(f, " %-5s | %8s | %13s | %8s | %6s |", spec_mode_name(r->spec), acc, drafted, per,
                r->identical < 0 ? ""
                : r->identical   ? "yes"
                                 : "NO");
    }
    fprintf(f, "\n");
}

/* The tokens the --spec generation starts from: --prompt TEXT (with BOS when the model wants
 * it), or BOS alone. */
static int gen_prompt(struct engine *e, const struct bench_opts *o, int32_t **ids, int *n,
                      struct error *err) {
    *ids = NULL;
    *n = 0;
    if (o->prompt) {
        int64_t n_ids = 0;
        int rc = engine_tokenize(e, o->prompt, strlen(o->prompt), engine_add_bos(e), 1, ids, &n_ids,
                                 err);
        if (rc) return rc;
        if (n_ids == 0) return error_set(err, ERR_INVALID, "--prompt is empty after tokenization");
        if (n_ids > (1 << 20)) return error_set(err, ERR_RANGE, "--prompt is too long");
        *n = (int)n_ids;
        return 0;
    }
    int32_t bos = engine_token_bos(e);
    if (bos < 0)
        return error_set(err, ERR_INVALID, "the model has no BOS token: give --prompt TEXT");
    *ids = mem_alloc(sizeof(int32_t));
    if (!*ids) return error_set(err, ERR_NOMEM, "out of memory");
    (*ids)[0] = bos;
    *n = 1;
    return 0;
}

/* ============================================================================================
 * Entry point
 * ============================================================================================ */

int tool_bench_main(int argc, char **argv) {
    struct bench_opts o;
    int prc = parse_opts(argc, argv, &o);
    if (prc) return prc > 0 ? 0 : 1;
    struct error err = {0};
    char cpu[256], model_type[160], sz[32];
    cpu_name(cpu, sizeof(cpu));
    int first = 1, ret = 1, printed_header = 0, uses_draft = 0;
    struct engine *e = NULL, *de = NULL;
    int32_t *prompt = NULL;
    int n_prompt_gen = 0;
    struct buf notes; /* one line per --spec comparison, printed after the table */
    buf_init(&notes);
    for (int k = 0; k < o.n_spec; k++) uses_draft |= o.spec[k] == SPEC_DRAFT;
    if (o.json) printf("[\n");
    for (int it = 0; it < o.n_threads; it++) {
        struct engine_params ep;
        engine_params_default(&ep);
        ep.n_threads = o.threads[it];
        ep.n_batch = o.n_batch;
        ep.load = o.load;
        if (engine_open(&e, o.model, &ep, &err)) goto fail;
        if (uses_draft && engine_open(&de, o.draft_model, &ep, &err)) goto fail;
        if (o.n_spec > 0 && gen_prompt(e, &o, &prompt, &n_prompt_gen, &err)) goto fail;
        struct engine_info info;
        engine_get_info(e, &info);
        for (int k = 0; k < o.n_spec; k++)
            if (o.spec[k] == SPEC_MTP && !info.has_mtp) { /* before any output */
                error_set(&err, ERR_UNSUPPORTED,
                          "--spec mtp needs a model with an MTP block (nextn layers); %s has none",
                          o.model);
                goto fail;
            }
        struct model_bytes mb;
        if (count_bytes(o.model, &info, o.kv, &mb, &err)) goto fail;
        size_label(info.n_params, sz, sizeof(sz));
        snprintf(model_type, sizeof(model_type), "%s %s %s", info.arch, sz, mb.ftype);
        double bw = o.bw_mib > 0 ? measure_bandwidth(o.threads[it], o.bw_mib) : 0;
        if (!o.json && !printed_header) {
            printf("hearth bench: %s, kernels %s, read bandwidth %.1f GB/s (%d threads)\n", cpu,
                   info.kernels, bw / 1e9, o.threads[it]);
            if (o.n_spec > 0)
                printf("tgN with --spec: N greedy tokens after a %d-token prompt (%s), "
                       "speculation included in the time\n",
                       n_prompt_gen, o.prompt ? "--prompt" : "BOS");
            printf("\n");
            print_md_header(stdout, o.n_spec > 0);
            printed_header = 1;
        }
        for (int k = 0; k < o.n_pp + o.n_tg; k++) {
            int n_prompt = k < o.n_pp ? o.pp[k] : 0, n_gen = k < o.n_pp ? 0 : o.tg[k - o.n_pp];
            if (n_prompt == 0 && n_gen == 0) continue;
            struct bench_result r[BENCH_MAX_SPEC];
            int n_r = 1;
            memset(r, 0, sizeof(r));
            r[0].identical = -1;
            if (n_gen > 0 && o.n_spec > 0) {
                if (run_gen_test(e, de, &o, o.threads[it], prompt, n_prompt_gen, n_gen, r, &err))
                    goto fail;
                n_r = o.n_spec;
            } else if (run_test(e, &o, o.threads[it], n_prompt, n_gen, &r[0], &err)) {
                goto fail;
            }
            double bw_rec = bw; /* the bound of a generation test: the higher reading */
            if (n_gen > 0 && o.bw_mib > 0) {
                double after = measure_bandwidth(o.threads[it], o.bw_mib);
                if (after > bw_rec) bw_rec = after;
            }
            for (int j = 0; j < n_r; j++) {
                if (n_gen > 0) { /* mean context length over the run: (1 + ... + n_gen) / n_gen */
                    r[j].bytes_per_token = mb.weights + mb.kv_per_pos * (n_gen + 1) / 2.0;
                    r[j].bound_ts = bw_rec > 0 ? bw_rec / r[j].bytes_per_token : 0;
                }
                if (o.json)
                    print_json(stdout, &o, &info, &mb, model_type, cpu, bw_rec, &r[j], first);
                else
                    print_md_row(stdout, model_type, &mb, &info, &r[j], o.n_spec > 0);
                first = 0;
                if (r[j].identical >= 0)
                    buf_printf(&notes,
                               "tg%d, %d threads: %s output %s plain greedy (none), %d tokens\n",
                               n_gen, o.threads[it], spec_mode_name(r[j].spec),
                               r[j].identical ? "identical to" : "DIFFERENT from", n_gen);
            }
            fflush(stdout);
        }
        mem_free(prompt);
        prompt = NULL;
        engine_close(de);
        de = NULL;
        engine_close(e);
        e = NULL;
    }
    ret = 0;
fail:
    if (o.json) printf("\n]\n");
    if (notes.len) {
        FILE *f = o.json ? stderr : stdout;
        fprintf(f, "\n");
        fwrite(notes.data, 1, notes.len, f);
    }
    if (ret) fprintf(stderr, "hearth bench: %s\n", err.msg[0] ? err.msg : "failed");
    buf_free(&notes);
    mem_free(prompt);
    engine_close(de);
    engine_close(e);
    return ret;
}
