/* Sizes every layer shares: a client id, a name (the 255-byte wire field
 * holds at most 254 characters), a path under the data directory. No wire
 * layout lives here; that is src/proto/.
 */
#ifndef BULWARK_IDS_H
#define BULWARK_IDS_H

#define BW_ID_LEN   16
#define BW_NAME_CAP 256 /* 254 characters + NUL, rounded */
#define BW_PATH_CAP 512

#endif
