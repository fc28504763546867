/* libFuzzer harness for the client probe's reading of a client's byte
 * stream (src/cli/probe_check.c): whatever a client sends, in whatever
 * pieces, the reader frames it without reading past what it was given and
 * counts each kind at most once per connection. The first byte says how
 * the rest is cut into reads (1 to 256 bytes each); a 0xff byte ends a
 * connection and starts the next (a reset when the byte after it is odd).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/probe_client_int.h"

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
	struct ctally t;
	struct ccheck k;
	size_t piece, off = 1, end;
	unsigned conns = 1, i;
	const uint8_t *mark;

	if (size < 1)
		return 0;
	piece = (size_t)data[0] + 1;
	memset(&t, 0, sizeof(t));
	ccheck_init(&k, conns, &t);
	while (off < size) {
		mark = memchr(data + off, 0xff, size - off);
		end = mark != NULL ? (size_t)(mark - data) : size;
		while (off < end) {
			size_t n = end - off < piece ? end - off : piece;
			uint8_t *copy =
				malloc(n); /* exact: ASan sees overreads */

			check(copy != NULL);
			memcpy(copy, data + off, n);
			ccheck_bytes(&k, copy, n);
			free(copy);
			off += n;
		}
		if (mark == NULL)
			break;
		k.replies = 1;
		ccheck_end(&k, off + 1 < size && (data[off + 1] & 1), &t);
		ccheck_init(&k, ++conns, &t);
		off++;
	}
	ccheck_end(&k, 0, &t);
	check(t.conns == conns);
	for (i = 0; i < K_KINDS; i++)
		check(t.n[i] <= t.conns);
	return 0;
}
