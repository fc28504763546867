/* The conformance probe's parts: the run (its options and its cases), the
 * raw connections a case speaks through (every byte sent and received kept
 * for the report), and one suite per protocol. A case names the clause of
 * the spec it checks and ends PASS, FAIL, DEVIATION (the spec's text is
 * kept, in a way other implementations are known not to keep it, and one of
 * them breaks) or SKIP (what it needs did not work, or --polite).
 */
#ifndef BULWARK_CLI_PROBE_INT_H
#define BULWARK_CLI_PROBE_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bulwark/ids.h"

enum probe_verdict { P_PASS, P_FAIL, P_DEVIATION, P_SKIP, P_VERDICTS };

/* Case flags. */
enum {
	P_HOSTILE = 1u, /* input a server must survive; off with --polite */
	P_RESTART = 2u, /* needs --restart-cmd */
};

#define PROBE_NOTE_CAP	     320
#define PROBE_TRANSCRIPT_MAX 4096

struct probe_case {
	const char *id;	     /* "vault.register.fresh" */
	const char *section; /* the spec's section, "Requests" */
	const char *clause;  /* what the spec says, in a line */
	unsigned flags;
	enum probe_verdict verdict;
	char note[PROBE_NOTE_CAP]; /* what was found, in a line */
	char *transcript;	   /* what was sent and came back (-v) */
	size_t transcript_len;
};

struct probe {
	const char *proto; /* vault, msg, rooms, console */
	char host[256];
	uint16_t port;
	unsigned timeout_ms;
	int verbose, polite, strict;
	const char *restart_cmd;
	const char *secret; /* the console's, if any */
	char tag[9];	    /* random, in every name the run registers */
	struct probe_case *cases;
	size_t n, cap;
	struct probe_case *cur; /* the case running */
	int stopped;		/* the server stopped answering */
};

/* --- cases (probe.c) -------------------------------------------------- */

/* Starts a case; 0 when it is to run, 1 when it is skipped (--polite, no
 * --restart-cmd, the server gone). */
int probe_begin(struct probe *p, const char *id, const char *section,
		const char *clause, unsigned flags);
/* Ends the running case with a verdict; note is printf-style. Returns 0
 * for PASS, -1 otherwise, so that a case may "return probe_fail(...)". */
int probe_end(struct probe *p, enum probe_verdict v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define probe_pass(p, ...)    probe_end((p), P_PASS, __VA_ARGS__)
#define probe_fail(p, ...)    probe_end((p), P_FAIL, __VA_ARGS__)
#define probe_deviate(p, ...) probe_end((p), P_DEVIATION, __VA_ARGS__)
#define probe_skip(p, ...)    probe_end((p), P_SKIP, __VA_ARGS__)
/* Adds a line to the running case's transcript. */
void probe_say(struct probe *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A name for this run: "<prefix><tag><n>", letters and digits. */
void probe_name(struct probe *p, const char *prefix, char *out, size_t cap);
/* Runs --restart-cmd and waits until the port takes connections again: 0
 * or -1 (told in the case). */
int probe_restart(struct probe *p);

/* --- connections (probe_net.c) ---------------------------------------- */

struct pconn {
	struct probe *p;
	int fd;
};

/* 0, or -1 with the case's transcript saying why. */
int pc_open(struct probe *p, struct pconn *c);
void pc_close(struct pconn *c);
/* Closes with a reset. */
void pc_abort(struct pconn *c);
/* Closes in order: a FIN, then what the server still sends (a padded
 * reply's zeros) read and dropped until it closes or ms pass, so that the
 * close is no reset (the evidence of delivery a messenger waits for). */
void pc_end(struct pconn *c, unsigned ms);
/* Sends n bytes (in pieces of at most piece bytes when piece > 0, waiting
 * gap_ms between them): 0 or -1. */
int pc_send(struct pconn *c, const void *b, size_t n);
int pc_send_slowly(struct pconn *c, const void *b, size_t n, size_t piece,
		   unsigned gap_ms);
/* Reads exactly n bytes within ms: 0, or PC_CLOSED / PC_TIMEOUT / PC_ERROR
 * (*got then says how many came). */
enum { PC_CLOSED = -2, PC_TIMEOUT = -3, PC_ERROR = -4 };
int pc_recv(struct pconn *c, void *b, size_t n, unsigned ms, size_t *got);
/* Reads whatever arrives within ms, up to cap bytes, stopping early once
 * until is found in it (when not NULL): the count, or PC_ERROR. *eof is set
 * when the server closed. */
long pc_recv_until(struct pconn *c, char *b, size_t cap, const char *until,
		   unsigned ms, int *eof);
/* Whether the server closes within ms without sending a byte: 1 closed, 0
 * still open, PC_ERROR when bytes came (kept in the transcript). */
int pc_closes(struct pconn *c, unsigned ms);
/* Whether the server is still there: a connection opens within the
 * timeout. */
int pc_alive(struct probe *p);

/* --- the framed protocols' requests and replies (probe_frame.c) ------- */

struct presp {
	int rc; /* 0, or PC_CLOSED / PC_TIMEOUT / PC_ERROR before a whole header
		 */
	uint8_t version;
	uint16_t code;
	uint32_t size;	  /* the header's payload size */
	uint8_t *payload; /* the first min(size, cap) bytes, or NULL */
	size_t got;	  /* how many of them came */
	int capped;	  /* size was past the cap: the rest was not read */
};

/* Writes a request header (id NULL: zeros) at out[BW_REQ_HDR_LEN]. */
void pf_hdr(uint8_t *out, const uint8_t *id, uint8_t version, uint16_t code,
	    uint32_t payload_size);
/* One request in one write: the header (id NULL: zeros) and payload. */
int pf_request(struct pconn *c, const uint8_t *id, uint8_t version,
	       uint16_t code, const void *payload, uint32_t n);
/* Reads one reply, at most cap payload bytes of it, within ms, into r
 * (what r held before is freed: r starts as {0}). */
void pf_response(struct pconn *c, struct presp *r, size_t cap, unsigned ms);
void presp_free(struct presp *r);
/* "2100 with 16 bytes", "no reply within 5 s", "the connection closed". */
const char *presp_str(const struct presp *r, char *buf, size_t cap);
uint32_t pf_le32(const uint8_t *b);
void pf_put_le32(uint8_t *b, uint32_t v);
/* A 255-byte name field holding s (truncated to 254). */
void pf_name(uint8_t field[255], const char *s);
/* Ends the running case on the reply r (read whole) to a padded request:
 * PASS when zeros pad it to a multiple of 1024 bytes and the server then
 * closes; DEVIATION when it is not padded, or stays open; FAIL when the
 * padding is not zeros or is cut short. */
void pf_padded_end(struct pconn *c, const struct presp *r);
/* Whether r is code with exactly size payload bytes: 1, else 0 with the
 * case's note set (FAIL) by the caller's message. */
int pf_is(const struct presp *r, uint16_t code, uint32_t size);

struct bw_rsa;

/* A user the probe registers: a random name and an RSA-1024 key (e = 17). */
struct puser {
	char name[64];
	uint8_t id[BW_ID_LEN];
	int registered;
	struct bw_rsa *key;
	uint8_t pub[160];
};
/* 0, or -1 (no key could be made: the case is told). */
int puser_new(struct probe *p, const char *prefix, struct puser *u);
void puser_free(struct puser *u);
/* A new connection that sends one request and reads its reply (cap bytes
 * of payload at most), then closes: 0 when a reply came. */
int pf_exchange(struct probe *p, const uint8_t *id, uint8_t version,
		uint16_t code, const void *payload, uint32_t n, struct presp *r,
		size_t cap);
/* Fails the running case with "expected WHAT, got ..." unless r is code
 * with size payload bytes: 0 when it is. */
int pf_expect(struct probe *p, const struct presp *r, uint16_t code,
	      uint32_t size, const char *what);

/* --- reports (probe_report.c) ----------------------------------------- */

/* The report on stdout (the table, or JSON), and in html when not NULL;
 * returns the exit status: BW_EXIT_FATAL when a case failed (or, strict,
 * deviated) or the report could not be written, else BW_EXIT_OK. */
int probe_report(const struct probe *p, int json, const char *html);
void probe_report_text(const struct probe *p, FILE *f);
int probe_report_json(const struct probe *p, FILE *f);
int probe_report_html(const struct probe *p, FILE *f);
const char *probe_verdict_name(enum probe_verdict v);

/* --- suites ----------------------------------------------------------- */

void probe_vault(struct probe *p);
void probe_msg(struct probe *p);
void probe_rooms(struct probe *p);
void probe_console(struct probe *p);

#endif
