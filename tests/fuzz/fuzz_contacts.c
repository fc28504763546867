/* libFuzzer harness for the contacts file: any text either is refused
 * (with a line number) or decodes to contacts that encode to a text that
 * decodes to the same contacts and encodes to the same text again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "cli/contacts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok)
{
	if (!ok)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bw_contacts a, b;
	char *t1 = NULL, *t2 = NULL;
	size_t n1 = 0, n2 = 0, line = 0, i;

	bw_contacts_init(&a);
	bw_contacts_init(&b);
	if (bw_contacts_decode((const char *)data, size, &a, &line) != 0) {
		check(line >= 1 && a.n == 0);
		goto out;
	}
	check(bw_contacts_encode(&a, &t1, &n1) == 0);
	check(bw_contacts_decode(t1, n1, &b, &line) == 0);
	check(a.n == b.n && a.seen_n == b.seen_n);
	for (i = 0; i < a.n; i++)
		check(memcmp(a.c[i], b.c[i], sizeof(*a.c[i])) == 0);
	check(bw_contacts_encode(&b, &t2, &n2) == 0);
	check(n1 == n2 && memcmp(t1, t2, n1) == 0);
out:
	if (t1 != NULL)
		bw_secure_free(t1, n1);
	if (t2 != NULL)
		bw_secure_free(t2, n2);
	bw_contacts_fini(&a);
	bw_contacts_fini(&b);
	return 0;
}
