/* One option's value into the daemon's configuration (daemon/daemon.h):
 * a function for each kind of value the table's rows name (daemon_opts.c),
 * and the row's "given" flag set once it is.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/net.h"
#include "bulwark/util.h"
#include "daemon/daemon.h"
#include "daemon/daemon_opts_int.h"

static void
put_num(void *field, size_t size, uint64_t v)
{
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;

	switch (size) {
	case 1:
		u8 = (uint8_t)v;
		memcpy(field, &u8, 1);
		break;
	case 2:
		u16 = (uint16_t)v;
		memcpy(field, &u16, 2);
		break;
	case 4:
		u32 = (uint32_t)v;
		memcpy(field, &u32, 4);
		break;
	default:
		memcpy(field, &v, 8);
		break;
	}
}

/* --- setting one option: a function per kind of value ----------------- */

typedef int (*set_fn)(const struct opt *o, struct bw_daemon_cfg *cfg,
		      void *field, const char *value, char *why, size_t cap);

static int
set_num(const struct opt *o, struct bw_daemon_cfg *cfg, void *field,
	const char *value, char *why, size_t cap)
{
	uint64_t v;

	(void)cfg;
	if (bw_parse_u64(value, o->min, o->max, &v) != 0) {
		snprintf(why, cap,
			 "%s needs a number from %llu to %llu, not '%s'",
			 o->name, (unsigned long long)o->min,
			 (unsigned long long)o->max, value);
		return BW_ECONFIG;
	}
	put_num(field, o->size, o->kind == K_SEC ? v * 1000u : v);
	return 0;
}

static int
set_str(const struct opt *o, struct bw_daemon_cfg *cfg, void *field,
	const char *value, char *why, size_t cap)
{
	(void)cfg;
	if (strlen(value) >= o->size) {
		snprintf(why, cap, "%s is too long", o->name);
		return BW_ECONFIG;
	}
	memcpy(field, value, strlen(value) + 1);
	return 0;
}

static int
set_addr(const struct opt *o, struct bw_daemon_cfg *cfg, void *field,
	 const char *value, char *why, size_t cap)
{
	if (bw_net_is_loopback(value) < 0) {
		snprintf(why, cap,
			 "%s needs a numeric IPv4 or IPv6 address, not '%s'",
			 o->name, value);
		return BW_ECONFIG;
	}
	return set_str(o, cfg, field, value, why, cap);
}

/* The first line of the file at path into the console secret. */
static int
set_secret_file(const struct opt *o, struct bw_daemon_cfg *cfg, void *field,
		const char *path, char *why, size_t cap)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	(void)o;
	(void)field;
	if ((rc = bw_read_small_file(path, sizeof(cfg->console.secret), &text,
				     &len)) != 0) {
		snprintf(why, cap, "console-secret-file %s: %s", path,
			 bw_strerror(rc));
		return BW_ECONFIG;
	}
	text[strcspn(text, "\r\n")] = '\0';
	rc = 0;
	if (text[0] == '\0' || strlen(text) >= sizeof(cfg->console.secret)) {
		snprintf(why, cap,
			 "console-secret-file %s: no secret on its first line",
			 path);
		rc = BW_ECONFIG;
	} else {
		memcpy(cfg->console.secret, text, strlen(text) + 1);
	}
	bw_wipe(text, len);
	free(text);
	return rc;
}

static int
set_nets(const struct opt *o, struct bw_daemon_cfg *cfg, void *field,
	 const char *value, char *why, size_t cap)
{
	char reason[160];

	(void)cfg;
	if (bw_proxy_nets_parse(value, field, reason, sizeof(reason)) != 0) {
		snprintf(why, cap, "%s: %s", o->name, reason);
		return BW_ECONFIG;
	}
	return 0;
}

/* A word: letters, digits, '.', '-', '_'. */
static int
set_name(const struct opt *o, struct bw_daemon_cfg *cfg, void *field,
	 const char *value, char *why, size_t cap)
{
	size_t i;

	for (i = 0; value[i] != '\0'; i++) {
		char ch = value[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
		      ch == '_')) {
			snprintf(why, cap,
				 "%s takes letters, digits, '.', '-' and '_', "
				 "not '%s'",
				 o->name, value);
			return BW_ECONFIG;
		}
	}
	return set_str(o, cfg, field, value, why, cap);
}

/* PORT (on loopback) or ADDR:PORT. */
static int
set_listen(const struct opt *o, struct bw_daemon_cfg *cfg, void *field,
	   const char *value, char *why, size_t cap)
{
	struct bw_listen_cfg *l = field;
	uint64_t bare;
	uint16_t port;

	(void)cfg;
	if (bw_parse_u64(value, 0, 65535, &bare) == 0) {
		snprintf(l->addr, sizeof(l->addr), "127.0.0.1");
		port = (uint16_t)bare;
	} else if (bw_parse_listen_addr(value, l->addr, sizeof(l->addr),
					&port) != 0 ||
		   bw_net_is_loopback(l->addr) < 0) {
		snprintf(why, cap,
			 "%s needs PORT or ADDR:PORT (a numeric address), not "
			 "'%s'",
			 o->name, value);
		return BW_ECONFIG;
	}
	l->port = port;
	return 0;
}

static int
set_level(const struct opt *o, struct bw_daemon_cfg *cfg, void *field,
	  const char *value, char *why, size_t cap)
{
	static const char *const levels[] = {"debug", "info", "warn", "error"};
	int i;

	(void)field;
	for (i = 0; i < 4; i++) {
		if (strcmp(value, levels[i]) == 0) {
			cfg->log_level = i;
			return 0;
		}
	}
	snprintf(why, cap, "%s needs debug, info, warn or error, not '%s'",
		 o->name, value);
	return BW_ECONFIG;
}

static const set_fn setters[] = {
	[K_NUM] = set_num,	 [K_SEC] = set_num,
	[K_STR] = set_str,	 [K_ADDR] = set_addr,
	[K_SECRET] = set_str,	 [K_SECRET_FILE] = set_secret_file,
	[K_LEVEL] = set_level,	 [K_CONFIG] = set_str,
	[K_LISTEN] = set_listen, [K_NETS] = set_nets,
	[K_NAME] = set_name,
};

int
bw_daemon_opt_set(struct bw_daemon_cfg *cfg, const char *name,
		  const char *value, char *why, size_t why_cap)
{
	const struct opt *o = daemon_opt_find(name);
	uint8_t *field;
	int on = 1, rc;

	if (o == NULL) {
		snprintf(why, why_cap, "unknown option '%s'", name);
		return BW_ECONFIG;
	}
	field = (uint8_t *)cfg + o->off;
	if (o->kind == K_OFF || o->kind == K_ON) {
		if (value != NULL && value[0] != '\0') {
			snprintf(why, why_cap, "%s takes no value", name);
			return BW_ECONFIG;
		}
		on = o->kind == K_ON;
		memcpy(field, &on, sizeof(on));
		return 0;
	}
	if (value == NULL || value[0] == '\0') {
		/* "data-dir =" must not mean the root directory */
		snprintf(why, why_cap, "%s needs a value", name);
		return BW_ECONFIG;
	}
	if ((size_t)o->kind >= sizeof(setters) / sizeof(setters[0]) ||
	    setters[o->kind] == NULL)
		return BW_ECONFIG;
	if ((rc = setters[o->kind](o, cfg, field, value, why, why_cap)) == 0 &&
	    o->given != 0) {
		on = 1;
		memcpy((uint8_t *)cfg + o->given - 1, &on, sizeof(on));
	}
	return rc;
}
