/* perplexity.c: `hearth perplexity` (tools.h) and the chunk scorer of perplexity.h.
 *
 * Three modes, as llama-perplexity:
 *   -f TEXT                              perplexity of the text
 *   -f TEXT --kl-divergence-base FILE    the same, and the base model's log-probabilities of
 *                                        every scored token saved to FILE
 *   --kl-divergence --kl-divergence-base FILE
 *                                        a second (quantized) model scored on FILE's tokens
 *                                        against the saved distributions: KL divergence,
 *                                        top-1 agreement, Δp, perplexity ratio
 * FILE is llama.cpp's format, so bases written by either program work in the other:
 *   "_logits_", i32 n_ctx, i32 n_vocab, i32 n_chunk, i32 tokens[n_chunk * n_ctx], then per
 *   chunk and scored position one row of nv = 2 * ((n_vocab + 1) / 2) + 4 u16: f32 scale,
 *   f32 min_log_prob, then n_vocab log-probs quantized as min_log_prob + scale * q (the range is
 *   clamped to 16 nats below the top logit; q = 0 below it).
 */
#include "perplexity.h"
#include "tools.h"

#include "../src/base/buf.h"
#include "../src/base/mem.h"
#include "../src/base/num.h"
#include "../src/engine/engine.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ============================================================================================
 * Chunked scoring
 * ============================================================================================ */

int ppl_run_chunks(struct session *s, const int32_t *tokens, int n_chunk, int n_ctx, int32_t bos,
                   int all_outputs, ppl_chunk_fn fn, void *ctx, struct error *err) {
    struct engine_info info;
    engine_get_info(session_engine(s), &info);
    const int first = n_ctx / 2, n_vocab = info.n_vocab;
    int32_t *chunk = mem_alloc((size_t)n_ctx * sizeof(int32_t));
    float *logits =
        mem_alloc((size_t)(all_outputs ? n_ctx : n_ctx - first) * (size_t)n_vocab * sizeof(float));
    int rc = 0;
    if (!chunk || !logits) {
        rc = error_set(err, ERR_NOMEM, "out of memory for %d x %d logits", n_ctx, n_vocab);
        goto done;
    }
    for (int c = 0; c < n_chunk && !rc; c++) {
        const int32_t *src = tokens + (int64_t)c * n_ctx;
        memcpy(chunk, src, (size_t)n_ctx * sizeof(int32_t));
        if (bos >= 0) chunk[0] = bos;
        rc = session_truncate(s, 0, err);
        if (rc) break;
        const float *scored = logits;
        if (all_outputs) {
            rc = session_eval(s, chunk, n_ctx, logits, err);
            scored = logits + (int64_t)first * n_vocab;
        } else {
            rc = session_eval(s, chunk, first, NULL, err);
            if (!rc) rc = session_eval(s, chunk + first, n_ctx - first, logits, err);
        }
        if (!rc) rc = fn(ctx, c, scored, src, n_ctx, first, n_vocab);
    }
done:
    mem_free(chunk);
    mem_free(logits);
    return rc;
}

double ppl_nll(const float *logits, int n_vocab, int tok) {
    float max = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > max) max = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n_vocab; i++) sum += expf(logits[i] - max);
    return -((double)(logits[tok] - max) - log(sum));
}

int ppl_estimate(const struct ppl_acc *a, double *ppl, double *ppl_err) {
    if (a->count < 2) return -1;
    double nll = a->nll / (double)a->count, nll2 = a->nll2 / (double)a->count;
    *ppl = exp(nll);
    double var = nll2 - nll * nll;
    *ppl_err = var > 0 ? sqrt(var / (double)(a->count - 1)) * *ppl : 0.0;
    return 0;
}

/* ============================================================================================
 * The base file (llama.cpp's "_logits_" format)
 * ============================================================================================ */

static int nearest_int(float f) { /* ggml's nearest_int: round half to even */
    float v = f + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* One scored position as llama.cpp's log_softmax(..., uint16_t *log_prob, tok): writes the row
 * (nv u16) and returns -log p(tok). */
static double encode_row(const float *logits, int n_vocab, uint16_t *row, int tok) {
    float max = logits[0], min = logits[0];
    for (int i = 1; i < n_vocab; i++) {
        if (logits[i] > max) max = logits[i];
        if (logits[i] < min) min = logits[i];
    }
    if (min < max - 16) min = max - 16;
    double sum = 0.0;
    for (int i = 0; i < n_vocab; i++) sum += expf(logits[i] - max);
    const float log_sum = (float)log(sum);
    const float min_log_prob = min - max - log_sum;
    const float scale = (max - min) / 65535.0f;
    memcpy(row, &scale, 4);
    memcpy(row + 2, &min_log_prob, 4);
    uint16_t *q = row + 4;
    if (scale != 0.0f) {
        const float inv = 1 / scale;
        for (int i = 0; i < n_vocab; i++)
            q[i] = logits[i] > min ? (uint16_t)nearest_int(inv * (logits[i] - min)) : 0;
    } else {
        memset(q, 0, (size_t)n_vocab * sizeof(uint16_t));
    }
    if (n_vocab % 2) q[n_vocab] = 0;
    return (double)(max + log_sum - logits[tok]);
}

static int row_u16(int n_vocab) {
    return 2 * ((n_vocab + 1) / 2) + 4;
}

/* ============================================================================================
 * KL divergence against a base (llama.cpp's kl_divergence_result and its statistics)
 * ============================================================================================ */

struct kld_acc {
    double sum_nll, sum_nll2, sum_nll_base, sum_nll_base2, sum_nll_nll_base;
    double sum_kld, sum_kld2, sum_p_diff, sum_p_diff2, sum_p_diff4;
    float max_p_diff;
    int64_t n_same_top, count;
};

/* Compares one position: logits of the model against a base row. Returns the KLD and writes
 * p - p_base of the actual next token into *p_diff_out. */
static double kld_position(const float *logits, int n_vocab, const uint16_t *base, int tok,
                           struct kld_acc *k, float *p_diff_out) {
    float max = logits[0];
    int imax = 0;
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > max) {
            max = logits[i];
            imax = i;
        }
    double sum_exp = 0.0;
    for (int i = 0; i < n_vocab; i++) sum_exp += expf(logits[i] - max);
    const float log_sum = (float)log(sum_exp);
    float scale, min_log_prob;
    memcpy(&scale, base, 4);
    memcpy(&min_log_prob, base + 2, 4);
    const uint16_t *q = base + 4;
    const float nll = max + log_sum - logits[tok];
    k->sum_nll += nll;
    k->sum_nll2 += (double)nll * nll;
    const float nll_base = -(scale * q[tok] + min_log_prob);
    k->sum_nll_base += nll_base;
    k->sum_nll_base2 += (double)nll_base * nll_base;
    k->sum_nll_nll_base += (double)nll * nll_base;
    const float log_norm = max + log_sum;
    double kl = 0.0;
    int imax_base = 0;
    float p_log_base_max = 0;
    for (int i = 0; i < n_vocab; i++) {
        const float p_log_base = scale * q[i] + min_log_prob;
        if (i == 0 || p_log_base > p_log_base_max) {
            p_log_base_max = p_log_base;
            imax_base = i;
        }
        if (p_log_base > -16.f) kl += expf(p_log_base) * (p_log_base - logits[i] + log_norm);
    }
    k->sum_kld += kl;
    k->sum_kld2 += kl * kl;
    k->count++;
    if (imax == imax_base) k->n_same_top++;
    const float p_diff = expf(-nll) - expf(-nll_base);
    k->sum_p_diff += p_diff;
    k->sum_p_diff2 += (double)p_diff * p_diff;
    k->sum_p_diff4 += (double)p_diff * p_diff * p_diff * p_diff;
    if (fabsf(p_diff) > k->max_p_diff) k->max_p_diff = fabsf(p_diff);
    *p_diff_out = p_diff;
    return kl;
}

/* mean and its standard error (0 with fewer than 11 values, as llama.cpp) */
static void mean_unc(double sum, double sum2, int64_t count, double *mean, double *unc) {
    *mean = *unc = 0;
    if (count < 1) return;
    *mean = sum / (double)count;
    double v = sum2 / (double)count - *mean * *mean;
    *unc = v > 0 && count > 10 ? sqrt(v / (double)(count - 1)) : 0.0;
}

static double covariance(double a, double b, double ab, int64_t count) {
    if (count < 10) return 0.0;
    double v = ab / (double)count - (a / (double)count) * (b / (double)count);
    return v / (double)(count - 1);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float percentile(const float *v, int64_t n, float fraction) {
    if (fraction <= 0) return v[0];
    if (fraction >= 1) return v[n - 1];
    float p = fraction * (float)(n - 1);
    int64_t ip = (int64_t)p;
    p -= (float)ip;
    return (1 - p) * v[ip] + p * v[ip + 1 < n ? ip + 1 : n - 1];
}

static float median(const float *v, int64_t n) {
    return n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
}

/* ============================================================================================
 * Command
 * ============================================================================================ */

struct ppl_run {
    FILE *out;
    struct ppl_acc acc;
    FILE *base;     /* writing a base file, or NULL */
    uint16_t *rows; /* [n_ctx - 1 - first][nv] */
    /* KL mode */
    FILE *base_in; /* reading a base file, or NULL */
    struct kld_acc kld;
    float *kld_values, *p_diff_values; /* [n_chunk][n_ctx - 1 - first] */
    const char *base_path;
};

static int on_chunk(void *p, int chunk, const float *logits, const int32_t *tokens, int n_ctx,
                    int first, int n_vocab) {
    struct ppl_run *r = p;
    int n_scored = n_ctx - 1 - first, nv = row_u16(n_vocab);
    if (r->base_in) {
        size_t want = (size_t)n_scored * (size_t)nv;
        if (fread(r->rows, sizeof(uint16_t), want, r->base_in) != want) return ERR_FORMAT;
        float *kv = r->kld_values + (int64_t)chunk * n_scored;
        float *pv = r->p_diff_values + (int64_t)chunk * n_scored;
        for (int i = 0; i < n_scored; i++)
            kv[i] = (float)kld_position(logits + (int64_t)i * n_vocab, n_vocab,
                                        r->rows + (size_t)i * (size_t)nv, tokens[first + i + 1],
                                        &r->kld, &pv[i]);
        const struct kld_acc *k = &r->kld;
        double lp, lp_unc, lb, lb_unc, kl, kl_unc, pd, pd_unc;
        mean_unc(k->sum_nll, k->sum_nll2, k->count, &lp, &lp_unc);
        mean_unc(k->sum_nll_base, k->sum_nll_base2, k->count, &lb, &lb_unc);
        double cov = covariance(k->sum_nll, k->sum_nll_base, k->sum_nll_nll_base, k->count);
        mean_unc(k->sum_kld, k->sum_kld2, k->count, &kl, &kl_unc);
        mean_unc(k->sum_p_diff2, k->sum_p_diff4, k->count, &pd, &pd_unc);
        double rms = sqrt(pd), top = (double)k->n_same_top / (double)k->count;
        double r_unc = sqrt(lp_unc * lp_unc + lb_unc * lb_unc - 2.0 * cov);
        fprintf(r->out,
                "%4d    %9.4f ± %9.4f    %10.5f ± %10.5f    %10.5f ± %10.5f    %6.3f ± %6.3f %%"
                "    %6.3f ± %6.3f %%\n",
                chunk + 1, exp(lp), exp(lp) * lp_unc, lp - lb, r_unc, kl, kl_unc, 100 * rms,
                rms > 0 ? 100 * 0.5 / rms * pd_unc : 0.0, 100 * top,
                k->count > 1 ? 100 * sqrt(top * (1 - top) / (double)(k->count - 1)) : 0.0);
        fflush(r->out);
        return 0;
    }
    for (int i = 0; i < n_scored; i++) {
        const float *l = logits + (int64_t)i * n_vocab;
        int tok = tokens[first + i + 1];
        double v = r->base ? encode_row(l, n_vocab, r->rows + (size_t)i * (size_t)nv, tok)
                           : ppl_nll(l, n_vocab, tok);
        r->acc.nll += v;
        r->acc.nll2 += v * v;
        r->acc.count++;
    }
    if (r->base && fwrite(r->rows, sizeof(uint16_t), (size_t)n_scored * (size_t)nv, r->base) !=
                       (size_t)n_scored * (size_t)nv)
        return ERR_IO;
    fprintf(r->out, "[%d]%.4f,", chunk + 1, exp(r->acc.nll / (double)r->acc.count));
    fflush(r->out);
    return 0;
}

static void print_kld_summary(FILE *out, struct ppl_run *r, int64_t n) {
    const struct kld_acc *k = &r->kld;
    qsort(r->kld_values, (size_t)n, sizeof(float), cmp_float);
    qsort(r->p_diff_values, (size_t)n, sizeof(float), cmp_float);
    double lp, lp_unc, lb, lb_unc, v, unc;
    mean_unc(k->sum_nll, k->sum_nll2, k->count, &lp, &lp_unc);
    mean_unc(k->sum_nll_base, k->sum_nll_base2, k->count, &lb, &lb_unc);
    double ppl = exp(lp), ppl_unc = ppl * lp_unc, pb = exp(lb), pb_unc = pb * lb_unc;
    double cov = covariance(k->sum_nll, k->sum_nll_base, k->sum_nll_nll_base, k->count);
    fprintf(out, "====== Perplexity statistics ======\n");
    fprintf(out, "Mean PPL(Q)                   : %10.6f ± %10.6f\n", ppl, ppl_unc);
    fprintf(out, "Mean PPL(base)                : %10.6f ± %10.6f\n", pb, pb_unc);
    fprintf(out, "Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n",
            lp_unc > 0 && lb_unc > 0 ? 100.0 * cov / (lp_unc * lb_unc) : 0.0);
    double lr = lp - lb, lr_unc = sqrt(fmax(0.0, lp_unc * lp_unc + lb_unc * lb_unc - 2 * cov));
    fprintf(out, "Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f\n", lr, lr_unc);
    fprintf(out, "Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f\n", exp(lr), exp(lr) * lr_unc);
    double pcov = ppl * pb * cov;
    fprintf(out, "Mean PPL(Q)-PPL(base)         : %10.6f ± %10.6f\n", ppl - pb,
            sqrt(fmax(0.0, ppl_unc * ppl_unc + pb_unc * pb_unc - 2.0 * pcov)));
    fprintf(out, "\n====== KL divergence statistics ======\n");
    mean_unc(k->sum_kld, k->sum_kld2, k->count, &v, &unc);
    const float *kv = r->kld_values;
    fprintf(out, "Mean    KLD: %10.6f ± %10.6f\n", v, unc);
    fprintf(out, "Maximum KLD: %10.6f\n", (double)kv[n - 1]);
    static const float fr[] = {0.999f, 0.99f, 0.95f, 0.90f};
    static const char *const frn[] = {"99.9%", "99.0%", "95.0%", "90.0%"};
    for (int i = 0; i < 4; i++)
        fprintf(out, "%-6s  KLD: %10.6f\n", frn[i], (double)percentile(kv, n, fr[i]));
    fprintf(out, "Median  KLD: %10.6f\n", (double)median(kv, n));
    static const float lo[] = {0.10f, 0.05f, 0.01f, 0.001f};
    static const char *const lon[] = {"10.0%", " 5.0%", " 1.0%", " 0.1%"};
    for (int i = 0; i < 4; i++)
        fprintf(out, "%-6s  KLD: %10.6f\n", lon[i], (double)percentile(kv, n, lo[i]));
    fprintf(out, "Minimum KLD: %10.6f\n", (double)kv[0]);
    fprintf(out, "\n====== Token probability statistics ======\n");
    mean_unc(k->sum_p_diff, k->sum_p_diff2, k->count, &v, &unc);
    const float *pv = r->p_diff_values;
    fprintf(out, "Mean    Δp: %6.3f ± %5.3f %%\n", 100 * v, 100 * unc);
    fprintf(out, "Maximum Δp: %6.3f%%\n", 100.0 * pv[n - 1]);
    static const float pf[] = {0.999f, 0.99f, 0.95f, 0.90f, 0.75f};
    static const char *const pfn[] = {"99.9%", "99.0%", "95.0%", "90.0%", "75.0%"};
    for (int i = 0; i < 5; i++)
        fprintf(out, "%-6s  Δp: %6.3f%%\n", pfn[i], 100.0 * percentile(pv, n, pf[i]));
    fprintf(out, "Median  Δp: %6.3f%%\n", 100.0 * median(pv, n));
    static const float pl[] = {0.25f, 0.10f, 0.05f, 0.01f, 0.001f};
    static const char *const pln[] = {"25.0%", "10.0%", " 5.0%", " 1.0%", " 0.1%"};
    for (int i = 0; i < 5; i++)
        fprintf(out, "%-6s  Δp: %6.3f%%\n", pln[i], 100.0 * percentile(pv, n, pl[i]));
    fprintf(out, "Minimum Δp: %6.3f%%\n", 100.0 * pv[0]);
    mean_unc(k->sum_p_diff2, k->sum_p_diff4, k->count, &v, &unc);
    double rms = sqrt(v);
    fprintf(out, "RMS Δp    : %6.3f ± %5.3f %%\n", 100 * rms, rms > 0 ? 100 * 0.5 / rms * unc : 0);
    double top = (double)k->n_same_top / (double)k->count;
    fprintf(out, "Same top p: %6.3f ± %5.3f %%\n", 100 * top,
            100 * sqrt(top * (1 - top) / (double)(k->count - 1)));
}

static void usage(FILE *f) {
    fprintf(f, "usage: hearth perplexity -m MODEL -f TEXT [-c CTX] [options]\n"
               "  -c CTX                       tokens per chunk (default 512); the second half\n"
               "                               of each chunk is scored\n"
               "  --chunks N                   score at most N chunks\n"
               "  --kl-divergence-base FILE    save the log-probabilities of every scored token\n"
               "                               (llama-perplexity's format)\n"
               "  --kl-divergence              compare MODEL against FILE (its tokens; -f and\n"
               "                               -c are not needed): KLD, top-1 agreement, Δp\n"
               "  -b N                         batch size (default 512)\n"
               "  -t N                         threads (default: all CPUs)\n");
}

/* Reads a whole text file; caller frees. */
static char *read_text(const char *path, size_t *n, struct error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        error_set(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct buf b;
    buf_init(&b);
    char tmp[65536];
    size_t got;
    while ((got = fread(tmp, 1, sizeof(tmp), f)) > 0) buf_append(&b, tmp, got);
    int bad = ferror(f);
    fclose(f);
    if (bad || b.failed) {
        error_set(err, bad ? ERR_IO : ERR_NOMEM, "%s: cannot read", path);
        buf_free(&b);
        return NULL;
    }
    *n = b.len;
    return buf_detach(&b);
}

static int read_i32(FILE *f, int32_t *v) {
    return fread(v, 4, 1, f) == 1;
}

int tool_perplexity_run(int argc, char **argv, FILE *out, FILE *err_out) {
    const char *model = NULL, *text_path = NULL, *base_path = NULL;
    long n_ctx = 512, max_chunks = -1, n_batch = 512, n_threads = 0;
    int kl_mode = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(out);
            return 0;
        }
        if (!strcmp(a, "--kl-divergence")) {
            kl_mode = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(err_out, "hearth perplexity: %s needs a value (see --help)\n", a);
            return 1;
        }
        const char *v = argv[++i];
        long *num = NULL, lo = 1;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            text_path = v;
        else if (!strcmp(a, "--kl-divergence-base"))
            base_path = v;
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size"))
            num = &n_ctx, lo = 4;
        else if (!strcmp(a, "--chunks"))
            num = &max_chunks;
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size"))
            num = &n_batch;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            num = &n_threads;
        else {
            fprintf(err_out, "hearth perplexity: unknown option '%s' (see --help)\n", a);
            return 1;
        }
        long long parsed;
        if (num) {
            if (num_parse_int(v, lo, 1 << 20, &parsed)) {
                fprintf(err_out, "hearth perplexity: %s: bad value '%s'\n", a, v);
                return 1;
            }
            *num = (long)parsed;
        }
    }
    if (!model || (!kl_mode && !text_path) || (kl_mode && !base_path)) {
        fprintf(err_out, "hearth perplexity: want -m MODEL and -f TEXT (or --kl-divergence "
                         "--kl-divergence-base FILE); see --help\n");
        return 1;
    }

    int ret = 1;
    struct error err = {0};
    struct engine *e = NULL;
    struct session *s = NULL;
    char *text = NULL;
    int32_t *tokens = NULL;
    struct ppl_run r = {0};
    r.out = out;
    int64_t n_tokens = 0;
    int n_chunk = 0;

    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = (int)n_threads;
    ep.n_batch = (int)n_batch;
    if (engine_open(&e, model, &ep, &err)) goto fail;
    struct engine_info info;
    engine_get_info(e, &info);
    int32_t bos = engine_add_bos(e) ? engine_token_bos(e) : -1;

    if (kl_mode) {
        r.base_in = fopen(base_path, "rb");
        if (!r.base_in) {
            error_set(&err, ERR_IO, "%s: %s", base_path, strerror(errno));
            goto fail;
        }
        char magic[8];
        int32_t ctx32, vocab32, chunks32;
        if (fread(magic, 1, 8, r.base_in) != 8 || memcmp(magic, "_logits_", 8) ||
            !read_i32(r.base_in, &ctx32) || !read_i32(r.base_in, &vocab32) ||
            !read_i32(r.base_in, &chunks32) || ctx32 < 4 || ctx32 > (1 << 20) || chunks32 < 1 ||
            chunks32 > (1 << 24)) {
            error_set(&err, ERR_FORMAT, "%s: not a log-probability file (_logits_ header)",
                      base_path);
            goto fail;
        }
        if (vocab32 != info.n_vocab) {
            error_set(&err, ERR_INVALID, "%s: vocabulary of %d tokens, the model has %d", base_path,
                      vocab32, info.n_vocab);
            goto fail;
        }
        n_ctx = ctx32;
        n_chunk = chunks32;
        if (max_chunks > 0 && max_chunks < n_chunk) n_chunk = (int)max_chunks;
        n_tokens = (int64_t)chunks32 * ctx32;
        tokens = mem_alloc((size_t)n_tokens * sizeof(int32_t));
        if (!tokens) goto oom;
        if (fread(tokens, sizeof(int32_t), (size_t)n_tokens, r.base_in) != (size_t)n_tokens) {
            error_set(&err, ERR_FORMAT, "%s: truncated token list", base_path);
            goto fail;
        }
        for (int64_t i = 0; i < n_tokens; i++)
            if (tokens[i] < 0 || tokens[i] >= info.n_vocab) {
                error_set(&err, ERR_FORMAT, "%s: token %d out of range", base_path, tokens[i]);
                goto fail;
            }
    } else {
        size_t n_text = 0;
        if (!(text = read_text(text_path, &n_text, &err))) goto fail;
        if (engine_tokenize(e, text, n_text, engine_add_bos(e), 0, &tokens, &n_tokens, &err))
            goto fail;
        if (n_tokens < 2 * n_ctx) {
            error_set(&err, ERR_RANGE,
                      "%s has %lld tokens; a context of %ld needs at least %ld (use a smaller -c)",
                      text_path, (long long)n_tokens, n_ctx, 2 * n_ctx);
            goto fail;
        }
        n_chunk = (int)(n_tokens / n_ctx);
        if (max_chunks > 0 && max_chunks < n_chunk) n_chunk = (int)max_chunks;
    }
    const int first = (int)n_ctx / 2, n_scored = (int)n_ctx - 1 - first;
    const int nv = row_u16(info.n_vocab);
    r.rows = mem_alloc((size_t)n_scored * (size_t)nv * sizeof(uint16_t));
    if (!r.rows) goto oom;
    if (kl_mode) {
        r.kld_values = mem_alloc((size_t)n_chunk * (size_t)n_scored * sizeof(float));
        r.p_diff_values = mem_alloc((size_t)n_chunk * (size_t)n_scored * sizeof(float));
        if (!r.kld_values || !r.p_diff_values) goto oom;
    } else if (base_path) {
        r.base = fopen(base_path, "wb");
        int32_t hdr[3] = {(int32_t)n_ctx, info.n_vocab, n_chunk};
        if (!r.base || fwrite("_logits_", 1, 8, r.base) != 8 || fwrite(hdr, 4, 3, r.base) != 3 ||
            fwrite(tokens, sizeof(int32_t), (size_t)n_chunk * (size_t)n_ctx, r.base) !=
                (size_t)n_chunk * (size_t)n_ctx) {
            error_set(&err, ERR_IO, "%s: cannot write", base_path);
            goto fail;
        }
    }

    struct session_params sp;
    session_params_default(&sp);
    sp.n_ctx = (int)n_ctx;
    if (session_create(&s, e, &sp, &err)) goto fail;
    fprintf(err_out,
            "hearth perplexity: %s, %lld tokens, %d chunks of %ld (scoring %d tokens each)%s\n",
            info.name, (long long)n_tokens, n_chunk, n_ctx, n_scored,
            kl_mode ? ", KL divergence against the base" : "");
    if (kl_mode)
        fprintf(out, "chunk             PPL               ln(PPL(Q)/PPL(base))          KL "
                     "Divergence              Δp RMS            Same top p\n");
    int rc = ppl_run_chunks(s, tokens, n_chunk, (int)n_ctx, bos, 0, on_chunk, &r, &err);
    if (rc) {
        if (!err.code)
            error_set(&err, rc, "%s",
                      rc == ERR_FORMAT ? "the base file ends early" : "cannot write the base file");
        goto fail;
    }
    if (kl_mode) {
        fprintf(out, "\n");
        print_kld_summary(out, &r, (int64_t)n_chunk * n_scored);
    } else {
        double ppl, ppl_err;
        fprintf(out, "\n");
        if (ppl_estimate(&r.acc, &ppl, &ppl_err) == 0)
            fprintf(out, "Final estimate: PPL = %.4f +/- %.5f\n", ppl, ppl_err);
        if (r.base && fclose(r.base) != 0) {
            r.base = NULL;
            error_set(&err, ERR_IO, "%s: cannot write", base_path);
            goto fail;
        }
        r.base = NULL;
    }
    ret = 0;
    goto done;
oom:
    error_set(&err, ERR_NOMEM, "out of memory");
fail:
    fprintf(err_out, "hearth perplexity: %s\n", err.msg);
done:
    if (r.base) fclose(r.base);
    if (r.base_in) fclose(r.base_in);
    mem_free(r.rows);
    mem_free(r.kld_values);
    mem_free(r.p_diff_values);
    mem_free(tokens);
    mem_free(text);
    session_free(s);
    engine_close(e);
    return ret;
}

int tool_perplexity_main(int argc, char **argv) {
    return tool_perplexity_run(argc, argv, stdout, stderr);
}
