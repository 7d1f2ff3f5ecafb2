/* cli_main.c: `hearth <command>` dispatch. Only main() exits. */
#include "cli.h"

#include "../../tools/tools.h"
#include "../base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: hearth <command> [options]\n"
               "commands:\n"
               "  run         generate text from a prompt (hearth run --help)\n"
               "  serve       OpenAI/Anthropic-compatible HTTP server (hearth serve --help)\n"
               "  inspect     print a GGUF file's metadata and tensor table: inspect FILE [--all]\n"
               "  tokenize    token ids of stdin: tokenize -m FILE [--bos] [--no-parse-special]\n"
               "  synth       write a random-weight GGUF of a given architecture and shape\n"
               "  quantize    convert a GGUF to other tensor types: quantize IN OUT TYPE\n"
               "  imatrix     importance matrix of a text: imatrix -m FILE -f TEXT -o OUT\n"
               "  perplexity  perplexity / KL divergence over a text: perplexity -m FILE -f TEXT\n"
               "  bench       prompt and generation tokens/s, llama-bench style (--help)\n");
}

int main(int argc, char **argv) {
    const char *lvl = getenv("HEARTH_LOG");
    if (lvl && *lvl) log_set_level((enum log_level)atoi(lvl));
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "run")) return cli_run_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cli_serve_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "inspect")) return tool_inspect_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize")) return tool_tokenize_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "synth")) return tool_synth_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize")) return tool_quantize_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "perplexity")) return tool_perplexity_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "imatrix")) return tool_imatrix_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return tool_bench_main(argc - 1, argv + 1);
    fprintf(stderr, "hearth: unknown command '%s' (try hearth --help)\n", cmd);
    return 1;
}
