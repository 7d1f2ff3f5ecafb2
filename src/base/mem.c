/* mem.c: counted allocation with failure injection (see mem.h).
 *
 * Each block carries a 64-byte header holding its size and, for aligned blocks, the offset
 * back to the raw malloc pointer. 64 bytes keeps every returned pointer 64-byte aligned
 * relative to the raw one for ordinary allocations and leaves room for the bookkeeping.
 */
#include "mem.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define HDR 64

static _Atomic int64_t g_live_bytes;
static _Atomic int64_t g_count;
static _Atomic int64_t g_fail_after = -1;

struct hdr {
    size_t n_bytes; /* user size */
    size_t offset;  /* bytes from the raw pointer to the user pointer */
};

void mem_fail_after(int64_t n) {
    atomic_store(&g_fail_after, n);
}

int64_t mem_live_bytes(void) {
    return atomic_load(&g_live_bytes);
}

int64_t mem_live_count(void) {
    return atomic_load(&g_count);
}

static int should_fail(void) {
    int64_t f = atomic_load(&g_fail_after);
    if (f < 0) return 0;
    if (f == 0) {
        atomic_store(&g_fail_after, -1);
        return 1;
    }
    atomic_fetch_sub(&g_fail_after, 1);
    return 0;
}

int mem_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int mem_add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

static void *finish(unsigned char *raw, size_t offset, size_t n_bytes) {
    struct hdr *h = (struct hdr *)(raw + offset - sizeof(struct hdr));
    h->n_bytes = n_bytes;
    h->offset = offset;
    atomic_fetch_add(&g_live_bytes, (int64_t)n_bytes);
    atomic_fetch_add(&g_count, 1);
    return raw + offset;
}

static struct hdr *header_of(void *p) {
    return (struct hdr *)((unsigned char *)p - sizeof(struct hdr));
}

void *mem_alloc(size_t n_bytes) {
    size_t total;
    if (should_fail() || mem_add_size(n_bytes, HDR, &total)) return NULL;
    unsigned char *raw = malloc(total);
    if (!raw) return NULL;
    return finish(raw, HDR, n_bytes);
}

void *mem_calloc(size_t n, size_t size) {
    size_t n_bytes, total;
    if (mem_mul_size(n, size, &n_bytes)) return NULL;
    if (should_fail() || mem_add_size(n_bytes, HDR, &total)) return NULL;
    /* calloc, not malloc + memset: big blocks come zeroed from the OS, so pages nobody writes
     * (e.g. logits rows for outputs never requested) cost no resident memory */
    unsigned char *raw = calloc(1, total);
    if (!raw) return NULL;
    return finish(raw, HDR, n_bytes);
}

void *mem_alloc_aligned(size_t align, size_t n_bytes) {
    size_t total;
    if (align < 16 || (align & (align - 1))) return NULL;
    if (should_fail() || mem_add_size(n_bytes, HDR + align, &total)) return NULL;
    unsigned char *raw = malloc(total);
    if (!raw) return NULL;
    uintptr_t user = ((uintptr_t)raw + HDR + align - 1) & ~(uintptr_t)(align - 1);
    return finish(raw, (size_t)(user - (uintptr_t)raw), n_bytes);
}

void *mem_realloc(void *p, size_t n_bytes) {
    if (!p) return mem_alloc(n_bytes);
    struct hdr *h = header_of(p);
    size_t old = h->n_bytes;
    if (h->offset != HDR) { /* aligned block: allocate and copy */
        void *q = mem_alloc(n_bytes);
        if (!q) return NULL;
        memcpy(q, p, old < n_bytes ? old : n_bytes);
        mem_free(p);
        return q;
    }
    size_t total;
    if (should_fail() || mem_add_size(n_bytes, HDR, &total)) return NULL;
    unsigned char *raw = realloc((unsigned char *)p - HDR, total);
    if (!raw) return NULL;
    atomic_fetch_sub(&g_live_bytes, (int64_t)old);
    atomic_fetch_sub(&g_count, 1);
    return finish(raw, HDR, n_bytes);
}

void mem_free(void *p) {
    if (!p) return;
    struct hdr *h = header_of(p);
    atomic_fetch_sub(&g_live_bytes, (int64_t)h->n_bytes);
    atomic_fetch_sub(&g_count, 1);
    free((unsigned char *)p - h->offset);
}

char *mem_strndup(const char *s, size_t n) {
    char *d = mem_alloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *mem_strdup(const char *s) {
    return mem_strndup(s, strlen(s));
}
