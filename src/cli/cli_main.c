/* cli_main.c: `hearth <command>` dispatch. */
#include "../../tools/tools.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fprintf(stderr, "usage: hearth <command> [options]\n"
                        "commands:\n"
                        "  inspect FILE.gguf [--all]   print a GGUF's metadata and tensors\n");
        return argc < 2 ? 1 : 0;
    }
    if (!strcmp(argv[1], "inspect")) return tool_inspect_main(argc - 1, argv + 1);
    fprintf(stderr, "hearth: unknown command '%s'\n", argv[1]);
    return 1;
}
