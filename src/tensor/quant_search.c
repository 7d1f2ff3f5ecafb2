/* quant_search.c: the scale searches behind hearth's weight quantizers (quant.h).
 *
 * Every weight format stores a group of values as scale x small integer (plus an offset for the
 * "_1" and K formats, or through a fixed non-linear table for IQ4). Picking the scale is the
 * only real decision a quantizer makes, and "largest magnitude maps to the last level" wastes
 * much of the range on one outlier. These functions instead minimise the weighted squared error
 * E(d) = sum_i w_i (x_i - d q_i)^2 of the group directly:
 *
 *   1. Grid: for about a dozen trial scales around the "largest magnitude lands on the last
 *      level" scale, round every x_i to its level, then solve for the best d for those levels in
 * closed form (for fixed q, E is quadratic in d: d* = sum w x q / sum w q^2, and E(d*) = sum w x^2
 * - (sum w x q)^2 / sum w q^2, so candidates compare by (sum w x q)^2 / sum w q^2).
 *   2. Refine: alternate "round x to levels of the current d" and "best d for these levels"
 *      (Lloyd iteration) while the error drops.
 *
 * The scale+offset variant does the same with a 2x2 weighted least-squares solve for (d, m).
 * The K-quant files use these per sub-block, then quantize the sub-block scales against the
 * fp16 super-scale and re-pick each sub-block's integer codes from their neighbourhood.
 * Accumulations are in double: groups are tiny, and it keeps the comparisons honest when the
 * weights span many orders of magnitude (importance matrices do).
 */
#include "quant.h"

#include <math.h>
#include <string.h>

/* Trial scales on each side of the starting one. A denser grid buys < 0.05% relative error on
 * gaussian data at twice the time: the Lloyd refinement does the fine work. */
#define FIT_GRID_STEPS 5
#define FIT_MAX_REFINE 4 /* Lloyd iterations after the grid */

float quant_fp16_round(float v) {
    return fp16_to_fp32(fp32_to_fp16(v));
}

/* A group whose weights are all zero (a column never activated in the imatrix run) would make
 * every scale "optimal"; fit it as if unweighted instead. */
const float *quant_usable_weights(int n, const float *w) {
    if (!w) return NULL;
    for (int i = 0; i < n; i++)
        if (w[i] > 0.0f) return w;
    return NULL;
}

static double weight(const float *w, int i) {
    return w ? (double)w[i] : 1.0;
}

/* nearest integer to v, clamped to [lo, hi]; NaN goes to lo. */
static int round_clamp(float v, int lo, int hi) {
    if (!(v > (float)lo)) return lo;
    if (v >= (float)hi) return hi;
    return quant_nearest_int(v);
}

/* The element of largest magnitude, with its sign (0 for an all-zero group). */
static float signed_max(int n, const float *x) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    return max;
}

/* ======================================================================================
 * Symmetric: x ~ d q, q in [lo, hi]
 * ====================================================================================== */

/* sum w (x - d q)^2 */
static float error_scale(int n, const float *x, const float *w, float d, const int8_t *q) {
    double err = 0.0;
    for (int i = 0; i < n; i++) {
        double e = (double)x[i] - (double)d * q[i];
        err += weight(w, i) * e * e;
    }
    return (float)err;
}

float quant_round_scale(int n, const float *x, const float *w, float d, int lo, int hi, int8_t *q) {
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++) q[i] = (int8_t)(d != 0.0f ? round_clamp(x[i] * id, lo, hi) : 0);
    return error_scale(n, x, w, d, q);
}

/* Levels for inverse scale id; returns the best d for them and its score (sum wxq)^2/sum wq^2
 * (higher is better; -1 when every level is zero). */
static float levels_and_best_scale(int n, const float *x, const float *w, float id, int lo, int hi,
                                   int8_t *q, double *score) {
    double sxq = 0.0, sqq = 0.0;
    for (int i = 0; i < n; i++) {
        q[i] = (int8_t)round_clamp(x[i] * id, lo, hi);
        sxq += weight(w, i) * x[i] * q[i];
        sqq += weight(w, i) * q[i] * q[i];
    }
    if (sqq <= 0.0) {
        *score = -1.0;
        return 0.0f;
    }
    *score = sxq * sxq / sqq;
    return (float)(sxq / sqq);
}

float quant_fit_scale(int n, const float *x, const float *w, int lo, int hi, int8_t *q) {
    w = quant_usable_weights(n, w);
    float max = signed_max(n, x);
    if (max == 0.0f) {
        memset(q, 0, (size_t)n);
        return 0.0f;
    }
    int8_t trial[QK_K];
    double best_score = -1.0;
    float best_d = 0.0f;
    /* Grid: send the largest-magnitude element to level L = lo + t (the side with one more
     * level), t in [-1, 1]: t < 0 clips the outlier to gain resolution for the rest. */
    for (int k = -FIT_GRID_STEPS; k <= FIT_GRID_STEPS; k++) {
        float level = (float)lo + (float)k / (float)FIT_GRID_STEPS;
        double score;
        float d = levels_and_best_scale(n, x, w, level / max, lo, hi, trial, &score);
        if (score > best_score) {
            best_score = score;
            best_d = d;
            memcpy(q, trial, (size_t)n);
        }
    }
    /* Refine: re-round to the levels of the best d, re-solve d. */
    for (int it = 0; it < FIT_MAX_REFINE && best_d != 0.0f; it++) {
        double score;
        float d = levels_and_best_scale(n, x, w, 1.0f / best_d, lo, hi, trial, &score);
        if (!(score > best_score * (1.0 + 1e-7))) break;
        best_score = score;
        best_d = d;
        memcpy(q, trial, (size_t)n);
    }
    return best_d;
}

/* ======================================================================================
 * Scale and offset: x ~ d q + m, q in [0, hi]
 * ====================================================================================== */

/* Sums over a group for fixed levels q: enough to solve for the best (d, m) and to evaluate the
 * error of any (d, m) in closed form, without another pass over the group. */
struct affine_sums {
    double sw, sq, sqq, sx, sxq, sxx;
};

/* q = clamp(round((x - m) / d), 0, hi) and the sums for it. */
static void round_affine(int n, const float *x, const float *w, float d, float m, int hi,
                         uint8_t *q, struct affine_sums *s) {
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < n; i++) {
        q[i] = (uint8_t)(d != 0.0f ? round_clamp((x[i] - m) * id, 0, hi) : 0);
        double wi = weight(w, i), qi = q[i], xi = x[i];
        s->sw += wi;
        s->sq += wi * qi;
        s->sqq += wi * qi * qi;
        s->sx += wi * xi;
        s->sxq += wi * xi * qi;
        s->sxx += wi * xi * xi;
    }
}

/* sum w (x - (d q + m))^2, expanded. */
static double affine_error(const struct affine_sums *s, double d, double m) {
    return s->sxx - 2.0 * d * s->sxq - 2.0 * m * s->sx + d * d * s->sqq + 2.0 * d * m * s->sq +
           m * m * s->sw;
}

float quant_round_scale_offset(int n, const float *x, const float *w, float d, float m, int hi,
                               uint8_t *q) {
    struct affine_sums s;
    round_affine(n, x, w, d, m, hi, q, &s);
    return (float)affine_error(&s, d, m);
}

/* Weighted least squares for (d, m) with the levels fixed; m <= 0 when m_le_zero. Returns 0,
 * or -1 when the levels cannot determine a positive scale (e.g. all equal). */
static int solve_affine(const struct affine_sums *s, int m_le_zero, float *d, float *m) {
    double det = s->sw * s->sqq - s->sq * s->sq;
    if (!(det > 1e-12 * s->sw * s->sqq)) return -1;
    double dd = (s->sw * s->sxq - s->sq * s->sx) / det;
    double mm = (s->sqq * s->sx - s->sq * s->sxq) / det;
    if (m_le_zero && mm > 0.0) {
        mm = 0.0;
        dd = s->sxq / s->sqq;
    }
    if (!(dd > 0.0)) return -1;
    *d = (float)dd;
    *m = (float)mm;
    return 0;
}

float quant_fit_scale_offset(int n, const float *x, const float *w, int hi, int m_le_zero,
                             uint8_t *q, float *m) {
    w = quant_usable_weights(n, w);
    float xmin = x[0], xmax = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < xmin) xmin = x[i];
        if (x[i] > xmax) xmax = x[i];
    }
    if (m_le_zero && xmin > 0.0f) xmin = 0.0f;
    if (!(xmax > xmin)) { /* constant group: the offset alone is exact */
        memset(q, 0, (size_t)n);
        *m = xmin;
        return 0.0f;
    }
    uint8_t trial[QK_K];
    struct affine_sums s;
    /* Start from the plain min..max fit, which is always valid. */
    float best_d = (xmax - xmin) / (float)hi, best_m = xmin;
    round_affine(n, x, w, best_d, best_m, hi, q, &s);
    double best_err = affine_error(&s, best_d, best_m);
    /* Grid: spread min..max over hi + t steps, t in [-1, 1], then refit d and m. */
    for (int k = -FIT_GRID_STEPS; k <= FIT_GRID_STEPS; k++) {
        float d, mm;
        round_affine(n, x, w, (xmax - xmin) / ((float)hi + (float)k / (float)FIT_GRID_STEPS), xmin,
                     hi, trial, &s);
        if (solve_affine(&s, m_le_zero, &d, &mm) != 0) continue;
        double err = affine_error(&s, d, mm);
        if (err < best_err) {
            best_err = err;
            best_d = d;
            best_m = mm;
            memcpy(q, trial, (size_t)n);
        }
    }
    /* Refine: re-round to the current (d, m), re-solve. */
    for (int it = 0; it < FIT_MAX_REFINE; it++) {
        float d, mm;
        round_affine(n, x, w, best_d, best_m, hi, trial, &s);
        if (solve_affine(&s, m_le_zero, &d, &mm) != 0) break;
        double err = affine_error(&s, d, mm);
        if (!(err < best_err * (1.0 - 1e-9))) break;
        best_err = err;
        best_d = d;
        best_m = mm;
        memcpy(q, trial, (size_t)n);
    }
    *m = best_m;
    return best_d;
}

/* ======================================================================================
 * Non-linear table: x ~ d kvalues_iq4nl[q]
 * ====================================================================================== */

/* Midpoints between neighbouring kvalues_iq4nl levels. */
static const float g_iq4_mid[15] = {-115.5f, -93.5f, -74.0f, -57.0f, -42.0f, -28.5f, -16.0f, -4.5f,
                                    7.0f,    19.0f,  31.5f,  45.5f,  61.0f,  79.0f,  101.0f};

int quant_iq4_nearest(float v) {
    int idx = 0; /* the number of midpoints below v; branch-free, ties go to the lower level */
    for (int k = 0; k < 15; k++) idx += v > g_iq4_mid[k];
    return idx;
}

float quant_round_iq4(int n, const float *x, const float *w, float d, uint8_t *q) {
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    double err = 0.0;
    for (int i = 0; i < n; i++) {
        q[i] = (uint8_t)quant_iq4_nearest(x[i] * id);
        double e = (double)x[i] - (double)d * kvalues_iq4nl[q[i]];
        err += weight(w, i) * e * e;
    }
    return (float)err;
}

static float iq4_levels_and_best_scale(int n, const float *x, const float *w, float id, uint8_t *q,
                                       double *score) {
    double sxt = 0.0, stt = 0.0;
    for (int i = 0; i < n; i++) {
        q[i] = (uint8_t)quant_iq4_nearest(x[i] * id);
        double t = kvalues_iq4nl[q[i]];
        sxt += weight(w, i) * x[i] * t;
        stt += weight(w, i) * t * t;
    }
    *score = sxt * sxt / stt; /* stt > 0: the table has no zero level */
    return (float)(sxt / stt);
}

float quant_fit_iq4(int n, const float *x, const float *w, uint8_t *q) {
    w = quant_usable_weights(n, w);
    float max = signed_max(n, x);
    if (max == 0.0f) {
        memset(q, 8, (size_t)n); /* any level: d = 0 */
        return 0.0f;
    }
    uint8_t trial[QK_K];
    double best_score = -1.0;
    float best_d = 0.0f;
    /* The table is lopsided (-127 .. 113), so try the outlier on either end of it, each with
     * a spread of +-10%. */
    const float ends[2] = {(float)kvalues_iq4nl[0], (float)kvalues_iq4nl[15]};
    for (int e = 0; e < 2; e++) {
        for (int k = -FIT_GRID_STEPS; k <= FIT_GRID_STEPS; k++) {
            float level = ends[e] * (1.0f + 0.1f * (float)k / (float)FIT_GRID_STEPS);
            double score;
            float d = iq4_levels_and_best_scale(n, x, w, level / max, trial, &score);
            if (score > best_score) {
                best_score = score;
                best_d = d;
                memcpy(q, trial, (size_t)n);
            }
        }
    }
    for (int it = 0; it < FIT_MAX_REFINE && best_d != 0.0f; it++) {
        double score;
        float d = iq4_levels_and_best_scale(n, x, w, 1.0f / best_d, trial, &score);
        if (!(score > best_score * (1.0 + 1e-7))) break;
        best_score = score;
        best_d = d;
        memcpy(q, trial, (size_t)n);
    }
    return best_d;
}

/* ======================================================================================
 * K-quant super-blocks
 * ======================================================================================
 * The K-quants store each sub-block's scale (and min) as a small integer code times an fp16
 * super-scale. First every sub-block gets its own best float scale (and min) from the searches
 * above, and the super-scale maps the largest of them to the end code. Rounding those to codes
 * blindly costs accuracy on sub-blocks with small scales, so every sub-block re-picks its codes
 * among the neighbours (+-1) of the rounded ones, re-rounding its quants for the exact scale it
 * will have, and keeps the least error. Last, the codes and quants being fixed, x is linear in
 * the super-scales: they are refitted by least squares over the whole super-block, the codes
 * re-picked once more around the same effective scales, and that version kept if better.
 */

#define MAX_SUB 16 /* sub-blocks per super-block (Q2_K, Q3_K, Q6_K) */

static int clamp_int(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- scale and min: x ~ d sc q - dmin m ---- */

/* Codes for one sub-block whose ideal scale/min are `scale`/`min`, given super-scales dd, dm.
 * Writes sc, m and the quants; returns the error. */
static float pick_codes_min(int n, const float *x, const float *w, int code_max, int hi, float dd,
                            float dm, float scale, float min, uint8_t *sc, uint8_t *m, uint8_t *q) {
    int sc0 = dd > 0.0f ? round_clamp(scale / dd, 0, code_max) : 0;
    int m0 = dm > 0.0f ? round_clamp(min / dm, 0, code_max) : 0;
    uint8_t trial[QK_K];
    float best = INFINITY;
    for (int a = clamp_int(sc0 - 1, 0, code_max); a <= clamp_int(sc0 + 1, 0, code_max); a++) {
        for (int b = clamp_int(m0 - 1, 0, code_max); b <= clamp_int(m0 + 1, 0, code_max); b++) {
            float err =
                quant_round_scale_offset(n, x, w, dd * (float)a, -(dm * (float)b), hi, trial);
            if (err < best) {
                best = err;
                *sc = (uint8_t)a;
                *m = (uint8_t)b;
                memcpy(q, trial, (size_t)n);
            }
        }
    }
    return best;
}

/* Least squares (d, dmin) for fixed codes and quants. Returns -1 if singular or negative. */
static int refit_scale_min(const float *x, const float *const *ws, int n_sub, int sub_len,
                           const uint8_t *sc, const uint8_t *m, const uint8_t *q, float *d,
                           float *dmin) {
    double saa = 0, sab = 0, sbb = 0, sxa = 0, sxb = 0;
    for (int s = 0; s < n_sub; s++) {
        for (int l = 0; l < sub_len; l++) {
            int i = s * sub_len + l;
            double wi = weight(ws[s], l);
            double a = (double)sc[s] * q[i], b = -(double)m[s];
            saa += wi * a * a;
            sab += wi * a * b;
            sbb += wi * b * b;
            sxa += wi * x[i] * a;
            sxb += wi * x[i] * b;
        }
    }
    if (sbb == 0.0) { /* every min code is zero: d alone */
        if (!(saa > 0.0)) return -1;
        *d = (float)(sxa / saa);
        *dmin = 0.0f;
        return *d >= 0.0f ? 0 : -1;
    }
    double det = saa * sbb - sab * sab;
    if (!(det > 1e-12 * saa * sbb)) return -1;
    *d = (float)((sxa * sbb - sxb * sab) / det);
    *dmin = (float)((sxb * saa - sxa * sab) / det);
    return *d >= 0.0f && *dmin >= 0.0f ? 0 : -1;
}

void quant_fit_super_scale_min(const float *x, const float *w, int n_sub, int sub_len, int code_max,
                               int hi, float *d, float *dmin, uint8_t *sc, uint8_t *m, uint8_t *q) {
    const float *ws[MAX_SUB];
    float scale[MAX_SUB], min[MAX_SUB];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int s = 0; s < n_sub; s++) {
        const float *xs = x + s * sub_len;
        float off;
        ws[s] = quant_usable_weights(sub_len, w ? w + s * sub_len : NULL);
        scale[s] = quant_fit_scale_offset(sub_len, xs, ws[s], hi, 1, q + s * sub_len, &off);
        min[s] = -off;
        if (scale[s] > max_scale) max_scale = scale[s];
        if (min[s] > max_min) max_min = min[s];
    }
    float dd = quant_fp16_round(max_scale / (float)code_max);
    float dm = quant_fp16_round(max_min / (float)code_max);
    float err = 0.0f;
    for (int s = 0; s < n_sub; s++)
        err += pick_codes_min(sub_len, x + s * sub_len, ws[s], code_max, hi, dd, dm, scale[s],
                              min[s], &sc[s], &m[s], q + s * sub_len);

    float d2, dm2;
    if (refit_scale_min(x, ws, n_sub, sub_len, sc, m, q, &d2, &dm2) == 0) {
        d2 = quant_fp16_round(d2);
        dm2 = quant_fp16_round(dm2);
        uint8_t sc2[MAX_SUB], m2[MAX_SUB], q2[QK_K];
        float err2 = 0.0f;
        for (int s = 0; s < n_sub; s++)
            err2 += pick_codes_min(sub_len, x + s * sub_len, ws[s], code_max, hi, d2, dm2,
                                   dd * (float)sc[s], dm * (float)m[s], &sc2[s], &m2[s],
                                   q2 + s * sub_len);
        if (err2 < err) {
            dd = d2;
            dm = dm2;
            memcpy(sc, sc2, (size_t)n_sub);
            memcpy(m, m2, (size_t)n_sub);
            memcpy(q, q2, (size_t)(n_sub * sub_len));
        }
    }
    *d = dd;
    *dmin = dm;
}

/* ---- signed scale: x ~ d sc q ---- */

static float pick_code(int n, const float *x, const float *w, int code_lo, int code_hi, int lo,
                       int hi, float dd, float scale, int8_t *sc, int8_t *q) {
    if (dd == 0.0f) { /* all-zero super-block */
        *sc = 0;
        return quant_round_scale(n, x, w, 0.0f, lo, hi, q);
    }
    int c0 = round_clamp(scale / dd, code_lo, code_hi);
    int8_t trial[QK_K];
    float best = INFINITY;
    for (int c = clamp_int(c0 - 1, code_lo, code_hi); c <= clamp_int(c0 + 1, code_lo, code_hi);
         c++) {
        float err = quant_round_scale(n, x, w, dd * (float)c, lo, hi, trial);
        if (err < best) {
            best = err;
            *sc = (int8_t)c;
            memcpy(q, trial, (size_t)n);
        }
    }
    return best;
}

void quant_fit_super_scale(const float *x, const float *w, int n_sub, int sub_len, int code_lo,
                           int code_hi, int lo, int hi, float *d, int8_t *sc, int8_t *q) {
    const float *ws[MAX_SUB];
    float scale[MAX_SUB];
    float smax = 0.0f;
    for (int s = 0; s < n_sub; s++) {
        ws[s] = quant_usable_weights(sub_len, w ? w + s * sub_len : NULL);
        scale[s] = quant_fit_scale(sub_len, x + s * sub_len, ws[s], lo, hi, q + s * sub_len);
        if (fabsf(scale[s]) > fabsf(smax)) smax = scale[s];
    }
    /* The largest sub-block scale takes the end code with more room (code_lo, negative). */
    float dd = quant_fp16_round(smax / (float)code_lo);
    float err = 0.0f;
    for (int s = 0; s < n_sub; s++)
        err += pick_code(sub_len, x + s * sub_len, ws[s], code_lo, code_hi, lo, hi, dd, scale[s],
                         &sc[s], q + s * sub_len);

    double sxa = 0.0, saa = 0.0;
    for (int s = 0; s < n_sub; s++) {
        for (int l = 0; l < sub_len; l++) {
            double a = (double)sc[s] * q[s * sub_len + l];
            sxa += weight(ws[s], l) * x[s * sub_len + l] * a;
            saa += weight(ws[s], l) * a * a;
        }
    }
    if (saa > 0.0) {
        float d2 = quant_fp16_round((float)(sxa / saa));
        int8_t sc2[MAX_SUB], q2[QK_K];
        float err2 = 0.0f;
        for (int s = 0; s < n_sub; s++)
            err2 += pick_code(sub_len, x + s * sub_len, ws[s], code_lo, code_hi, lo, hi, d2,
                              dd * (float)sc[s], &sc2[s], q2 + s * sub_len);
        if (err2 < err) {
            dd = d2;
            memcpy(sc, sc2, (size_t)n_sub);
            memcpy(q, q2, (size_t)(n_sub * sub_len));
        }
    }
    *d = dd;
}
