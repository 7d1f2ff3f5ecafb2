/* server.h: `hearth serve`, an OpenAI- and Anthropic-compatible HTTP server over one model.
 *
 * server_open loads the model, starts the scheduler thread and the HTTP listener; requests are
 * served until server_close. server_main is the command (`hearth serve ...`): it parses the
 * options, opens the server and waits for SIGINT/SIGTERM. Tests open a server in-process on a
 * free port (port 0) and talk to it over real HTTP.
 */
#ifndef HEARTH_SERVER_SERVER_H
#define HEARTH_SERVER_SERVER_H

#include "../base/error.h"
#include "../engine/engine.h"

#include <stddef.h>

struct server;

struct server_opts {
    const char *model_path;
    const char *host;               /* default 127.0.0.1 */
    int port;                       /* default 8080; 0: any free port */
    int n_ctx;                      /* positions per slot; 0: min(n_ctx_train, 32768) */
    int n_parallel;                 /* slots; default 2 */
    int n_threads;                  /* 0: all CPUs */
    int load;                       /* enum gguf_load: 0 = auto */
    int n_batch;                    /* tokens per forward pass; default 512 */
    enum kv_type kv_type;           /* default f16 */
    const char *api_key;            /* NULL: no authentication */
    const char *alias;              /* model id shown to clients; default: the file name */
    const char *chat_template_file; /* NULL: the GGUF's template, else built-in ChatML */
    size_t max_body_bytes;          /* default 64 MiB */
    size_t cache_bytes;             /* RAM prefix cache beyond the slots; default 4 GiB */
    int cache_min_tokens;           /* default 16 */
    enum spec_mode spec_mode;       /* speculative decoding; default SPEC_AUTO (MTP when the
                                       model has an MTP block, plus n-gram lookup) */
    int draft_max;                  /* longest draft; -1: the defaults (8, MTP head 3) */
    const char *draft_model_path;   /* SPEC_DRAFT: the draft model */
};

void server_opts_default(struct server_opts *o);
int server_open(struct server **out, const struct server_opts *o, struct error *err);
int server_port(const struct server *s);
/* What speculative decoding the slots use, in words (e.g. "auto: MTP head + n-gram"). */
const char *server_spec_desc(const struct server *s);
/* Cancels running generations, stops listening, frees everything. s may be NULL. */
void server_close(struct server *s);

/* `hearth serve` (argv[0] = "serve"): returns the exit code. */
int server_main(int argc, char **argv);

#endif
