/* cli_run.c: `hearth run` — generate text from a prompt.
 *
 * Contract (scripts depend on it): the generated text streams to stdout (with --print-ids only
 * the generated ids, space-separated, on one line); load information and timings go to stderr;
 * an error is one line on stderr and exit code 1. With neither -p nor --ids the prompt is BOS.
 */
#include "cli.h"

#include "../base/log.h"
#include "../base/mem.h"
#include "../base/num.h"
#include "../engine/engine.h"
#include "../gguf/gguf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

char *cli_read_file(const char *path, size_t *n_bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct buf b;
    buf_init(&b);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) buf_append(&b, chunk, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        buf_free(&b);
        return NULL;
    }
    if (n_bytes) *n_bytes = b.len;
    return buf_detach(&b);
}

static void usage(void) {
    fprintf(
        stderr,
        "usage: hearth run -m MODEL [-p TEXT | -f FILE | --ids 1,2,3] [options]\n"
        "  -n N                  tokens to generate (default -1: until end of text or context)\n"
        "  -c N                  context size (default: min(model, 4096))\n"
        "  -t N                  threads (default: all CPUs)\n"
        "  -b N                  batch size for prompt processing (default 512)\n"
        "  --temp T              temperature (default 0.8; 0 = greedy)\n"
        "  --top-k K --top-p P --min-p P   filters (defaults 40, 0.95, 0.05)\n"
        "  --repeat-penalty X --repeat-last-n N --presence-penalty X --frequency-penalty X\n"
        "  --seed S              sampling seed (default: random)\n"
        "  --cache-type T        KV cache type: f16 (default), f32, q8_0\n"
        "  --print-ids           print only the generated ids, space-separated, one line\n"
        "  --ignore-eos          keep generating after an end-of-generation token\n"
        "  --no-bos              do not prepend BOS to -p/-f text\n"
        "  --spec MODE           speculative decoding: none (default), ngram, draft, mtp (the\n"
        "                        model's MTP block), auto (MTP if present + n-gram)\n"
        "  --draft-max N         most drafted tokens per step (default 8; MTP 3)\n"
        "  --draft-model FILE    draft model for --spec draft (same vocabulary)\n"
        "  --no-mmap / --mmap    read the model into (huge-page) memory / map the file (default:\n"
        "                        read it when it fits in 3/4 of the free memory)\n"
        "  -v                    verbose load information\n");
}

static int parse_ids(struct engine *e, const char *s, int32_t **ids, int64_t *n) {
    int64_t cap = 16, cnt = 0;
    int32_t *v = mem_alloc((size_t)cap * sizeof(int32_t));
    if (!v) return -1;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) goto bad;
        if (cnt == cap) {
            int32_t *w = mem_realloc(v, (size_t)(cap *= 2) * sizeof(int32_t));
            if (!w) goto bad;
            v = w;
        }
        v[cnt++] = (int32_t)x;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    if (cnt == 0) goto bad;
    *ids = v;
    *n = cnt;
    return 0;
bad:
    mem_free(v);
    return -1;
}

#define NEED_ARG()                                                                                 \
    do {                                                                                           \
        if (i + 1 >= argc) {                                                                       \
            fprintf(stderr, "hearth run: %s needs a value\n", a);                                  \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int cli_run_main(int argc, char **argv) {
    const char *model_path = NULL, *prompt = NULL, *prompt_file = NULL, *ids_arg = NULL;
    const char *draft_path = NULL;
    struct spec_params spp;
    spec_params_default(&spp);
    long long n_predict = -1, n_ctx = 0, n_threads = 0, n_batch = 512;
    int load = GGUF_LOAD_AUTO;
    int print_ids = 0, ignore_eos = 0, no_bos = 0;
    struct sampler_params sp;
    sampler_params_default(&sp);
    struct session_params ssp;
    session_params_default(&ssp);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long long iv;
        double fv;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage();
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEED_ARG();
            model_path = argv[++i];
        } else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            NEED_ARG();
            prompt = argv[++i];
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            NEED_ARG();
            prompt_file = argv[++i];
        } else if (!strcmp(a, "--ids")) {
            NEED_ARG();
            ids_arg = argv[++i];
        } else if (!strcmp(a, "--spec")) {
            NEED_ARG();
            if (spec_mode_parse(argv[++i], &spp.mode)) {
                fprintf(stderr, "hearth run: --spec must be none, ngram, draft, mtp or auto\n");
                return 1;
            }
        } else if (!strcmp(a, "--draft-model") || !strcmp(a, "-md")) {
            NEED_ARG();
            draft_path = argv[++i];
        } else if (!strcmp(a, "--print-ids")) {
            print_ids = 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = 1;
        } else if (!strcmp(a, "--no-bos")) {
            no_bos = 1;
        } else if (!strcmp(a, "--no-mmap")) {
            load = GGUF_LOAD_COPY;
        } else if (!strcmp(a, "--mmap")) {
            load = GGUF_LOAD_MMAP;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            log_set_level(LOG_LEVEL_INFO);
        } else if (!strcmp(a, "--cache-type") || !strcmp(a, "-ctk")) {
            NEED_ARG();
            const char *t = argv[++i];
            if (!strcmp(t, "f16"))
                ssp.kv_type = KV_TYPE_F16;
            else if (!strcmp(t, "f32"))
                ssp.kv_type = KV_TYPE_F32;
            else if (!strcmp(t, "q8_0"))
                ssp.kv_type = KV_TYPE_Q8_0;
            else {
                fprintf(stderr, "hearth run: --cache-type must be f16, f32 or q8_0\n");
                return 1;
            }
        } else {
            /* numeric options */
            struct {
                const char *name, *alt;
                int is_float;
                long long lo, hi;
                void *dst;
            } opts[] = {
                {"-n", "--n-predict", 0, -1, INT32_MAX, &n_predict},
                {"-c", "--ctx-size", 0, 0, 1 << 24, &n_ctx},
                {"-t", "--threads", 0, 0, 512, &n_threads},
                {"-b", "--batch-size", 0, 1, 1 << 16, &n_batch},
                {"--top-k", NULL, 0, 0, INT32_MAX, NULL},
                {"--draft-max", NULL, 0, 0, SPEC_DRAFT_MAX, NULL},
                {"--repeat-last-n", NULL, 0, -1, INT32_MAX, NULL},
                {"--seed", "-s", 0, -1, INT64_MAX, NULL},
                {"--temp", NULL, 1, 0, 0, &sp.temperature},
                {"--top-p", NULL, 1, 0, 0, &sp.top_p},
                {"--min-p", NULL, 1, 0, 0, &sp.min_p},
                {"--repeat-penalty", NULL, 1, 0, 0, &sp.repeat_penalty},
                {"--presence-penalty", NULL, 1, 0, 0, &sp.presence_penalty},
                {"--frequency-penalty", NULL, 1, 0, 0, &sp.frequency_penalty},
            };
            size_t k, n_opts = sizeof(opts) / sizeof(opts[0]);
            for (k = 0; k < n_opts; k++)
                if (!strcmp(a, opts[k].name) || (opts[k].alt && !strcmp(a, opts[k].alt))) break;
            if (k == n_opts) {
                fprintf(stderr, "hearth run: unknown option '%s' (see hearth run --help)\n", a);
                return 1;
            }
            NEED_ARG();
            const char *v = argv[++i];
            if (opts[k].is_float) {
                if (num_parse_float(v, &fv)) {
                    fprintf(stderr, "hearth run: %s: '%s' is not a number\n", a, v);
                    return 1;
                }
                *(float *)opts[k].dst = (float)fv;
            } else {
                if (num_parse_int(v, opts[k].lo, opts[k].hi, &iv)) {
                    fprintf(stderr, "hearth run: %s: '%s' is not an integer in [%lld, %lld]\n", a,
                            v, opts[k].lo, opts[k].hi);
                    return 1;
                }
                if (!strcmp(opts[k].name, "--top-k"))
                    sp.top_k = (int)iv;
                else if (!strcmp(opts[k].name, "--repeat-last-n"))
                    sp.penalty_last_n = (int)iv;
                else if (!strcmp(opts[k].name, "--seed"))
                    sp.seed = iv < 0 ? SAMPLER_SEED_RANDOM : (uint64_t)iv;
                else if (!strcmp(opts[k].name, "--draft-max"))
                    spp.draft_max = spp.mtp_max = (int)iv;
                else
                    *(long long *)opts[k].dst = iv;
            }
        }
    }
    if (!model_path) {
        fprintf(stderr, "hearth run: no model given (-m MODEL)\n");
        return 1;
    }
    if ((prompt != NULL) + (prompt_file != NULL) + (ids_arg != NULL) > 1) {
        fprintf(stderr, "hearth run: give only one of -p, -f and --ids\n");
        return 1;
    }

    int ret = 1;
    struct error err = {0};
    struct engine *e = NULL, *de = NULL;
    struct session *s = NULL;
    struct sampler *smp = NULL;
    struct generator *gen = NULL;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    char *file_text = NULL;
    struct buf piece;
    buf_init(&piece);

    double t0 = now_ms();
    struct engine_params ep;
    engine_params_default(&ep);
    ep.n_threads = (int)n_threads;
    ep.load = load;
    ep.n_batch = (int)n_batch;
    if (engine_open(&e, model_path, &ep, &err)) goto fail;
    double t_load = now_ms() - t0;
    struct engine_info info;
    engine_get_info(e, &info);
    fprintf(stderr, "hearth: loaded %s (%s, %.2f M params, %.1f MiB) in %.0f ms, kernels %s\n",
            info.name, info.arch, (double)info.n_params / 1e6,
            (double)info.weight_bytes / (1024.0 * 1024.0), t_load, info.kernels);

    if (ids_arg) {
        if (parse_ids(e, ids_arg, &ids, &n_ids)) {
            error_set(&err, ERR_INVALID, "--ids: expected comma-separated token ids");
            goto fail;
        }
    } else if (prompt || prompt_file) {
        size_t len = 0;
        const char *text = prompt;
        if (prompt_file) {
            file_text = cli_read_file(prompt_file, &len);
            if (!file_text) {
                error_set(&err, ERR_IO, "cannot read %s", prompt_file);
                goto fail;
            }
            text = file_text;
        } else {
            len = strlen(prompt);
        }
        if (engine_tokenize(e, text, len, !no_bos && engine_add_bos(e), 1, &ids, &n_ids, &err))
            goto fail;
        if (n_ids == 0) {
            error_set(&err, ERR_INVALID, "the prompt is empty after tokenization");
            goto fail;
        }
    } else {
        int32_t bos = engine_token_bos(e);
        if (bos < 0) {
            error_set(&err, ERR_INVALID, "the model has no BOS token; give a prompt with -p");
            goto fail;
        }
        ids = mem_alloc(sizeof(int32_t));
        if (!ids) {
            error_set(&err, ERR_NOMEM, "out of memory");
            goto fail;
        }
        ids[0] = bos;
        n_ids = 1;
    }
    ssp.n_ctx = (int)n_ctx;
    if (session_create(&s, e, &ssp, &err)) goto fail;
    if (n_ids >= session_n_ctx(s)) {
        error_set(&err, ERR_RANGE, "the prompt has %lld tokens but the context only %d",
                  (long long)n_ids, session_n_ctx(s));
        goto fail;
    }
    if (sampler_create(&smp, &sp, info.n_vocab, &err)) goto fail;
    if (spp.mode == SPEC_DRAFT) {
        if (!draft_path) {
            error_set(&err, ERR_INVALID, "--spec draft needs --draft-model FILE");
            goto fail;
        }
        if (engine_open(&de, draft_path, &ep, &err)) goto fail;
        spp.draft_engine = de;
    }
    if (generator_create(&gen, s, smp, &spp, &err)) goto fail;

    double t1 = now_ms();
    if (generator_prefill(gen, ids, (int)n_ids, &err)) goto fail;
    double t_prompt = now_ms() - t1;

    double t2 = now_ms();
    long long n_gen = 0;
    int first_id = 1, done = 0;
    int32_t step[65];
    while (!done && (n_predict < 0 || n_gen < n_predict)) {
        int max = n_predict < 0 || n_predict - n_gen > 65 ? 65 : (int)(n_predict - n_gen);
        int n_step = generator_next(gen, step, max, &err);
        if (n_step == ERR_RANGE) {
            fprintf(stderr, "\nhearth: context full (%d tokens)\n", session_n_ctx(s));
            break;
        }
        if (n_step < 0) goto fail;
        for (int j = 0; j < n_step && !done; j++) {
            int32_t id = step[j];
            n_gen++;
            int eog = engine_token_is_eog(e, id);
            if (print_ids) {
                printf(first_id ? "%d" : " %d", id);
                first_id = 0;
            } else if (!eog) {
                buf_clear(&piece);
                engine_token_piece(e, id, 0, &piece);
                fwrite(piece.data ? piece.data : "", 1, piece.len, stdout);
                fflush(stdout);
            }
            if ((eog && !ignore_eos) || (n_predict >= 0 && n_gen >= n_predict)) done = 1;
        }
    }
    double t_gen = now_ms() - t2;
    if (print_ids)
        printf("\n");
    else
        fflush(stdout);
    fprintf(stderr,
            "\nhearth: prompt %lld tokens in %.1f ms (%.1f tok/s); generated %lld tokens in %.1f "
            "ms (%.1f tok/s)\n",
            (long long)n_ids, t_prompt, n_ids / (t_prompt / 1e3), n_gen, t_gen,
            n_gen > 1 ? (n_gen - 1) / (t_gen / 1e3) : 0.0);
    if (spp.mode != SPEC_NONE) {
        struct spec_stats st;
        generator_stats(gen, &st);
        fprintf(stderr,
                "hearth: speculation %s: %lld drafted, %lld accepted (%.1f%%), %.2f tokens "
                "per target pass",
                spec_mode_name(spp.mode), (long long)st.n_drafted, (long long)st.n_accepted,
                st.n_drafted ? 100.0 * (double)st.n_accepted / (double)st.n_drafted : 0.0,
                st.n_steps ? (double)(st.n_emitted - 1) / (double)st.n_steps : 0.0);
        for (int k = 0; k < SPEC_SRC_COUNT && spp.mode == SPEC_AUTO; k++)
            if (st.n_drafted_by[k])
                fprintf(stderr, "; %s %lld/%lld", spec_source_name((enum spec_source)k),
                        (long long)st.n_accepted_by[k], (long long)st.n_drafted_by[k]);
        fprintf(stderr, "\n");
    }
    ret = 0;
fail:
    if (ret) fprintf(stderr, "hearth run: %s\n", err.msg[0] ? err.msg : "failed");
    buf_free(&piece);
    mem_free(file_text);
    mem_free(ids);
    generator_free(gen);
    sampler_free(smp);
    session_free(s);
    engine_close(de);
    engine_close(e);
    return ret;
}
