/* Rooms (docs/rooms.md, seed 004): group chat in rooms protected by a
 * password, over a line-based text protocol on a listener of its own (nc,
 * telnet, the seed's client and bulwark chat all speak it). Rooms live in
 * RAM only, while they have members.
 */
#ifndef BULWARK_SVC_ROOMS_H
#define BULWARK_SVC_ROOMS_H

#include "engine/engine.h"
#include "host/module.h"

struct bw_rooms_cfg {
	/* in_max: lines queued from one member; out_max: a member's
	 * outgoing queue (past it the member is cut off); idle_ms: a member
	 * silent this long is closed; request_ms: each menu step */
	struct bw_conn_limits limits;
	unsigned line_max;	   /* bytes of a line (not counting CR LF) */
	unsigned pause_ms;	   /* a partial line ends after this silence */
	unsigned max_members;	   /* in one room */
	unsigned max_rooms;	   /* at once */
	unsigned rate, burst;	   /* a member's lines per second, burst */
	unsigned max_attempts;	   /* wrong ids and passwords per connection */
	unsigned max_ghosts;	   /* members gone saying held lines, at once */
	struct bw_scrypt_cost kdf; /* passwords */
};

void bw_rooms_cfg_defaults(struct bw_rooms_cfg *cfg);

/* The service, on a listener of its own; figures: rooms, members, people
 * at the menu, passwords being checked. */
extern const struct bw_module bw_rooms_module;

#endif
