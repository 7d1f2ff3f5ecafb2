/* num.h: strict parsing of numbers from command-line arguments.
 *
 * The whole string must be the number (no sign-only, no trailing characters, no empty string);
 * out-of-range values and overflow are rejected. Each returns 0 and sets *out, or -1 and leaves
 * *out alone. Shared by the CLI commands and the tools.
 */
#ifndef HEARTH_NUM_H
#define HEARTH_NUM_H

/* A base-10 integer in [lo, hi]. */
int num_parse_int(const char *s, long long lo, long long hi, long long *out);
/* A finite floating-point number. */
int num_parse_float(const char *s, double *out);

#endif
