/* mem.h: every allocation in hearth goes through here.
 *
 * Thin wrappers over malloc/calloc/realloc/free that (1) return NULL on failure like libc,
 * (2) count live bytes, and (3) can be told to fail the Nth allocation, so tests can prove
 * that every load and request path turns an allocation failure into a clean ERR_NOMEM.
 * Big aligned buffers (KV cache, scratch) come from mem_alloc_aligned and are freed with
 * mem_free like everything else.
 */
#ifndef HEARTH_MEM_H
#define HEARTH_MEM_H

#include <stddef.h>
#include <stdint.h>

void *mem_alloc(size_t n_bytes);                       /* uninitialised; NULL on failure */
void *mem_calloc(size_t n, size_t size);               /* zeroed; NULL on failure or overflow */
void *mem_realloc(void *p, size_t n_bytes);            /* NULL on failure (p stays valid) */
void *mem_alloc_aligned(size_t align, size_t n_bytes); /* align: power of two >= 16 */
void mem_free(void *p);                                /* p may be NULL */
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);

/* Overflow-checked size arithmetic: return 0 on success, -1 on overflow. */
int mem_mul_size(size_t a, size_t b, size_t *out);
int mem_add_size(size_t a, size_t b, size_t *out);

/* Test hooks. mem_fail_after(n): the (n+1)-th allocation from now fails (n < 0 disables).
 * mem_live_bytes: bytes currently allocated through this module. Both are process-wide. */
void mem_fail_after(int64_t n);
int64_t mem_live_bytes(void);
int64_t mem_live_count(void); /* blocks currently allocated */

#endif
