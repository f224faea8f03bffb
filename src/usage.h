/* usage.h: the command line's help text, in one table (`moongate help`,
 * `moongate help CMD`, and each command's usage line on a mistake). */
#ifndef MG_USAGE_H
#define MG_USAGE_H

#include <stdio.h>

/* Every command, its arguments and options. */
void mg_usage(FILE *f);
/* The synopsis of command `cmd` ("check -c FILE"), or "<command> [options]"
 * for an unknown one. */
const char *mg_usage_synopsis(const char *cmd);
/* One command in full. Returns 0, or -1 (nothing printed) for an unknown one. */
int mg_usage_command(FILE *f, const char *cmd);

#endif
