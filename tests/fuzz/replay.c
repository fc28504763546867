/* Corpus replay driver: runs a libFuzzer harness once on every file named on
 * the command line (directories are walked one level deep), so the committed
 * corpus is checked by ctest without libFuzzer. Each input is copied into a
 * buffer of exactly its size so ASan reports any read past its end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLAY_MAX_INPUT (16u * 1024u * 1024u)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads the whole of path into a malloc'd buffer of exactly its size (one
 * byte for an empty file). */
static int
read_input(const char *path, uint8_t **out, size_t *len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0, n;
	ssize_t r;
	int fd, rc = -1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || st.st_size < 0 ||
	    (uint64_t)st.st_size > REPLAY_MAX_INPUT) {
		fprintf(stderr, "replay: %s: cannot size or too big\n", path);
		goto out;
	}
	n = (size_t)st.st_size;
	if ((buf = malloc(n > 0 ? n : 1)) == NULL) {
		fprintf(stderr, "replay: out of memory\n");
		goto out;
	}
	while (got < n) {
		r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "replay: %s: short read\n", path);
			goto out;
		}
		got += (size_t)r;
	}
	*out = buf;
	*len = n;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

static int
run_file(const char *path, unsigned long *ran)
{
	uint8_t *data = NULL;
	size_t len = 0;

	if (read_input(path, &data, &len) != 0)
		return -1;
	/* An empty input is passed as the end of a one-byte allocation:
	 * ASan gives malloc(0) a readable byte, the end of a block has
	 * none. */
	LLVMFuzzerTestOneInput(len > 0 ? data : data + 1, len);
	free(data);
	(*ran)++;
	return 0;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file directly inside dir, in name order. */
static int
run_dir(const char *dir, unsigned long *ran)
{
	char **names = NULL, **grown, path[4096];
	size_t n = 0, cap = 0, i;
	struct dirent *e;
	struct stat st;
	DIR *d;
	int rc = 0, w;

	if ((d = opendir(dir)) == NULL) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			if ((grown = realloc(names, cap * sizeof(*names))) ==
			    NULL) {
				rc = -1;
				break;
			}
			names = grown;
		}
		if ((names[n] = strdup(e->d_name)) == NULL) {
			rc = -1;
			break;
		}
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; i < n && rc == 0; i++) {
		w = snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (w < 0 || (size_t)w >= sizeof(path)) {
			fprintf(stderr, "replay: path too long in %s\n", dir);
			rc = -1;
			break;
		}
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		rc = run_file(path, ran);
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

int
main(int argc, char **argv)
{
	unsigned long ran = 0;
	struct stat st;
	int i;

	if (argc < 2) {
		fprintf(stderr, "usage: %s corpus-dir-or-file...\n", argv[0]);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i],
				strerror(errno));
			return 1;
		}
		if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &ran) != 0
					: run_file(argv[i], &ran) != 0)
			return 1;
	}
	if (ran == 0) {
		fprintf(stderr, "replay: no inputs found\n");
		return 1;
	}
	printf("replay: %lu inputs ran\n", ran);
	return 0;
}
