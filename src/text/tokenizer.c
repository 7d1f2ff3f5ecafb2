/* tokenizer.c: vocabulary loading, special-token partitioning, encode/decode entry points.
 *
 * The behaviour follows llama.cpp's llama-vocab.cpp, which is what GGUF files are made for:
 * the same defaults per model, the same "control-looking token" and end-of-generation rules,
 * the same order of special-token matching and the same detokenizer passes. Where hearth
 * differs on purpose it says so next to the code (invalid UTF-8, tie order, missing keys).
 */
#include "tokenizer.h"

#include "../base/log.h"
#include "../base/mem.h"
#include "tokenizer_internal.h"
#include "unicode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================================
 * Token text index
 *
 * Open addressing over token ids, keyed by a 64-bit FNV-1a of the text, table at least twice
 * the vocabulary so probes stay short; 248k tokens load in a few milliseconds.
 * ====================================================================================== */

static uint32_t text_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return (uint32_t)(h ^ (h >> 32));
}

int32_t tokenizer_lookup(const struct tokenizer *t, const char *s, size_t n) {
    for (uint32_t i = text_hash(s, n) & t->index_mask;; i = (i + 1) & t->index_mask) {
        int32_t id = t->index[i];
        if (id < 0) return -1;
        if (t->text_len[id] == n && memcmp(tokenizer_text(t, id), s, n) == 0) return id;
    }
}

/* Inserts id; returns the id already holding the same text, or -1. */
static int32_t index_insert(struct tokenizer *t, int32_t id) {
    const char *s = tokenizer_text(t, id);
    size_t n = t->text_len[id];
    for (uint32_t i = text_hash(s, n) & t->index_mask;; i = (i + 1) & t->index_mask) {
        int32_t other = t->index[i];
        if (other < 0) {
            t->index[i] = id;
            return -1;
        }
        if (t->text_len[other] == n && memcmp(tokenizer_text(t, other), s, n) == 0) return other;
    }
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t cap = 16;
    while (cap < n) cap *= 2;
    return cap;
}

int id_vec_push(struct id_vec *v, int32_t id) {
    if (v->n == v->cap) {
        int64_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *ids = mem_realloc(v->ids, (size_t)cap * sizeof(*ids));
        if (!ids) return ERR_NOMEM;
        v->ids = ids;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

/* ======================================================================================
 * Loading: model, pre-tokenizer and flags
 *
 * llama.cpp's defaults by tokenizer.ggml.model and tokenizer.ggml.pre (llama_vocab::impl::
 * load). Only pre-tokenizers whose regex hearth implements are accepted; the aliases below
 * are the names llama.cpp maps to those same regexes, with the flags it sets for each.
 * ====================================================================================== */

struct pre_info {
    const char *name;
    enum pretok_kind kind;
    int ignore_merges; /* llama3 family */
    int add_bos;       /* default before tokenizer.ggml.add_bos_token */
    int clean_spaces;  /* clean_up_tokenization_spaces in detokenize */
};

static const struct pre_info k_pre_infos[] = {
    {"default", PRETOK_DEFAULT, 0, 0, 1},
    {"gpt-2", PRETOK_GPT2, 0, 0, 1},
    {"phi-2", PRETOK_GPT2, 0, 0, 1},
    {"jina-es", PRETOK_GPT2, 0, 0, 1},
    {"jina-de", PRETOK_GPT2, 0, 0, 1},
    {"gigachat", PRETOK_GPT2, 0, 0, 1},
    {"jina-v2-es", PRETOK_GPT2, 0, 0, 1},
    {"jina-v2-de", PRETOK_GPT2, 0, 0, 1},
    {"a.x-4.0", PRETOK_GPT2, 0, 0, 1},
    {"mellum", PRETOK_GPT2, 0, 0, 1},
    {"modern-bert", PRETOK_GPT2, 0, 0, 1},
    {"exaone4", PRETOK_GPT2, 0, 0, 1},
    {"mpt", PRETOK_GPT2, 0, 0, 1},
    {"olmo", PRETOK_GPT2, 0, 0, 1},
    {"jais", PRETOK_GPT2, 0, 0, 1},
    {"trillion", PRETOK_GPT2, 0, 0, 0},
    {"granite-docling", PRETOK_GPT2, 0, 0, 0},
    {"llama3", PRETOK_LLAMA3, 1, 1, 1},
    {"llama-v3", PRETOK_LLAMA3, 1, 1, 1},
    {"llama-bpe", PRETOK_LLAMA3, 1, 1, 1},
    {"falcon3", PRETOK_LLAMA3, 1, 1, 1},
    {"falcon-h1", PRETOK_LLAMA3, 1, 1, 1},
    {"pixtral", PRETOK_LLAMA3, 1, 1, 1},
    {"midm-2.0", PRETOK_LLAMA3, 1, 1, 1},
    {"lfm2", PRETOK_LLAMA3, 1, 1, 1},
    {"jina-v5-nano", PRETOK_LLAMA3, 1, 1, 1},
    {"dbrx", PRETOK_LLAMA3, 0, 0, 1},
    {"smaug-bpe", PRETOK_LLAMA3, 0, 0, 1},
    {"qwen2", PRETOK_QWEN2, 0, 0, 0},
    {"deepseek-r1-qwen", PRETOK_QWEN2, 0, 0, 0},
    {"kormo", PRETOK_QWEN2, 0, 0, 0},
    {"f2llmv2", PRETOK_QWEN2, 0, 0, 0},
    {"hunyuan", PRETOK_QWEN2, 0, 0, 0},
    {"solar-open", PRETOK_QWEN2, 0, 0, 0},
    {"megrez", PRETOK_QWEN2, 0, 0, 1},
    {"stablelm2", PRETOK_QWEN2, 0, 0, 1},
    {"qwen35", PRETOK_QWEN35, 0, 0, 0},
};

static int str_is(struct gguf_str s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.data, lit, n) == 0;
}

/* Reads an optional bool key into *v; a key of another type is ignored with a warning. */
static void get_flag(const struct gguf *g, const char *key, int *v) {
    int b;
    int rc = gguf_get_bool(g, key, &b);
    if (rc == 0) {
        *v = b != 0;
    } else if (rc != ERR_NOT_FOUND) {
        LOG_WARN("tokenizer: %s is not a bool, ignored", key);
    }
}

/* An optional token id key: absent leaves *id; out of range (e.g. 0xFFFFFFFF for "none")
 * keeps the default, as llama.cpp does ("bad special token ... using default id"). */
static void get_token_id(const struct gguf *g, const char *key, int32_t n_vocab, int32_t *id) {
    int64_t v;
    int rc = gguf_get_int(g, key, &v);
    if (rc == ERR_NOT_FOUND) return;
    if (rc != 0 || v < 0 || v >= n_vocab) {
        LOG_DEBUG("tokenizer: %s out of range, keeping %d", key, *id);
        return;
    }
    *id = (int32_t)v;
}

/* Finds the index of a required array key of the given element type. */
static int find_array(const struct gguf *g, const char *key, enum gguf_type elem, int64_t *out,
                      struct error *err) {
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return error_set(err, ERR_FORMAT, "tokenizer: missing %s", key);
    if (gguf_kv_type(g, i) != GGUF_TYPE_ARRAY || gguf_kv_arr_type(g, i) != elem) {
        return error_set(err, ERR_FORMAT, "tokenizer: %s must be an array of %s", key,
                         gguf_type_name(elem));
    }
    *out = i;
    return 0;
}

/* ======================================================================================
 * Loading: vocabulary arrays
 * ====================================================================================== */

static int load_tokens(struct tokenizer *t, const struct gguf *g, struct error *err) {
    int64_t ki;
    int rc = find_array(g, "tokenizer.ggml.tokens", GGUF_TYPE_STRING, &ki, err);
    if (rc) return rc;
    uint64_t n = gguf_kv_arr_n(g, ki);
    if (n == 0 || n > INT32_MAX / 2) {
        return error_set(err, ERR_FORMAT, "tokenizer: bad vocabulary size %llu",
                         (unsigned long long)n);
    }
    t->n_vocab = (int32_t)n;

    /* arena: every text + NUL; an empty text becomes "[EMPTY_<id>]" as in llama.cpp */
    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_str s = gguf_kv_arr_str(g, ki, i);
        total += (s.len ? s.len : 24) + 1;
    }
    if (total > UINT32_MAX) return error_set(err, ERR_FORMAT, "tokenizer: vocabulary too large");
    t->arena = mem_alloc((size_t)total);
    t->text_off = mem_alloc(n * sizeof(*t->text_off));
    t->text_len = mem_alloc(n * sizeof(*t->text_len));
    t->scores = mem_calloc(n, sizeof(*t->scores));
    t->type = mem_alloc(n);
    t->attr = mem_alloc(n);
    uint32_t cap = pow2_at_least(2 * n);
    t->index = mem_alloc(cap * sizeof(*t->index));
    if (!t->arena || !t->text_off || !t->text_len || !t->scores || !t->type || !t->attr ||
        !t->index) {
        return error_set(err, ERR_NOMEM, "tokenizer: out of memory");
    }
    t->index_mask = cap - 1;
    memset(t->index, 0xFF, cap * sizeof(*t->index));

    uint32_t off = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_str s = gguf_kv_arr_str(g, ki, i);
        size_t len = (size_t)s.len;
        if (len == 0) {
            LOG_WARN("tokenizer: empty token at index %llu", (unsigned long long)i);
            len = (size_t)snprintf(t->arena + off, 24, "[EMPTY_%llu]", (unsigned long long)i);
        } else {
            memcpy(t->arena + off, s.data, len);
            t->arena[off + len] = '\0';
        }
        t->text_off[i] = off;
        t->text_len[i] = (uint32_t)len;
        if (len > t->max_token_len) t->max_token_len = len;
        off += (uint32_t)len + 1;
        int32_t dup = index_insert(t, (int32_t)i);
        if (dup >= 0) {
            return error_set(err, ERR_FORMAT, "tokenizer: duplicate token '%s' (ids %d and %llu)",
                             tokenizer_text(t, dup), dup, (unsigned long long)i);
        }
    }

    /* scores: optional, f32 or i32, at least n entries */
    int64_t si = gguf_find_key(g, "tokenizer.ggml.scores");
    if (si >= 0) {
        enum gguf_type et =
            gguf_kv_type(g, si) == GGUF_TYPE_ARRAY ? gguf_kv_arr_type(g, si) : GGUF_TYPE_COUNT;
        if (et != GGUF_TYPE_FLOAT32 && et != GGUF_TYPE_INT32) {
            return error_set(err, ERR_FORMAT, "tokenizer: tokenizer.ggml.scores must be f32/i32");
        }
        if (gguf_kv_arr_n(g, si) < n) {
            return error_set(err, ERR_FORMAT, "tokenizer: %llu scores for %llu tokens",
                             (unsigned long long)gguf_kv_arr_n(g, si), (unsigned long long)n);
        }
        const char *data = gguf_kv_arr_data(g, si);
        for (uint64_t i = 0; i < n; i++) {
            if (et == GGUF_TYPE_FLOAT32) {
                memcpy(&t->scores[i], data + 4 * i, 4);
            } else {
                int32_t v;
                memcpy(&v, data + 4 * i, 4);
                t->scores[i] = (float)v;
            }
        }
    }

    /* token types: optional i32 array; absent means all normal */
    int64_t ti = gguf_find_key(g, "tokenizer.ggml.token_type");
    const char *types = NULL;
    if (ti >= 0) {
        if (gguf_kv_type(g, ti) != GGUF_TYPE_ARRAY || gguf_kv_arr_type(g, ti) != GGUF_TYPE_INT32) {
            return error_set(err, ERR_FORMAT, "tokenizer: tokenizer.ggml.token_type must be i32[]");
        }
        if (gguf_kv_arr_n(g, ti) < n) {
            return error_set(err, ERR_FORMAT, "tokenizer: %llu token types for %llu tokens",
                             (unsigned long long)gguf_kv_arr_n(g, ti), (unsigned long long)n);
        }
        types = gguf_kv_arr_data(g, ti);
    }
    for (uint64_t i = 0; i < n; i++) {
        int32_t ty = TOKEN_TYPE_NORMAL;
        if (types) memcpy(&ty, types + 4 * i, 4);
        uint8_t attr = 0;
        switch (ty) {
        case TOKEN_TYPE_NORMAL:
            attr = TOKEN_ATTR_NORMAL;
            break;
        case TOKEN_TYPE_UNKNOWN:
            attr = TOKEN_ATTR_UNKNOWN;
            break;
        case TOKEN_TYPE_CONTROL:
            attr = TOKEN_ATTR_CONTROL;
            break;
        case TOKEN_TYPE_USER_DEFINED:
            attr = TOKEN_ATTR_USER_DEFINED;
            break;
        case TOKEN_TYPE_UNUSED:
            attr = TOKEN_ATTR_UNUSED;
            break;
        case TOKEN_TYPE_BYTE:
            attr = TOKEN_ATTR_BYTE;
            break;
        default:
            ty = TOKEN_TYPE_UNDEFINED;
            break;
        }
        t->type[i] = (uint8_t)ty;
        t->attr[i] = attr;
    }
    return 0;
}

static int load_merges(struct tokenizer *t, const struct gguf *g, struct error *err) {
    int64_t ki;
    int rc = find_array(g, "tokenizer.ggml.merges", GGUF_TYPE_STRING, &ki, err);
    if (rc) return rc;
    uint64_t n = gguf_kv_arr_n(g, ki);
    if (n > INT32_MAX / 2) return error_set(err, ERR_FORMAT, "tokenizer: too many merges");
    uint32_t cap = pow2_at_least(2 * n + 1);
    t->merges = mem_calloc(cap, sizeof(*t->merges));
    char *joined = mem_alloc(2 * t->max_token_len + 1);
    if (!t->merges || !joined) {
        mem_free(joined);
        return error_set(err, ERR_NOMEM, "tokenizer: out of memory");
    }
    t->merge_mask = cap - 1;
    int64_t n_skipped = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct gguf_str s = gguf_kv_arr_str(g, ki, i);
        /* "left right", split at the first space after position 0 (as llama.cpp) */
        const char *sp = s.len > 1 ? memchr(s.data + 1, ' ', (size_t)s.len - 1) : NULL;
        if (!sp) {
            n_skipped++;
            continue;
        }
        size_t n_left = (size_t)(sp - s.data), n_right = (size_t)s.len - n_left - 1;
        int32_t left = tokenizer_lookup(t, s.data, n_left);
        int32_t right = tokenizer_lookup(t, sp + 1, n_right);
        int32_t result = -1;
        if (left >= 0 && right >= 0 && n_left + n_right <= 2 * t->max_token_len) {
            memcpy(joined, s.data, n_left);
            memcpy(joined + n_left, sp + 1, n_right);
            result = tokenizer_lookup(t, joined, n_left + n_right);
        }
        if (result < 0) {
            n_skipped++;
            continue;
        }
        t->n_merges += tokenizer_bpe_add_merge(t, left, right, (int32_t)i, result);
    }
    mem_free(joined);
    if (n_skipped)
        LOG_WARN("tokenizer: %lld merges are not token pairs, ignored", (long long)n_skipped);
    return 0;
}

/* ======================================================================================
 * Loading: special tokens, end of generation
 *
 * llama.cpp finds several special tokens by their text and marks such "control-looking"
 * tokens CONTROL even when the file says normal/user-defined (they are then matched only with
 * parse_special and rendered only with render_special). It iterates a hash map, so when
 * several candidates exist the one it picks is unspecified; hearth takes the lowest id.
 * ====================================================================================== */

/* Lowest id among the texts that are tokens, or -1. */
static int32_t find_first(const struct tokenizer *t, const char *const *texts) {
    int32_t best = -1;
    for (; *texts; texts++) {
        int32_t id = tokenizer_lookup(t, *texts, strlen(*texts));
        if (id >= 0 && (best < 0 || id < best)) best = id;
    }
    return best;
}

/* If *id is unset, sets it from the candidates and marks that token CONTROL. */
static void detect(struct tokenizer *t, int32_t *id, const char *const *texts) {
    if (*id >= 0) return;
    *id = find_first(t, texts);
    if (*id >= 0) t->attr[*id] |= TOKEN_ATTR_CONTROL;
}

static void eog_add(struct tokenizer *t, int32_t id) {
    if (id < 0) return;
    for (int32_t i = 0; i < t->n_eog; i++) {
        if (t->eog[i] == id) return;
    }
    t->eog[t->n_eog++] = id;
}

static void eog_remove(struct tokenizer *t, int32_t id) {
    for (int32_t i = 0; i < t->n_eog; i++) {
        if (t->eog[i] == id) {
            t->eog[i] = t->eog[--t->n_eog];
            return;
        }
    }
}

static int32_t eog_find_text(const struct tokenizer *t, const char *text) {
    for (int32_t i = 0; i < t->n_eog; i++) {
        if (!strcmp(tokenizer_text(t, t->eog[i]), text)) return t->eog[i];
    }
    return -1;
}

static int cmp_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

struct len_id {
    uint32_t len;
    int32_t id;
};

static int cmp_longest_first(const void *a, const void *b) {
    const struct len_id *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

static const char *const k_eot_texts[] = {"<|eot_id|>",
                                          "<|im_end|>",
                                          "<|end|>",
                                          "<end_of_turn>",
                                          "<|endoftext|>",
                                          "<|end_of_text|>",
                                          "<EOT>",
                                          "_<EOT>",
                                          "[EOT]",
                                          "<\xef\xbd\x9c"
                                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                          "<end_of_utterance>",
                                          NULL};
static const char *const k_eom_texts[] = {"<|eom_id|>", NULL};
static const char *const k_fim_pre_texts[] = {"<|fim_prefix|>",
                                              "<fim-prefix>",
                                              "<fim_prefix>",
                                              "<\xef\xbd\x9c"
                                              "fim\xe2\x96\x81"
                                              "begin\xef\xbd\x9c>",
                                              "<PRE>",
                                              "\xe2\x96\x81<PRE>",
                                              "<|code_prefix|>",
                                              "<|prefix|>",
                                              NULL};
static const char *const k_fim_suf_texts[] = {"<|fim_suffix|>",
                                              "<fim-suffix>",
                                              "<fim_suffix>",
                                              "<\xef\xbd\x9c"
                                              "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                              "<SUF>",
                                              "\xe2\x96\x81<SUF>",
                                              "<|code_suffix|>",
                                              "<|suffix|>",
                                              NULL};
static const char *const k_fim_mid_texts[] = {"<|fim_middle|>",
                                              "<fim-middle>",
                                              "<fim_middle>",
                                              "<\xef\xbd\x9c"
                                              "fim\xe2\x96\x81"
                                              "end\xef\xbd\x9c>",
                                              "<MID>",
                                              "\xe2\x96\x81<MID>",
                                              "<|code_middle|>",
                                              "<|middle|>",
                                              NULL};
static const char *const k_fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                              "<PAD>",       "[PAD]",     NULL};
static const char *const k_fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                              "<REPO>",       "<reponame>",    NULL};
static const char *const k_fim_sep_texts[] = {"<|file_sep|>", NULL};
/* Tokens that end generation by their text (llama.cpp's special_eog_ids list). */
static const char *const k_eog_texts[] = {"<|eot_id|>",
                                          "<|im_end|>",
                                          "<|end|>",
                                          "<|return|>",
                                          "<|call|>",
                                          "<|flush|>",
                                          "<|calls|>",
                                          "<end_of_turn>",
                                          "<|endoftext|>",
                                          "</s>",
                                          "<|eom_id|>",
                                          "<EOT>",
                                          "_<EOT>",
                                          "[EOT]",
                                          "[EOS]",
                                          "<|end_of_text|>",
                                          "<end_of_utterance>",
                                          "<eos>",
                                          "<turn|>",
                                          "<|tool_response>",
                                          "<\xef\xbd\x9c"
                                          "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                          "[e~[",
                                          NULL};

static int load_special(struct tokenizer *t, const struct gguf *g, struct error *err) {
    const int32_t n = t->n_vocab;
    struct {
        const char *key;
        int32_t *id;
    } keys[] = {
        {"tokenizer.ggml.bos_token_id", &t->bos},
        {"tokenizer.ggml.eos_token_id", &t->eos},
        {"tokenizer.ggml.eot_token_id", &t->eot},
        {"tokenizer.ggml.eom_token_id", &t->eom},
        {"tokenizer.ggml.unknown_token_id", &t->unk},
        {"tokenizer.ggml.seperator_token_id", &t->sep},
        {"tokenizer.ggml.padding_token_id", &t->pad},
        {"tokenizer.ggml.fim_pre_token_id", &t->fim_pre},
        {"tokenizer.ggml.fim_suf_token_id", &t->fim_suf},
        {"tokenizer.ggml.fim_mid_token_id", &t->fim_mid},
        {"tokenizer.ggml.fim_pad_token_id", &t->fim_pad},
        {"tokenizer.ggml.fim_rep_token_id", &t->fim_rep},
        {"tokenizer.ggml.fim_sep_token_id", &t->fim_sep},
        {"tokenizer.ggml.prefix_token_id", &t->fim_pre}, /* deprecated names */
        {"tokenizer.ggml.suffix_token_id", &t->fim_suf},
        {"tokenizer.ggml.middle_token_id", &t->fim_mid},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (*keys[i].id >= n) *keys[i].id = -1; /* a default outside this vocabulary */
        get_token_id(g, keys[i].key, n, keys[i].id);
    }
    get_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
    if (t->add_bos && t->bos < 0) {
        return error_set(err, ERR_FORMAT, "tokenizer: add_bos_token is true but there is no BOS");
    }

    detect(t, &t->eot, k_eot_texts);
    detect(t, &t->eom, k_eom_texts);
    detect(t, &t->fim_pre, k_fim_pre_texts);
    detect(t, &t->fim_suf, k_fim_suf_texts);
    detect(t, &t->fim_mid, k_fim_mid_texts);
    detect(t, &t->fim_pad, k_fim_pad_texts);
    detect(t, &t->fim_rep, k_fim_rep_texts);
    detect(t, &t->fim_sep, k_fim_sep_texts);

    size_t n_eog_texts = sizeof(k_eog_texts) / sizeof(k_eog_texts[0]) - 1;
    t->eog = mem_alloc((n_eog_texts + 6) * sizeof(*t->eog));
    if (!t->eog) return error_set(err, ERR_NOMEM, "tokenizer: out of memory");
    eog_add(t, t->fim_pad);
    eog_add(t, t->fim_rep);
    eog_add(t, t->fim_sep);
    for (size_t i = 0; i < n_eog_texts; i++) {
        int32_t id = tokenizer_lookup(t, k_eog_texts[i], strlen(k_eog_texts[i]));
        if (id < 0) continue;
        eog_add(t, id);
        t->attr[id] |= TOKEN_ATTR_CONTROL;
    }
    /* gpt-oss: always rendered */
    static const char *const k_always_render[] = {"<|channel|>", "<|message|>", "<|start|>",
                                                  "<|constrain|>", NULL};
    for (const char *const *s = k_always_render; *s; s++) {
        int32_t id = tokenizer_lookup(t, *s, strlen(*s));
        if (id >= 0) t->attr[id] = TOKEN_ATTR_USER_DEFINED;
    }
    eog_add(t, t->eos);
    eog_add(t, t->eot);
    eog_add(t, t->eom);
    /* o200k_harmony / solar-open: "<|end|>" ends a message, not the generation */
    int32_t end_id = eog_find_text(t, "<|end|>");
    int has_call = eog_find_text(t, "<|call|>") >= 0 || eog_find_text(t, "<|calls|>") >= 0;
    if (end_id >= 0 && has_call &&
        (eog_find_text(t, "<|return|>") >= 0 || eog_find_text(t, "<|flush|>") >= 0)) {
        eog_remove(t, end_id);
        t->attr[end_id] = TOKEN_ATTR_USER_DEFINED;
    }
    /* gemma4 / paddleocr: "</s>" is not an end of generation there */
    int32_t s_id = eog_find_text(t, "</s>");
    if (s_id >= 0 && eog_find_text(t, "<|tool_response>") >= 0) {
        eog_remove(t, s_id);
        t->attr[s_id] = TOKEN_ATTR_NORMAL;
    }
    qsort(t->eog, (size_t)t->n_eog, sizeof(*t->eog), cmp_int32);

    /* tokens matched whole in the text, longest first (ties: lower id first) */
    int32_t n_special = 0;
    for (int32_t id = 0; id < n; id++) {
        n_special += (t->attr[id] &
                      (TOKEN_ATTR_CONTROL | TOKEN_ATTR_USER_DEFINED | TOKEN_ATTR_UNKNOWN)) != 0;
    }
    struct len_id *order = mem_alloc(((size_t)n_special + 1) * sizeof(*order));
    t->special = mem_alloc(((size_t)n_special + 1) * sizeof(*t->special));
    if (!order || !t->special) {
        mem_free(order);
        return error_set(err, ERR_NOMEM, "tokenizer: out of memory");
    }
    int32_t k = 0;
    for (int32_t id = 0; id < n; id++) {
        if (t->attr[id] & (TOKEN_ATTR_CONTROL | TOKEN_ATTR_USER_DEFINED | TOKEN_ATTR_UNKNOWN)) {
            order[k++] = (struct len_id){.len = t->text_len[id], .id = id};
        }
    }
    qsort(order, (size_t)k, sizeof(*order), cmp_longest_first);
    for (int32_t i = 0; i < k; i++) t->special[i] = order[i].id;
    t->n_special = k;
    mem_free(order);
    return 0;
}

static void load_byte_tokens(struct tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n;
        int32_t id;
        if (t->kind == TOKENIZER_BPE) {
            n = unicode_encode_utf8(unicode_byte_to_cpt((uint8_t)b), s);
            id = tokenizer_lookup(t, s, n);
        } else {
            n = (size_t)snprintf(s, sizeof(s), "<0x%02X>", b);
            id = tokenizer_lookup(t, s, n);
            if (id < 0) {
                s[0] = (char)b;
                id = tokenizer_lookup(t, s, 1);
            }
        }
        t->byte_token[b] = id;
    }
}

int tokenizer_load(struct tokenizer **out, const struct gguf *g, struct error *err) {
    *out = NULL;
    struct tokenizer *t = mem_calloc(1, sizeof(*t));
    if (!t) return error_set(err, ERR_NOMEM, "tokenizer: out of memory");
    int rc;

    struct gguf_str model;
    rc = gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (rc == ERR_NOT_FOUND) {
        rc = error_set(err, ERR_NOT_FOUND, "tokenizer: no tokenizer.ggml.model");
        goto fail;
    }
    if (rc) {
        rc = error_set(err, ERR_FORMAT, "tokenizer: tokenizer.ggml.model is not a string");
        goto fail;
    }
    const struct pre_info *pre = NULL;
    if (str_is(model, "llama")) {
        t->kind = TOKENIZER_SPM;
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->add_bos = 1;
        t->add_space_prefix = 1;
    } else if (str_is(model, "gpt2")) {
        t->kind = TOKENIZER_BPE;
        t->bos = 11; /* llama.cpp's BPE defaults, used only when the ids are missing */
        t->eos = 11;
        t->unk = -1;
        struct gguf_str name = {"default", 7};
        rc = gguf_get_str(g, "tokenizer.ggml.pre", &name);
        if (rc == ERR_NOT_FOUND) {
            LOG_WARN("tokenizer: no tokenizer.ggml.pre, using 'default' (quality may suffer)");
        } else if (rc) {
            rc = error_set(err, ERR_FORMAT, "tokenizer: tokenizer.ggml.pre is not a string");
            goto fail;
        }
        for (size_t i = 0; i < sizeof(k_pre_infos) / sizeof(k_pre_infos[0]); i++) {
            if (str_is(name, k_pre_infos[i].name)) pre = &k_pre_infos[i];
        }
        if (!pre) {
            rc = error_set(err, ERR_UNSUPPORTED, "tokenizer: unsupported pre-tokenizer '%.*s'",
                           (int)(name.len > 64 ? 64 : name.len), name.data);
            goto fail;
        }
        t->pre = pre->kind;
        t->ignore_merges = pre->ignore_merges;
        t->add_bos = pre->add_bos;
        t->clean_spaces = pre->clean_spaces;
    } else {
        rc = error_set(err, ERR_UNSUPPORTED, "tokenizer: unsupported tokenizer model '%.*s'",
                       (int)(model.len > 64 ? 64 : model.len), model.data);
        goto fail;
    }
    t->sep = t->pad = t->eot = t->eom = -1;
    t->fim_pre = t->fim_suf = t->fim_mid = t->fim_pad = t->fim_rep = t->fim_sep = -1;
    get_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);

    if ((rc = load_tokens(t, g, err)) != 0) goto fail;
    if (t->kind == TOKENIZER_BPE && (rc = load_merges(t, g, err)) != 0) goto fail;
    load_byte_tokens(t);
    if ((rc = load_special(t, g, err)) != 0) goto fail;
    *out = t;
    return 0;
fail:
    tokenizer_free(t);
    return rc;
}

void tokenizer_free(struct tokenizer *t) {
    if (!t) return;
    mem_free(t->arena);
    mem_free(t->text_off);
    mem_free(t->text_len);
    mem_free(t->scores);
    mem_free(t->type);
    mem_free(t->attr);
    mem_free(t->index);
    mem_free(t->merges);
    mem_free(t->special);
    mem_free(t->eog);
    mem_free(t);
}

/* ======================================================================================
 * Queries
 * ====================================================================================== */

int32_t tokenizer_n_vocab(const struct tokenizer *t) {
    return t->n_vocab;
}
int32_t tokenizer_bos(const struct tokenizer *t) {
    return t->bos;
}
int32_t tokenizer_eos(const struct tokenizer *t) {
    return t->eos;
}
int tokenizer_add_bos(const struct tokenizer *t) {
    return t->add_bos;
}

int tokenizer_is_eog(const struct tokenizer *t, int32_t id) {
    for (int32_t i = 0; i < t->n_eog; i++) {
        if (t->eog[i] == id) return 1;
    }
    return 0;
}

int tokenizer_is_control(const struct tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && (t->attr[id] & TOKEN_ATTR_CONTROL) != 0;
}

enum token_type tokenizer_token_type(const struct tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return TOKEN_TYPE_UNDEFINED;
    return (enum token_type)t->type[id];
}

const char *tokenizer_token_text(const struct tokenizer *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return "";
    return tokenizer_text(t, id);
}

int32_t tokenizer_find_token(const struct tokenizer *t, const char *text) {
    return tokenizer_lookup(t, text, strlen(text));
}

int tokenizer_eog_ids(const struct tokenizer *t, const int32_t **ids) {
    *ids = t->eog;
    return t->n_eog;
}

/* ======================================================================================
 * Encode
 *
 * First the special-token partition (llama.cpp's tokenizer_st_partition): for each special
 * token, longest first, every occurrence in every still-raw fragment becomes a token fragment.
 * User-defined tokens are always matched; control and unknown tokens only with parse_special.
 * Then each raw fragment is tokenized on its own: SPM gets a " " prefix when it starts the
 * input or follows a special token (add_space_prefix) and has spaces escaped to U+2581; BPE is
 * pre-tokenized and merged.
 *
 * Invalid UTF-8 (hearth differs from llama.cpp here): llama.cpp's BPE path replaces each
 * invalid byte with U+FFFD; hearth keeps the byte (byte-level BPE can represent any byte), so
 * decode(encode(s)) == s for every byte string. Valid UTF-8 tokenizes identically.
 * ====================================================================================== */

struct frag {
    size_t off; /* raw text: byte range in the input */
    size_t len;
    int32_t id; /* >= 0: a special token; -1: raw text */
};

struct frag_list {
    struct frag *items; /* [n] */
    size_t n, cap;
};

static int frag_push(struct frag_list *l, struct frag f) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct frag *items = mem_realloc(l->items, cap * sizeof(*items));
        if (!items) return ERR_NOMEM;
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = f;
    return 0;
}

/* Splits every raw fragment of *cur at the occurrences of token id (into *tmp, then swapped). */
static int partition_one(const struct tokenizer *t, const char *text, int32_t id,
                         struct frag_list *cur, struct frag_list *tmp) {
    const char *needle = tokenizer_text(t, id);
    size_t n_needle = t->text_len[id];
    int found = 0;
    for (size_t i = 0; i < cur->n && !found; i++) {
        const struct frag *f = &cur->items[i];
        found = f->id < 0 && memmem(text + f->off, f->len, needle, n_needle) != NULL;
    }
    if (!found) return 0;
    tmp->n = 0;
    for (size_t i = 0; i < cur->n; i++) {
        struct frag f = cur->items[i];
        if (f.id >= 0) {
            if (frag_push(tmp, f)) return ERR_NOMEM;
            continue;
        }
        size_t pos = f.off, end = f.off + f.len;
        for (;;) {
            const char *m = memmem(text + pos, end - pos, needle, n_needle);
            if (!m) break;
            size_t at = (size_t)(m - text);
            if (at > pos && frag_push(tmp, (struct frag){pos, at - pos, -1})) return ERR_NOMEM;
            if (frag_push(tmp, (struct frag){at, n_needle, id})) return ERR_NOMEM;
            pos = at + n_needle;
        }
        if (end > pos && frag_push(tmp, (struct frag){pos, end - pos, -1})) return ERR_NOMEM;
    }
    struct frag_list swap = *cur;
    *cur = *tmp;
    *tmp = swap;
    return 0;
}

static int encode_spm_fragment(const struct tokenizer *t, const char *s, size_t n, int prefix,
                               struct id_vec *out) {
    /* escaped text: optional prefix, every ' ' as U+2581 (3 bytes) */
    size_t n_spaces = prefix ? 1 : 0;
    for (size_t i = 0; i < n; i++) n_spaces += s[i] == ' ';
    size_t len = n + 2 * n_spaces + (prefix ? 1 : 0);
    char *buf = mem_alloc(len ? len : 1);
    if (!buf) return ERR_NOMEM;
    size_t k = 0;
    if (prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            buf[k++] = s[i];
        }
    }
    int rc = tokenizer_spm_encode(t, buf, k, out);
    mem_free(buf);
    return rc;
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, int add_bos,
                     int parse_special, int32_t **out_ids, int64_t *n_out, struct error *err) {
    *out_ids = NULL;
    *n_out = 0;
    struct id_vec v = {0};
    struct frag_list frags = {0}, tmp = {0};
    struct bpe_scratch *scratch = NULL;
    int rc = ERR_NOMEM;

    if (len > 0 && frag_push(&frags, (struct frag){0, len, -1})) goto done;
    for (int32_t i = 0; i < t->n_special && frags.n > 0; i++) {
        int32_t id = t->special[i];
        if (!parse_special && (t->attr[id] & (TOKEN_ATTR_CONTROL | TOKEN_ATTR_UNKNOWN))) continue;
        if (partition_one(t, text, id, &frags, &tmp)) goto done;
    }

    if (add_bos && t->bos >= 0 && id_vec_push(&v, t->bos)) goto done;
    if (t->kind == TOKENIZER_BPE) {
        scratch = bpe_scratch_create();
        if (!scratch) goto done;
    }
    int prev_special = 1; /* SPM: the first text gets the space prefix */
    for (size_t i = 0; i < frags.n; i++) {
        const struct frag *f = &frags.items[i];
        if (f->id >= 0) {
            if (id_vec_push(&v, f->id)) goto done;
            prev_special = 1;
        } else if (t->kind == TOKENIZER_SPM) {
            int prefix = t->add_space_prefix && prev_special;
            if (encode_spm_fragment(t, text + f->off, f->len, prefix, &v)) goto done;
            prev_special = 0;
        } else {
            if (tokenizer_bpe_encode(t, text + f->off, f->len, scratch, &v)) goto done;
        }
    }
    if (!v.ids && !(v.ids = mem_alloc(sizeof(*v.ids)))) goto done; /* never NULL on success */
    *out_ids = v.ids;
    *n_out = v.n;
    v.ids = NULL;
    rc = 0;
done:
    if (rc) error_set(err, ERR_NOMEM, "tokenize: out of memory");
    bpe_scratch_free(scratch);
    mem_free(frags.items);
    mem_free(tmp.items);
    mem_free(v.ids);
    return rc;
}

/* ======================================================================================
 * Decode
 *
 * A piece is the token's bytes: SPM normal tokens with U+2581 turned back into spaces, BPE
 * normal tokens mapped from GPT-2 codepoints back to bytes, byte tokens <0xXX> their byte,
 * user-defined tokens their text; control and unknown tokens their text only with
 * render_special; unused/undefined tokens nothing (llama.cpp's token_to_piece).
 * ====================================================================================== */

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static void append_bpe_normal(const char *s, size_t n, struct buf *out) {
    for (size_t i = 0; i < n;) {
        uint32_t cpt;
        size_t k = unicode_decode_utf8(s + i, n - i, &cpt);
        int b = unicode_cpt_to_byte(cpt);
        if (b >= 0) {
            buf_append_char(out, (char)b);
        } else { /* not a byte-level codepoint: llama.cpp's marker, kept for parity */
            char utf8[4];
            size_t m = unicode_encode_utf8(cpt > 0x10FFFF ? 0xFFFD : cpt, utf8);
            buf_append_str(out, "[UNK_BYTE_0x");
            for (size_t j = 0; j < m; j++) buf_printf(out, "%02x", (unsigned char)utf8[j]);
            buf_append(out, s, n);
            buf_append_char(out, ']');
        }
        i += k;
    }
}

void tokenizer_decode_piece(const struct tokenizer *t, int32_t id, int render_special,
                            struct buf *out) {
    if (id < 0 || id >= t->n_vocab) return;
    unsigned a = t->attr[id];
    const char *s = tokenizer_text(t, id);
    size_t n = t->text_len[id];
    if (a & (TOKEN_ATTR_UNKNOWN | TOKEN_ATTR_CONTROL)) {
        if (render_special) buf_append(out, s, n);
        return;
    }
    if (a & TOKEN_ATTR_USER_DEFINED) {
        buf_append(out, s, n);
    } else if (a & TOKEN_ATTR_NORMAL) {
        if (t->kind == TOKENIZER_BPE) {
            append_bpe_normal(s, n, out);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                buf_append_char(out, ' ');
                i += 2;
            } else {
                buf_append_char(out, s[i]);
            }
        }
    } else if (a & TOKEN_ATTR_BYTE) {
        if (n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hex_digit(s[3]) >= 0 &&
            hex_digit(s[4]) >= 0) {
            buf_append_char(out, (char)(hex_digit(s[3]) * 16 + hex_digit(s[4])));
        }
    }
}

/* llama.cpp's clean_up_tokenization_spaces, three passes over the decoded bytes:
 * " ?" " !" " ." " ," lose the space; " ' " becomes "'"; " 's" " 'm" " 're" " 've" lose the
 * space. */
static size_t clean_spaces(char *s, size_t n, char *tmp) {
    if (n == 0) return 0;
    size_t k = 1;
    tmp[0] = s[0];
    for (size_t i = 1; i < n; i++) {
        if (s[i - 1] == ' ' && (s[i] == '?' || s[i] == '!' || s[i] == '.' || s[i] == ',')) k--;
        tmp[k++] = s[i];
    }
    n = k;
    k = 1;
    s[0] = tmp[0];
    for (size_t i = 1; i < n; i++) {
        char x = tmp[i];
        if (x == '\'' && i + 1 < n && tmp[i - 1] == ' ' && tmp[i + 1] == ' ') {
            k--;
            tmp[++i] = '\0'; /* the space after is dropped, and no longer counts as a space */
        }
        s[k++] = x;
    }
    n = k;
    k = 1;
    tmp[0] = s[0];
    for (size_t i = 1; i < n; i++) {
        char x = s[i];
        if (s[i - 1] == ' ' && x == '\'' && i + 1 < n) {
            char x1 = s[i + 1];
            if (x1 == 's' || x1 == 'm') {
                k--;
            } else if (x1 != 't' && x1 != 'd' && i + 2 < n) {
                char x2 = s[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) k--;
            }
        }
        tmp[k++] = x;
    }
    memcpy(s, tmp, k);
    return k;
}

void tokenizer_decode(const struct tokenizer *t, const int32_t *ids, int64_t n, int render_special,
                      struct buf *out) {
    size_t start = out->len;
    int remove_space = t->add_space_prefix;
    for (int64_t i = 0; i < n; i++) {
        size_t before = out->len;
        tokenizer_decode_piece(t, ids[i], render_special, out);
        if (remove_space && !out->failed && out->len > before && out->data[before] == ' ') {
            memmove(out->data + before, out->data + before + 1, out->len - before - 1);
            out->len--;
            out->data[out->len] = '\0';
        }
        remove_space = 0;
    }
    if (t->clean_spaces && !out->failed && out->len > start) {
        char *tmp = mem_alloc(out->len - start);
        if (!tmp) {
            out->failed = 1;
            return;
        }
        out->len = start + clean_spaces(out->data + start, out->len - start, tmp);
        out->data[out->len] = '\0';
        mem_free(tmp);
    }
}
