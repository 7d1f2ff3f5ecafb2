/* kernels_scalar.c: the scalar kernel table, built from the reference functions in src/tensor.
 * It is both the portable fallback and the oracle the SIMD tables are tested against. */
#include "cpu_kernels.h"

#include <string.h>

int cpu_kernels_fill_scalar(struct cpu_kernels *k) {
    memset(k, 0, sizeof(*k));
    k->name = "scalar";
    for (int t = 0; t < DTYPE_COUNT; t++) {
        const struct dtype_traits *tr = dtype_traits((uint32_t)t);
        if (!tr) continue;
        k->vec_dot[t] = tr->vec_dot;
        k->from_float[t] = tr->from_float;
        k->to_float[t] = tr->to_float;
    }
    return 0;
}
