/* quantize.c: `hearth quantize` — rewrite a GGUF with its matrices in other tensor types.
 *
 * llama-quantize's behaviour, so the files it writes and ours are interchangeable: the same
 * per-tensor types (tools/quant_mix.c), the same tensor order (by block, then name), all
 * metadata copied with general.file_type / general.quantization_version set, split keys
 * dropped and quantize.imatrix.* added when an importance matrix weights the rounding. Tensors
 * whose type does not change are copied byte for byte; the others are dequantized row by row
 * (F32 rows are read in place) and quantized with the reference quantizers of src/tensor, rows
 * in parallel on the thread pool, so the output is the same for any thread count. The output
 * is streamed: memory holds one output tensor, not the model.
 *
 * The dynamic preset Q4_K_XL (our design) replaces the rule table by a measured allocation;
 * see the "Q4_K_XL" section.
 */
#include "tools.h"

#include "../src/base/mem.h"
#include "../src/base/num.h"
#include "../src/base/threads.h"
#include "../src/gguf/gguf.h"
#include "../src/tensor/dtype.h"
#include "imatrix.h"
#include "quant_mix.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define QUANTIZE_MAX_OVERRIDES 64

struct qz_opts {
    const char *in_path, *out_path, *type_name, *imatrix_path;
    struct mix_override override[QUANTIZE_MAX_OVERRIDES];
    char pattern[QUANTIZE_MAX_OVERRIDES][256]; /* the PATTERN parts of --tensor-type */
    int n_override;
    int output_type, token_embd_type; /* enum dtype, -1 if unset */
    int pure, leave_output, allow_requantize, dry_run, verbose;
    int n_threads;
};

/* One tensor of the output, in output order. */
struct qz_tensor {
    const struct gguf_tensor_info *src;
    enum dtype type; /* output type */
    uint8_t flags;   /* enum mix_flag bits */
    uint64_t out_bytes;
    const struct imatrix_entry *imat; /* importance entry used, or NULL */
};

/* ============================================================================================
 * Model facts and the plan
 * ============================================================================================ */

/* {arch}.<suffix> as an int: a scalar, or element 0 of a per-layer array; dflt if absent. */
static int arch_int(const struct gguf *g, const char *arch, const char *suffix, int dflt) {
    char key[160];
    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return dflt;
    if (gguf_kv_type(g, i) == GGUF_TYPE_ARRAY) {
        enum gguf_type et = gguf_kv_arr_type(g, i);
        if (et == GGUF_TYPE_STRING || et == GGUF_TYPE_ARRAY || gguf_kv_arr_n(g, i) == 0)
            return dflt;
        return (int)gguf_kv_arr_int(g, i, 0);
    }
    int64_t v;
    return gguf_get_int(g, key, &v) == 0 && v >= 0 && v < (1 << 30) ? (int)v : dflt;
}

static int cmp_tensor(const void *a, const void *b) {
    const struct qz_tensor *x = a, *y = b;
    return quant_mix_name_cmp(x->src->name, y->src->name);
}

static uint64_t tensor_bytes(enum dtype type, const int64_t *ne) {
    return (uint64_t)dtype_row_bytes(type, ne[0]) * (uint64_t)(ne[1] * ne[2] * ne[3]);
}

/* ============================================================================================
 * Converting one tensor (rows in parallel)
 * ============================================================================================ */

/* The per-element weights the quantizer minimises sum w (x - x')^2 with, for one row x of n
 * elements and its importance row imat (mean x^2 of each input column). The activation energy
 * alone is the first-order output error; it is multiplied by sqrt(sigma^2 + x_j^2) (sigma^2 the
 * row's mean square), which grows with |x_j| so the scale search cannot trade the row's largest
 * weights away for a lower average error. ggml's imatrix quantizers weight the same way, and on
 * stories260K it gave lower KL divergence than the bare imatrix for 4 of 5 presets (README). */
static void importance_weights(const float *x, const float *imat, int64_t n, float *w) {
    double s2 = 0.0;
    for (int64_t k = 0; k < n; k++) s2 += (double)x[k] * x[k];
    float sigma2 = (float)(s2 / (double)n);
    for (int64_t k = 0; k < n; k++) w[k] = imat[k] * sqrtf(sigma2 + x[k] * x[k]);
}

struct convert_job {
    const char *src;      /* first row of the slab, source type */
    size_t src_row_bytes; /* bytes per source row */
    enum dtype src_type;
    char *dst; /* first row of the slab, output type */
    size_t dst_row_bytes;
    enum dtype dst_type;
    int64_t ne0;          /* elements per row */
    int64_t row0, n_rows; /* slab: global index of its first row, rows */
    int64_t rows_per_mat; /* ne1: rows of one expert matrix (imatrix slice per matrix) */
    const float *imat;    /* [n_mat][ne0] per-column weights, or NULL */
    float *scratch;       /* [nth][2 * ne0]: dequantized row, quantizer weights */
};

static void convert_task(void *p, int ith, int nth) {
    const struct convert_job *j = p;
    const struct dtype_traits *st = dtype_traits(j->src_type), *dt = dtype_traits(j->dst_type);
    int64_t r0 = j->n_rows * ith / nth, r1 = j->n_rows * (ith + 1) / nth;
    float *x = j->scratch + (int64_t)ith * 2 * j->ne0, *wq = x + j->ne0;
    for (int64_t r = r0; r < r1; r++) {
        const char *src = j->src + r * (int64_t)j->src_row_bytes;
        const float *row = (const float *)(const void *)src;
        if (j->src_type != DTYPE_F32) {
            st->to_float(src, x, j->ne0);
            row = x;
        }
        char *dst = j->dst + r * (int64_t)j->dst_row_bytes;
        const float *w = j->imat ? j->imat + ((j->row0 + r) / j->rows_per_mat) * j->ne0 : NULL;
        if (w && dt->from_float_imatrix) {
            importance_weights(row, w, j->ne0, wq);
            dt->from_float_imatrix(row, dst, j->ne0, wq);
        } else
            dt->from_float(row, dst, j->ne0);
    }
}

/* Converts all rows of t->src into out (t->out_bytes). */
static void convert_tensor(struct threadpool *pool, const struct qz_tensor *t, const float *imat,
                           float *scratch, char *out) {
    const struct gguf_tensor_info *s = t->src;
    int64_t rows = s->ne[1] * s->ne[2] * s->ne[3];
    struct convert_job j = {0};
    j.src = s->data;
    j.src_row_bytes = dtype_row_bytes((enum dtype)s->type, s->ne[0]);
    j.src_type = (enum dtype)s->type;
    j.dst = out;
    j.dst_row_bytes = dtype_row_bytes(t->type, s->ne[0]);
    j.dst_type = t->type;
    j.ne0 = s->ne[0];
    j.row0 = 0;
    j.n_rows = rows;
    j.rows_per_mat = s->ne[1];
    j.imat = imat;
    j.scratch = scratch;
    threadpool_run(pool, convert_task, &j);
}

/* ============================================================================================
 * Q4_K_XL: a measured allocation under Q4_K_M's size
 * ============================================================================================
 *
 * Unsloth's "dynamic" files keep the tensors whose error hurts most at more bits. Here that is
 * an optimisation: every quantizable tensor gets a ladder of candidate types (Q3_K only for the
 * FFN input projections, which tolerate it; Q4_K, Q5_K, Q6_K, Q8_0 for all; their 32-block
 * counterparts IQ4_NL, Q5_0, Q5_1, Q8_0 when a row is not a multiple of 256). For each candidate
 * we quantize a sample of the tensor's rows (with the importance matrix when there is one) and
 * measure the relative output error nu = sum_j w_j (W - W')_j^2 / sum_j w_j W_j^2, with w the
 * mean x^2 of each input column: the fraction of the product's energy that quantization turns
 * into noise (exact for uncorrelated inputs). The harm of a tensor is nu times a sensitivity
 * from its role (quant_role_weight), and quant_mix_allocate spends exactly the bytes the
 * Q4_K_M rules would have used on the upgrades with the best harm reduction per byte. Small,
 * sensitive tensors (attn_v, attn_k, ssm_alpha/beta, ssm_out, the head) win first; big,
 * tolerant expert stacks pay for them.
 */

/* How much a unit of relative noise in a tensor's output hurts, by role (our priors). The LM
 * head's noise reaches the logits undiluted, while each block matrix is one of about 2 n_layer
 * branches summed into the residual stream, so the head weighs 2 n_layer block matrices. Among
 * block matrices the UD findings (and our measurements on the synthetic qwen35, README) put the
 * linear-attention input projection attn_qkv far ahead, then its gate and output projection;
 * routed expert up/gate tolerate ~3 bits (each sees only the tokens routed to it); the shared
 * expert sees every token. The first and last blocks count double, the rest of the first and
 * last eighth 1.5x (llama.cpp's use_more_bits idea). */
static const struct {
    const char *part; /* substring of the tensor name; first match wins */
    double weight;
} g_roles[] = {
    {"attn_qkv", 8.0},    {"attn_gate", 3.0}, {"ssm_out", 3.0},       {"ssm_alpha", 2.0},
    {"ssm_beta", 2.0},    {"attn_v.", 1.5},   {"attn_k.", 1.5},       {"attn_q.", 1.0},
    {"attn_output", 1.0}, {"_shexp", 1.5},    {"ffn_down_exps", 1.0}, {"_exps", 0.6},
    {"ffn_down", 1.5},
};

static double quant_role_weight(const char *name, int layer, int n_layer, int tied) {
    if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight")))
        return 2.0 * (n_layer > 2 ? n_layer : 2);
    double w = 1.0;
    for (size_t i = 0; i < sizeof(g_roles) / sizeof(g_roles[0]); i++)
        if (strstr(name, g_roles[i].part)) {
            w = g_roles[i].weight;
            break;
        }
    if (layer >= 0 && n_layer > 0) {
        if (layer == 0 || layer == n_layer - 1)
            w *= 2.0;
        else if (layer < n_layer / 8 || layer >= n_layer - n_layer / 8)
            w *= 1.5;
    }
    return w;
}

#define XL_SAMPLE_ROWS 256 /* rows measured per tensor (spread over the whole tensor) */

struct measure_job {
    const struct gguf_tensor_info *src;
    const float *imat;       /* [n_mat][ne0] or NULL */
    const enum dtype *cands; /* [n_cand] */
    int n_cand;
    int64_t n_sample, stride;  /* sampled rows: i * stride */
    float *scratch;            /* per thread: x, y, quantizer weights [ne0] each, a quantized row */
    size_t scratch_per_thread; /* floats */
    double *err;               /* [n_sample][MIX_MAX_CANDIDATES] weighted squared error per row */
    double *sig;               /* [n_sample] weighted energy per row */
};

static void measure_task(void *p, int ith, int nth) {
    const struct measure_job *j = p;
    const struct gguf_tensor_info *s = j->src;
    int64_t ne0 = s->ne[0];
    const struct dtype_traits *st = dtype_traits(s->type);
    size_t src_row = dtype_row_bytes((enum dtype)s->type, ne0);
    float *x = j->scratch + (size_t)ith * j->scratch_per_thread, *y = x + ne0, *wq = y + ne0;
    void *q = wq + ne0;
    for (int64_t i = ith; i < j->n_sample; i += nth) {
        double *err = j->err + i * MIX_MAX_CANDIDATES;
        int64_t r = i * j->stride;
        st->to_float((const char *)s->data + r * (int64_t)src_row, x, ne0);
        const float *w = j->imat ? j->imat + (r / s->ne[1]) * ne0 : NULL;
        double sg = 0.0;
        for (int64_t k = 0; k < ne0; k++) sg += (w ? w[k] : 1.0) * (double)x[k] * x[k];
        j->sig[i] = sg;
        if (w) importance_weights(x, w, ne0, wq);
        for (int c = 0; c < j->n_cand; c++) {
            const struct dtype_traits *dt = dtype_traits(j->cands[c]);
            if (w && dt->from_float_imatrix)
                dt->from_float_imatrix(x, q, ne0, wq);
            else
                dt->from_float(x, q, ne0);
            dt->to_float(q, y, ne0);
            double e = 0.0;
            for (int64_t k = 0; k < ne0; k++) {
                double d = (double)x[k] - y[k];
                e += (w ? w[k] : 1.0) * d * d;
            }
            err[c] = e;
        }
    }
}

static double bits_per_weight(enum dtype t) {
    const struct dtype_traits *tr = dtype_traits(t);
    return 8.0 * (double)tr->type_size / (double)tr->block_size;
}

/* The candidate ladder of a quantizable tensor, cheapest first: the K family when rows are a
 * multiple of 256 (Q3_K only for the FFN input projections, which tolerate it), else the
 * 32-block family. Candidates below floor's bits per weight are dropped (the LM head keeps at
 * least what the Q4_K_M rules give it: every measurement we made put it far ahead of any other
 * tensor). Returns the count (0: not a candidate). */
static int xl_ladder(const struct gguf_tensor_info *s, int floor, enum dtype *c) {
    static const enum dtype k_family[] = {DTYPE_Q3_K, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K,
                                          DTYPE_Q8_0};
    static const enum dtype b32_family[] = {DTYPE_IQ4_NL, DTYPE_Q5_0, DTYPE_Q5_1, DTYPE_Q8_0};
    const enum dtype *fam;
    int n_fam, n = 0;
    if (s->ne[0] % QK_K == 0) {
        int tolerant = strstr(s->name, "ffn_up") || strstr(s->name, "ffn_gate");
        fam = k_family + !tolerant;
        n_fam = 5 - !tolerant;
    } else if (s->ne[0] % 32 == 0) {
        fam = b32_family;
        n_fam = 4;
    } else {
        return 0;
    }
    for (int i = 0; i < n_fam; i++)
        if (floor < 0 || bits_per_weight(fam[i]) >= bits_per_weight((enum dtype)floor) - 1e-9)
            c[n++] = fam[i];
    return n;
}

/* Replaces the types of the quantizable tensors by the allocation. imats[i] are the per-tensor
 * importance weights (or NULL). */
static int plan_dynamic(struct threadpool *pool, struct qz_tensor *ts, int n, float **imats,
                        int n_layer, FILE *log, struct error *err) {
    struct mix_alloc_item *items = mem_calloc((size_t)(n > 0 ? n : 1), sizeof(*items));
    enum dtype(*cands)[MIX_MAX_CANDIDATES] = mem_calloc((size_t)(n > 0 ? n : 1), sizeof(*cands));
    int *map = mem_alloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    int *choice = mem_alloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    int nth = threadpool_n_threads(pool);
    int64_t max_ne0 = 1;
    for (int i = 0; i < n; i++)
        if (ts[i].src->ne[0] > max_ne0) max_ne0 = ts[i].src->ne[0];
    size_t per_thread = (size_t)max_ne0 * 5 + 64; /* x, y, weights, the largest quantized row */
    float *scratch = mem_alloc((size_t)nth * per_thread * sizeof(float));
    double *errs = mem_alloc((size_t)XL_SAMPLE_ROWS * MIX_MAX_CANDIDATES * sizeof(double));
    double(*nu)[MIX_MAX_CANDIDATES] = mem_calloc((size_t)(n > 0 ? n : 1), sizeof(*nu));
    double *roles = mem_calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    double *sigs = mem_alloc((size_t)XL_SAMPLE_ROWS * sizeof(double));
    int rc = 0, n_items = 0, tied = 1;
    uint64_t budget = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(ts[i].src->name, "output.weight")) tied = 0;
    if (!items || !cands || !map || !choice || !scratch || !errs || !sigs || !nu || !roles) {
        rc = error_set(err, ERR_NOMEM, "out of memory measuring quantization errors");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const struct gguf_tensor_info *s = ts[i].src;
        int q = !(ts[i].flags & MIX_USER) && quant_mix_is_quantizable(s->name, s->n_dims) &&
                dtype_traits(ts[i].type) && dtype_traits(ts[i].type)->is_quantized &&
                dtype_traits(s->type) && dtype_traits(s->type)->to_float;
        int is_head =
            !strcmp(s->name, "output.weight") || (tied && !strcmp(s->name, "token_embd.weight"));
        int nc = q ? xl_ladder(s, is_head ? (int)ts[i].type : -1, cands[n_items]) : 0;
        if (nc == 0) continue;
        budget += ts[i].out_bytes;
        struct measure_job j = {0};
        int64_t rows = s->ne[1] * s->ne[2] * s->ne[3];
        j.src = s;
        j.imat = imats[i];
        j.cands = cands[n_items];
        j.n_cand = nc;
        j.n_sample = rows < XL_SAMPLE_ROWS ? rows : XL_SAMPLE_ROWS;
        j.stride = rows / j.n_sample;
        j.scratch = scratch;
        j.scratch_per_thread = per_thread;
        j.err = errs;
        j.sig = sigs;
        threadpool_run(pool, measure_task, &j);
        double sig = 0.0;
        for (int64_t r = 0; r < j.n_sample; r++)
            sig += sigs[r]; /* in row order: same sums
                               for any thread count */
        double role = quant_role_weight(s->name, quant_mix_layer(s->name), n_layer, tied);
        struct mix_alloc_item *it = &items[n_items];
        it->n_cand = nc;
        for (int c = 0; c < nc; c++) {
            double e = 0.0;
            for (int64_t r = 0; r < j.n_sample; r++) e += errs[r * MIX_MAX_CANDIDATES + c];
            it->bytes[c] = tensor_bytes(cands[n_items][c], s->ne);
            nu[n_items][c] = sig > 0 ? e / sig : 0.0;
            it->cost[c] = role * nu[n_items][c];
            if (c > 0 && it->cost[c] > it->cost[c - 1]) it->cost[c] = it->cost[c - 1];
        }
        roles[n_items] = role;
        map[n_items++] = i;
    }
    uint64_t used = quant_mix_allocate(items, n_items, budget, choice);
    for (int k = 0; k < n_items; k++) {
        struct qz_tensor *t = &ts[map[k]];
        enum dtype nt = cands[k][choice[k]];
        int c0 = 0; /* the rule type's candidate, for the log */
        while (c0 < items[k].n_cand && cands[k][c0] != t->type) c0++;
        if (log)
            fprintf(log, "  Q4_K_XL: %-34s %-6s -> %-6s relative error %.2e -> %.2e (x%.1f)\n",
                    t->src->name, dtype_name(t->type), dtype_name(nt),
                    c0 < items[k].n_cand ? nu[k][c0] : NAN, nu[k][choice[k]], roles[k]);
        t->type = nt;
        t->out_bytes = items[k].bytes[choice[k]];
    }
    if (log)
        fprintf(log, "  Q4_K_XL: %.3f MiB in quantized matrices (Q4_K_M rules: %.3f MiB)\n",
                (double)used / (1 << 20), (double)budget / (1 << 20));
done:
    mem_free(items);
    mem_free(cands);
    mem_free(map);
    mem_free(choice);
    mem_free(scratch);
    mem_free(errs);
    mem_free(sigs);
    mem_free(nu);
    mem_free(roles);
    return rc;
}

/* ============================================================================================
 * Command
 * ============================================================================================ */

static void usage(FILE *f) {
    fprintf(f, "usage: hearth quantize IN.gguf OUT.gguf TYPE [options]\n"
               "  TYPE: one of\n");
    for (int i = 0; i < ftype_count(); i++)
        fprintf(f, "    %-10s %s\n", ftype_at(i)->name, ftype_at(i)->about);
    fprintf(f,
            "options:\n"
            "  --imatrix FILE            weight the rounding error by an importance matrix (GGUF\n"
            "                            or legacy .dat, from hearth imatrix or llama-imatrix)\n"
            "  --tensor-type PAT=T       type T for tensors whose name matches the regular\n"
            "                            expression PAT (repeatable; the first match wins)\n"
            "  --output-tensor-type T    type of output.weight\n"
            "  --token-embedding-type T  type of token_embd.weight\n"
            "  --leave-output-tensor     keep output.weight as it is\n"
            "  --pure                    the preset's base type for every matrix (no mix rules)\n"
            "  --allow-requantize        quantized input: no warning\n"
            "  --dry-run                 print the plan, write nothing\n"
            "  -t N                      threads (default: all CPUs)\n"
            "  -v                        one line per tensor\n");
}

static int parse_dtype_arg(const char *opt, const char *v, int *out, FILE *err_out) {
    enum dtype t;
    if (dtype_from_name(v, &t) != 0 || !dtype_traits(t) || !dtype_traits(t)->from_float ||
        t == DTYPE_Q8_K || t == DTYPE_Q8_1) {
        fprintf(err_out, "hearth quantize: %s: unknown or unsupported type '%s'\n", opt, v);
        return -1;
    }
    *out = (int)t;
    return 0;
}

static int parse_args(int argc, char **argv, struct qz_opts *o, FILE *out, FILE *err_out) {
    memset(o, 0, sizeof(*o));
    o->output_type = o->token_embd_type = -1;
    const char *pos[4];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(out);
            return 1;
        }
        if (a[0] != '-' || !a[1]) {
            if (n_pos == 4) {
                fprintf(err_out, "hearth quantize: too many arguments (see --help)\n");
                return -1;
            }
            pos[n_pos++] = a;
            continue;
        }
        if (!strcmp(a, "--pure")) {
            o->pure = 1;
            continue;
        }
        if (!strcmp(a, "--leave-output-tensor")) {
            o->leave_output = 1;
            continue;
        }
        if (!strcmp(a, "--allow-requantize")) {
            o->allow_requantize = 1;
            continue;
        }
        if (!strcmp(a, "--dry-run")) {
            o->dry_run = 1;
            continue;
        }
        if (!strcmp(a, "-v")) {
            o->verbose = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(err_out, "hearth quantize: %s needs a value (see --help)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--imatrix")) {
            o->imatrix_path = v;
        } else if (!strcmp(a, "--output-tensor-type")) {
            if (parse_dtype_arg(a, v, &o->output_type, err_out)) return -1;
        } else if (!strcmp(a, "--token-embedding-type")) {
            if (parse_dtype_arg(a, v, &o->token_embd_type, err_out)) return -1;
        } else if (!strcmp(a, "--tensor-type")) {
            const char *eq = strrchr(v, '=');
            int t;
            if (!eq || eq == v || !eq[1]) {
                fprintf(err_out, "hearth quantize: --tensor-type wants PATTERN=TYPE, got '%s'\n",
                        v);
                return -1;
            }
            if (o->n_override == QUANTIZE_MAX_OVERRIDES) {
                fprintf(err_out, "hearth quantize: more than %d --tensor-type options\n",
                        QUANTIZE_MAX_OVERRIDES);
                return -1;
            }
            if (parse_dtype_arg(a, eq + 1, &t, err_out)) return -1;
            if (eq - v >= (ptrdiff_t)sizeof(o->pattern[0])) {
                fprintf(err_out, "hearth quantize: --tensor-type pattern too long\n");
                return -1;
            }
            snprintf(o->pattern[o->n_override], sizeof(o->pattern[0]), "%.*s", (int)(eq - v), v);
            o->override[o->n_override].pattern = o->pattern[o->n_override];
            o->override[o->n_override].type = (enum dtype)t;
            o->n_override++;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            long long n;
            if (num_parse_int(v, 1, 512, &n)) {
                fprintf(err_out, "hearth quantize: -t: bad value '%s'\n", v);
                return -1;
            }
            o->n_threads = (int)n;
        } else {
            fprintf(err_out, "hearth quantize: unknown option '%s' (see --help)\n", a);
            return -1;
        }
    }
    if (n_pos < 3) {
        fprintf(err_out, "hearth quantize: want IN.gguf OUT.gguf TYPE (see --help)\n");
        return -1;
    }
    o->in_path = pos[0];
    o->out_path = pos[1];
    o->type_name = pos[2];
    if (n_pos == 4) { /* llama-quantize's trailing thread count */
        long long n;
        if (num_parse_int(pos[3], 1, 512, &n)) {
            fprintf(err_out, "hearth quantize: unexpected argument '%s'\n", pos[3]);
            return -1;
        }
        o->n_threads = (int)n;
    }
    return 0;
}

static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Metadata: everything from the input but the split keys, then the type keys, then the
 * importance matrix provenance (llama-quantize's LLM_KV_QUANTIZE_IMATRIX_*). */
static int set_metadata(struct gguf_writer *w, const struct gguf *g, const struct ftype_info *ft,
                        const struct imatrix *im, const char *imatrix_path, int n_imat_entries) {
    /* entries_count is the imatrix's entry count (llama-quantize), not the entries used */
    int rc = 0;
    for (int64_t i = 0; i < gguf_n_kv(g) && !rc; i++) {
        struct gguf_str k = gguf_kv_key(g, i);
        if (k.len > 6 && !memcmp(k.data, "split.", 6)) continue;
        rc = gguf_writer_copy_kv(w, g, i);
    }
    /* ggml's gguf_set_* remove an existing key and append it: the type keys end up last */
    gguf_writer_remove_key(w, "general.quantization_version");
    gguf_writer_remove_key(w, "general.file_type");
    if (!rc) rc = gguf_writer_set_u32(w, "general.quantization_version", 2);
    if (!rc) rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)ft->ftype);
    if (!rc && im) {
        char path[128]; /* llama.cpp keeps 127 bytes of the path */
        snprintf(path, sizeof(path), "%s", imatrix_path);
        rc = gguf_writer_set_str(w, "quantize.imatrix.file", path);
        if (!rc && im->n_datasets > 0) {
            snprintf(path, sizeof(path), "%s", im->datasets[0]);
            rc = gguf_writer_set_str(w, "quantize.imatrix.dataset", path);
        }
        if (!rc)
            rc = gguf_writer_set_u32(w, "quantize.imatrix.entries_count", (uint32_t)n_imat_entries);
        if (!rc && im->chunk_count > 0)
            rc = gguf_writer_set_u32(w, "quantize.imatrix.chunks_count", (uint32_t)im->chunk_count);
    }
    return rc;
}

static void progress(FILE *f, uint64_t done, uint64_t total, int i, int n, const char *name) {
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 100;
    char bar[31];
    int fill = pct * 30 / 100;
    for (int k = 0; k < 30; k++) bar[k] = k < fill ? '=' : ' ';
    bar[30] = 0;
    fprintf(f, "\r  [%s] %3d%% %d/%d %-40.40s", bar, pct, i, n, name);
    fflush(f);
}

int tool_quantize_run(int argc, char **argv, FILE *out, FILE *err_out) {
    struct qz_opts o;
    int pr = parse_args(argc, argv, &o, out, err_out);
    if (pr) return pr > 0 ? 0 : 1;
    const struct ftype_info *ft = ftype_find(o.type_name);
    if (!ft) {
        fprintf(err_out, "hearth quantize: unknown type '%s' (one of %s)\n", o.type_name,
                ftype_list());
        return 1;
    }
    if (!o.dry_run && same_file(o.in_path, o.out_path)) {
        fprintf(err_out, "hearth quantize: input and output are the same file\n");
        return 1;
    }

    int ret = 1;
    struct error err = {0};
    struct gguf *g = NULL;
    struct imatrix *im = NULL;
    struct gguf_writer *w = NULL;
    struct threadpool *pool = NULL;
    struct qz_tensor *ts = NULL;
    struct mix_tensor *mt = NULL;
    enum dtype *types = NULL;
    uint8_t *fell = NULL;
    float **imats = NULL;
    float *scratch = NULL;
    char *obuf = NULL;
    char *arch = NULL;
    int n = 0;
    struct mix_model mm = {0};

    if (gguf_open(&g, o.in_path, &err)) goto fail;
    arch = gguf_get_strdup(g, "general.architecture");
    mm.arch = arch ? arch : "";
    mm.n_layer = arch_int(g, mm.arch, "block_count", 0);
    mm.n_expert = arch_int(g, mm.arch, "expert_count", 0);
    mm.n_head = arch_int(g, mm.arch, "attention.head_count", 0);
    mm.n_head_kv = arch_int(g, mm.arch, "attention.head_count_kv", mm.n_head);
    if (o.imatrix_path && imatrix_load(&im, o.imatrix_path, &err)) goto fail;

    n = (int)gguf_n_tensors(g);
    ts = mem_calloc((size_t)(n > 0 ? n : 1), sizeof(*ts));
    mt = mem_calloc((size_t)(n > 0 ? n : 1), sizeof(*mt));
    types = mem_calloc((size_t)(n > 0 ? n : 1), sizeof(*types));
    fell = mem_calloc((size_t)(n > 0 ? n : 1), 1);
    imats = mem_calloc((size_t)(n > 0 ? n : 1), sizeof(float *));
    if (!ts || !mt || !types || !fell || !imats) goto oom;
    for (int i = 0; i < n; i++) ts[i].src = gguf_tensor(g, i);
    qsort(ts, (size_t)n, sizeof(*ts), cmp_tensor);
    for (int i = 0; i < n; i++)
        mt[i] = (struct mix_tensor){ts[i].src->name, ts[i].src->n_dims, ts[i].src->ne,
                                    (enum dtype)ts[i].src->type};
    struct mix_params mp = {
        ft,         im != NULL,  o.pure, o.leave_output, o.output_type, o.token_embd_type,
        o.override, o.n_override};
    if (quant_mix_plan(&mp, &mm, mt, n, types, fell, &err)) goto fail;

    /* check every conversion before writing anything */
    int n_imat_used = 0, warned_requant = 0, n_fell = 0;
    uint64_t in_bytes = 0, out_bytes = 0, n_elems = 0;
    int64_t max_ne0 = 1;
    uint64_t max_out = 1;
    for (int i = 0; i < n; i++) {
        struct qz_tensor *t = &ts[i];
        const struct gguf_tensor_info *s = t->src;
        t->type = types[i];
        t->flags = fell[i];
        t->out_bytes = t->type == (enum dtype)s->type ? s->n_bytes : tensor_bytes(t->type, s->ne);
        if (t->flags & MIX_FELL_BACK) {
            n_fell++;
            if (o.verbose)
                fprintf(err_out, "  %s: row length %lld is not a multiple of 256: %s\n", s->name,
                        (long long)s->ne[0], dtype_name(t->type));
        }
        if (t->type == (enum dtype)s->type) continue;
        const struct dtype_traits *st = dtype_traits(s->type), *dt = dtype_traits(t->type);
        if (!st || !st->to_float) {
            error_set(&err, ERR_UNSUPPORTED, "%s: cannot convert from %s (no dequantizer)", s->name,
                      dtype_name(s->type));
            goto fail;
        }
        if (!dt || !dt->from_float) {
            error_set(&err, ERR_UNSUPPORTED, "%s: no quantizer for %s", s->name,
                      dtype_name(t->type));
            goto fail;
        }
        if (st->is_quantized && !o.allow_requantize && !warned_requant) {
            fprintf(err_out,
                    "hearth quantize: warning: requantizing from %s (%s): the result is worse "
                    "than quantizing the F16/F32 original (--allow-requantize hides this)\n",
                    dtype_name(s->type), s->name);
            warned_requant = 1;
        }
        if (s->ne[0] > max_ne0) max_ne0 = s->ne[0];
        if (im && s->ne[3] == 1) { /* importance rows are per matrix of a 2-D/3-D stack */
            const struct imatrix_entry *e = imatrix_find(im, s->name);
            if (!e) {
                if (o.verbose) fprintf(err_out, "  no importance data for %s\n", s->name);
            } else if (e->n_values != s->ne[0] * s->ne[2]) {
                if (strcmp(s->name, "token_embd.weight")) {
                    error_set(&err, ERR_INVALID,
                              "imatrix has %lld values for %s, the tensor needs %lld (wrong "
                              "model?)",
                              (long long)e->n_values, s->name, (long long)(s->ne[0] * s->ne[2]));
                    goto fail;
                }
            } else {
                t->imat = e;
                if (!(imats[i] = imatrix_means(e, &err))) goto fail;
                n_imat_used++;
            }
        }
    }
    if (n_fell)
        fprintf(err_out,
                "hearth quantize: warning: %d of %d tensors have rows that are not a multiple of "
                "256 and fell back to a 32-block type (or F16), as llama-quantize does (-v lists "
                "them)\n",
                n_fell, n);
    if (threadpool_create(&pool, o.n_threads > 0 ? o.n_threads : threads_n_cpus())) goto oom;
    if (ft->is_dynamic && !o.pure) {
        if (!im)
            fprintf(err_out,
                    "hearth quantize: warning: %s without --imatrix measures errors "
                    "with uniform column weights\n",
                    ft->name);
        if (plan_dynamic(pool, ts, n, imats, mm.n_layer, o.verbose || o.dry_run ? err_out : NULL,
                         &err))
            goto fail;
    }
    for (int i = 0; i < n; i++) {
        const struct gguf_tensor_info *s = ts[i].src;
        in_bytes += s->n_bytes;
        out_bytes += ts[i].out_bytes;
        n_elems += (uint64_t)(s->ne[0] * s->ne[1] * s->ne[2] * s->ne[3]);
        if (ts[i].type != (enum dtype)s->type && ts[i].out_bytes > max_out)
            max_out = ts[i].out_bytes;
    }

    if (o.dry_run) {
        for (int i = 0; i < n; i++) {
            const struct gguf_tensor_info *s = ts[i].src;
            fprintf(out, "%-40s %-6s -> %-6s %10llu bytes\n", s->name, dtype_name(s->type),
                    dtype_name(ts[i].type), (unsigned long long)ts[i].out_bytes);
        }
        fprintf(out, "total %llu bytes, %.2f bpw\n", (unsigned long long)out_bytes,
                n_elems ? 8.0 * (double)out_bytes / (double)n_elems : 0.0);
        ret = 0;
        goto done;
    }

    if (gguf_writer_create(&w, &err)) goto fail;
    if (set_metadata(w, g, ft, im, o.imatrix_path, im ? im->n_entries : 0)) goto oom;
    for (int i = 0; i < n; i++) {
        const struct gguf_tensor_info *s = ts[i].src;
        if (gguf_writer_add_tensor(w, s->name, ts[i].type, s->n_dims, s->ne, NULL, 0)) {
            error_set(&err, ERR_INVALID, "%s: cannot add to the output", s->name);
            goto fail;
        }
    }
    int nth = threadpool_n_threads(pool);
    scratch = mem_alloc((size_t)nth * 2 * (size_t)max_ne0 * sizeof(float));
    obuf = mem_alloc((size_t)max_out);
    if (!scratch || !obuf) goto oom;
    fprintf(err_out, "hearth quantize: %s -> %s as %s, %d tensors, %d threads", o.in_path,
            o.out_path, ft->name, n, nth);
    if (im) fprintf(err_out, ", importance data for %d of them", n_imat_used);
    fprintf(err_out, "\n");
    if (gguf_writer_stream_begin(w, o.out_path, &err)) goto fail;
    uint64_t done_bytes = 0;
    struct timespec last = {0};
    for (int i = 0; i < n; i++) {
        const struct qz_tensor *t = &ts[i];
        const struct gguf_tensor_info *s = t->src;
        const void *data = s->data;
        if (t->type != (enum dtype)s->type) {
            convert_tensor(pool, t, imats[i], scratch, obuf);
            data = obuf;
        }
        if (gguf_writer_stream_tensor(w, data, t->out_bytes, &err)) goto fail;
        done_bytes += s->n_bytes;
        if (o.verbose) {
            fprintf(err_out, "  [%4d/%4d] %-36s %-6s -> %-6s %10.3f -> %10.3f KiB%s\n", i + 1, n,
                    s->name, dtype_name(s->type), dtype_name(t->type), (double)s->n_bytes / 1024,
                    (double)t->out_bytes / 1024, t->imat ? " (imatrix)" : "");
        } else {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            double dt = (double)(now.tv_sec - last.tv_sec) + 1e-9 * (now.tv_nsec - last.tv_nsec);
            if (dt > 0.1 || i == n - 1) {
                progress(err_out, done_bytes, in_bytes, i + 1, n, s->name);
                last = now;
            }
        }
    }
    if (!o.verbose) fprintf(err_out, "\n");
    if (gguf_writer_stream_end(w, &err)) goto fail;

    /* summary: sizes and the count per output type */
    int count[DTYPE_COUNT] = {0};
    for (int i = 0; i < n; i++)
        if ((unsigned)ts[i].type < DTYPE_COUNT) count[ts[i].type]++;
    fprintf(err_out, "hearth quantize: %.2f MiB -> %.2f MiB (%.2f bpw); types:",
            (double)in_bytes / (1 << 20), (double)out_bytes / (1 << 20),
            n_elems ? 8.0 * (double)out_bytes / (double)n_elems : 0.0);
    for (int t = 0; t < DTYPE_COUNT; t++)
        if (count[t]) fprintf(err_out, " %s %d", dtype_name((uint32_t)t), count[t]);
    fprintf(err_out, "\n");
    ret = 0;
    goto done;

oom:
    error_set(&err, ERR_NOMEM, "out of memory");
fail:
    fprintf(err_out, "hearth quantize: %s\n", err.msg);
done:
    mem_free(arch);
    for (int i = 0; imats && i < n; i++) mem_free(imats[i]);
    mem_free(imats);
    mem_free(scratch);
    mem_free(obuf);
    mem_free(ts);
    mem_free(mt);
    mem_free(types);
    mem_free(fell);
    threadpool_free(pool);
    gguf_writer_free(w);
    imatrix_free(im);
    gguf_close(g);
    return ret;
}

int tool_quantize_main(int argc, char **argv) {
    return tool_quantize_run(argc, argv, stdout, stderr);
}
