/* The cksum CRC's slice-by-8 tables, shared by crc.c and its tests.
 * Internal to the core.
 */
#ifndef BULWARK_CORE_CRC_TABLE_H
#define BULWARK_CORE_CRC_TABLE_H

#include <stdint.h>

/* bw_crc_table[0][b] is the register after feeding byte b into a zero
 * register; bw_crc_table[k][b] is bw_crc_table[k - 1][b] followed by one
 * zero byte. */
extern const uint32_t bw_crc_table[8][256];

#endif
