/* tensor.h: a tensor is a view, never an owner (unless a comment at the owner says so).
 *
 * ne[i] = elements along dimension i, innermost (contiguous) first, as in GGUF/ggml.
 * nb[i] = byte stride along dimension i; nb[0] = type_size (bytes of one block),
 * nb[1] = bytes of one row (ne[0]/block_size blocks), nb[2] = nb[1]*ne[1], nb[3] = nb[2]*ne[2].
 * A weight W with ne = {K, N} holds N rows of K inputs: y[n] = sum_k W[n][k] x[k].
 * data points into the model's mmap (weights) or a backend buffer (activations, caches).
 */
#ifndef HEARTH_TENSOR_H
#define HEARTH_TENSOR_H

#include "dtype.h"

#include <stddef.h>
#include <stdint.h>

#define TENSOR_MAX_DIMS 4

struct tensor {
    enum dtype type;
    int64_t ne[TENSOR_MAX_DIMS]; /* elements per dim; unused dims are 1 */
    size_t nb[TENSOR_MAX_DIMS];  /* byte strides */
    void *data;                  /* borrowed */
    const char *name;            /* borrowed (GGUF name) or NULL */
};

/* Fills ne/nb for a contiguous tensor of the given shape (dims beyond n_dims are 1). */
void tensor_init(struct tensor *t, enum dtype type, int n_dims, const int64_t *ne, void *data);
int64_t tensor_nelements(const struct tensor *t);
size_t tensor_nbytes(const struct tensor *t);
/* Pointer to row i1 of matrix i2 (i.e. data + i1*nb[1] + i2*nb[2]). */
static inline void *tensor_row(const struct tensor *t, int64_t i1, int64_t i2) {
    return (char *)t->data + (size_t)i1 * t->nb[1] + (size_t)i2 * t->nb[2];
}

#endif
