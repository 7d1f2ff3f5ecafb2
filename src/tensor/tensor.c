/* tensor.c: shape helpers for struct tensor views (see tensor.h). */
#include "tensor.h"

#include "../base/error.h"

void tensor_init(struct tensor *t, enum dtype type, int n_dims, const int64_t *ne, void *data) {
    const struct dtype_traits *tr = dtype_traits(type);
    CHECK(tr != NULL && n_dims >= 1 && n_dims <= TENSOR_MAX_DIMS);
    t->type = type;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++) t->ne[i] = i < n_dims ? ne[i] : 1;
    CHECK(t->ne[0] % tr->block_size == 0);
    t->nb[0] = (size_t)tr->type_size;
    t->nb[1] = (size_t)(t->ne[0] / tr->block_size) * (size_t)tr->type_size;
    for (int i = 2; i < TENSOR_MAX_DIMS; i++) t->nb[i] = t->nb[i - 1] * (size_t)t->ne[i - 1];
    t->data = data;
    t->name = NULL;
}

int64_t tensor_nelements(const struct tensor *t) {
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

size_t tensor_nbytes(const struct tensor *t) {
    return t->nb[3] * (size_t)t->ne[3];
}
