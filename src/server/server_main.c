/* server_main.c: `hearth serve` — options, start-up, and waiting for a stop signal.
 *
 * SIGINT/SIGTERM are blocked before any thread starts (threads inherit the mask) and taken
 * synchronously with sigwait by the main thread, which then closes the server: running
 * generations are cancelled, connections closed, memory freed. Only this function exits.
 */
#include "server.h"

#include "../base/log.h"
#include "../base/num.h"
#include "../gguf/gguf.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: hearth serve -m MODEL [options]\n"
               "  --host ADDR              address to listen on (default 127.0.0.1)\n"
               "  --port N                 port (default 8080; 0 = any free port)\n"
               "  -c, --ctx-size N         context per slot (default: min(model, 32768))\n"
               "  -np, --parallel N        requests generated at once (default 2)\n"
               "  -t, --threads N          CPU threads (default: all)\n"
               "  -b, --batch-size N       tokens per forward pass (default 512)\n"
               "  --cache-type T           KV cache type: f16 (default), f32, q8_0\n"
               "  --cache-ram MIB          RAM for cached prompt prefixes (default 4096; 0 = off)\n"
               "  --api-key KEY            require this key (Authorization: Bearer / x-api-key)\n"
               "  --alias NAME             model id reported to clients (default: file name)\n"
               "  --chat-template-file F   Jinja chat template to use instead of the model's\n"
               "  --spec MODE              speculative decoding: none, ngram, draft, mtp, auto\n"
               "                           (default auto: the model's MTP head when it has one,\n"
               "                           plus n-gram lookup)\n"
               "  --draft-max N            longest draft (default 8; 3 for the MTP head)\n"
               "  -md, --draft-model F     draft model for --spec draft (implies it)\n"
               "  --max-body BYTES         largest request body (default 64 MiB)\n"
               "  --no-mmap / --mmap       read the model into (huge-page) memory / map the file\n"
               "                           (default: read it when it fits in 3/4 of free memory)\n"
               "  -v                       log every request\n");
}

int server_main(int argc, char **argv) {
    struct server_opts o;
    server_opts_default(&o);
    int spec_given = 0;
    const char *api_key_env = getenv("HEARTH_API_KEY");
    if (api_key_env && *api_key_env) o.api_key = api_key_env;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
#define INT_OPT(lo, hi, field)                                                                     \
    do {                                                                                           \
        if (num_parse_int(v, lo, hi, &x)) {                                                        \
            fprintf(stderr, "hearth serve: %s needs an integer in [%lld, %lld]\n", a,              \
                    (long long)(lo), (long long)(hi));                                             \
            return 1;                                                                              \
        }                                                                                          \
        field = x;                                                                                 \
        i++;                                                                                       \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-v")) {
            log_set_level(LOG_LEVEL_INFO);
        } else if (!strcmp(a, "--no-mmap")) {
            o.load = GGUF_LOAD_COPY;
        } else if (!strcmp(a, "--mmap")) {
            o.load = GGUF_LOAD_MMAP;
        } else if (!v) {
            fprintf(stderr, "hearth serve: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            o.model_path = v, i++;
        } else if (!strcmp(a, "--host")) {
            o.host = v, i++;
        } else if (!strcmp(a, "--port")) {
            INT_OPT(0, 65535, o.port);
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            INT_OPT(0, 1 << 24, o.n_ctx);
        } else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) {
            INT_OPT(1, 256, o.n_parallel);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            INT_OPT(0, 1024, o.n_threads);
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) {
            INT_OPT(1, 1 << 16, o.n_batch);
        } else if (!strcmp(a, "--cache-ram")) {
            INT_OPT(0, 1 << 24, x);
            o.cache_bytes = (size_t)x << 20;
        } else if (!strcmp(a, "--max-body")) {
            INT_OPT(1024, (long long)1 << 40, x);
            o.max_body_bytes = (size_t)x;
        } else if (!strcmp(a, "--cache-type")) {
            if (!strcmp(v, "f16"))
                o.kv_type = KV_TYPE_F16;
            else if (!strcmp(v, "f32"))
                o.kv_type = KV_TYPE_F32;
            else if (!strcmp(v, "q8_0"))
                o.kv_type = KV_TYPE_Q8_0;
            else {
                fprintf(stderr, "hearth serve: --cache-type must be f16, f32 or q8_0\n");
                return 1;
            }
            i++;
        } else if (!strcmp(a, "--api-key")) {
            o.api_key = v, i++;
        } else if (!strcmp(a, "--alias")) {
            o.alias = v, i++;
        } else if (!strcmp(a, "--chat-template-file")) {
            o.chat_template_file = v, i++;
        } else if (!strcmp(a, "--spec")) {
            if (spec_mode_parse(v, &o.spec_mode)) {
                fprintf(stderr, "hearth serve: --spec must be none, ngram, draft, mtp or auto\n");
                return 1;
            }
            spec_given = 1;
            i++;
        } else if (!strcmp(a, "--draft-max")) {
            INT_OPT(0, SPEC_DRAFT_MAX, o.draft_max);
        } else if (!strcmp(a, "--draft-model") || !strcmp(a, "-md")) {
            o.draft_model_path = v, i++;
        } else {
            fprintf(stderr, "hearth serve: unknown option %s\n", a);
            usage(stderr);
            return 1;
        }
#undef INT_OPT
    }
    if (o.draft_model_path && !spec_given) o.spec_mode = SPEC_DRAFT;
    if (!o.model_path) {
        fprintf(stderr, "hearth serve: -m MODEL is required\n");
        usage(stderr);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct server *s = NULL;
    struct error err = {0};
    if (server_open(&s, &o, &err)) {
        fprintf(stderr, "hearth serve: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "hearth: serving %s on http://%s:%d (OpenAI base URL http://%s:%d/v1)\n",
            o.model_path, o.host, server_port(s), o.host, server_port(s));
    fprintf(stderr, "hearth: speculative decoding: %s\n", server_spec_desc(s));
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "hearth: stopping (signal %d)\n", sig);
    server_close(s);
    return 0;
}
