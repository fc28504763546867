/* A one-line progress bar on standard error (bytes, percentage, rate, ETA),
 * drawn only when standard error is a terminal and not disabled.
 */
#ifndef BULWARK_CLI_PROGRESS_H
#define BULWARK_CLI_PROGRESS_H

#include <stdint.h>

struct bw_progress {
	int on;
	const char *label;
	uint64_t total, done;
	uint64_t start_ms, last_ms;
};

void bw_progress_start(struct bw_progress *p, const char *label, uint64_t total,
		       int enabled);
void bw_progress_update(struct bw_progress *p, uint64_t done);
/* Draws the final state and ends the line. */
void bw_progress_end(struct bw_progress *p);

#endif
