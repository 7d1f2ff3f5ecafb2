/* tokenize.c: `hearth tokenize -m FILE [--bos] [--no-parse-special]` (see tools.h).
 *
 * Reads all of stdin as the text (bytes as they are: a trailing newline is part of the text),
 * tokenizes it with the GGUF's tokenizer and prints the ids space-separated on one line.
 * Special tokens in the text are matched unless --no-parse-special; BOS is prepended only with
 * --bos. Any error is one line on stderr and exit status 1.
 */
#include "tools.h"

#include "../src/base/mem.h"
#include "../src/gguf/gguf.h"
#include "../src/text/tokenizer.h"

#include <string.h>

static const char k_usage[] = "usage: hearth tokenize -m FILE [--bos] [--no-parse-special]";

/* Reads the whole stream into a mem_alloc'ed buffer; NULL on failure. */
static char *read_all(FILE *in, size_t *n_out) {
    size_t cap = 4096, n = 0;
    char *data = mem_alloc(cap);
    while (data) {
        if (n == cap) {
            char *bigger = cap <= SIZE_MAX / 2 ? mem_realloc(data, cap * 2) : NULL;
            if (!bigger) {
                mem_free(data);
                return NULL;
            }
            data = bigger;
            cap *= 2;
        }
        size_t got = fread(data + n, 1, cap - n, in);
        n += got;
        if (got == 0) {
            if (ferror(in)) {
                mem_free(data);
                return NULL;
            }
            break;
        }
    }
    *n_out = n;
    return data;
}

int tool_tokenize_run(int argc, char **argv, FILE *in, FILE *out, FILE *err_out) {
    const char *model = NULL;
    int add_bos = 0, parse_special = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) {
            model = argv[++i];
        } else if (!strcmp(argv[i], "--bos")) {
            add_bos = 1;
        } else if (!strcmp(argv[i], "--no-parse-special")) {
            parse_special = 0;
        } else {
            fprintf(err_out, "tokenize: unknown argument '%s' (%s)\n", argv[i], k_usage);
            return 1;
        }
    }
    if (!model) {
        fprintf(err_out, "tokenize: no model given (%s)\n", k_usage);
        return 1;
    }

    int status = 1;
    struct error err = {0};
    struct gguf *g = NULL;
    struct tokenizer *t = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    size_t n_text = 0;
    if (gguf_open(&g, model, &err) != 0 || tokenizer_load(&t, g, &err) != 0) {
        fprintf(err_out, "tokenize: %s\n", err.msg);
        goto done;
    }
    text = read_all(in, &n_text);
    if (!text) {
        fprintf(err_out, "tokenize: cannot read stdin\n");
        goto done;
    }
    if (tokenizer_encode(t, text, n_text, add_bos, parse_special, &ids, &n_ids, &err) != 0) {
        fprintf(err_out, "tokenize: %s\n", err.msg);
        goto done;
    }
    for (int64_t i = 0; i < n_ids; i++) fprintf(out, i ? " %d" : "%d", ids[i]);
    fputc('\n', out);
    if (fflush(out) != 0) {
        fprintf(err_out, "tokenize: cannot write output\n");
        goto done;
    }
    status = 0;
done:
    mem_free(ids);
    mem_free(text);
    tokenizer_free(t);
    gguf_close(g);
    return status;
}

int tool_tokenize_main(int argc, char **argv) {
    return tool_tokenize_run(argc, argv, stdin, stdout, stderr);
}
