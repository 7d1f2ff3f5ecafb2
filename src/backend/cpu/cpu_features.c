/* cpu_features.c: CPUID detection and the one-time choice of the kernel table. */
#include "cpu_kernels.h"

#include "../../base/error.h"
#include "../../base/log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>

static int amx_permitted(void) {
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}
#else
static int amx_permitted(void) {
    return 0;
}
#endif

static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

void cpu_features_detect(struct cpu_features *f) {
    memset(f, 0, sizeof(*f));
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    int has_osxsave = (c >> 27) & 1;
    f->has_fma = (c >> 12) & 1;
    f->has_f16c = (c >> 29) & 1;
    int has_avx = (c >> 28) & 1;
    unsigned long long xcr0 = has_osxsave ? xgetbv0() : 0;
    int os_avx = (xcr0 & 0x6) == 0x6;
    int os_avx512 = (xcr0 & 0xe6) == 0xe6;
    if (!has_avx || !os_avx) return;
    if (__get_cpuid_max(0, NULL) < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    f->has_avx2 = (b >> 5) & 1;
    /* AMX-TILE (edx 24) and AMX-INT8 (edx 25), tile state enabled in XCR0 (bits 17, 18), and
     * Linux's per-process permission for the 8 KiB tile data (arch_prctl ARCH_REQ_XCOMP_PERM). */
    int has_amx = ((d >> 24) & 1) && ((d >> 25) & 1) && (xcr0 & 0x60000) == 0x60000;
    if (os_avx512) {
        f->has_avx512f = (b >> 16) & 1;
        f->has_avx512dq = (b >> 17) & 1;
        f->has_avx512bw = (b >> 30) & 1;
        f->has_avx512vl = (b >> 31) & 1;
        f->has_avx512vnni = (c >> 11) & 1;
        f->has_avx512vbmi = (c >> 1) & 1;
    }
    __cpuid_count(7, 1, a, b, c, d);
    f->has_avxvnni = (a >> 4) & 1;
    if (os_avx512) f->has_avx512bf16 = (a >> 5) & 1;
    f->has_amx_int8 = has_amx && amx_permitted();
}
#else
void cpu_features_detect(struct cpu_features *f) {
    memset(f, 0, sizeof(*f));
}
#endif

enum cpu_isa cpu_isa_best(const struct cpu_features *f) {
    if (f->has_avx512f && f->has_avx512bw && f->has_avx512vl && f->has_avx512dq &&
        f->has_avx512vnni && f->has_avx512bf16 && f->has_fma && f->has_f16c && f->has_avx2)
        return CPU_ISA_AVX512;
    if (f->has_avx2 && f->has_fma && f->has_f16c) return CPU_ISA_AVX2;
    return CPU_ISA_SCALAR;
}

static struct cpu_kernels g_tables[3];
static int g_table_ok[3];
static pthread_once_t g_tables_once = PTHREAD_ONCE_INIT;
static const struct cpu_kernels *g_active;

/* Entries the ISA filled replace the scalar ones; a gemm tile travels with its sizes, and an ISA
 * that brings its own vec_dot for a dtype must bring the tile too (else the merged tile would
 * loop over the slower scalar dot). */
static void merge_over_scalar(struct cpu_kernels *dst, const struct cpu_kernels *isa) {
    for (int t = 0; t < DTYPE_COUNT; t++) {
        if (isa->vec_dot[t]) dst->vec_dot[t] = isa->vec_dot[t];
        if (isa->from_float[t]) dst->from_float[t] = isa->from_float[t];
        if (isa->to_float[t]) dst->to_float[t] = isa->to_float[t];
        CHECK(!isa->vec_dot[t] || isa->gemm_tile[t]);
        if (isa->gemm_tile[t]) {
            CHECK(isa->gemm_tile_w[t] >= 1 && isa->gemm_tile_x[t] >= 1);
            dst->gemm_tile[t] = isa->gemm_tile[t];
            dst->gemm_tile_w[t] = isa->gemm_tile_w[t];
            dst->gemm_tile_x[t] = isa->gemm_tile_x[t];
        }
    }
    if (isa->attn_dot_f16) dst->attn_dot_f16 = isa->attn_dot_f16;
    if (isa->attn_mad_f16) dst->attn_mad_f16 = isa->attn_mad_f16;
    if (isa->attn_scale_f16) dst->attn_scale_f16 = isa->attn_scale_f16;
    if (isa->attn_dots_f16) dst->attn_dots_f16 = isa->attn_dots_f16;
    if (isa->f32_id_tile) dst->f32_id_tile = isa->f32_id_tile;
    if (isa->swiglu) dst->swiglu = isa->swiglu;
    if (isa->silu) dst->silu = isa->silu;
    if (isa->rope_pairs) dst->rope_pairs = isa->rope_pairs;
    if (isa->attn_rows_f16) dst->attn_rows_f16 = isa->attn_rows_f16;
    if (isa->gdn_rows) dst->gdn_rows = isa->gdn_rows;
    if (isa->f32_gemm_seq) dst->f32_gemm_seq = isa->f32_gemm_seq;
    if (isa->attn_tile_softmax) dst->attn_tile_softmax = isa->attn_tile_softmax;
    dst->q8_0_blk_dot = isa->q8_0_blk_dot; /* only where the ISA has it (never the scalar's) */
    dst->q8_0_blk_tile = isa->q8_0_blk_tile;
    dst->q8_0_blk_tile_w = isa->q8_0_blk_tile_w;
    dst->q8_0_blk_tile_x = isa->q8_0_blk_tile_x;
    dst->name = isa->name;
}

int cpu_kernels_build(struct cpu_kernels *out, enum cpu_isa isa, const struct cpu_features *f) {
    static int (*const fill[3])(struct cpu_kernels *, const struct cpu_features *) = {
        NULL, cpu_kernels_fill_avx2, cpu_kernels_fill_avx512};
    cpu_kernels_fill_scalar(out);
    if (isa == CPU_ISA_SCALAR) return 0;
    struct cpu_kernels tmp;
    if ((int)cpu_isa_best(f) < (int)isa || fill[isa](&tmp, f) != 0) return -1;
    merge_over_scalar(out, &tmp);
    return 0;
}

static void tables_init(void) {
    struct cpu_features f;
    cpu_features_detect(&f);
    const char *env = getenv("HEARTH_CPU");
    if (env && !strcmp(env, "avx512-noamx")) f.has_amx_int8 = 0;
    enum cpu_isa best = cpu_isa_best(&f);
    for (int isa = CPU_ISA_SCALAR; isa <= CPU_ISA_AVX512; isa++)
        g_table_ok[isa] = cpu_kernels_build(&g_tables[isa], (enum cpu_isa)isa, &f) == 0;
    int want = (int)best;
    if (env && *env) {
        if (!strcmp(env, "scalar"))
            want = CPU_ISA_SCALAR;
        else if (!strcmp(env, "avx2"))
            want = CPU_ISA_AVX2;
        else if (!strcmp(env, "avx512") || !strcmp(env, "avx512-noamx"))
            want = CPU_ISA_AVX512;
        else
            LOG_WARN("HEARTH_CPU=%s not recognised (scalar, avx2, avx512, avx512-noamx); using the "
                     "best",
                     env);
        if (!g_table_ok[want]) {
            LOG_WARN("HEARTH_CPU=%s: this CPU or build lacks it; using the best available", env);
            want = (int)best;
        }
    }
    while (!g_table_ok[want]) want--;
    g_active = &g_tables[want];
}

const struct cpu_kernels *cpu_kernels_get(void) {
    pthread_once(&g_tables_once, tables_init);
    return g_active;
}

const struct cpu_kernels *cpu_kernels_for(enum cpu_isa isa) {
    pthread_once(&g_tables_once, tables_init);
    return g_table_ok[isa] ? &g_tables[isa] : NULL;
}
