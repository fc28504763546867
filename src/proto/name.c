/* Name fields (255 bytes, NUL-terminated, zero-padded) and the sanitiser that
 * turns a received file name into a safe base name.
 */
#include <string.h>

#include "bulwark/err.h"
#include "proto/vault.h"

int
bw_name_decode(const uint8_t *field, size_t len, char out[BW_NAME_CAP])
{
	size_t i;

	out[0] = '\0';
	if (len != BW_NAME_FIELD)
		return BW_EPROTO;
	for (i = 0; i < len && field[i] != 0; i++) {
		if (field[i] < 0x20 || field[i] == 0x7f)
			return BW_EPROTO;
	}
	if (i == len || i == 0)
		return BW_EPROTO;
	memcpy(out, field, i);
	out[i] = '\0';
	return 0;
}

int
bw_name_encode(const char *name, uint8_t field[BW_NAME_FIELD])
{
	size_t n = strlen(name), i;

	if (n >= BW_NAME_FIELD)
		return BW_ETOOBIG;
	if (n == 0)
		return BW_EPROTO;
	for (i = 0; i < n; i++) {
		if ((uint8_t)name[i] < 0x20 || name[i] == 0x7f)
			return BW_EPROTO;
	}
	memset(field, 0, BW_NAME_FIELD);
	memcpy(field, name, n);
	return 0;
}

int
bw_file_name_sanitize(const char *name, char out[BW_NAME_CAP])
{
	const char *base = name, *p;
	size_t n;

	for (p = name; *p != '\0'; p++) {
		if (*p == '/' || *p == '\\')
			base = p + 1;
	}
	n = strlen(base);
	if (n == 0 || n >= BW_NAME_CAP || strcmp(base, ".") == 0 ||
	    strcmp(base, "..") == 0)
		return BW_EPROTO;
	for (p = base; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return BW_EPROTO;
	}
	memcpy(out, base, n + 1);
	return 0;
}
