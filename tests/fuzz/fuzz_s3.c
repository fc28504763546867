/* libFuzzer harness for what the S3 backend reads from outside: the XML of
 * S3's answers (a listing's entries, an upload's id, an error's code: the
 * element spans, entities, %XX keys and ISO 8601 times) and the AWS
 * shared-credentials file. The first byte picks which; the rest is the
 * text.
 *
 * Invariants (abort() on a violation): it never crashes; every span lies
 * within the text and each next one starts at or after the end of the
 * one before; a decoded text is NUL-terminated within its buffer and no
 * longer than the element's raw content; a url-decoded key holds no NUL
 * and is no longer than before; a parsed time lies between 1970 and 9999;
 * a credentials parse gives both keys or neither, each without NUL or
 * surrounding blanks, and the same answer twice; a status line's code is
 * 0 or three digits from 100 up, read within the bytes given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/s3/s3_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int ok)
{
	if (!ok)
		abort();
}

static void
xml(const char *p, size_t n)
{
	static const char *const names[] = {"Key",	"Size", "LastModified",
					    "UploadId", "Code", "Upload"};
	char out[300];
	size_t pos = 0, start, len, i, k, prev_end = 0;
	int64_t t;
	int guard = 0;

	while (s3_xml_span(p, n, &pos, "Contents", &start, &len) == 0 &&
	       guard++ < 10000) {
		check(start <= n && len <= n - start && start >= prev_end);
		check(pos >= start + len && pos <= n);
		prev_end = start + len;
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			memset(out, 'x', sizeof(out));
			if (s3_xml_text(p + start, len, names[i], out,
					sizeof(out)) != 0)
				continue;
			k = strnlen(out, sizeof(out));
			check(k < sizeof(out) && k <= len);
			if (i == 0) {
				if (s3_url_decode(out) == 0)
					check(strlen(out) <= k);
			} else if (i == 2 && s3_iso_time(out, &t) == 0) {
				check(t >= 0 && t < 253402300800LL);
			}
		}
	}
	memset(out, 'x', sizeof(out));
	if (s3_xml_text(p, n, "Code", out, 16) == 0)
		check(strnlen(out, 16) < 16);
	/* the same bytes as a response's status line: read within n */
	t = s3_status_line(p, n);
	check(t == 0 || (t >= 100 && t <= 999));
}

static void
creds(const char *p, size_t n)
{
	char *a = NULL, *s = NULL, *t = NULL, *a2 = NULL, *s2 = NULL,
	     *t2 = NULL;
	int rc = s3_creds_parse(p, n, "default", &a, &s, &t),
	    rc2 = s3_creds_parse(p, n, "default", &a2, &s2, &t2);

	check(rc == rc2);
	check((rc == 0) == (a != NULL && s != NULL));
	if (rc == 0) {
		check(strcmp(a, a2) == 0 && strcmp(s, s2) == 0);
		check(a[0] != ' ' && a[0] != '\0' && s[0] != '\0');
		check(a[strlen(a) - 1] != ' ' && s[strlen(s) - 1] != ' ');
	} else {
		check(a == NULL && s == NULL && t == NULL);
	}
	free(a);
	free(s);
	free(t);
	free(a2);
	free(s2);
	free(t2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1)
		creds((const char *)data + 1, size - 1);
	else
		xml((const char *)data + 1, size - 1);
	return 0;
}
