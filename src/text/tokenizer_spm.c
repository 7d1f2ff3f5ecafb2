/* tokenizer_spm.c: SentencePiece-style BPE by score (llama.cpp's llm_tokenizer_spm).
 *
 * The text is split into UTF-8 characters; a byte that does not start a well-formed sequence
 * is a symbol of its own. (llama.cpp trusts the lead byte, so an invalid lead swallows the
 * next bytes, e.g. the first two bytes of an escaped space, and the text no longer round
 * trips; for valid UTF-8 the two agree.) Every adjacent pair whose concatenation is a token goes
 * into a max-heap ordered by that token's score (ties: leftmost first). The best pair is merged,
 * its neighbours are re-examined, and stale pairs (a side already merged away or grown) are skipped
 * when popped. Symbols are contiguous in the text, so a pair is just a byte range. What remains are
 * tokens, or characters that are not: those become byte tokens <0xXX> (byte fallback), or the
 * unknown token when the vocabulary has no byte tokens.
 */
#include "../base/error.h"
#include "../base/mem.h"
#include "tokenizer_internal.h"
#include "unicode.h"

struct spm_symbol {
    size_t off;   /* byte offset in the text */
    size_t n;     /* bytes; 0 once merged into its left neighbour */
    int64_t prev; /* index of the previous live symbol, -1 at the start */
    int64_t next; /* index of the next live symbol, -1 at the end */
};

struct spm_pair {
    float score;  /* score of the token left+right */
    int64_t left; /* symbol indices */
    int64_t right;
    size_t n; /* bytes of left+right when pushed (staleness check) */
};

/* Heap order: higher score first, then smaller left index. */
static int pair_before(const struct spm_pair *a, const struct spm_pair *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

struct spm_heap {
    struct spm_pair *items; /* [n] binary heap */
    size_t n, cap;
};

static int heap_push(struct spm_heap *h, struct spm_pair p) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        struct spm_pair *items = mem_realloc(h->items, cap * sizeof(*items));
        if (!items) return ERR_NOMEM;
        h->items = items;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &h->items[parent])) break;
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = p;
    return 0;
}

static struct spm_pair heap_pop(struct spm_heap *h) {
    struct spm_pair top = h->items[0];
    struct spm_pair last = h->items[--h->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n) break;
        if (child + 1 < h->n && pair_before(&h->items[child + 1], &h->items[child])) child++;
        if (!pair_before(&h->items[child], &last)) break;
        h->items[i] = h->items[child];
        i = child;
    }
    if (h->n > 0) h->items[i] = last;
    return top;
}

static int try_add_pair(const struct tokenizer *t, const char *text, const struct spm_symbol *sym,
                        int64_t left, int64_t right, struct spm_heap *h) {
    if (left < 0 || right < 0) return 0;
    size_t n = sym[left].n + sym[right].n;
    int32_t id = tokenizer_lookup(t, text + sym[left].off, n);
    if (id < 0) return 0;
    struct spm_pair p = {.score = t->scores[id], .left = left, .right = right, .n = n};
    return heap_push(h, p);
}

static int emit_bytes(const struct tokenizer *t, const char *s, size_t n, struct id_vec *out) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_token[(unsigned char)s[i]];
        if (id < 0) id = t->unk;
        if (id >= 0 && id_vec_push(out, id) != 0) return ERR_NOMEM;
    }
    return 0;
}

int tokenizer_spm_encode(const struct tokenizer *t, const char *text, size_t len,
                         struct id_vec *out) {
    if (len == 0) return 0;
    int rc = ERR_NOMEM;
    struct spm_heap heap = {0};
    struct spm_symbol *sym = mem_alloc(len * sizeof(*sym));
    if (!sym) goto done;

    int64_t n_sym = 0;
    for (size_t off = 0; off < len; n_sym++) {
        uint32_t cpt;
        size_t n = unicode_decode_utf8(text + off, len - off, &cpt);
        sym[n_sym] = (struct spm_symbol){.off = off, .n = n, .prev = n_sym - 1, .next = n_sym + 1};
        off += n;
    }
    sym[n_sym - 1].next = -1;

    for (int64_t i = 1; i < n_sym; i++) {
        if (try_add_pair(t, text, sym, i - 1, i, &heap) != 0) goto done;
    }
    while (heap.n > 0) {
        struct spm_pair p = heap_pop(&heap);
        struct spm_symbol *l = &sym[p.left], *r = &sym[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.n) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = p.left;
        if (try_add_pair(t, text, sym, l->prev, p.left, &heap) != 0) goto done;
        if (try_add_pair(t, text, sym, p.left, l->next, &heap) != 0) goto done;
    }

    /* Every merged symbol is a token; a lone character may not be (byte fallback). */
    for (int64_t i = 0; i >= 0; i = sym[i].next) {
        int32_t id = tokenizer_lookup(t, text + sym[i].off, sym[i].n);
        if (id >= 0) {
            if (id_vec_push(out, id) != 0) goto done;
        } else if (emit_bytes(t, text + sym[i].off, sym[i].n, out) != 0) {
            goto done;
        }
    }
    rc = 0;
done:
    mem_free(heap.items);
    mem_free(sym);
    return rc;
}
