/* How a service reports its live figures and what it keeps to whoever asks
 * (the console's STAT, USRS and FILS, the metrics endpoint) without either
 * including the other.
 */
#ifndef BULWARK_HOST_STATS_H
#define BULWARK_HOST_STATS_H

#include <stdint.h>

/* key: a stable machine name ("vault_uploads_active"); label: the words an
 * operator reads ("uploads in progress"). */
typedef void (*bw_stat_emit)(void *arg, const char *key, const char *label,
			     uint64_t value);

/* A service's figures: calls emit once per figure, in a fixed order. */
typedef void (*bw_stats_fn)(const void *inst, bw_stat_emit emit, void *arg);

/* One stored file, as a listing shows it. */
struct bw_file_view {
	const char *owner; /* the client's name */
	const char *name;
	uint64_t size;
	int verified;
};
/* Called once per file; a non-zero return stops the walk. */
typedef int (*bw_file_fn)(void *arg, const struct bw_file_view *f);
/* Every file a service keeps, to fn; returns how many it keeps in all. */
typedef uint64_t (*bw_each_file_fn)(const void *inst, bw_file_fn fn, void *arg);
/* What waits for one client in a service: messages and their bytes. */
typedef void (*bw_client_queue_fn)(const void *inst, const uint8_t id[16],
				   uint64_t *n, uint64_t *bytes);

#endif
