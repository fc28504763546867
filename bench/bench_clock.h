/* The C benches' clock (gcmload, crc_speed): seconds on CLOCK_MONOTONIC.
 */
#ifndef BULWARK_BENCH_CLOCK_H
#define BULWARK_BENCH_CLOCK_H

#include <time.h>

static inline double
bench_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
