/* cpu_kernels.h: the CPU kernel table, one per instruction set.
 *
 * Each ISA file (kernels_scalar.c, kernels_avx2.c, kernels_avx512.c, later kernels_neon.c) fills
 * a struct cpu_kernels. Entries it leaves NULL fall back to the scalar table, whose entries come
 * from the reference functions in src/tensor (dtype_traits). The table is chosen once at start-up
 * from CPUID, or forced with HEARTH_CPU=scalar|avx2|avx512; it is the only global mutable state
 * of the backend. Every SIMD entry has a test against its scalar twin (tests/test_kernels.c).
 */
#ifndef HEARTH_CPU_KERNELS_H
#define HEARTH_CPU_KERNELS_H

#include "../../tensor/dtype.h"

#include <stdint.h>

/* Dot product of a weight row (dtype d) with an activation row in d's vec_dot_type. */
typedef float (*cpu_vec_dot_fn)(const void *w, const void *x, int64_t n);
/* Quantize / convert an f32 activation row to a vec_dot_type. */
typedef void (*cpu_from_float_fn)(const float *x, void *y, int64_t n);
/* Dequantize a weight row to f32. */
typedef void (*cpu_to_float_fn)(const void *x, float *y, int64_t n);

struct cpu_kernels {
    const char *name;                          /* "scalar", "avx2", "avx512" */
    cpu_vec_dot_fn vec_dot[DTYPE_COUNT];       /* indexed by weight dtype */
    cpu_from_float_fn from_float[DTYPE_COUNT]; /* indexed by activation dtype */
    cpu_to_float_fn to_float[DTYPE_COUNT];     /* indexed by dtype */
};

enum cpu_isa { CPU_ISA_SCALAR = 0, CPU_ISA_AVX2 = 1, CPU_ISA_AVX512 = 2 };

struct cpu_features {
    int has_avx2, has_fma, has_f16c, has_avx512f, has_avx512bw, has_avx512vl, has_avx512dq,
        has_avx512vnni, has_avx512bf16, has_avxvnni;
};

void cpu_features_detect(struct cpu_features *f);
/* Best ISA the CPU supports. */
enum cpu_isa cpu_isa_best(const struct cpu_features *f);

/* Fill a table for one ISA. Scalar fills every supported dtype; the others fill what they have
 * (the caller merges over the scalar table). Return 0, or -1 if the ISA is not compiled in. */
int cpu_kernels_fill_scalar(struct cpu_kernels *k);
int cpu_kernels_fill_avx2(struct cpu_kernels *k);
int cpu_kernels_fill_avx512(struct cpu_kernels *k);

/* The table in use (chosen on first call from CPUID and HEARTH_CPU). Thread-safe. */
const struct cpu_kernels *cpu_kernels_get(void);
/* A specific table merged over scalar, for tests; NULL if the CPU lacks the ISA. */
const struct cpu_kernels *cpu_kernels_for(enum cpu_isa isa);

#endif
