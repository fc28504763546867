/* Between the engine's two files: engine.c (listeners, lifecycle) and
 * conn.c (connections). Internal to the engine.
 */
#ifndef BULWARK_SVC_ENGINE_INT_H
#define BULWARK_SVC_ENGINE_INT_H

#include "svc/engine.h"

/* Sets up a connection for an accepted fd (closing fd on failure). */
void engine_conn_open(struct bw_listener *l, int fd, const char *peer);
/* Closes c now: the service's on_close, the socket, the counters; the
 * memory is freed after the current batch. why is logged if not NULL. */
void engine_conn_kill(struct bw_conn *c, const char *why);
/* The loop's prepoll hook: flushes queued output, 1 if some is left. */
int bw_engine_flush(void *arg);

#endif
