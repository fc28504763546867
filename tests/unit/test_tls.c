/* Unit tests for src/core/tls.c and tls_key.c: a client and a server on
 * memory, moved by hand byte for byte or all at once; the key made once;
 * fingerprints as openssl computes them; what is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/tls.h"
#include "core/tls_int.h" /* the queues' buffers, looked at */

#define PATH_CAP 256

struct fixture {
	char dir[PATH_CAP], key[PATH_CAP + 16], cert[PATH_CAP + 16];
	struct bw_tls_ctx *srv, *cli;
};

static int
setup(void **state)
{
	static struct fixture f;
	char why[256];
	int made = 0;

	snprintf(f.dir, sizeof(f.dir), "/tmp/bw-test-tls-XXXXXX");
	if (mkdtemp(f.dir) == NULL)
		return -1;
	snprintf(f.key, sizeof(f.key), "%s/tls.key", f.dir);
	snprintf(f.cert, sizeof(f.cert), "%s/tls.crt", f.dir);
	if (bw_tls_make_key(f.key, f.cert, "unit.example", &made, why,
			    sizeof(why)) != 0 ||
	    !made)
		return -1;
	if (bw_tls_server_ctx(&f.srv, f.cert, f.key, why, sizeof(why)) != 0 ||
	    bw_tls_client_ctx(&f.cli, NULL, why, sizeof(why)) != 0)
		return -1;
	*state = &f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[PATH_CAP + 16];

	bw_tls_ctx_free(f->srv);
	bw_tls_ctx_free(f->cli);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Moves what from produced to to, at most step bytes at a time (0: all);
 * the bytes moved. */
static size_t
move(struct bw_tls *from, struct bw_tls *to, size_t step)
{
	const uint8_t *p;
	size_t len, n, total = 0;

	while ((p = bw_tls_out(from, &len)) != NULL && len > 0) {
		n = step != 0 && len > step ? step : len;
		assert_int_equal(bw_tls_feed(to, p, n), 0);
		bw_tls_out_consume(from, n);
		total += n;
		if (step != 0)
			break;
	}
	return total;
}

/* Runs both handshakes to the end, step bytes a move. */
static void
handshake(struct bw_tls *c, struct bw_tls *s, size_t step)
{
	size_t moved;
	int rounds;

	for (rounds = 0; rounds < 100000; rounds++) {
		assert_int_not_equal(bw_tls_handshake(c), BW_TLS_ERROR);
		assert_int_not_equal(bw_tls_handshake(s), BW_TLS_ERROR);
		moved = move(c, s, step) + move(s, c, step);
		if (moved == 0 && bw_tls_done(c) && bw_tls_done(s))
			return;
	}
	fail_msg("the handshake did not end");
}

static void
a_handshake_fed_a_byte_at_a_time_ends_and_carries_data(void **state)
{
	struct fixture *f = *state;
	struct bw_tls *c = bw_tls_new(f->cli, 0, "localhost");
	struct bw_tls *s = bw_tls_new(f->srv, 1, NULL);
	static uint8_t big[200000], got[200000];
	char fp[BW_TLS_FP_CAP];
	size_t took, n, have = 0, i;

	assert_non_null(c);
	assert_non_null(s);
	handshake(c, s, 1);
	assert_string_equal(bw_tls_version(c), "TLSv1.3");
	assert_string_equal(bw_tls_cipher(s), "TLS_AES_128_GCM_SHA256");
	/* the client sees the server's key, and it is the file's */
	assert_int_equal(bw_tls_peer_fingerprint(c, fp), 0);
	assert_string_equal(fp, bw_tls_ctx_fingerprint(f->srv));
	/* self-signed: no CA vouches for it */
	assert_false(bw_tls_verified(c));
	for (i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7u + 3u);
	for (i = 0; i < sizeof(big); i += took) {
		assert_int_equal(
			bw_tls_write(c, big + i, sizeof(big) - i, &took),
			BW_TLS_OK);
		assert_true(took > 0);
	}
	(void)move(c, s, 0);
	assert_true(bw_tls_buffered(s));
	while (have < sizeof(got) &&
	       bw_tls_read(s, got + have, 1000, &n) == BW_TLS_OK)
		have += n;
	assert_int_equal(have, sizeof(big));
	assert_memory_equal(got, big, sizeof(big));
	/* the close_notify reads as the end */
	bw_tls_close_notify(c);
	(void)move(c, s, 0);
	assert_int_equal(bw_tls_read(s, got, sizeof(got), &n), BW_TLS_EOF);
	bw_tls_free(c);
	bw_tls_free(s);
}

/* The queues under a connection (tls_queue.c): records read in place in
 * pieces of odd sizes, output taken in part, buffers trimmed whenever the
 * connection looks quiet (and a trim with bytes waiting keeps them): every
 * byte arrives, in order, and a 1 MiB stream leaves nothing behind. */
static void
bytes_read_in_place_and_taken_in_part_arrive_in_order(void **state)
{
	static const size_t steps[] = {1,	   5,	  4096,	 7919,
				       16384 + 22, 65536, 200000};
	struct fixture *f = *state;
	struct bw_tls *c = bw_tls_new(f->cli, 0, "localhost");
	struct bw_tls *s = bw_tls_new(f->srv, 1, NULL);
	static uint8_t big[1u << 20], got[1u << 20];
	const uint8_t *p;
	uint8_t *room;
	size_t took, n, len, have = 0, i, k = 0, sent = 0;

	assert_non_null(c);
	assert_non_null(s);
	handshake(c, s, 0);
	for (i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 13u + (i >> 16));
	while (have < sizeof(got)) {
		/* the client writes more when it has sent all */
		if (sent < sizeof(big) && bw_tls_out(c, &len) == NULL) {
			n = sizeof(big) - sent < 300000 ? sizeof(big) - sent
							: 300000;
			assert_int_equal(bw_tls_write(c, big + sent, n, &took),
					 BW_TLS_OK);
			sent += took;
		}
		/* a piece of its output, straight into the server's input */
		if ((p = bw_tls_out(c, &len)) != NULL && len > 0) {
			n = steps[k++ % 7];
			n = n < len ? n : len;
			assert_non_null(room = bw_tls_in_room(s, n));
			memcpy(room, p, n);
			bw_tls_in_fed(s, n);
			bw_tls_out_consume(c, n);
		}
		while (have < sizeof(got) &&
		       bw_tls_read(s, got + have, sizeof(got) - have, &n) ==
			       BW_TLS_OK)
			have += n;
		/* the server's, with everything read: freed */
		if (k % 7 == 0)
			bw_tls_trim(s);
		bw_tls_trim_out(c);  /* as a flush that sent all does */
		if (c->out.len == 0) /* an empty queue keeps no buffer */
			assert_null(c->out.p);
	}
	assert_memory_equal(got, big, sizeof(big));
	assert_false(bw_tls_buffered(s));
	assert_null(bw_tls_out(c, &len));
	assert_int_equal(len, 0);
	bw_tls_free(c);
	bw_tls_free(s);
}

/* A trim of an input queue that still holds records keeps every byte; one
 * holding less than a record in a bulk read's buffer shrinks to a record's
 * size; an empty one gives its buffer back. */
static void
a_trim_keeps_the_bytes_waiting_and_gives_back_a_bulk_buffer(void **state)
{
	struct fixture *f = *state;
	struct bw_tls *c = bw_tls_new(f->cli, 0, "localhost");
	struct bw_tls *s = bw_tls_new(f->srv, 1, NULL);
	static uint8_t big[300000], got[300000];
	const uint8_t *p;
	uint8_t *room;
	size_t took, n, len, have = 0, i, waiting;
	int shrunk = 0;

	assert_non_null(c);
	assert_non_null(s);
	handshake(c, s, 0);
	for (i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 31u + 7u);
	assert_int_equal(bw_tls_write(c, big, sizeof(big), &took), BW_TLS_OK);
	assert_int_equal(took, sizeof(big));
	/* all of it read in place at once, as a bulk read does */
	assert_non_null(p = bw_tls_out(c, &len));
	assert_non_null(room = bw_tls_in_room(s, len));
	memcpy(room, p, len);
	bw_tls_in_fed(s, len);
	bw_tls_out_consume(c, len);
	assert_true(s->in.cap >= len);
	/* small reads: OpenSSL takes one record at a time from the queue */
	while (have < sizeof(got)) {
		assert_int_equal(bw_tls_read(s, got + have, 1000, &n),
				 BW_TLS_OK);
		have += n;
		waiting = s->in.len;
		bw_tls_trim(s);
		assert_int_equal(s->in.len, waiting); /* nothing lost */
		if (waiting > 0 && waiting <= 16384 && !shrunk) {
			assert_int_equal(s->in.cap, 16384);
			shrunk = 1;
		} else if (waiting > 16384) {
			assert_true(s->in.cap >= waiting);
		}
	}
	assert_true(shrunk);
	assert_memory_equal(got, big, sizeof(big));
	assert_int_equal(s->in.len, 0);
	bw_tls_trim(s);
	assert_null(s->in.p);
	assert_int_equal(s->in.cap, 0);
	bw_tls_free(c);
	bw_tls_free(s);
}

/* A client's identity (an RSA-1024 key, the seeds') is the key the server
 * sees proven; a client without one shows none; junk is not a key. */
static void
a_client_identity_is_the_key_the_server_sees(void **state)
{
	struct fixture *f = *state;
	struct bw_tls_ctx *cli = NULL;
	struct bw_tls *c, *s;
	struct bw_rsa *k = NULL;
	uint8_t spki[BW_RSA_PUB_LEN], got[1024], *der = NULL;
	size_t len = 0, n = 1;
	char why[256];

	assert_int_equal(bw_rsa_generate(&k), 0);
	assert_int_equal(bw_rsa_to_pkcs8(k, &der, &len), 0);
	assert_int_equal(bw_rsa_to_spki(k, spki), 0);
	assert_int_equal(bw_tls_client_ctx(&cli, NULL, why, sizeof(why)), 0);
	assert_int_not_equal(bw_tls_ctx_identity(cli, (const uint8_t *)"junk",
						 4, why, sizeof(why)),
			     0);
	assert_true(strlen(why) > 0);
	assert_int_equal(bw_tls_ctx_identity(cli, der, len, why, sizeof(why)),
			 0);
	c = bw_tls_new(cli, 0, "localhost");
	s = bw_tls_new(f->srv, 1, NULL);
	handshake(c, s, 0);
	assert_int_equal(bw_tls_peer_key(s, got, sizeof(got), &n), 0);
	assert_int_equal(n, BW_RSA_PUB_LEN);
	assert_memory_equal(got, spki, BW_RSA_PUB_LEN);
	assert_int_equal(bw_tls_peer_key(s, got, 100, &n), BW_ETOOBIG);
	assert_int_equal(n, 0);
	bw_tls_free(c);
	bw_tls_free(s);
	/* the fixture's client has no identity */
	c = bw_tls_new(f->cli, 0, "localhost");
	s = bw_tls_new(f->srv, 1, NULL);
	handshake(c, s, 0);
	n = 1;
	assert_int_equal(bw_tls_peer_key(s, got, sizeof(got), &n), 0);
	assert_int_equal(n, 0);
	bw_tls_free(c);
	bw_tls_free(s);
	bw_tls_ctx_free(cli);
	bw_wipe(der, len);
	free(der);
	bw_rsa_free(k);
}

/* A ticket comes after the handshake, with the first record read. */
static void
exchange_a_byte(struct bw_tls *c, struct bw_tls *s)
{
	uint8_t b = 'x', got;
	size_t n;

	assert_int_equal(bw_tls_write(s, &b, 1, &n), BW_TLS_OK);
	(void)move(s, c, 0);
	assert_int_equal(bw_tls_read(c, &got, 1, &n), BW_TLS_OK);
	assert_int_equal(got, 'x');
}

/* A session the server gave resumes: the identity proven in the full
 * handshake is the one the server sees again; no new ticket after a
 * resumption; a session that is not one, or another context's, is a full
 * handshake. */
static void
a_resumed_session_keeps_the_proven_key_and_gives_no_new_ticket(void **state)
{
	struct fixture *f = *state;
	struct bw_tls_ctx *cli = NULL, *other = NULL;
	struct bw_tls *c, *s;
	struct bw_rsa *k = NULL;
	uint8_t spki[BW_RSA_PUB_LEN], got[1024], *der = NULL, *ticket = NULL;
	uint8_t *again = NULL;
	size_t len = 0, tlen = 0, alen = 0, n = 0;
	int64_t ends = 0;
	char why[256], cert[PATH_CAP + 16], key[PATH_CAP + 16];
	int made = 0;

	assert_int_equal(bw_rsa_generate(&k), 0);
	assert_int_equal(bw_rsa_to_pkcs8(k, &der, &len), 0);
	assert_int_equal(bw_rsa_to_spki(k, spki), 0);
	assert_int_equal(bw_tls_client_ctx(&cli, NULL, why, sizeof(why)), 0);
	assert_int_equal(bw_tls_ctx_identity(cli, der, len, why, sizeof(why)),
			 0);
	c = bw_tls_new(cli, 0, "localhost");
	s = bw_tls_new(f->srv, 1, NULL);
	assert_int_equal(bw_tls_ticket(c, &ticket, &tlen, &ends), BW_ENOTFOUND);
	handshake(c, s, 0);
	assert_false(bw_tls_resumed(c));
	exchange_a_byte(c, s);
	assert_int_equal(bw_tls_ticket(c, &ticket, &tlen, &ends), 0);
	assert_true(tlen > 0 && ends > (int64_t)time(NULL));
	/* OpenSSL drops the session of a connection freed without its
	 * close_notify (the engine always sends one) */
	bw_tls_close_notify(s);
	bw_tls_free(c);
	bw_tls_free(s);

	c = bw_tls_new(cli, 0, "localhost");
	s = bw_tls_new(f->srv, 1, NULL);
	assert_int_equal(bw_tls_resume(c, ticket, tlen), 0);
	handshake(c, s, 0);
	assert_true(bw_tls_resumed(c));
	assert_true(bw_tls_resumed(s));
	assert_int_equal(bw_tls_peer_key(s, got, sizeof(got), &n), 0);
	assert_int_equal(n, BW_RSA_PUB_LEN);
	assert_memory_equal(got, spki, BW_RSA_PUB_LEN);
	exchange_a_byte(c, s);
	assert_int_equal(bw_tls_ticket(c, &again, &alen, &ends), BW_ENOTFOUND);
	bw_tls_free(c);
	bw_tls_free(s);

	/* not a session: refused before the handshake, which is a full one */
	c = bw_tls_new(cli, 0, "localhost");
	assert_int_equal(bw_tls_resume(c, (const uint8_t *)"\x30\x03junk", 6),
			 BW_EPROTO);
	assert_int_equal(bw_tls_resume(c, ticket, tlen - 1), BW_EPROTO);
	bw_tls_free(c);
	/* another server context (a restart, another node) has not kept it */
	snprintf(key, sizeof(key), "%s/other.key", f->dir);
	snprintf(cert, sizeof(cert), "%s/other.crt", f->dir);
	assert_int_equal(
		bw_tls_make_key(key, cert, "other", &made, why, sizeof(why)),
		0);
	assert_int_equal(bw_tls_server_ctx(&other, cert, key, why, sizeof(why)),
			 0);
	c = bw_tls_new(cli, 0, "localhost");
	s = bw_tls_new(other, 1, NULL);
	assert_int_equal(bw_tls_resume(c, ticket, tlen), 0);
	handshake(c, s, 0);
	assert_false(bw_tls_resumed(c));
	assert_false(bw_tls_resumed(s));
	assert_int_equal(bw_tls_peer_key(s, got, sizeof(got), &n), 0);
	assert_memory_equal(got, spki, BW_RSA_PUB_LEN); /* proven anew */
	bw_tls_free(c);
	bw_tls_free(s);

	bw_tls_ctx_free(other);
	bw_tls_ctx_free(cli);
	free(ticket);
	bw_wipe(der, len);
	free(der);
	bw_rsa_free(k);
}

static void
garbage_instead_of_a_client_hello_is_an_error_with_a_reason(void **state)
{
	struct fixture *f = *state;
	struct bw_tls *s = bw_tls_new(f->srv, 1, NULL);
	static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	uint8_t b[16];
	size_t got;

	assert_int_equal(bw_tls_feed(s, junk, sizeof(junk) - 1), 0);
	assert_int_equal(bw_tls_read(s, b, sizeof(b), &got), BW_TLS_ERROR);
	assert_true(strlen(bw_tls_why(s)) > 0);
	assert_false(bw_tls_done(s));
	bw_tls_free(s);
}

static void
a_record_altered_on_the_way_is_refused(void **state)
{
	struct fixture *f = *state;
	struct bw_tls *c = bw_tls_new(f->cli, 0, "localhost");
	struct bw_tls *s = bw_tls_new(f->srv, 1, NULL);
	uint8_t b[64], copy[256];
	const uint8_t *p;
	size_t len, took, got;

	handshake(c, s, 0);
	assert_int_equal(bw_tls_write(c, "hello", 5, &took), BW_TLS_OK);
	p = bw_tls_out(c, &len);
	assert_true(len > 5 && len <= sizeof(copy));
	memcpy(copy, p, len);
	copy[len - 3] ^= 1; /* in the tag */
	bw_tls_out_consume(c, len);
	assert_int_equal(bw_tls_feed(s, copy, len), 0);
	assert_int_equal(bw_tls_read(s, b, sizeof(b), &got), BW_TLS_ERROR);
	bw_tls_free(c);
	bw_tls_free(s);
}

static void
the_key_is_made_once_and_kept(void **state)
{
	struct fixture *f = *state;
	char why[256], fp1[BW_TLS_FP_CAP], fp2[BW_TLS_FP_CAP];
	struct stat st;
	int made = 1;

	assert_int_equal(stat(f->key, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(bw_tls_make_key(f->key, f->cert, "unit.example", &made,
					 why, sizeof(why)),
			 0);
	assert_false(made);
	/* the certificate lost: made again for the same key */
	assert_int_equal(
		bw_tls_file_fingerprint(f->cert, fp1, why, sizeof(why)), 0);
	assert_int_equal(unlink(f->cert), 0);
	assert_int_equal(bw_tls_make_key(f->key, f->cert, "unit.example", &made,
					 why, sizeof(why)),
			 0);
	assert_true(made);
	assert_int_equal(
		bw_tls_file_fingerprint(f->cert, fp2, why, sizeof(why)), 0);
	assert_string_equal(fp1, fp2);
	/* and the key file names the same key */
	assert_int_equal(bw_tls_file_fingerprint(f->key, fp2, why, sizeof(why)),
			 0);
	assert_string_equal(fp1, fp2);
}

static void
the_fingerprint_is_what_openssl_computes(void **state)
{
	struct fixture *f = *state;
	char cmd[4 * PATH_CAP], line[128], why[256], fp[BW_TLS_FP_CAP];
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd),
		 "openssl x509 -in '%s' -pubkey -noout | openssl pkey -pubin "
		 "-outform DER | openssl dgst -sha256 -binary | base64",
		 f->cert);
	if ((p = popen(cmd, "r")) == NULL ||
	    fgets(line, sizeof(line), p) == NULL)
		fail_msg("openssl did not run");
	pclose(p);
	n = strcspn(line, "=\n"); /* unpadded */
	line[n] = '\0';
	assert_int_equal(bw_tls_file_fingerprint(f->cert, fp, why, sizeof(why)),
			 0);
	assert_int_equal(strncmp(fp, "SHA256:", 7), 0);
	assert_string_equal(fp + 7, line);
	assert_int_equal(strlen(fp), 7 + 43);
}

static void
files_that_cannot_serve_are_refused_with_a_reason(void **state)
{
	struct fixture *f = *state;
	struct bw_tls_ctx *x = NULL;
	char path[PATH_CAP + 16], why[512], fp[BW_TLS_FP_CAP];
	FILE *o;

	snprintf(path, sizeof(path), "%s/empty.pem", f->dir);
	assert_non_null(o = fopen(path, "w"));
	fclose(o);
	assert_int_equal(bw_tls_server_ctx(&x, path, f->key, why, sizeof(why)),
			 BW_ECONFIG);
	assert_null(x);
	assert_non_null(strstr(why, "certificate"));
	assert_int_equal(bw_tls_server_ctx(&x, f->cert, path, why, sizeof(why)),
			 BW_ECONFIG);
	assert_non_null(strstr(why, "key"));
	assert_int_equal(bw_tls_file_fingerprint(path, fp, why, sizeof(why)),
			 BW_ECONFIG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			a_handshake_fed_a_byte_at_a_time_ends_and_carries_data),
		cmocka_unit_test(
			garbage_instead_of_a_client_hello_is_an_error_with_a_reason),
		cmocka_unit_test(a_record_altered_on_the_way_is_refused),
		cmocka_unit_test(
			bytes_read_in_place_and_taken_in_part_arrive_in_order),
		cmocka_unit_test(
			a_trim_keeps_the_bytes_waiting_and_gives_back_a_bulk_buffer),
		cmocka_unit_test(a_client_identity_is_the_key_the_server_sees),
		cmocka_unit_test(
			a_resumed_session_keeps_the_proven_key_and_gives_no_new_ticket),
		cmocka_unit_test(the_key_is_made_once_and_kept),
		cmocka_unit_test(the_fingerprint_is_what_openssl_computes),
		cmocka_unit_test(
			files_that_cannot_serve_are_refused_with_a_reason),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
