/* bench_kernels.c: speed of the CPU kernel tables, one thread, per dtype and instruction set.
 *
 *   build/bench_kernels [--rows R] [--k K] [--tokens T] [--isa scalar|avx2|avx512] [--type Q4_K]
 *
 * For each table the CPU supports (AVX-512 with and without AMX) and each weight dtype it prints
 * one line per operation:
 *   matvec_dot   R x K weights times one activation row through vec_dot, row by row
 *   matvec_tile  the same through gemm_tile with n_x = 1 (the decode kernel)
 *   matvec_blk   Q8_0 on AMX tables only: the block-order tile with n_x = 1 (what decode runs
 *                for Q8_0 layer weights there)
 *   gemm_tile    R/8 x K weights times T activation rows through gemm_tile tiles
 * with GB/s of weight bytes read (matvec) and GFLOP/s (2 flops per multiply-add). Each figure is
 * the best of several runs of at least 0.15 s of thread CPU time (the cores may be shared; cache
 * contention still shows). The weights are quantized gaussians; the
 * default 4096 x 4096 matrix is bigger than L2 but may fit in L3. Not a test: numbers only.
 */
#include "../src/backend/cpu/cpu_kernels.h"
#include "../src/base/mem.h"
#include "../src/tensor/dtype.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of this thread: the cores are shared, and time-slicing should not count. */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t g_rng = 7;

static float rng_gauss(void) {
    double u[2];
    for (int i = 0; i < 2; i++) {
        g_rng ^= g_rng >> 12;
        g_rng ^= g_rng << 25;
        g_rng ^= g_rng >> 27;
        u[i] = (double)((g_rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
    }
    return (float)(sqrt(-2.0 * log(u[0] + 1e-300)) * cos(6.283185307179586 * u[1]));
}

struct bench {
    const struct cpu_kernels *k;
    enum dtype type;
    const char *w; /* rows x row_bytes */
    const char *x; /* tokens x x_bytes, in the vec_dot_type */
    size_t row_bytes, x_bytes;
    int64_t rows, kdim;
    int tokens;
    float *out; /* tokens x rows */
    volatile float sink;
};

static void run_matvec_dot(struct bench *b, int64_t rows) {
    float s = 0;
    for (int64_t r = 0; r < rows; r++)
        s += b->k->vec_dot[b->type](b->w + r * b->row_bytes, b->x, b->kdim);
    b->sink = s;
}

static void run_matvec_tile(struct bench *b, int64_t rows) {
    int tw = b->k->gemm_tile_w[b->type];
    for (int64_t r = 0; r < rows; r += tw) {
        int nw = rows - r < tw ? (int)(rows - r) : tw;
        b->k->gemm_tile[b->type](b->w + r * b->row_bytes, b->row_bytes, b->x, b->x_bytes, b->kdim,
                                 b->out + r, (size_t)rows, nw, 1);
    }
}

/* The decode kernel of Q8_0's block-order tile (AMX tables): 4 rows per call. */
static void run_matvec_blk(struct bench *b, int64_t rows) {
    for (int64_t r = 0; r < rows; r += 4) {
        int nw = rows - r < 4 ? (int)(rows - r) : 4;
        b->k->q8_0_blk_tile(b->w + r * b->row_bytes, b->row_bytes, b->x, b->x_bytes, b->kdim,
                            b->out + r, (size_t)rows, nw, 1);
    }
}

/* Row tiles outer, token tiles inner: a row tile stays in L1 while the tokens stream by. */
static void run_gemm(struct bench *b, int64_t rows) {
    int tw = b->k->gemm_tile_w[b->type], tx = b->k->gemm_tile_x[b->type];
    for (int64_t r = 0; r < rows; r += tw) {
        int nw = rows - r < tw ? (int)(rows - r) : tw;
        for (int t = 0; t < b->tokens; t += tx) {
            int nx = b->tokens - t < tx ? b->tokens - t : tx;
            b->k->gemm_tile[b->type](b->w + r * b->row_bytes, b->row_bytes,
                                     b->x + (size_t)t * b->x_bytes, b->x_bytes, b->kdim,
                                     b->out + (size_t)t * (size_t)rows + r, (size_t)rows, nw, nx);
        }
    }
}

/* Best seconds per call of fn over runs of >= min_s each. */
static double time_best(void (*fn)(struct bench *, int64_t), struct bench *b, int64_t rows) {
    double best = 1e30;
    fn(b, rows); /* warm-up */
    for (int run = 0; run < 3; run++) {
        int reps = 0;
        double t0 = now_s(), t;
        do {
            fn(b, rows);
            reps++;
            t = now_s() - t0;
        } while (t < 0.15);
        if (t / reps < best) best = t / reps;
    }
    return best;
}

int main(int argc, char **argv) {
    int64_t rows = 4096, kdim = 4096;
    int tokens = 64;
    const char *only_isa = NULL, *only_type = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rows") && i + 1 < argc)
            rows = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--k") && i + 1 < argc)
            kdim = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc)
            only_isa = argv[++i];
        else if (!strcmp(argv[i], "--type") && i + 1 < argc)
            only_type = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--rows R] [--k K] [--tokens T] [--isa NAME] [--type T]\n",
                    argv[0]);
            return 2;
        }
    }
    if (rows < 8 || kdim < 256 || kdim % 256 || tokens < 1) {
        fprintf(stderr, "need rows >= 8, k a multiple of 256, tokens >= 1\n");
        return 2;
    }
    /* every table the CPU has; AVX-512 also without AMX where it has AMX */
    static struct cpu_kernels tables[4];
    int isa_of[4], n_tables = 0;
    struct cpu_features f;
    cpu_features_detect(&f);
    for (int isa = CPU_ISA_SCALAR; isa <= CPU_ISA_AVX512; isa++) {
        if (isa == CPU_ISA_AVX512 && f.has_amx_int8) {
            struct cpu_features g = f;
            g.has_amx_int8 = 0;
            if (cpu_kernels_build(&tables[n_tables], CPU_ISA_AVX512, &g) == 0)
                isa_of[n_tables++] = isa;
        }
        if (cpu_kernels_build(&tables[n_tables], (enum cpu_isa)isa, &f) == 0)
            isa_of[n_tables++] = isa;
    }
    float *xf = mem_alloc((size_t)(rows > kdim ? rows : kdim) * sizeof(float));
    float *out = mem_alloc((size_t)rows * (size_t)tokens * sizeof(float));
    if (!xf || !out) return 1;
    for (int t = 0; t < DTYPE_COUNT; t++) {
        const struct dtype_traits *tr = dtype_traits((uint32_t)t);
        if (!tr || !tr->vec_dot || !tr->from_float || t == DTYPE_Q8_K) continue;
        if (only_type && strcmp(only_type, tr->name)) continue;
        size_t row_bytes = dtype_row_bytes((enum dtype)t, kdim);
        size_t x_bytes = dtype_row_bytes(tr->vec_dot_type, kdim);
        char *w = mem_alloc_aligned(64, row_bytes * (size_t)rows);
        char *x = mem_alloc_aligned(64, x_bytes * (size_t)tokens);
        if (!w || !x) return 1;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t i = 0; i < kdim; i++) xf[i] = 0.02f * rng_gauss();
            tr->from_float(xf, w + r * row_bytes, kdim);
        }
        const struct cpu_kernels *scalar = cpu_kernels_for(CPU_ISA_SCALAR);
        for (int j = 0; j < tokens; j++) {
            for (int64_t i = 0; i < kdim; i++) xf[i] = rng_gauss();
            scalar->from_float[tr->vec_dot_type](xf, x + (size_t)j * x_bytes, kdim);
        }
        for (int v = 0; v < n_tables; v++) {
            const struct cpu_kernels *k = &tables[v];
            int isa = isa_of[v];
            if (only_isa && strcmp(only_isa, k->name)) continue;
            struct bench b = {k,    (enum dtype)t, w,      x,   row_bytes, x_bytes,
                              rows, kdim,          tokens, out, 0};
            int64_t mv_rows = isa == CPU_ISA_SCALAR ? rows / 4 : rows;
            double s_dot = time_best(run_matvec_dot, &b, mv_rows);
            double s_tile = time_best(run_matvec_tile, &b, mv_rows);
            int64_t g_rows = rows / (isa == CPU_ISA_SCALAR ? 64 : 8);
            double s_gemm = time_best(run_gemm, &b, g_rows);
            double mv_bytes = (double)row_bytes * (double)mv_rows;
            double mv_flop = 2.0 * (double)mv_rows * (double)kdim;
            double g_flop = 2.0 * (double)g_rows * (double)kdim * tokens;
            printf("%-7s %-6s matvec_dot  k=%-6lld rows=%-6lld %8.2f GB/s %8.2f GFLOP/s\n", k->name,
                   tr->name, (long long)kdim, (long long)mv_rows, mv_bytes / s_dot * 1e-9,
                   mv_flop / s_dot * 1e-9);
            printf(
                "%-7s %-6s matvec_tile k=%-6lld rows=%-6lld %8.2f GB/s %8.2f GFLOP/s (tile %dx1)\n",
                k->name, tr->name, (long long)kdim, (long long)mv_rows, mv_bytes / s_tile * 1e-9,
                mv_flop / s_tile * 1e-9, k->gemm_tile_w[t]);
            printf("%-7s %-6s gemm_tile   k=%-6lld rows=%-6lld %8.2f GB/s %8.2f GFLOP/s (tile "
                   "%dx%d, %d tokens)\n",
                   k->name, tr->name, (long long)kdim, (long long)g_rows,
                   (double)row_bytes * (double)g_rows / s_gemm * 1e-9, g_flop / s_gemm * 1e-9,
                   k->gemm_tile_w[t], k->gemm_tile_x[t], tokens);
            if (t == DTYPE_Q8_0 && k->q8_0_blk_tile) {
                double s_blk = time_best(run_matvec_blk, &b, mv_rows);
                printf("%-7s %-6s matvec_blk  k=%-6lld rows=%-6lld %8.2f GB/s %8.2f GFLOP/s\n",
                       k->name, tr->name, (long long)kdim, (long long)mv_rows,
                       mv_bytes / s_blk * 1e-9, mv_flop / s_blk * 1e-9);
            }
            fflush(stdout);
        }
        mem_free(w);
        mem_free(x);
    }
    mem_free(xf);
    mem_free(out);
    return 0;
}
