/* Between the option table (daemon_opts.c) and what sets a value from it
 * (daemon_optset.c). Internal to the daemon.
 */
#ifndef BULWARK_DAEMON_OPTS_INT_H
#define BULWARK_DAEMON_OPTS_INT_H

#include <stddef.h>
#include <stdint.h>

enum kind {
	K_NUM,	  /* an unsigned integer field of size bytes, min..max */
	K_SEC,	  /* seconds, kept in a field of milliseconds */
	K_STR,	  /* a string field of size bytes (NUL included) */
	K_ADDR,	  /* a numeric IPv4 or IPv6 address, in a string field */
	K_OFF,	  /* a flag: sets an int field to 0 */
	K_ON,	  /* a flag: sets an int field to 1 */
	K_SECRET, /* the console secret (also marks it given) */
	K_SECRET_FILE,
	K_LEVEL,
	K_CONFIG, /* the configuration file (only on the command line) */
	K_LISTEN, /* HOST:PORT of a listener off by default (turns it on) */
	K_NETS,	  /* ADDR[/BITS][,...] into a struct bw_proxy_nets */
	K_NAME,	  /* a word: letters, digits, '.', '-', '_' (a string field) */
};

struct opt {
	const char *name;
	char letter;
	enum kind kind;
	int reload; /* SIGHUP applies a new value (R) or not (0) */
	size_t off, size;
	uint64_t min, max;
	const char *arg;  /* the value's name in --help */
	const char *help; /* may hold \n: continuation lines */
	/* an int field set to 1 once the option is given (its offset + 1;
	 * 0: none), and whether a value on the command line may hold a
	 * password (a URL's: shown as '*'s to ps) */
	size_t given;
	int url_secret;
};

/* The row of the option called name, or NULL. */
const struct opt *daemon_opt_find(const char *name);

#endif
