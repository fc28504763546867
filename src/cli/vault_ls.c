/* bulwark ls (cli/vault_cli_int.h): the owner's files, a page at a time
 * (1100, then 1105 after each page's last entry while the server says
 * more), printed as they come, newest first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulwark/cur.h"
#include "bulwark/util.h"
#include "cli/vault_cli_int.h"
#include "proto/vault_wire.h"

#define PAGE_BYTES                                                             \
	(4u + BW_VAULT_LIST_PAGE * BW_VAULT_LIST_ENTRY + BW_VAULT_LIST_TRAILER)
/* pages a listing may take: 2048 files each, far beyond a real owner's
 * and a server that never says "no more" */
#define PAGES_MAX 100000u

static void
print_entry(const struct bw_vault_entry *e)
{
	char when[32], shown[BW_ESC_CAP];
	time_t t = (time_t)e->stored;
	struct tm tm;

	if (t == 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(when, sizeof(when), "%-19s", "?");
	/* a name is the server's bytes: shown escaped */
	printf("%12llu  %-10s  %s  %s%s\n", (unsigned long long)e->size,
	       e->verified ? "verified" : "unverified", when,
	       bw_escape_display(e->name, shown, sizeof(shown)),
	       e->pending ? "  (a replacement waits for its verdict)" : "");
}

/* One page: its entries printed, *n of them; *more and the request for
 * the next one in after. 0 or an exit status. */
static int
page(struct vcli *x, uint8_t *buf, uint8_t after[BW_VAULT_LIST_AFTER_LEN],
     uint32_t *n, int *more)
{
	struct bw_vault_entry e;
	uint64_t mark = 0;
	uint32_t size, i;
	uint16_t code;
	int rc;

	if ((rc = vcli_head(x, &code, &size)) != 0)
		return rc;
	if (code != BW_VAULT_RESP_LIST || size > PAGE_BYTES ||
	    bw_session_read(&x->s, buf, size) != 0 ||
	    bw_vault_list_decode(buf, size, n, more, &mark) != 0) {
		fprintf(stderr, "%s: the server's list is malformed (%u)\n",
			x->prog, code);
		return BW_EXIT_FATAL;
	}
	for (i = 0; i < *n; i++) {
		if (bw_vault_entry_decode(buf, i, &e) != 0)
			snprintf(e.name, sizeof(e.name), "?");
		print_entry(&e);
	}
	/* the next page starts after the last entry: its name finds it at
	 * once, the mark when it is gone (or its name was malformed) */
	memset(after, 0, BW_VAULT_LIST_AFTER_LEN);
	if (*n > 0 && bw_vault_entry_decode(buf, *n - 1, &e) == 0 &&
	    bw_name_encode(e.name, after) != 0)
		memset(after, 0, BW_NAME_FIELD);
	bw_put_u64le(after + BW_NAME_FIELD, mark);
	return 0;
}

int
vcli_ls(struct vcli *x)
{
	uint8_t *buf = malloc(PAGE_BYTES), after[BW_VAULT_LIST_AFTER_LEN];
	unsigned long long total = 0;
	unsigned pages = 0;
	uint32_t n = 0;
	int more = 1, rc = 0;

	if (buf == NULL) {
		fprintf(stderr, "%s: out of memory\n", x->prog);
		return BW_EXIT_FATAL;
	}
	while (rc == 0 && more && pages < PAGES_MAX) {
		rc = pages == 0 ? vcli_send_req(x, BW_VAULT_REQ_LIST, NULL, 0)
				: vcli_send_req(x, BW_VAULT_REQ_LIST_AFTER,
						after, sizeof(after));
		if (rc == 0 && (rc = page(x, buf, after, &n, &more)) == 0) {
			total += n;
			pages++;
		}
	}
	free(buf);
	if (rc == 0 && more) {
		fprintf(stderr,
			"%s: the server's list did not end after %u "
			"pages\n",
			x->prog, pages);
		return BW_EXIT_FATAL;
	}
	if (rc == 0 && !x->quiet)
		fprintf(stderr, "%llu file%s\n", total, total == 1 ? "" : "s");
	return rc;
}
