/* bench/libbwnosync.so: a reference for bench/run, never a way to run the
 * daemon. Preloaded (LD_PRELOAD) into a bulwarkd, it makes fsync, fdatasync
 * and syncfs return 0 without doing anything, so that the bench can show in
 * the same run what the server's CPU per session would be if making an
 * upload durable cost nothing: the part of a session that is TCP, the
 * database's statements and the crypto.
 *
 * Nothing it touches is durable: a crash of the machine loses what the
 * server acknowledged. At exit it writes "bwnosync: N syncs skipped" on
 * stderr, so that the bench can check that the preload took hold (N > 0)
 * instead of reporting a reference that was never one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_ulong skipped;

int
fsync(int fd)
{
	(void)fd;
	atomic_fetch_add(&skipped, 1);
	return 0;
}

int
fdatasync(int fd)
{
	(void)fd;
	atomic_fetch_add(&skipped, 1);
	return 0;
}

int
syncfs(int fd)
{
	(void)fd;
	atomic_fetch_add(&skipped, 1);
	return 0;
}

__attribute__((destructor)) static void
report(void)
{
	char line[64];
	int n = snprintf(line, sizeof(line), "bwnosync: %lu syncs skipped\n",
			 (unsigned long)atomic_load(&skipped));

	if (n > 0 && (size_t)n < sizeof(line))
		(void)!write(STDERR_FILENO, line, (size_t)n);
}
