/* cli_serve.c: `hearth serve`. The server (src/server) is built in only when libmicrohttpd and
 * jansson were found at build time; without them the command says what to install. */
#include "cli.h"

#include <stdio.h>

#ifdef HEARTH_HAVE_SERVER
#include "../server/server.h"

int cli_serve_main(int argc, char **argv) {
    return server_main(argc, argv);
}
#else
int cli_serve_main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "hearth serve: this build has no server; install libmicrohttpd-dev and "
                    "libjansson-dev (scripts/deps.sh does) and rebuild\n");
    return 1;
}
#endif
