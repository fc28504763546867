/* Between the engine's two files: engine.c (listeners, lifecycle) and
 * conn.c (connections). Internal to the engine.
 */
#ifndef BULWARK_ENGINE_INT_H
#define BULWARK_ENGINE_INT_H

#include "engine/engine.h"

/* Sets up a connection for an accepted fd (closing fd on failure). */
void engine_conn_open(struct bw_listener *l, int fd, const char *peer);
/* Closes c now: the service's on_close, the socket, the counters; the
 * memory is freed after the current batch. why is logged if not NULL. */
void engine_conn_kill(struct bw_conn *c, const char *why);
/* The input that has arrived on c by now, read or still in the socket. */
uint64_t engine_conn_arrived(const struct bw_conn *c);
/* c's idle time has passed: 1 (and its deadline moved on) if the peer is
 * still taking output the kernel holds for it, unacknowledged bytes that
 * shrank since the last look; 0 if it is idle indeed. */
int engine_conn_still_reading(struct bw_conn *c, uint64_t now_ms);
/* conn_out.c: output */
/* The most output c may hold at any moment (BW_OUT_HARD_FACTOR x cap). */
size_t engine_out_hard(const struct bw_conn *c);
/* c's peer does not read: closed after the callback, counted. */
void engine_conn_overflow(struct bw_conn *c);
/* On, and off, the list of connections whose output the pass flushes. */
void engine_queue_add(struct bw_conn *c);
void engine_queue_del(struct bw_conn *c);
/* Writes what the socket takes: 0 (c->out may still hold bytes, then c
 * is BLOCKED until writable) or -errno. */
int engine_conn_flush(struct bw_conn *c);
/* After a flush, or on the tick: output the peer leaves unread above the
 * listener's out_max for BW_OUT_OVER_MS closes c. */
void engine_conn_measure(struct bw_conn *c, uint64_t now);
/* The idle time c is allowed now (less once it is closing). */
uint64_t engine_conn_idle_ms(const struct bw_conn *c);
/* The loop's prepoll hook: flushes queued output, 1 if some is left. */
int bw_engine_flush(void *arg);

#endif
