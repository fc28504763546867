/* The client probe's reading of a client's byte stream (probe_check.c):
 * each request framed by its header, its fixed fields looked at, the
 * padding between requests told from the start of the next, and the
 * kinds of deviation each connection showed, tallied for the report.
 */
#ifndef BULWARK_CLI_PROBE_CLIENT_INT_H
#define BULWARK_CLI_PROBE_CLIENT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "cli/probe_int.h"

enum ckind {
	K_PADDED,	  /* requests zero-padded to 1024 bytes */
	K_SIZE_ZERO,	  /* payload size 0, the fields following */
	K_SIZE_WRONG,	  /* payload size not what the request holds */
	K_SPLIT,	  /* a request in more than one write */
	K_ONE_REQUEST,	  /* a vault session's request, then closed */
	K_RESET,	  /* reset the connection after a reply */
	K_VERSION,	  /* a version byte not the spec's */
	K_TYPE1_CONTENT,  /* a key request (603 type 1) with content */
	K_NAME_NOT_UTF8,  /* a name that is not UTF-8 */
	K_NAME_MALFORMED, /* a name field with no NUL, or empty */
	K_UNKNOWN_CODE,	  /* a request code neither spec has */
	K_KINDS
};

struct ctally {
	int verbose;
	uint64_t conns, requests;
	uint64_t n[K_KINDS];	    /* connections that showed each kind */
	char example[K_KINDS][128]; /* the first one seen */
};

struct ccheck {
	struct ctally *t;
	unsigned id;
	uint64_t in;	  /* bytes the client sent */
	uint64_t pos;	  /* of them, the bytes the reader has taken */
	uint64_t replies; /* bytes relayed back to it */
	enum { C_HDR, C_HEAD, C_SKIP, C_PAD, C_LOST } st;
	uint8_t hdr[23];
	size_t hdr_have;
	uint16_t code;
	uint8_t version;
	uint32_t size;
	uint8_t head[512];
	size_t head_have, head_want;
	uint64_t left, req_len; /* payload still to come; the request's */
	uint64_t pad_left, zeros;
	unsigned pieces;	   /* reads the request's bytes came in */
	uint64_t reads, last_read; /* reads so far; the request's last */
	unsigned requests, seen;
	int vault, padded;
};

void ccheck_init(struct ccheck *k, unsigned id, struct ctally *t);
/* The client's next n bytes (one read). */
void ccheck_bytes(struct ccheck *k, const uint8_t *b, size_t n);
/* The connection ended (reset: by the client's reset). */
void ccheck_end(struct ccheck *k, int reset, struct ctally *t);
/* The report: one case per kind. Returns the exit status. */
int ctally_report(const struct ctally *t, struct probe *p, int json,
		  const char *html);

#endif
