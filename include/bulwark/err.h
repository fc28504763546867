/* Error values shared by every module: 0 is success, a negative value is an
 * error; -errno for system failures, BW_E* for the project's own.
 */
#ifndef BULWARK_ERR_H
#define BULWARK_ERR_H

#include <errno.h>

/* On every decrypt, verify, decode and I/O call: the result must be read.
 * (cppcheck cannot parse the attribute on a member that points to a
 * function: it checks without it.) */
#ifdef __CPPCHECK__
#define BW_WUR
#else
#define BW_WUR __attribute__((warn_unused_result))
#endif

enum bw_err {
	BW_OK = 0,
	BW_EMORE = -20001,    /* incomplete input: feed more bytes */
	BW_EPROTO = -20002,   /* malformed message */
	BW_ETOOBIG = -20003,  /* a length over its cap */
	BW_ECRYPTO = -20004,  /* a cryptographic operation failed */
	BW_EBADKEY = -20005,  /* not a usable key */
	BW_EPADDING = -20006, /* bad block-cipher padding */
	BW_EDB = -20007,      /* the database refused an operation */
	BW_ENOTFOUND = -20008,
	BW_EEXIST = -20009,
	BW_ECONFIG = -20010, /* invalid configuration or arguments */
	BW_ESIZE = -20011,   /* sizes that disagree */
	BW_ECLOSED = -20012, /* peer closed the connection */
	BW_ESERVER = -20013, /* the server answered with an error */
	/* the database's answer to a COMMIT was lost: done or not, unknown
	 * (failed as BW_EDB is, by what cannot keep both outcomes open) */
	BW_EDOUBT = -20014,
	/* the peer speaks another protocol (a client at the wrong port) */
	BW_EFOREIGN = -20015,
	BW_EBUSY = -EBUSY, /* a shared resource is at its limit */
	BW_ENOMEM = -ENOMEM,
	BW_ETIMEDOUT = -ETIMEDOUT,
};

/* Returns a static string describing err (either a BW_E* code or -errno). */
const char *bw_strerror(int err);

#endif
