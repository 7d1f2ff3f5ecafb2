/* kernels_avx512.c: AVX-512 (F/BW/VL/DQ + VNNI + BF16) kernels, compiled with those flags only
 * for this file. Entries not filled here fall back to the scalar table. */
#include "cpu_kernels.h"

#include <string.h>

int cpu_kernels_fill_avx512(struct cpu_kernels *k, const struct cpu_features *f) {
    memset(k, 0, sizeof(*k));
    k->name = "avx512";
    return 0;
}
