/* kernels_avx2.c: AVX2+FMA kernels. Compiled with -mavx2 -mfma -mf16c only for this file.
 * Entries not filled here fall back to the scalar table. (Kernels land with the fast-CPU work.) */
#include "cpu_kernels.h"

#include <string.h>

int cpu_kernels_fill_avx2(struct cpu_kernels *k, const struct cpu_features *f) {
    memset(k, 0, sizeof(*k));
    k->name = "avx2";
    return 0;
}
