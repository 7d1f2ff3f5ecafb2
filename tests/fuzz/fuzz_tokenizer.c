/* fuzz_tokenizer.c: libFuzzer target for tokenizer_encode/decode on arbitrary bytes.
 *
 * Two vocabularies: an SPM one from $HEARTH_FUZZ_VOCAB (default
 * ../shared/models/stories/stories260K.gguf; skipped if it cannot be opened) and a small
 * byte-level BPE one written at start-up (user-defined <think>, control <|im_end|>). The first
 * input byte picks add_bos / parse_special; the rest is the text. Besides the sanitizers'
 * checks: every id is in range, and without parse_special the text decodes back to itself
 * (byte for byte for BPE; for SPM unless the text contains a literal U+2581).
 */
#include "../../src/base/buf.h"
#include "../../src/base/mem.h"
#include "../../src/gguf/gguf.h"
#include "../../src/text/tokenizer.h"
#include "../../src/text/unicode.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct gguf *g_spm_file, *g_bpe_file;
static struct tokenizer *g_spm, *g_bpe;

static struct tokenizer *open_vocab(const char *path, struct gguf **file) {
    struct error err = {0};
    struct tokenizer *t = NULL;
    if (gguf_open(file, path, &err) != 0) return NULL;
    if (tokenizer_load(&t, *file, &err) != 0) {
        gguf_close(*file);
        *file = NULL;
        return NULL;
    }
    return t;
}

static void write_bpe_vocab(const char *path) {
    static char bytes[256][4];
    const char *tokens[256 + 7];
    int32_t types[256 + 7];
    for (int b = 0; b < 256; b++) {
        bytes[b][unicode_encode_utf8(unicode_byte_to_cpt((uint8_t)b), bytes[b])] = '\0';
        tokens[b] = bytes[b];
        types[b] = 1;
    }
    const char *extra[] = {"he", "ll", "hell", "hello", "<think>", "<|im_end|>", "<|endoftext|>"};
    const int32_t extra_types[] = {1, 1, 1, 1, 4, 3, 3};
    for (int i = 0; i < 7; i++) {
        tokens[256 + i] = extra[i];
        types[256 + i] = extra_types[i];
    }
    const char *merges[] = {"h e", "l l", "he ll", "hell o"};
    struct gguf_writer *w = NULL;
    struct error err = {0};
    if (gguf_writer_create(&w, &err) != 0) abort();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "qwen35");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 263);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, 263);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 4);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 261);
    if (gguf_writer_write_file(w, path, &err) != 0) abort();
    gguf_writer_free(w);
}

static void init(void) {
    const char *spm = getenv("HEARTH_FUZZ_VOCAB");
    g_spm =
        open_vocab(spm && *spm ? spm : "../shared/models/stories/stories260K.gguf", &g_spm_file);
    const char *tmp = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/hearth-fuzz-vocab-XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    int fd = mkstemp(path);
    if (fd < 0) abort();
    close(fd);
    write_bpe_vocab(path);
    g_bpe = open_vocab(path, &g_bpe_file);
    unlink(path); /* the mapping stays valid */
    if (!g_bpe) abort();
}

static void check(const struct tokenizer *t, int is_spm, const char *text, size_t len, int add_bos,
                  int parse_special) {
    int32_t *ids = NULL;
    int64_t n = 0;
    if (tokenizer_encode(t, text, len, add_bos, parse_special, &ids, &n, NULL) != 0) return;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tokenizer_n_vocab(t)) abort();
    }
    if (!add_bos && !parse_special && !(is_spm && memmem(text, len, "\xe2\x96\x81", 3))) {
        struct buf b;
        buf_init(&b);
        if (is_spm) {
            tokenizer_decode(t, ids, n, 0, &b);
        } else {
            for (int64_t i = 0; i < n; i++) tokenizer_decode_piece(t, ids[i], 0, &b);
        }
        if (!b.failed && (b.len != len || (len && memcmp(b.data, text, len)))) abort();
        buf_free(&b);
    }
    struct buf b;
    buf_init(&b);
    tokenizer_decode(t, ids, n, 1, &b);
    buf_free(&b);
    mem_free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        init();
        ready = 1;
    }
    if (size == 0) return 0;
    int add_bos = data[0] & 1, parse_special = (data[0] >> 1) & 1;
    const char *text = (const char *)data + 1;
    if (g_spm) check(g_spm, 1, text, size - 1, add_bos, parse_special);
    check(g_bpe, 0, text, size - 1, add_bos, parse_special);
    return 0;
}
