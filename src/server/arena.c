/* arena.c: see arena.h. Blocks double from 4 KiB; a large request gets a block of its own. */
#include "arena.h"

#include "../base/mem.h"

#include <string.h>

struct arena_block {
    struct arena_block *next;
    size_t cap;
    _Alignas(16) unsigned char data[];
};

void arena_init(struct arena *a) {
    memset(a, 0, sizeof(*a));
}

void arena_free(struct arena *a) {
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        mem_free(b);
        b = next;
    }
    arena_init(a);
}

void *arena_alloc(struct arena *a, size_t n) {
    size_t need;
    if (mem_add_size(n, 15, &need)) return NULL;
    need &= ~(size_t)15;
    if (need == 0) need = 16;
    if (!a->head || a->cap - a->used < need) {
        size_t cap = a->head ? a->head->cap * 2 : 4096;
        if (cap > ((size_t)1 << 24)) cap = (size_t)1 << 24;
        if (cap < need) cap = need;
        size_t bytes;
        if (mem_add_size(sizeof(struct arena_block), cap, &bytes)) return NULL;
        struct arena_block *b = mem_alloc(bytes);
        if (!b) return NULL;
        b->cap = cap;
        b->next = a->head;
        a->head = b;
        a->used = 0;
        a->cap = cap;
        a->total += bytes;
    }
    void *p = a->head->data + a->used;
    a->used += need;
    memset(p, 0, n);
    return p;
}

void *arena_array(struct arena *a, size_t n, size_t size) {
    size_t bytes;
    if (mem_mul_size(n, size, &bytes)) return NULL;
    return arena_alloc(a, bytes);
}

char *arena_strndup(struct arena *a, const char *s, size_t n) {
    size_t bytes;
    if (mem_add_size(n, 1, &bytes)) return NULL;
    char *p = arena_alloc(a, bytes);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}
