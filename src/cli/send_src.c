/* bulwark send, the file's bytes: a reader thread maps the next window of
 * the file while the encrypting thread works through the one before, so
 * the encryption (serial in CBC mode, the upload's floor) waits for no
 * page fault. A file that cannot be mapped is read into the window. The
 * encryption CRCs each piece right after encrypting it (PIECE).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bulwark/crc.h"
#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "cli/send_int.h"

/* Windows of WINDOW bytes, each mapped over its slot of one reserved range
 * whose slots start on 2 MiB boundaries, as the windows' file offsets do.
 * The page cache holds a file written or read in large pieces in large
 * folios (up to 2 MiB), which a window so aligned maps whole: for a GiB
 * written 4 MiB at a time, 670 page faults and 13 ms where 1 MiB windows at
 * any address took 17,400 and 130 ms (docs/performance.md). Two slots: the
 * reader fills one while the encryption reads the other. */
#define WINDOW	  (4u * 1024u * 1024u) /* a multiple of CHUNK */
#define WIN_ALIGN (2u * 1024u * 1024u)
#define NSLOT	  2u

/* The cksum follows the encryption a piece at a time, while the piece is
 * still in the core's cache. CRC'd by the reader a window ahead, the file
 * was read from memory twice, on two cores: on the development machine
 * (Intel Xeon) a GiB's CRC took 0.11 s of the reader, and the encryption
 * was no faster for it; encrypting and then CRCing 64 KiB at a time took
 * 0.65-0.70 s of one core where the encryption alone took 0.69-0.77 s, and
 * 16 or 256 KiB pieces 0.72-0.75 s (docs/performance.md, twenty-fourth
 * round). */
#define PIECE (64u * 1024u) /* a multiple of BW_AES_BLOCK */

struct send_src {
	int fd;
	uint64_t size; /* the file's length when the upload began */
	uint64_t nwin; /* windows in it */
	uint8_t *area; /* the reserved range */
	size_t area_len;
	uint8_t *slot[NSLOT];
	int slot_anon[NSLOT]; /* the slot holds memory to read into */
	int mapping;	      /* reader: windows are mapped, not read */
	pthread_t th;
	int running; /* th has not been joined */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* under mu */
	uint64_t ready;	   /* windows mapped (or read) */
	uint64_t released; /* windows the encryption is done with */
	int err;	   /* the reader's error */
	int stop;
	/* the encrypting thread's */
	struct bw_cksum crc; /* of the bytes encrypted so far */
};

/* A mapped file that shrinks under us raises SIGBUS on the missing pages;
 * while a thread reads a mapping, that jumps back to report it instead of
 * killing the process. */
static __thread sigjmp_buf *bus_jmp;

static void
on_sigbus(int sig)
{
	if (bus_jmp != NULL)
		siglongjmp(*bus_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

void
send_guard_sigbus(void)
{
	signal(SIGBUS, on_sigbus);
}

/* Reads exactly n bytes at off; BW_ESIZE if the file ends first. */
static int
pread_full(int fd, uint8_t *buf, size_t n, uint64_t off)
{
	ssize_t r;

	while (n > 0) {
		r = pread(fd, buf, n, (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return BW_ESIZE; /* the file shrank while we read it */
		buf += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static size_t
window_len(const struct send_src *s, uint64_t w)
{
	uint64_t off = w * WINDOW;

	return s->size - off < WINDOW ? (size_t)(s->size - off) : WINDOW;
}

/* Window w into its slot, mapped over what was there or read into
 * anonymous memory. */
static int
fill(struct send_src *s, uint64_t w)
{
	unsigned i = (unsigned)(w % NSLOT);
	size_t len = window_len(s, w);
	uint8_t *p = s->slot[i];
	void *m;

	if (s->mapping) {
		m = mmap(p, len, PROT_READ,
			 MAP_PRIVATE | MAP_FIXED | MAP_POPULATE, s->fd,
			 (off_t)(w * WINDOW));
		if (m == MAP_FAILED)	/* the slot's old mapping may be gone */
			s->mapping = 0; /* this window and the rest are read */
		else
			s->slot_anon[i] = 0;
	}
	if (!s->mapping) {
		if (!s->slot_anon[i]) {
			m = mmap(p, WINDOW, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
				 0);
			if (m == MAP_FAILED)
				return -errno;
			s->slot_anon[i] = 1;
		}
		return pread_full(s->fd, p, len, w * WINDOW);
	}
	return 0;
}

static void *
reader_main(void *arg)
{
	struct send_src *s = arg;
	uint64_t w;
	int rc;

	for (w = 0; w < s->nwin; w++) {
		pthread_mutex_lock(&s->mu);
		while (w >= s->released + NSLOT && !s->stop)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->stop) {
			pthread_mutex_unlock(&s->mu);
			break;
		}
		pthread_mutex_unlock(&s->mu);
		rc = fill(s, w);
		pthread_mutex_lock(&s->mu);
		if (rc != 0)
			s->err = rc;
		else
			s->ready = w + 1;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		if (rc != 0)
			break;
	}
	return NULL;
}

int
send_src_start(struct send_src **out, int fd, uint64_t size)
{
	struct send_src *s;
	uint8_t *a;
	unsigned i;
	int rc;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return BW_ENOMEM;
	s->fd = fd;
	s->size = size;
	s->nwin = (size + WINDOW - 1) / WINDOW;
	s->mapping = 1;
	/* 10 MiB of address space, nothing more: a process that cannot
	 * reserve it could not read into anonymous slots either */
	s->area_len = (size_t)NSLOT * WINDOW + WIN_ALIGN;
	a = mmap(NULL, s->area_len, PROT_NONE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (a == MAP_FAILED) {
		rc = -errno;
		free(s);
		return rc;
	}
	s->area = a;
	a = (uint8_t *)(((uintptr_t)a + WIN_ALIGN - 1) &
			~(uintptr_t)(WIN_ALIGN - 1));
	for (i = 0; i < NSLOT; i++)
		s->slot[i] = a + (size_t)i * WINDOW;
	bw_cksum_init(&s->crc);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if ((rc = -pthread_create(&s->th, NULL, reader_main, s)) != 0) {
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cv);
		munmap(s->area, s->area_len);
		free(s);
		return rc;
	}
	s->running = 1;
	*out = s;
	return 0;
}

/* n bytes (whole blocks) of p encrypted (or, without aes, copied) into out
 * and added to the cksum, a PIECE at a time. */
static int
encrypt_pieces(struct send_src *s, struct bw_aes *aes, const uint8_t *p,
	       uint8_t *out, size_t n)
{
	size_t at, k;
	int rc;

	for (at = 0; at < n; at += k) {
		k = n - at < PIECE ? n - at : PIECE;
		if (aes == NULL)
			memcpy(out + at, p + at, k);
		else if ((rc = bw_aes_cbc_to(aes, p + at, out + at, k)) != 0)
			return rc;
		bw_cksum_update(&s->crc, p + at, k);
	}
	return 0;
}

int
send_src_encrypt(struct send_src *s, uint64_t off, size_t n, uint8_t *out,
		 struct bw_aes *aes)
{
	uint64_t w = off / WINDOW, end = off + n;
	size_t whole = n & ~(size_t)(BW_AES_BLOCK - 1);
	const uint8_t *p;
	sigjmp_buf jb;
	int rc;

	if (n == 0)
		return 0;
	pthread_mutex_lock(&s->mu);
	while (s->ready <= w && s->err == 0)
		pthread_cond_wait(&s->cv, &s->mu);
	rc = s->ready <= w ? s->err : 0;
	pthread_mutex_unlock(&s->mu);
	if (rc != 0)
		return rc;
	p = s->slot[w % NSLOT] + (off - w * WINDOW);
	if (sigsetjmp(jb, 1) != 0) {
		bus_jmp = NULL;
		return BW_ESIZE; /* the file shrank while we read it */
	}
	bus_jmp = &jb;
	rc = encrypt_pieces(s, aes, p, out, whole);
	memcpy(out + whole, p + whole, n - whole);
	bw_cksum_update(&s->crc, p + whole, n - whole);
	bus_jmp = NULL;
	if (end == w * WINDOW + window_len(s, w)) {
		pthread_mutex_lock(&s->mu);
		s->released = w + 1;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
	}
	return rc;
}

int
send_src_finish(struct send_src *s, uint32_t *crc)
{
	int rc;

	pthread_join(s->th, NULL);
	s->running = 0;
	rc = s->err;
	if (rc == 0 && s->ready != s->nwin)
		rc = BW_ESIZE;
	if (rc == 0)
		*crc = bw_cksum_final(&s->crc);
	return rc;
}

void
send_src_free(struct send_src *s)
{
	unsigned i;

	if (s == NULL)
		return;
	if (s->running) {
		pthread_mutex_lock(&s->mu);
		s->stop = 1;
		pthread_cond_broadcast(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->th, NULL);
	}
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	/* a slot read into holds the file's plaintext, as the chunk buffers
	 * once did: wiped before it goes (a mapped one is the page cache's) */
	for (i = 0; i < NSLOT; i++)
		if (s->slot_anon[i])
			bw_wipe(s->slot[i], WINDOW);
	munmap(s->area, s->area_len);
	free(s);
}
