/* usage.c: see usage.h. */
#include "usage.h"

#include <string.h>

typedef struct option_s {
    const char *flag, *what;
} option_t;

typedef struct command_s {
    const char *name, *synopsis, *summary, *detail;
    option_t options[6];
} command_t;

static const command_t commands[] = {
    { "run", "run [-c FILE] [--workers N] [--admin HOST:PORT|off]",
      "serve FILE (default: the bundled demo)",
      "Serves until SIGTERM or SIGINT (in-flight requests finish, up to\n"
      "settings.timeouts.shutdown). Saving FILE, or any Lua file it loaded, reloads it;\n"
      "so do SIGHUP, `moongate reload` and POST /reload. SIGUSR1 reopens the log files.",
      { { "-c, --config FILE", "the config file (gw.* declarations)" },
        { "--workers N", "worker threads, 1-1024 (default: settings.workers, else one per CPU)" },
        { "--admin HOST:PORT", "the admin API there instead of settings.admin's (or: off)" } } },
    { "check", "check -c FILE", "validate FILE and run its gw.test examples",
      "Reports every mistake as file:line: reason, all at once, and runs the config's\n"
      "gw.test examples without sockets. Exits 0 when FILE would load, 1 otherwise.",
      { { "-c, --config FILE", "the config file to check" } } },
    { "reload", "reload [-c FILE] [--admin HOST:PORT] [--token T] [--json]",
      "reload FILE's running gateway (through its admin API)",
      "The gateway checks the new version whole first; a refused version is reported\n"
      "with its reasons and the running one keeps serving. With -c, only the gateway\n"
      "running FILE is reloaded: another one on that address, or FILE with\n"
      "admin = false, is refused with the reason. Exits 0 on success.",
      { { "-c, --config FILE", "the config the gateway runs: its admin address is read from it" },
        { "--admin HOST:PORT", "the admin API to call (default 127.0.0.1:9901)" },
        { "--token T", "admin API token (default: FILE's, else $MOONGATE_ADMIN_TOKEN)" },
        { "--json", "print the admin API's JSON answer instead of one line" } } },
    { "repl", "repl [-c FILE] | repl --attach HOST:PORT [--token T]",
      "try requests and rules interactively",
      "try { path = \"/x\", headers = {...} } runs a request through the config's hooks\n"
      "and routes without sockets (fake upstreams unless try { real = true }). With\n"
      "--attach, each chunk runs inside a running gateway. Reads a pipe too.",
      { { "-c, --config FILE", "load FILE (moongate.testing)" },
        { "--attach HOST:PORT", "run each chunk in a running gateway (its admin API)" },
        { "--token T", "admin API token (default $MOONGATE_ADMIN_TOKEN)" } } },
    { "version", "version", "print the versions of moongate and its libraries", "", { { 0 } } },
    { "help", "help [COMMAND]", "this list, or one command in full", "", { { 0 } } },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_options(FILE *f, const command_t *c)
{
    for (size_t i = 0; i < sizeof(c->options) / sizeof(c->options[0]) && c->options[i].flag;
         i++)
        fprintf(f, "      %-20s %s\n", c->options[i].flag, c->options[i].what);
}

void mg_usage(FILE *f)
{
    fprintf(f, "usage: moongate <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        fprintf(f, "  %-52s %s\n", commands[i].synopsis, commands[i].summary);
        print_options(f, &commands[i]);
    }
    fprintf(f, "\nenvironment:\n"
               "  MOONGATE_LUA_DIR     where the Lua library is (default: found from the\n"
               "                       binary: ../lua, then ../share/moongate/lua)\n"
               "  MOONGATE_ADMIN_TOKEN the admin API token for reload and repl --attach\n"
               "\n`moongate help COMMAND` tells more about one command.\n");
}

const char *mg_usage_synopsis(const char *cmd)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(commands[i].name, cmd))
            return commands[i].synopsis;
    return "<command> [options]";
}

int mg_usage_command(FILE *f, const char *cmd)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const command_t *c = &commands[i];
        if (strcmp(c->name, cmd) != 0)
            continue;
        fprintf(f, "usage: moongate %s\n  %s\n", c->synopsis, c->summary);
        if (c->detail[0])
            fprintf(f, "\n%s\n", c->detail);
        if (c->options[0].flag) {
            fprintf(f, "\noptions:\n");
            print_options(f, c);
        }
        return 0;
    }
    return -1;
}
