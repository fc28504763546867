/* What the messenger's conformance cases share across their two files:
 * the codes, the run's users, sessions and the messages sent, and the
 * requests they build.
 */
#ifndef BULWARK_CLI_PROBE_MSG_INT_H
#define BULWARK_CLI_PROBE_MSG_INT_H

#include <stdint.h>

#include "cli/probe_int.h"

#define V 2 /* the client version the spec names */
enum { REGISTER = 600, LIST, PUBKEY, SEND, PULL };
enum { R_REGISTERED = 2100, R_LIST, R_KEY, R_STORED, R_WAITING };
#define R_ERROR	   9000
#define ENTRY_LEN  (16u + 255u)
#define RECORD_MIN (16u + 4u + 1u + 4u)
#define PULL_CAP   (256u * 1024u)

#define S_REG	  "600 register"
#define S_LIST	  "601 list"
#define S_KEY	  "602 public key"
#define S_SEND	  "603 send"
#define S_PULL	  "604 pull"
#define S_FRAME	  "Framing"
#define S_HOSTILE "Hostile input"
#define S_RESTART "Restart"

struct sent {
	uint8_t type;
	uint32_t id;
	uint8_t content[128];
	uint32_t size;
};

struct mrun {
	struct probe *p;
	struct puser a, b;
	struct pconn ca, cb; /* each user's session */
	struct sent sent[4];
	unsigned nsent;
	/* the server closes (or pads and closes) after each reply: every
	 * request of the flow goes on a connection of its own */
	int per_request;
};

/* 600 for u on c: 0 with u->id set, else -1 (the reply in *r). */
int mp_reg(struct pconn *c, struct puser *u, struct presp *r);
/* A 603 from `from` to `to` of type with content[n] (n <= 128); size_field
 * is what its content_size says. Its reply in *r (rc PC_ERROR when it could
 * not be sent). */
void mp_send(struct pconn *c, const uint8_t *from, uint8_t version,
	     const uint8_t to[16], uint8_t type, const uint8_t *content,
	     uint32_t n, uint32_t size_field, struct presp *r);

/* The connection of a user's session for its next request: c itself, or
 * a new one in c when the server takes one request per connection. */
struct pconn *mp_conn(struct mrun *m, struct pconn *c);
/* code (with its payload) from a random id, which the server cannot
 * know, is answered 9000: the running case's verdict (cap: of the reply's
 * payload read; what: the request, for the verdict). */
void mp_from_stranger(struct probe *p, uint16_t code, const void *payload,
		      uint32_t n, size_t cap, const char *what);
/* u's request on its session's connection c (mp_conn), the reply in *r
 * (at most cap bytes of payload): 0, or -1 once the case has failed for a
 * connection that is gone. */
int mp_ask(struct mrun *m, struct pconn *c, const struct puser *u,
	   uint16_t code, const void *payload, uint32_t n, struct presp *r,
	   size_t cap);

void mp_register_cases(struct mrun *m);
void mp_list_cases(struct mrun *m);
void mp_key_cases(struct mrun *m);
void mp_send_cases(struct mrun *m);

#endif
