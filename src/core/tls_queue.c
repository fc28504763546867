/* The byte queues between a TLS connection and its socket (tls_int.h), and
 * the BIO through which OpenSSL reads records from one and writes them to
 * the other.
 *
 * Why not OpenSSL's memory BIO: it clears every byte it grows by, clears
 * its whole buffer again on every reset and moves what is left to its
 * front on every write. Over a 1 GiB upload, libc's copies and clears
 * were 0.12 s of the server's CPU and 0.16 s of the client's, beside
 * 0.35 s each for the cipher (docs/performance.md, issue 48's sixth
 * round). A queue here copies each byte in once and out once (or is read
 * into in place), and moves only the part of a record left over when the
 * room at its end runs out. Its buffer stays while data flows (freeing
 * and making a large one again cost page faults) and goes, or shrinks to
 * a record's size, when its owner says the connection is quiet.
 */
#include <limits.h>
#include <openssl/bio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/err.h"
#include "tls_int.h"

#define Q_MIN (16u * 1024u)

int
tls_q_room(struct tls_q *q, size_t n)
{
	size_t want, cap;
	uint8_t *p;

	if (q->cap - q->off - q->len >= n)
		return 0;
	if (q->off > 0) {
		memmove(q->p, q->p + q->off, q->len);
		q->off = 0;
		if (q->cap - q->len >= n)
			return 0;
	}
	if (n > SIZE_MAX / 4 - q->len)
		return BW_ENOMEM;
	want = q->len + n;
	cap = q->cap > Q_MIN ? q->cap : Q_MIN;
	while (cap < want)
		cap *= 2;
	if ((p = realloc(q->p, cap)) == NULL)
		return BW_ENOMEM;
	q->p = p;
	q->cap = cap;
	return 0;
}

int
tls_q_put(struct tls_q *q, const void *p, size_t n)
{
	int rc;

	if (n == 0)
		return 0;
	if ((rc = tls_q_room(q, n)) != 0)
		return rc;
	memcpy(q->p + q->off + q->len, p, n);
	q->len += n;
	return 0;
}

void
tls_q_take(struct tls_q *q, size_t n)
{
	if (n > q->len)
		n = q->len;
	q->off += n;
	q->len -= n;
	if (q->len == 0)
		q->off = 0;
}

void
tls_q_trim(struct tls_q *q)
{
	uint8_t *p;

	if (q->len == 0) {
		free(q->p);
		q->p = NULL;
		q->off = q->cap = 0;
		return;
	}
	/* a bulk read's buffer, with only part of a record left in it */
	if (q->cap > 4 * Q_MIN && q->len <= Q_MIN) {
		memmove(q->p, q->p + q->off, q->len);
		q->off = 0;
		if ((p = realloc(q->p, Q_MIN)) != NULL) {
			q->p = p;
			q->cap = Q_MIN;
		}
	}
}

void
tls_q_free(struct tls_q *q)
{
	free(q->p);
	memset(q, 0, sizeof(*q));
}

/* --- the BIO -------------------------------------------------------------
 * An empty queue means "more to come" (a retry), never the end: the end is
 * the socket's to say. */

static int
q_write(BIO *b, const char *p, size_t n, size_t *done)
{
	struct tls_q *q = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	*done = 0;
	if (tls_q_put(q, p, n) != 0)
		return 0;
	*done = n;
	return 1;
}

static int
q_read(BIO *b, char *p, size_t cap, size_t *got)
{
	struct tls_q *q = BIO_get_data(b);
	size_t n = q->len < cap ? q->len : cap;

	BIO_clear_retry_flags(b);
	*got = 0;
	if (n == 0) {
		BIO_set_retry_read(b);
		return 0;
	}
	memcpy(p, q->p + q->off, n);
	tls_q_take(q, n);
	*got = n;
	return 1;
}

static long
q_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_q *q = BIO_get_data(b);

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_PENDING:
		return q->len < (size_t)LONG_MAX ? (long)q->len : LONG_MAX;
	case BIO_CTRL_FLUSH:
		return 1;
	default: /* no kTLS, no push or pop, nothing written behind */
		return 0;
	}
}

static int
q_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *q_method;
static pthread_once_t q_once = PTHREAD_ONCE_INIT;

static void
q_method_make(void)
{
	int index = BIO_get_new_index();
	BIO_METHOD *m;

	/* made once for the process, and kept for its life */
	if (index == -1 || (m = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK,
					     "bulwark queue")) == NULL)
		return;
	if (BIO_meth_set_write_ex(m, q_write) != 1 ||
	    BIO_meth_set_read_ex(m, q_read) != 1 ||
	    BIO_meth_set_ctrl(m, q_ctrl) != 1 ||
	    BIO_meth_set_create(m, q_create) != 1) {
		BIO_meth_free(m);
		return;
	}
	q_method = m;
}

BIO *
tls_q_bio(struct tls_q *q)
{
	BIO *b;

	if (pthread_once(&q_once, q_method_make) != 0 || q_method == NULL)
		return NULL;
	if ((b = BIO_new(q_method)) != NULL)
		BIO_set_data(b, q);
	return b;
}
