/* bw_strerror(): one table for the project's own error codes, strerror() for
 * the -errno values that modules pass through unchanged.
 */
#include <string.h>

#include "bulwark/err.h"

const char *
bw_strerror(int err)
{
	switch (err) {
	case BW_OK:
		return "success";
	case BW_EMORE:
		return "incomplete input";
	case BW_EPROTO:
		return "malformed message";
	case BW_ETOOBIG:
		return "length over its limit";
	case BW_ECRYPTO:
		return "cryptographic operation failed";
	case BW_EBADKEY:
		return "not a usable key";
	case BW_EPADDING:
		return "bad padding";
	case BW_EDB:
		return "database error";
	case BW_ENOTFOUND:
		return "not found";
	case BW_EEXIST:
		return "already exists";
	case BW_ECONFIG:
		return "invalid configuration";
	case BW_ESIZE:
		return "sizes disagree";
	case BW_ECLOSED:
		return "connection closed by peer";
	case BW_ESERVER:
		return "server responded with an error";
	case BW_EDOUBT:
		return "the database's answer was lost: committed or not";
	case BW_EFOREIGN:
		return "the peer speaks another protocol";
	default:
		break;
	}
	if (err < 0 && err > -4096)
		return strerror(-err);
	return "unknown error";
}
