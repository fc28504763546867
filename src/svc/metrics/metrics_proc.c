/* The process_* figures every Prometheus client library exports (CPU,
 * memory, descriptors, start time), read from the kernel at each scrape:
 * dashboards and alerts written for any exporter work unchanged.
 */
#include <dirent.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bulwark/buf.h"
#include "svc/metrics/metrics_int.h"

/* Open descriptors: the entries of /proc/self/fd, less the one the
 * listing itself holds (-1 if it cannot be read). */
static long long
open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long long n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

int
metrics_process(struct bw_buf *b, long long started_s)
{
	unsigned long long size = 0, resident = 0;
	long page = sysconf(_SC_PAGESIZE);
	struct rusage ru;
	struct rlimit rl;
	long long fds = open_fds();
	FILE *f;
	int rc = 0;

	if (getrusage(RUSAGE_SELF, &ru) == 0)
		rc |= bw_buf_printf(
			b,
			"# HELP process_cpu_seconds_total User and system CPU "
			"time spent in seconds.\n"
			"# TYPE process_cpu_seconds_total counter\n"
			"process_cpu_seconds_total %.3f\n",
			(double)ru.ru_utime.tv_sec +
				(double)ru.ru_stime.tv_sec +
				(double)(ru.ru_utime.tv_usec +
					 ru.ru_stime.tv_usec) /
					1e6);
	if ((f = fopen("/proc/self/statm", "re")) != NULL) {
		if (fscanf(f, "%llu %llu", &size, &resident) == 2 && page > 0)
			rc |= bw_buf_printf(
				b,
				"# HELP process_virtual_memory_bytes Virtual "
				"memory size in bytes.\n"
				"# TYPE process_virtual_memory_bytes gauge\n"
				"process_virtual_memory_bytes %llu\n"
				"# HELP process_resident_memory_bytes Resident "
				"memory size in bytes.\n"
				"# TYPE process_resident_memory_bytes gauge\n"
				"process_resident_memory_bytes %llu\n",
				size * (unsigned long long)page,
				resident * (unsigned long long)page);
		fclose(f);
	}
	if (fds >= 0)
		rc |= bw_buf_printf(b,
				    "# HELP process_open_fds Number of open "
				    "file descriptors.\n"
				    "# TYPE process_open_fds gauge\n"
				    "process_open_fds %lld\n",
				    fds);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		rc |= bw_buf_printf(b,
				    "# HELP process_max_fds Maximum number of "
				    "open file descriptors.\n"
				    "# TYPE process_max_fds gauge\n"
				    "process_max_fds %llu\n",
				    (unsigned long long)rl.rlim_cur);
	rc |= bw_buf_printf(b,
			    "# HELP process_start_time_seconds Start time of "
			    "the process since unix epoch in seconds.\n"
			    "# TYPE process_start_time_seconds gauge\n"
			    "process_start_time_seconds %lld\n",
			    started_s);
	return rc;
}
