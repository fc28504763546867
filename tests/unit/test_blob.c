/* The blob table through its front (host/blob.h) with the directory
 * backend: an object appears under its key whole or not at all, a put
 * that must not replace refuses, an abort leaves nothing, a copy undoes a
 * replacement, keys that climb out and symbolic links anywhere on the way
 * are refused, listing leaves links and scratch out, and the start-up
 * sweep empties the scratch and refuses a linked one. The directories the
 * backend keeps open between requests: one removed, replaced or renamed
 * behind its back is reached afresh, and more directories than it keeps
 * cost no more descriptors than it keeps.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>

#include <cmocka.h>

#include "bulwark/err.h"
#include "bulwark/util.h"
#include "store/blob.h"

/* Runs a shell command, which must succeed. */
#define RUN(...)                                                               \
	do {                                                                   \
		char cmd_[512];                                                \
		snprintf(cmd_, sizeof(cmd_), __VA_ARGS__);                     \
		assert_int_equal(system(cmd_), 0);                             \
	} while (0)

struct fx {
	char dir[64];
	struct bw_blobs *b;
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/bw_blob_XXXXXX");
	if (mkdtemp(f->dir) == NULL || bw_blobs_open_dir(&f->b, f->dir) != 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	bw_blobs_close(f->b);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void
path_of(const struct fx *f, const char *rel, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", f->dir, rel);
}

static unsigned
entries(const struct fx *f, const char *rel)
{
	char cmd[256], line[32];
	FILE *p;
	unsigned n = 0;

	snprintf(cmd, sizeof(cmd), "ls -A '%s/%s' | wc -l", f->dir, rel);
	p = popen(cmd, "r");
	assert_non_null(p);
	if (fgets(line, sizeof(line), p) != NULL)
		n = (unsigned)strtoul(line, NULL, 10);
	pclose(p);
	return n;
}

/* An object of n bytes of c, written in two pieces (an aligned block, then
 * the rest), put at key. */
static int
put_bytes(struct fx *f, const char *key, int c, size_t n, int replace)
{
	const struct bw_blob_backend *be = f->b->be;
	struct bw_blob_w *w = NULL;
	uint8_t *p = NULL;
	size_t first = n >= 4096 ? 4096 : 0;
	int rc;

	assert_int_equal(posix_memalign((void **)&p, 4096, n > 0 ? n : 1), 0);
	memset(p, c, n);
	assert_int_equal(be->create(f->b->state, "files/", NULL, &w), 0);
	if (first > 0)
		assert_int_equal(be->write(w, 0, p, first), 0);
	if (n > first)
		assert_int_equal(be->write(w, first, p + first, n - first), 0);
	rc = be->put(f->b->state, w, key, replace);
	free(p);
	return rc;
}

/* The object at key holds n bytes of c. */
static void
holds(struct fx *f, const char *key, int c, size_t n)
{
	const struct bw_blob_backend *be = f->b->be;
	struct bw_blob_r *r = NULL;
	uint8_t buf[1000];
	uint64_t size = 0, got = 0;
	ssize_t k, i;

	assert_int_equal(be->size(f->b->state, key, &size), 0);
	assert_int_equal(size, n);
	assert_int_equal(be->read_open(f->b->state, key, &r), 0);
	while ((k = be->read(r, buf, sizeof(buf))) > 0) {
		for (i = 0; i < k; i++)
			assert_int_equal(buf[i], c);
		got += (uint64_t)k;
	}
	assert_int_equal(k, 0);
	be->read_close(r);
	assert_int_equal(got, n);
}

static void
a_put_object_is_whole_and_its_scratch_gone(void **state)
{
	struct fx *f = *state;

	assert_int_equal(put_bytes(f, "files/ab/x", 'a', 10000, 1), 0);
	holds(f, "files/ab/x", 'a', 10000);
	assert_int_equal(entries(f, "files/.incoming"), 0);
	/* replacing it */
	assert_int_equal(put_bytes(f, "files/ab/x", 'b', 3, 1), 0);
	holds(f, "files/ab/x", 'b', 3);
	assert_int_equal(entries(f, "files/.incoming"), 0);
}

static void
a_put_that_must_not_replace_refuses(void **state)
{
	struct fx *f = *state;

	assert_int_equal(put_bytes(f, "files/m", 'a', 5, 0), 0);
	assert_int_equal(put_bytes(f, "files/m", 'b', 6, 0), BW_EEXIST);
	holds(f, "files/m", 'a', 5);
	assert_int_equal(entries(f, "files/.incoming"), 0);
}

static void
an_abort_leaves_nothing(void **state)
{
	struct fx *f = *state;
	const struct bw_blob_backend *be = f->b->be;
	struct bw_blob_w *w = NULL;

	assert_int_equal(be->create(f->b->state, "files/", NULL, &w), 0);
	assert_int_equal(be->write(w, 0, "xyz", 3), 0);
	assert_int_equal(entries(f, "files/.incoming"), 1);
	be->abort(f->b->state, w);
	assert_int_equal(entries(f, "files/.incoming"), 0);
}

static void
a_copy_undoes_a_replacement(void **state)
{
	struct fx *f = *state;
	const struct bw_blob_backend *be = f->b->be;
	char backup[BW_BLOB_KEY_CAP];

	assert_int_equal(put_bytes(f, "files/cd/y", 'o', 100, 1), 0);
	bw_blob_scratch_key("files/", ".old-", backup);
	assert_int_equal(strncmp(backup, "files/" BW_BLOB_SCRATCH ".old-",
				 strlen("files/" BW_BLOB_SCRATCH ".old-")),
			 0);
	assert_int_equal(be->copy(f->b->state, "files/cd/y", backup), 0);
	assert_int_equal(put_bytes(f, "files/cd/y", 'n', 200, 1), 0);
	holds(f, "files/cd/y", 'n', 200);
	assert_int_equal(be->move(f->b->state, backup, "files/cd/y"), 0);
	holds(f, "files/cd/y", 'o', 100);
	assert_int_equal(be->copy(f->b->state, "files/cd/none", backup),
			 BW_ENOTFOUND);
	assert_int_equal(be->remove(f->b->state, "files/cd/none"), 0);
	assert_int_equal(be->remove(f->b->state, "files/cd/y"), 0);
	uint64_t size;
	assert_int_equal(be->size(f->b->state, "files/cd/y", &size),
			 BW_ENOTFOUND);
}

static void
keys_that_climb_out_are_refused(void **state)
{
	struct fx *f = *state;
	uint64_t size;

	assert_int_equal(put_bytes(f, "files/../escape", 'e', 4, 1), BW_EPROTO);
	assert_int_equal(put_bytes(f, "/abs", 'e', 4, 1), BW_EPROTO);
	assert_int_equal(put_bytes(f, "files//x", 'e', 4, 1), BW_EPROTO);
	assert_int_equal(put_bytes(f, "files/./x", 'e', 4, 1), BW_EPROTO);
	assert_int_equal(f->b->be->size(f->b->state, "../x", &size), BW_EPROTO);
	assert_int_equal(entries(f, "files/.incoming"), 0);
}

static void
a_link_on_the_way_is_refused_never_followed(void **state)
{
	struct fx *f = *state;
	const struct bw_blob_backend *be = f->b->be;
	char outside[96], link[128], target[128];
	uint64_t size;

	snprintf(outside, sizeof(outside), "%s.out", f->dir);
	assert_int_equal(mkdir(outside, 0700), 0);
	assert_int_equal(put_bytes(f, "files/ok/a", 'a', 7, 1), 0);
	path_of(f, "files/ln", link, sizeof(link));
	assert_int_equal(symlink(outside, link), 0);
	assert_int_not_equal(put_bytes(f, "files/ln/b", 'b', 7, 1), 0);
	assert_int_equal(be->size(f->b->state, "files/ln/b", &size), BW_EPROTO);
	/* a link as the object itself is no object */
	snprintf(target, sizeof(target), "%s/secret", outside);
	assert_int_equal(symlink(target, link), -1); /* exists */
	path_of(f, "files/ok/lnk", link, sizeof(link));
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(be->size(f->b->state, "files/ok/lnk", &size),
			 BW_ENOTFOUND);
	assert_int_equal(entries(f, "files/.incoming"), 0);
	assert_int_equal(rmdir(outside), 0); /* nothing was written there */
}

struct listed {
	char keys[8][BW_BLOB_KEY_CAP];
	unsigned n;
};

static int
on_key(void *arg, const char *key, uint64_t size, int64_t mtime)
{
	struct listed *l = arg;

	(void)size;
	assert_true(mtime > 1600000000 && mtime <= bw_time_s());
	if (l->n < 8)
		snprintf(l->keys[l->n], BW_BLOB_KEY_CAP, "%s", key);
	l->n++;
	return 0;
}

static void
listing_leaves_links_and_scratch_out_and_groups_by_directory(void **state)
{
	struct fx *f = *state;
	const struct bw_blob_backend *be = f->b->be;
	struct listed l;
	struct bw_blob_w *w = NULL;
	char link[128];

	memset(&l, 0, sizeof(l));
	assert_int_equal(put_bytes(f, "files/aa/1", 'a', 1, 1), 0);
	assert_int_equal(put_bytes(f, "files/aa/2", 'a', 2, 1), 0);
	assert_int_equal(put_bytes(f, "files/top", 't', 3, 1), 0);
	assert_int_equal(put_bytes(f, "files/aa/sub/3", 's', 4, 1), 0);
	assert_int_equal(be->create(f->b->state, "files/", NULL, &w), 0);
	path_of(f, "files/aa/ln", link, sizeof(link));
	assert_int_equal(symlink("/etc/passwd", link), 0);
	assert_int_equal(be->list(f->b->state, "files/", on_key, &l), 0);
	be->abort(f->b->state, w);
	assert_int_equal(l.n, 4);
	/* each directory's objects come together, before the ones below */
	assert_string_equal(l.keys[0], "files/top");
	assert_true((strcmp(l.keys[1], "files/aa/1") == 0 &&
		     strcmp(l.keys[2], "files/aa/2") == 0) ||
		    (strcmp(l.keys[1], "files/aa/2") == 0 &&
		     strcmp(l.keys[2], "files/aa/1") == 0));
	assert_string_equal(l.keys[3], "files/aa/sub/3");
	memset(&l, 0, sizeof(l));
	assert_int_equal(be->list(f->b->state, "nothing/", on_key, &l), 0);
	assert_int_equal(l.n, 0);
}

static void
the_sweep_empties_scratch_and_refuses_a_linked_one(void **state)
{
	struct fx *f = *state;
	const struct bw_blob_backend *be = f->b->be;
	struct bw_blob_w *w1 = NULL, *w2 = NULL;
	char link[128], outside[96];
	unsigned n = 0;

	assert_int_equal(be->sweep(f->b->state, "files/", &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(be->create(f->b->state, "files/", NULL, &w1), 0);
	assert_int_equal(be->create(f->b->state, "files/", NULL, &w2), 0);
	assert_int_equal(be->sweep(f->b->state, "files/", &n), 0);
	assert_int_equal(n, 2);
	be->abort(f->b->state, w1); /* gone already: nothing to do */
	be->abort(f->b->state, w2);
	snprintf(outside, sizeof(outside), "%s.out2", f->dir);
	assert_int_equal(mkdir(outside, 0700), 0);
	path_of(f, "messages", link, sizeof(link));
	assert_int_equal(symlink(outside, link), 0);
	assert_int_equal(be->sweep(f->b->state, "messages/", &n), -ELOOP);
	assert_int_equal(rmdir(outside), 0);
}

static void
a_directory_removed_behind_its_back_is_reached_afresh(void **state)
{
	struct fx *f = *state;
	char where[160];
	struct stat st;
	uint64_t size;

	assert_int_equal(put_bytes(f, "files/ab/x", 'x', 10, 1), 0);
	/* removed, with the scratch directory and every parent kept open */
	RUN("rm -rf '%s/files'", f->dir);
	assert_int_equal(f->b->be->size(f->b->state, "files/ab/x", &size),
			 BW_ENOTFOUND);
	assert_int_equal(put_bytes(f, "files/ab/y", 'y', 5000, 1), 0);
	holds(f, "files/ab/y", 'y', 5000);
	/* replaced by a copy (a restore from a backup): found there */
	RUN("mv '%s/files/ab' '%s/files/ab.old' && mkdir '%s/files/ab'", f->dir,
	    f->dir, f->dir);
	RUN("cp '%s/files/ab.old/y' '%s/files/ab/z' && rm -rf "
	    "'%s/files/ab.old'",
	    f->dir, f->dir, f->dir);
	holds(f, "files/ab/z", 'y', 5000);
	assert_int_equal(f->b->be->size(f->b->state, "files/ab/y", &size),
			 BW_ENOTFOUND);
	assert_int_equal(put_bytes(f, "files/ab/w", 'w', 3, 0), 0);
	holds(f, "files/ab/w", 'w', 3);
	assert_int_equal(f->b->be->remove(f->b->state, "files/ab/z"), 0);
	assert_int_equal(entries(f, "files/ab"), 1);
	/* renamed away and kept, another put in its place: nothing finds it
	 * wanting, and it is let go within a second all the same */
	RUN("mv '%s/files/ab' '%s/files/ab.bak' && mkdir '%s/files/ab'", f->dir,
	    f->dir, f->dir);
	usleep(1100 * 1000);
	assert_int_equal(put_bytes(f, "files/ab/u", 'u', 4, 1), 0);
	path_of(f, "files/ab/u", where, sizeof(where));
	assert_int_equal(stat(where, &st), 0);
	path_of(f, "files/ab.bak/u", where, sizeof(where));
	assert_int_equal(stat(where, &st), -1);
}

static unsigned
open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	assert_non_null(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

static void
more_directories_than_kept_cost_no_more_descriptors(void **state)
{
	struct fx *f = *state;
	char key[64];
	unsigned i, before = open_fds();

	for (i = 0; i < 600; i++) {
		snprintf(key, sizeof(key), "files/d%u/o", i);
		assert_int_equal(put_bytes(f, key, 'a' + (int)(i % 26), 1, 1),
				 0);
	}
	/* 256 kept at most, whatever the number of directories */
	assert_true(open_fds() <= before + 256);
	for (i = 0; i < 600; i += 37) {
		snprintf(key, sizeof(key), "files/d%u/o", i);
		holds(f, key, 'a' + (int)(i % 26), 1);
	}
	assert_int_equal(entries(f, "files/.incoming"), 0);
}

struct hammer {
	struct fx *f;
	unsigned id;
	int failed;
};

/* Puts and reads back objects in more directories than are kept, so that
 * entries are evicted while other threads use theirs. */
static void *
hammer_main(void *arg)
{
	struct hammer *h = arg;
	const struct bw_blob_backend *be = h->f->b->be;
	struct bw_blob_w *w;
	char key[64];
	uint64_t size;
	unsigned i;

	for (i = 0; i < 400 && !h->failed; i++) {
		snprintf(key, sizeof(key), "files/h%u/t%u-%u",
			 (i * 7 + h->id) % 300, h->id, i);
		w = NULL;
		if (be->create(h->f->b->state, "files/", NULL, &w) != 0 ||
		    be->write(w, 0, key, strlen(key)) != 0 ||
		    be->put(h->f->b->state, w, key, 1) != 0 ||
		    be->size(h->f->b->state, key, &size) != 0 ||
		    size != strlen(key))
			h->failed = 1;
	}
	return NULL;
}

static void
workers_share_the_kept_directories(void **state)
{
	struct fx *f = *state;
	struct hammer h[4];
	pthread_t t[4];
	unsigned i, before = open_fds();

	for (i = 0; i < 4; i++) {
		h[i] = (struct hammer){f, i, 0};
		assert_int_equal(
			pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_false(h[i].failed);
	}
	assert_true(open_fds() <= before + 256);
	assert_int_equal(entries(f, "files/.incoming"), 0);
}

/* What the daemon sizes its workers by, read from the URL alone: the same
 * backend table bw_blobs_open uses. */
static void
only_an_object_store_url_is_shared(void **state)
{
	(void)state;
	assert_true(bw_blobs_url_shared("s3://bucket"));
	assert_true(bw_blobs_url_shared("s3://bucket/prefix"));
	assert_false(bw_blobs_url_shared("file:/var/lib/bulwark"));
	assert_false(bw_blobs_url_shared(""));
	assert_false(bw_blobs_url_shared(NULL));
	/* not a URL any backend takes */
	assert_false(bw_blobs_url_shared("s3"));
	assert_false(bw_blobs_url_shared("s3x://bucket"));
	assert_false(bw_blobs_url_shared("ftp://host/x"));
}

int
main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(a_put_object_is_whole_and_its_scratch_gone),
		T(a_put_that_must_not_replace_refuses),
		T(an_abort_leaves_nothing),
		T(a_copy_undoes_a_replacement),
		T(keys_that_climb_out_are_refused),
		T(a_link_on_the_way_is_refused_never_followed),
		T(listing_leaves_links_and_scratch_out_and_groups_by_directory),
		T(the_sweep_empties_scratch_and_refuses_a_linked_one),
		T(a_directory_removed_behind_its_back_is_reached_afresh),
		T(more_directories_than_kept_cost_no_more_descriptors),
		T(workers_share_the_kept_directories),
		cmocka_unit_test(only_an_object_store_url_is_shared),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
