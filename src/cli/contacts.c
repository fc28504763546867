/* contacts.info: a strict line codec (every field checked, any bad line
 * refuses the file) and the lookups the messenger client needs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bulwark/fsutil.h"
#include "bulwark/util.h"
#include "cli/contacts.h"

#define MAGIC	  "bulwark-contacts 1"
#define FILE_MAX  (1024u * 1024u * 1024u)
#define LINE_HEAD 4 /* "c " and separators */

void
bw_contacts_init(struct bw_contacts *cs)
{
	memset(cs, 0, sizeof(*cs));
}

static int
indexes(struct bw_contacts *cs)
{
	if (cs->by_id.slots != NULL)
		return 0;
	if (bw_hash_init(&cs->by_id) != 0)
		return BW_ENOMEM;
	if (bw_hash_init(&cs->by_name) != 0 || bw_hash_init(&cs->by_pin) != 0) {
		bw_hash_fini(&cs->by_id);
		bw_hash_fini(&cs->by_name);
		memset(&cs->by_id, 0, sizeof(cs->by_id));
		memset(&cs->by_name, 0, sizeof(cs->by_name));
		return BW_ENOMEM;
	}
	return 0;
}

void
bw_contacts_fini(struct bw_contacts *cs)
{
	size_t i;

	for (i = 0; i < cs->n; i++)
		bw_secure_free(cs->c[i], sizeof(*cs->c[i]));
	free(cs->c);
	bw_hash_fini(&cs->by_id);
	bw_hash_fini(&cs->by_name);
	bw_hash_fini(&cs->by_pin);
	free(cs->seen);
	free(cs->got);
	memset(cs, 0, sizeof(*cs));
}

struct bw_contact *
bw_contacts_by_id(struct bw_contacts *cs, const uint8_t id[BW_ID_LEN])
{
	return cs->by_id.slots != NULL ? bw_hash_get(&cs->by_id, id, BW_ID_LEN)
				       : NULL;
}

struct bw_contact *
bw_contacts_by_name(struct bw_contacts *cs, const char *name)
{
	return cs->by_name.slots != NULL
		       ? bw_hash_get(&cs->by_name, name, strlen(name))
		       : NULL;
}

/* c is known by name from now on; the contact it was before loses it. */
static int
name_index(struct bw_contacts *cs, struct bw_contact *c)
{
	struct bw_contact *old = bw_contacts_by_name(cs, c->name);

	if (old == c)
		return 0;
	if (old != NULL) {
		(void)bw_hash_del(&cs->by_name, old->name, strlen(old->name));
		old->named = 0;
	}
	if (bw_hash_put(&cs->by_name, c->name, strlen(c->name), c) != 0)
		return BW_ENOMEM;
	c->named = 1;
	return 0;
}

static struct bw_contact *
new_contact(struct bw_contacts *cs, const uint8_t id[BW_ID_LEN])
{
	struct bw_contact *c, **grown;
	size_t cap;

	if (cs->n == BW_CONTACTS_MAX || indexes(cs) != 0)
		return NULL;
	if (cs->n == cs->cap) {
		cap = cs->cap ? cs->cap * 2 : 16;
		if ((grown = realloc(cs->c, cap * sizeof(*grown))) == NULL)
			return NULL;
		cs->c = grown;
		cs->cap = cap;
	}
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	memcpy(c->id, id, BW_ID_LEN);
	if (bw_hash_put(&cs->by_id, c->id, BW_ID_LEN, c) != 0) {
		free(c);
		return NULL;
	}
	cs->c[cs->n++] = c;
	return c;
}

struct bw_contact *
bw_contacts_add(struct bw_contacts *cs, const uint8_t id[BW_ID_LEN],
		const char *name)
{
	struct bw_contact *c = bw_contacts_by_id(cs, id), *had;
	size_t n = strlen(name);

	if (n >= BW_NAME_CAP)
		return NULL;
	if (c != NULL && strcmp(c->name, name) == 0)
		return c;
	if (c == NULL && (c = new_contact(cs, id)) == NULL)
		return NULL;
	/* a name a key was pinned under, or one a contact had that moved
	 * already, now another id's: not a first use of that id, a key
	 * change */
	had = bw_hash_get(&cs->by_pin, name, n);
	if (had == NULL && (had = bw_contacts_by_name(cs, name)) != NULL &&
	    !had->moved)
		had = NULL;
	if (had != NULL && had != c)
		c->moved = 1;
	if (c->named) {
		(void)bw_hash_del(&cs->by_name, c->name, strlen(c->name));
		c->named = 0;
	}
	memset(c->name, 0, sizeof(c->name)); /* no old bytes after the NUL */
	memcpy(c->name, name, n + 1);
	return name_index(cs, c) == 0 ? c : NULL;
}

/* c's pinned name is name ("" none), in the by_pin index. */
static int
set_pin_name(struct bw_contacts *cs, struct bw_contact *c, const char *name)
{
	if (c->pin_name[0] != '\0' &&
	    bw_hash_get(&cs->by_pin, c->pin_name, strlen(c->pin_name)) == c)
		(void)bw_hash_del(&cs->by_pin, c->pin_name,
				  strlen(c->pin_name));
	memset(c->pin_name, 0, sizeof(c->pin_name));
	snprintf(c->pin_name, sizeof(c->pin_name), "%s", name);
	if (name[0] == '\0')
		return 0;
	(void)bw_hash_del(&cs->by_pin, name, strlen(name)); /* the latest */
	return bw_hash_put(&cs->by_pin, c->pin_name, strlen(c->pin_name), c) ==
			       0
		       ? 0
		       : BW_ENOMEM;
}

int
bw_contacts_pin(struct bw_contacts *cs, struct bw_contact *c,
		const uint8_t key[BW_RSA_PUB_LEN])
{
	memcpy(c->key, key, BW_RSA_PUB_LEN);
	c->has_key = 1;
	return set_pin_name(cs, c, c->name);
}

void
bw_contacts_accept(struct bw_contacts *cs, struct bw_contact *c)
{
	struct bw_contact *had =
		bw_hash_get(&cs->by_pin, c->name, strlen(c->name));

	if (had != NULL && had != c)
		(void)set_pin_name(cs, had, "");
	c->moved = 0;
}

int
bw_contacts_seen(const struct bw_contacts *cs, uint32_t id)
{
	size_t lo = 0, hi = cs->seen_n, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (cs->seen[mid] == id)
			return 1;
		if (cs->seen[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* Appends id to a growable array of at most BW_SEEN_MAX ids. */
static int
push_id(uint32_t **a, size_t *n, size_t *cap, uint32_t id)
{
	uint32_t *grown;
	size_t want;

	if (*n == BW_SEEN_MAX)
		return BW_ETOOBIG;
	if (*n == *cap) {
		want = *cap ? *cap * 2 : 64;
		if (want > BW_SEEN_MAX)
			want = BW_SEEN_MAX;
		if ((grown = realloc(*a, want * sizeof(**a))) == NULL)
			return BW_ENOMEM;
		*a = grown;
		*cap = want;
	}
	(*a)[(*n)++] = id;
	return 0;
}

int
bw_contacts_got(struct bw_contacts *cs, uint32_t id)
{
	return push_id(&cs->got, &cs->got_n, &cs->got_cap, id);
}

static int
cmp_id(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts the remembered ids and drops repeats. */
static void
seen_tidy(struct bw_contacts *cs)
{
	size_t i, o = 0;

	if (cs->seen_n == 0)
		return;
	qsort(cs->seen, cs->seen_n, sizeof(*cs->seen), cmp_id);
	for (i = 1; i < cs->seen_n; i++) {
		if (cs->seen[i] != cs->seen[o])
			cs->seen[++o] = cs->seen[i];
	}
	cs->seen_n = o + 1;
}

void
bw_contacts_pull_end(struct bw_contacts *cs, int complete)
{
	size_t i;

	if (complete) {
		free(cs->seen);
		cs->seen = cs->got;
		cs->seen_n = cs->got_n;
		cs->seen_cap = cs->got_cap;
		cs->got = NULL;
		cs->got_cap = 0;
	} else {
		for (i = 0; i < cs->got_n; i++) {
			if (push_id(&cs->seen, &cs->seen_n, &cs->seen_cap,
				    cs->got[i]) != 0)
				break; /* BW_SEEN_MAX: the rest are not kept */
		}
	}
	cs->got_n = 0;
	seen_tidy(cs);
}

int
bw_fingerprint(const uint8_t key[BW_RSA_PUB_LEN], char out[BW_FINGERPRINT_CAP])
{
	uint8_t d[BW_SHA256_LEN];
	char hex[2 * BW_SHA256_LEN + 1];
	size_t i, o = 0;
	int rc;

	if ((rc = bw_sha256(key, BW_RSA_PUB_LEN, d)) != 0)
		return rc;
	bw_hex_encode(d, sizeof(d), hex);
	for (i = 0; i < 2 * BW_SHA256_LEN; i += 4) {
		if (i > 0)
			out[o++] = ' ';
		memcpy(out + o, hex + i, 4);
		o += 4;
	}
	out[o] = '\0';
	return 0;
}

/* --- the codec ----------------------------------------------------------- */

/* The next space-separated field of [*p, end): sets *f and *n, advances. */
static int
field(const char **p, const char *end, const char **f, size_t *n)
{
	const char *q = *p;

	while (q < end && *q != ' ')
		q++;
	if (q == *p)
		return -1;
	*f = *p;
	*n = (size_t)(q - *p);
	*p = q < end ? q + 1 : q;
	return 0;
}

/* A hex field of exactly n bytes, or "-" (absent). */
static int
opt_hex(const char *f, size_t fn, uint8_t *out, size_t n, int *has)
{
	*has = 0;
	if (fn == 1 && f[0] == '-')
		return 0;
	if (bw_hex_decode(f, fn, out, n) != 0)
		return -1;
	*has = 1;
	return 0;
}

static int
contact_line(const char *p, const char *end, struct bw_contacts *cs)
{
	struct bw_contact t, *c;
	const char *f;
	size_t n, i;
	int has;

	memset(&t, 0, sizeof(t));
	if (field(&p, end, &f, &n) != 0 ||
	    bw_hex_decode(f, n, t.id, BW_ID_LEN) != 0 ||
	    field(&p, end, &f, &n) != 0 ||
	    opt_hex(f, n, t.key, BW_RSA_PUB_LEN, &t.has_key) != 0 ||
	    field(&p, end, &f, &n) != 0 ||
	    opt_hex(f, n, t.aes, BW_AES_KEY_LEN, &t.has_aes) != 0 ||
	    field(&p, end, &f, &n) != 0 ||
	    opt_hex(f, n, t.offered, BW_RSA_PUB_LEN, &has) != 0)
		goto bad;
	t.has_offered = has;
	/* the rest of the line is the name: printable, not empty */
	n = (size_t)(end - p);
	if (n == 0 || n >= sizeof(t.name))
		goto bad;
	for (i = 0; i < n; i++) {
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			goto bad;
	}
	memcpy(t.name, p, n);
	if (bw_contacts_by_id(cs, t.id) != NULL ||
	    (c = bw_contacts_add(cs, t.id, t.name)) == NULL)
		goto bad;
	t.named = c->named;
	t.moved = 0; /* its own "m" line says */
	*c = t;
	bw_wipe(&t, sizeof(t));
	/* a pinned key's name is the contact's, unless a "p" line says */
	return c->has_key && set_pin_name(cs, c, c->name) != 0 ? -1 : 0;
bad:
	bw_wipe(&t, sizeof(t));
	return -1;
}

/* "p <id> <name>": the name that contact's key was pinned under. */
static int
pin_line(const char *p, const char *end, struct bw_contacts *cs)
{
	char name[BW_NAME_CAP];
	uint8_t id[BW_ID_LEN];
	struct bw_contact *c;
	const char *f;
	size_t n, i;

	if (field(&p, end, &f, &n) != 0 ||
	    bw_hex_decode(f, n, id, BW_ID_LEN) != 0 ||
	    (c = bw_contacts_by_id(cs, id)) == NULL || !c->has_key)
		return -1;
	n = (size_t)(end - p);
	if (n == 0 || n >= sizeof(name))
		return -1;
	for (i = 0; i < n; i++) {
		if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
			return -1;
	}
	memcpy(name, p, n);
	name[n] = '\0';
	return set_pin_name(cs, c, name) == 0 ? 0 : -1;
}

/* "m <id>": that contact's name moved to it from a pinned contact. */
static int
moved_line(const char *p, const char *end, struct bw_contacts *cs)
{
	uint8_t id[BW_ID_LEN];
	struct bw_contact *c;

	if (bw_hex_decode(p, (size_t)(end - p), id, BW_ID_LEN) != 0 ||
	    (c = bw_contacts_by_id(cs, id)) == NULL)
		return -1;
	c->moved = 1;
	return 0;
}

static int
seen_line(const char *p, const char *end, struct bw_contacts *cs)
{
	char num[16];
	const char *f;
	size_t n;
	uint64_t v;

	while (p < end) {
		if (field(&p, end, &f, &n) != 0 || n >= sizeof(num))
			return -1;
		memcpy(num, f, n);
		num[n] = '\0';
		if (bw_parse_u64(num, 0, UINT32_MAX, &v) != 0 ||
		    push_id(&cs->seen, &cs->seen_n, &cs->seen_cap,
			    (uint32_t)v) != 0)
			return -1;
	}
	seen_tidy(cs);
	return 0;
}

int
bw_contacts_decode(const char *text, size_t len, struct bw_contacts *cs,
		   size_t *line)
{
	const char *p = text, *end = text + len, *eol;
	size_t no = 0;
	int rc = 0;

	bw_contacts_fini(cs);
	*line = 0;
	while (rc == 0 && p < end) {
		no++;
		eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		if (no == 1)
			rc = (size_t)(eol - p) == strlen(MAGIC) &&
					     memcmp(p, MAGIC, strlen(MAGIC)) ==
						     0
				     ? 0
				     : -1;
		else if (eol - p >= 2 && p[0] == 'c' && p[1] == ' ')
			rc = contact_line(p + 2, eol, cs);
		else if (eol - p >= 2 && p[0] == 'm' && p[1] == ' ')
			rc = moved_line(p + 2, eol, cs);
		else if (eol - p >= 2 && p[0] == 'p' && p[1] == ' ')
			rc = pin_line(p + 2, eol, cs);
		else if (eol - p >= 1 && p[0] == 's' &&
			 (eol - p == 1 || p[1] == ' '))
			rc = seen_line(eol - p == 1 ? eol : p + 2, eol, cs);
		else
			rc = -1; /* blank lines and anything else */
		p = eol < end ? eol + 1 : end;
	}
	if (rc != 0 || no == 0) {
		*line = no ? no : 1;
		bw_contacts_fini(cs);
		return BW_EPROTO;
	}
	return 0;
}

static int
put_hex(char **o, const uint8_t *p, size_t n, int has)
{
	if (!has) {
		*(*o)++ = '-';
	} else {
		bw_hex_encode(p, n, *o);
		*o += 2 * n;
	}
	*(*o)++ = ' ';
	return 0;
}

int
bw_contacts_encode(const struct bw_contacts *cs, char **out, size_t *len)
{
	size_t per = LINE_HEAD +
		     2 * (BW_ID_LEN + 2 * BW_RSA_PUB_LEN + BW_AES_KEY_LEN) +
		     BW_NAME_CAP + 8;
	size_t cap = strlen(MAGIC) + 2 +
		     cs->n * (per + 2 * (2 * BW_ID_LEN + 3) + BW_NAME_CAP) + 4 +
		     cs->seen_n * 11;
	char *buf = malloc(cap), *o;
	size_t i, k;

	if (buf == NULL)
		return BW_ENOMEM;
	o = buf;
	memcpy(o, MAGIC "\n", strlen(MAGIC) + 1);
	o += strlen(MAGIC) + 1;
	for (i = 0; i < cs->n; i++) {
		const struct bw_contact *c = cs->c[i];

		*o++ = 'c';
		*o++ = ' ';
		put_hex(&o, c->id, BW_ID_LEN, 1);
		put_hex(&o, c->key, BW_RSA_PUB_LEN, c->has_key);
		put_hex(&o, c->aes, BW_AES_KEY_LEN, c->has_aes);
		put_hex(&o, c->offered, BW_RSA_PUB_LEN, c->has_offered);
		memcpy(o, c->name, strlen(c->name));
		o += strlen(c->name);
		*o++ = '\n';
	}
	for (i = 0; i < cs->n; i++) {
		const struct bw_contact *c = cs->c[i];

		if (c->has_key && strcmp(c->pin_name, c->name) != 0 &&
		    c->pin_name[0] != '\0') {
			*o++ = 'p';
			*o++ = ' ';
			bw_hex_encode(c->id, BW_ID_LEN, o);
			o += 2 * BW_ID_LEN;
			*o++ = ' ';
			memcpy(o, c->pin_name, strlen(c->pin_name));
			o += strlen(c->pin_name);
			*o++ = '\n';
		}
		if (c->moved) {
			*o++ = 'm';
			*o++ = ' ';
			bw_hex_encode(c->id, BW_ID_LEN, o);
			o += 2 * BW_ID_LEN;
			*o++ = '\n';
		}
	}
	if (cs->seen_n > 0) {
		*o++ = 's';
		for (k = 0; k < cs->seen_n; k++)
			o += snprintf(o, 12, " %u", (unsigned)cs->seen[k]);
		*o++ = '\n';
	}
	*out = buf;
	*len = (size_t)(o - buf);
	return 0;
}

int
bw_contacts_load(const char *path, struct bw_contacts *cs, const char **why)
{
	char *text = NULL;
	size_t len = 0, line;
	static char msg[64];
	int rc;

	*why = NULL;
	bw_contacts_init(cs);
	rc = bw_read_small_file(path, FILE_MAX, &text, &len);
	if (rc == -ENOENT)
		return 0;
	if (rc != 0) {
		*why = bw_strerror(rc);
		return rc;
	}
	rc = bw_contacts_decode(text, len, cs, &line);
	bw_secure_free(text, len);
	if (rc != 0) {
		snprintf(msg, sizeof(msg), "line %zu is not valid", line);
		*why = msg;
	}
	return rc;
}

int
bw_contacts_save(const char *path, const struct bw_contacts *cs)
{
	char *text = NULL;
	size_t len = 0;
	int rc;

	if ((rc = bw_contacts_encode(cs, &text, &len)) != 0)
		return rc;
	rc = bw_fs_write_atomic(path, text, len, 0600);
	bw_secure_free(text, len);
	return rc;
}
