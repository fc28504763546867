/* The LastSeen codec: Unix seconds <-> the 'YYYY-MM-DD HH:MM:SS' UTC text we
 * write, and the other forms other implementations of the spec leave in a
 * database (ISO text with 'T', fractions and zones; Julian days; seconds as
 * a real). Pure: no SQLite, no I/O.
 */
#include <string.h>
#include <time.h>

#include "bulwark/err.h"
#include "bulwark/util.h"
#include "store/sqlite/lastseen.h"

int
bw_lastseen_format(int64_t t, char out[BW_LASTSEEN_TEXT + 1])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if ((int64_t)tt != t || gmtime_r(&tt, &tm) == NULL ||
	    tm.tm_year < -1900 || tm.tm_year > 9999 - 1900)
		return BW_ECONFIG;
	if (strftime(out, BW_LASTSEEN_TEXT + 1, "%Y-%m-%d %H:%M:%S", &tm) !=
	    BW_LASTSEEN_TEXT)
		return BW_ECONFIG;
	return 0;
}

/* Reads n decimal digits at *p, advancing it; -1 if they are not there. */
static int
digits(const unsigned char **p, const unsigned char *end, int n)
{
	int v = 0;

	if (end - *p < n)
		return -1;
	while (n-- > 0) {
		if (**p < '0' || **p > '9')
			return -1;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	return v;
}

/* Consumes one character of set at *p; 0 if it is there, else -1. */
static int
expect(const unsigned char **p, const unsigned char *end, const char *set)
{
	if (*p == end || **p == '\0' || strchr(set, **p) == NULL)
		return -1;
	(*p)++;
	return 0;
}

int
bw_lastseen_parse(const char *text, size_t len, int64_t *out)
{
	const unsigned char *p = (const unsigned char *)text;
	const unsigned char *end = p + len;
	int y, mo, d, h, mi, sec = 0, zh = 0, zm = 0, sign = 0;

	if ((y = digits(&p, end, 4)) < 0 || expect(&p, end, "-") != 0 ||
	    (mo = digits(&p, end, 2)) < 0 || expect(&p, end, "-") != 0 ||
	    (d = digits(&p, end, 2)) < 0 || expect(&p, end, " T") != 0 ||
	    (h = digits(&p, end, 2)) < 0 || expect(&p, end, ":") != 0 ||
	    (mi = digits(&p, end, 2)) < 0)
		return -1;
	if (expect(&p, end, ":") == 0) {
		if ((sec = digits(&p, end, 2)) < 0)
			return -1;
		if (expect(&p, end, ".") == 0) {
			if (digits(&p, end, 1) < 0) /* a fraction has digits */
				return -1;
			while (p != end && *p >= '0' && *p <= '9')
				p++;
		}
	}
	if (p != end && (*p == '+' || *p == '-')) {
		sign = *p++ == '+' ? 1 : -1;
		if ((zh = digits(&p, end, 2)) < 0)
			return -1;
		(void)expect(&p, end, ":");
		if ((zm = digits(&p, end, 2)) < 0)
			return -1;
	} else {
		(void)expect(&p, end, "Z");
	}
	if (p != end || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
	    mi > 59 || sec > 60 || zh > 23 || zm > 59)
		return -1;
	*out = bw_utc_seconds(y, mo, d, h, mi, sec) -
	       sign * (zh * 3600 + zm * 60);
	return 0;
}

int
bw_lastseen_from_real(double v, int64_t *out)
{
	if (v >= 1721059.5 && v < 5373484.5) /* a Julian day, years 0-9999 */
		*out = (int64_t)((v - 2440587.5) * 86400.0);
	else if (v >= 0 && v < 253402300800.0) /* Unix seconds */
		*out = (int64_t)v;
	else
		return -1;
	return 0;
}
