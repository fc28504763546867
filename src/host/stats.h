/* How a service reports its live figures to whoever asks (the console's
 * STAT, the metrics endpoint) without either including the other.
 */
#ifndef BULWARK_SVC_STATS_H
#define BULWARK_SVC_STATS_H

#include <stdint.h>

/* key: a stable machine name ("vault_uploads_active"); label: the words an
 * operator reads ("uploads in progress"). */
typedef void (*bw_stat_emit)(void *arg, const char *key, const char *label,
			     uint64_t value);

/* A service's figures: calls emit once per figure, in a fixed order. */
typedef void (*bw_stats_fn)(const void *inst, bw_stat_emit emit, void *arg);

#endif
