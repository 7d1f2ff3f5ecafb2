/* tools.h: entry points of the `hearth <tool>` subcommands in tools/ (one .c file each).
 *
 * Each tool is a function `tool_<name>_main(argc, argv)` with argv[0] = the tool name; it prints
 * its own output and errors and returns the process exit code (0 ok, 1 error). The CLI
 * dispatches to them; tests call the `_run` variants that take the output streams.
 */
#ifndef HEARTH_TOOLS_H
#define HEARTH_TOOLS_H

#include <stdio.h>

/* `hearth inspect FILE [--all]`: header, metadata, tensor table and per-type summary of a GGUF
 * (all shards for NAME-00001-of-0000N.gguf). */
int tool_inspect_main(int argc, char **argv);
int tool_inspect_run(int argc, char **argv, FILE *out, FILE *err_out);

/* `hearth tokenize -m FILE [--bos] [--no-parse-special]`: the token ids of stdin's text, one
 * line, space-separated (special tokens matched unless --no-parse-special; BOS only with
 * --bos). */
int tool_tokenize_main(int argc, char **argv);
int tool_tokenize_run(int argc, char **argv, FILE *in, FILE *out, FILE *err_out);

/* `hearth synth --preset NAME -o OUT [--type T] ...`: a random-weight GGUF at a real shape. */
int tool_synth_main(int argc, char **argv);

/* `hearth quantize IN OUT TYPE [options]`: rewrites a GGUF with llama-quantize's per-tensor type
 * mixes (and the dynamic Q4_K_XL); progress and the summary go to err_out, --dry-run's plan
 * and --help to out. */
int tool_quantize_main(int argc, char **argv);
int tool_quantize_run(int argc, char **argv, FILE *out, FILE *err_out);

/* `hearth perplexity -m MODEL -f TEXT [-c CTX] [--kl-divergence-base FILE] [--kl-divergence]`:
 * llama-perplexity's chunked perplexity, and KL divergence against saved base log-probs. The
 * running estimates, the final estimate and the KLD statistics go to out, progress to err_out. */
int tool_perplexity_main(int argc, char **argv);
int tool_perplexity_run(int argc, char **argv, FILE *out, FILE *err_out);

/* `hearth imatrix -m MODEL -f TEXT -o FILE [-c CTX] [--chunks N]`: importance matrix of a text
 * (llama-imatrix's GGUF format, tools/imatrix.h); per-chunk perplexity to out. */
int tool_imatrix_main(int argc, char **argv);
int tool_imatrix_run(int argc, char **argv, FILE *out, FILE *err_out);

/* `hearth bench -m MODEL [-p 512] [-n 128] [-t N] [-r 3] [--json]`: prompt-processing and
 * generation tokens/s in llama-bench's format (tools/bench.c). */
int tool_bench_main(int argc, char **argv);

#endif
