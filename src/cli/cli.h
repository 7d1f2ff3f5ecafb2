/* cli.h: the `hearth` subcommands. Each takes argv with argv[0] = the subcommand name, prints
 * errors as one line on stderr and returns the process exit code. */
#ifndef HEARTH_CLI_H
#define HEARTH_CLI_H

#include <stddef.h>

int cli_run_main(int argc, char **argv);
int cli_serve_main(int argc, char **argv); /* hearth serve (see src/server/server.h) */

/* Reads a whole file (for -f); caller frees with mem_free; NULL on failure. */
char *cli_read_file(const char *path, size_t *n_bytes);

#endif
