/* Unit tests for the SQLite backend's store (host/sqlite/): schema and
 * pragmas, clients, files, messages, reopening, and databases made by the
 * sqlite3 command-line tool.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "bulwark/err.h"
#include "store/sqlite/sqlite_int.h"

#define MAX_ROWS 8

struct fx {
	char dir[64];
	char path[128];
	struct sq_store *s;
};

struct clients_seen {
	int n;
	int stop_after; /* 0: never stop */
	struct bw_client_rec rec[MAX_ROWS];
};

struct files_seen {
	int n;
	int stop_after;
	struct bw_file_rec rec[MAX_ROWS];
};

static int
setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	int n;

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/sq_store_XXXXXX");
	n = snprintf(f->path, sizeof f->path, "%s/defensive.db", f->dir);
	if (n < 0 || (size_t)n >= sizeof f->path || mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	n = snprintf(f->path, sizeof f->path, "%s/defensive.db", f->dir);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;
	struct dirent *e;
	char p[512];
	DIR *d;

	sq_store_close(f->s);
	if ((d = opendir(f->dir)) != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 ||
			    strcmp(e->d_name, "..") == 0)
				continue;
			if (snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name) <
			    (int)sizeof p)
				unlink(p);
		}
		closedir(d);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Runs the sqlite3 command-line tool on db and returns its first output line
 * (without the newline) in out. sql must not contain double quotes. */
static int
sqlite_cli(const char *db, const char *sql, char *out, size_t cap)
{
	char cmd[2048];
	FILE *p;
	int n;

	n = snprintf(cmd, sizeof cmd, "sqlite3 '%s' \"%s\" 2>&1", db, sql);
	if (n < 0 || (size_t)n >= sizeof cmd)
		return -1;
	if ((p = popen(cmd, "r")) == NULL)
		return -1;
	out[0] = '\0';
	if (fgets(out, (int)cap, p) != NULL)
		out[strcspn(out, "\n")] = '\0';
	while (fgetc(p) != EOF) {
	}
	return pclose(p) == 0 ? 0 : -1;
}

static void
open_store(struct fx *f)
{
	assert_int_equal(sq_store_open(&f->s, f->path), 0);
	assert_non_null(f->s);
}

static void
reopen_store(struct fx *f)
{
	sq_store_close(f->s);
	f->s = NULL;
	open_store(f);
}

static void
make_client(struct bw_client_rec *c, uint8_t id_byte, const char *name)
{
	memset(c, 0, sizeof *c);
	memset(c->id, id_byte, sizeof c->id);
	snprintf(c->name, sizeof c->name, "%s", name);
}

static void
make_file(struct bw_file_rec *r, uint8_t id_byte, const char *file_name,
	  const char *path_name)
{
	memset(r, 0, sizeof *r);
	memset(r->client_id, id_byte, sizeof r->client_id);
	snprintf(r->file_name, sizeof r->file_name, "%s", file_name);
	snprintf(r->path_name, sizeof r->path_name, "%s", path_name);
}

static int
collect_client(void *arg, const struct bw_client_rec *c)
{
	struct clients_seen *seen = arg;

	if (seen->n >= MAX_ROWS)
		return -1;
	seen->rec[seen->n++] = *c;
	return seen->stop_after != 0 && seen->n >= seen->stop_after ? 7 : 0;
}

static int
collect_file(void *arg, const struct bw_file_rec *r)
{
	struct files_seen *seen = arg;

	if (seen->n >= MAX_ROWS)
		return -1;
	seen->rec[seen->n++] = *r;
	return seen->stop_after != 0 && seen->n >= seen->stop_after ? 9 : 0;
}

static void
load_clients(struct sq_store *s, struct clients_seen *seen)
{
	memset(seen, 0, sizeof *seen);
	assert_int_equal(sq_store_load_clients(s, collect_client, seen), 0);
}

static void
load_files(struct sq_store *s, struct files_seen *seen)
{
	memset(seen, 0, sizeof *seen);
	assert_int_equal(sq_store_load_files(s, collect_file, seen), 0);
}

static const struct bw_client_rec *
find_client(const struct clients_seen *seen, const char *name)
{
	int i;

	for (i = 0; i < seen->n; i++) {
		if (strcmp(seen->rec[i].name, name) == 0)
			return &seen->rec[i];
	}
	return NULL;
}

static void
new_database_has_tables_version_1_wal_and_mode_0600(void **state)
{
	struct fx *f = *state;
	struct stat st;
	char out[256];

	open_store(f);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(
		sqlite_cli(f->path, "pragma journal_mode", out, sizeof out), 0);
	assert_string_equal(out, "wal");
	assert_int_equal(
		sqlite_cli(f->path, "pragma user_version", out, sizeof out), 0);
	assert_string_equal(out, "1");
	assert_int_equal(
		sqlite_cli(
			f->path,
			"select group_concat(name) from (select name from "
			"sqlite_master where type = 'table' and name in "
			"('clients', 'files', 'messages', 'sqlite_sequence') "
			"order by name)",
			out, sizeof out),
		0);
	assert_string_equal(out, "clients,files,messages,sqlite_sequence");
}

static void
inserted_client_without_keys_loads_back_without_keys(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	struct bw_client_rec c;

	open_store(f);
	make_client(&c, 0x11, "alice");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_memory_equal(seen.rec[0].id, c.id, BW_ID_LEN);
	assert_string_equal(seen.rec[0].name, "alice");
	assert_false(seen.rec[0].has_pubkey);
	assert_false(seen.rec[0].has_aes);
	assert_int_equal(seen.rec[0].last_seen, 0);
}

static void
duplicate_name_is_eexist(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	struct bw_client_rec c;

	open_store(f);
	make_client(&c, 0x11, "alice");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	make_client(&c, 0x22, "alice");
	assert_int_equal(sq_store_client_insert(f->s, &c), BW_EEXIST);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 1);
}

static void
duplicate_id_is_eexist(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	struct bw_client_rec c;

	open_store(f);
	make_client(&c, 0x11, "alice");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	make_client(&c, 0x11, "bob");
	assert_int_equal(sq_store_client_insert(f->s, &c), BW_EEXIST);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.rec[0].name, "alice");
}

static void
name_without_nul_is_too_big(void **state)
{
	struct fx *f = *state;
	struct bw_client_rec c;

	open_store(f);
	make_client(&c, 0x11, "");
	memset(c.name, 'a', sizeof c.name);
	assert_int_equal(sq_store_client_insert(f->s, &c), BW_ETOOBIG);
}

static void
keys_names_and_last_seen_survive_reopen(void **state)
{
	struct fx *f = *state;
	const struct bw_client_rec *got;
	struct clients_seen seen;
	struct bw_client_rec a, b;
	uint8_t pub[BW_RSA_PUB_LEN], aes[BW_AES_KEY_LEN];
	size_t i;

	for (i = 0; i < sizeof pub; i++)
		pub[i] = (uint8_t)(i * 7 + 1);
	for (i = 0; i < sizeof aes; i++)
		aes[i] = (uint8_t)(0xa0 + i);
	open_store(f);
	make_client(&a, 0x11, "alice");
	make_client(&b, 0x22, "bob");
	b.last_seen = 1600000000;
	assert_int_equal(sq_store_client_insert(f->s, &a), 0);
	assert_int_equal(sq_store_client_insert(f->s, &b), 0);
	assert_int_equal(
		sq_store_client_set_key(f->s, a.id, pub, aes, 0, 0, 1700000123),
		0);
	reopen_store(f);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 2);

	assert_non_null(got = find_client(&seen, "alice"));
	assert_memory_equal(got->id, a.id, BW_ID_LEN);
	assert_true(got->has_pubkey);
	assert_memory_equal(got->pubkey, pub, sizeof pub);
	assert_true(got->has_aes);
	assert_memory_equal(got->aes_key, aes, sizeof aes);
	assert_int_equal(got->last_seen, 1700000123);

	assert_non_null(got = find_client(&seen, "bob"));
	assert_memory_equal(got->id, b.id, BW_ID_LEN);
	assert_false(got->has_pubkey);
	assert_false(got->has_aes);
	assert_int_equal(got->last_seen, 1600000000);
}

static void
set_key_without_pubkey_keeps_stored_pubkey(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	struct bw_client_rec c;
	uint8_t aes2[BW_AES_KEY_LEN];

	open_store(f);
	make_client(&c, 0x11, "alice");
	c.has_pubkey = 1;
	memset(c.pubkey, 0x5a, sizeof c.pubkey);
	c.has_aes = 1;
	memset(c.aes_key, 0x01, sizeof c.aes_key);
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	memset(aes2, 0x02, sizeof aes2);
	assert_int_equal(
		sq_store_client_set_key(f->s, c.id, NULL, aes2, 0, 0, 5), 0);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_true(seen.rec[0].has_pubkey);
	assert_memory_equal(seen.rec[0].pubkey, c.pubkey, sizeof c.pubkey);
	assert_memory_equal(seen.rec[0].aes_key, aes2, sizeof aes2);
	assert_int_equal(seen.rec[0].last_seen, 5);
}

static void
set_key_of_unknown_client_is_not_found(void **state)
{
	struct fx *f = *state;
	uint8_t id[BW_ID_LEN], aes[BW_AES_KEY_LEN];

	open_store(f);
	memset(id, 0x33, sizeof id);
	memset(aes, 0x44, sizeof aes);
	assert_int_equal(sq_store_client_set_key(f->s, id, NULL, aes, 0, 0, 1),
			 BW_ENOTFOUND);
}

static void
touch_updates_last_seen(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	struct bw_client_rec c;

	open_store(f);
	make_client(&c, 0x11, "alice");
	c.last_seen = 1000;
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	assert_int_equal(sq_store_client_touch(f->s, c.id, 1700000000), 0);
	load_clients(f->s, &seen);
	assert_int_equal(seen.rec[0].last_seen, 1700000000);
	/* Same value again still counts as finding the client. */
	assert_int_equal(sq_store_client_touch(f->s, c.id, 1700000000), 0);
	assert_int_equal(sq_store_client_touch(f->s, c.id, 0), 0);
	load_clients(f->s, &seen);
	assert_int_equal(seen.rec[0].last_seen, 0);
}

static void
touch_of_unknown_client_is_not_found(void **state)
{
	struct fx *f = *state;
	uint8_t id[BW_ID_LEN];

	open_store(f);
	memset(id, 0x99, sizeof id);
	assert_int_equal(sq_store_client_touch(f->s, id, 1700000000),
			 BW_ENOTFOUND);
}

static void
last_seen_out_of_four_digit_years_is_rejected(void **state)
{
	struct fx *f = *state;
	struct bw_client_rec c;

	open_store(f);
	make_client(&c, 0x11, "alice");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	assert_int_equal(sq_store_client_touch(f->s, c.id, INT64_MAX),
			 BW_ECONFIG);
	assert_int_equal(sq_store_client_touch(f->s, c.id, 253402300800LL),
			 BW_ECONFIG);
	assert_int_equal(sq_store_client_touch(f->s, c.id, 253402300799LL), 0);
}

static void
last_seen_is_utc_datetime_text_and_never_is_null(void **state)
{
	struct fx *f = *state;
	struct bw_client_rec c;
	char out[256];

	open_store(f);
	make_client(&c, 0x11, "alice");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	assert_int_equal(sqlite_cli(f->path,
				    "select LastSeen is null from clients", out,
				    sizeof out),
			 0);
	assert_string_equal(out, "1");
	assert_int_equal(sq_store_client_touch(f->s, c.id, 1700000000), 0);
	assert_int_equal(sqlite_cli(f->path, "select LastSeen from clients",
				    out, sizeof out),
			 0);
	assert_string_equal(out, "2023-11-14 22:13:20");
	assert_int_equal(sqlite_cli(f->path,
				    "select typeof(LastSeen) from clients", out,
				    sizeof out),
			 0);
	assert_string_equal(out, "text");
}

static void
set_file_loads_back_as_given(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec r;

	open_store(f);
	make_file(&r, 0x11, "report.pdf", "files/1111/report.pdf");
	r.verified = 1;
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	reopen_store(f);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_memory_equal(seen.rec[0].client_id, r.client_id, BW_ID_LEN);
	assert_string_equal(seen.rec[0].file_name, "report.pdf");
	assert_string_equal(seen.rec[0].path_name, "files/1111/report.pdf");
	assert_true(seen.rec[0].verified);
	assert_string_equal(seen.rec[0].pending_path, "");
}

static void
same_file_name_of_two_clients_are_two_rows(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec r;

	open_store(f);
	make_file(&r, 0x11, "a.txt", "files/11/a.txt");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	make_file(&r, 0x22, "a.txt", "files/22/a.txt");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 2);
}

static void
set_without_a_row_removes_the_one_at_the_path(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec r;

	open_store(f);
	make_file(&r, 0x11, "a.txt", "files/11/a.txt");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	make_file(&r, 0x11, "b.txt", "files/11/b.txt");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	assert_int_equal(
		sq_store_file_set(f->s, r.client_id, "files/11/a.txt", NULL),
		0);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.rec[0].file_name, "b.txt");
	/* nothing at the path any more: nothing to remove, and no error */
	assert_int_equal(
		sq_store_file_set(f->s, r.client_id, "files/11/a.txt", NULL),
		0);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 1);
}

static void
set_drops_another_name_stored_at_the_same_path(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec r;
	int i, other = 0, mine = 0;

	open_store(f);
	make_file(&r, 0x11, "../a.txt", "files/11/a.txt");
	r.verified = 1;
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	/* Another client's file at a path spelled the same is not touched. */
	make_file(&r, 0x22, "a.txt", "files/11/a.txt");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	make_file(&r, 0x11, "a.txt", "files/11/a.txt");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 2);
	for (i = 0; i < seen.n; i++) {
		if (seen.rec[i].client_id[0] == 0x22) {
			other++;
			continue;
		}
		mine++;
		assert_string_equal(seen.rec[i].file_name, "a.txt");
		assert_false(seen.rec[i].verified);
	}
	assert_int_equal(other, 1);
	assert_int_equal(mine, 1);
}

static void
file_name_without_nul_is_too_big(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec r;

	open_store(f);
	make_file(&r, 0x11, "a.txt", "p");
	memset(r.file_name, 'x', sizeof r.file_name);
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 BW_ETOOBIG);
	make_file(&r, 0x11, "a.txt", "p");
	memset(r.path_name, 'x', sizeof r.path_name);
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 BW_ETOOBIG);
	/* Nothing half-done: the store still works. */
	make_file(&r, 0x11, "a.txt", "p");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 1);
}

static void
client_callback_nonzero_stops_iteration_and_is_returned(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	struct bw_client_rec c;

	open_store(f);
	make_client(&c, 0x11, "a");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	make_client(&c, 0x22, "b");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	make_client(&c, 0x33, "c");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	memset(&seen, 0, sizeof seen);
	seen.stop_after = 1;
	assert_int_equal(sq_store_load_clients(f->s, collect_client, &seen), 7);
	assert_int_equal(seen.n, 1);
	/* The next load starts from the beginning again. */
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 3);
}

static void
file_callback_nonzero_stops_iteration_and_is_returned(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec r;

	open_store(f);
	make_file(&r, 0x11, "a", "pa");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	make_file(&r, 0x11, "b", "pb");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	memset(&seen, 0, sizeof seen);
	seen.stop_after = 1;
	assert_int_equal(sq_store_load_files(f->s, collect_file, &seen), 9);
	assert_int_equal(seen.n, 1);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 2);
}

static void
spec_schema_database_without_user_version_loads(void **state)
{
	struct fx *f = *state;
	const struct bw_client_rec *got;
	struct clients_seen seen;
	struct files_seen fseen;
	struct bw_client_rec c;
	char out[256];

	assert_int_equal(
		sqlite_cli(
			f->path,
			"create table clients(ID BLOB(16) PRIMARY KEY, Name "
			"TEXT UNIQUE, PublicKey BLOB(160), LastSeen, AESKey "
			"BLOB(16));"
			"create table files(ID BLOB(16), FileName TEXT, "
			"PathName TEXT, Verified BOOLEAN, PRIMARY KEY(ID, "
			"FileName));"
			"insert into clients values(x'000102030405060708090a0b"
			"0c0d0e0f', 'carol', zeroblob(160), "
			"'2024-01-02 03:04:05', "
			"x'00112233445566778899aabbccddeeff');"
			"insert into files values(x'000102030405060708090a0b0c"
			"0d0e0f', 'x.bin', 'files/0001/x.bin', 1);",
			out, sizeof out),
		0);
	open_store(f);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_non_null(got = find_client(&seen, "carol"));
	assert_int_equal(got->id[15], 0x0f);
	assert_true(got->has_pubkey);
	assert_true(got->has_aes);
	assert_int_equal(got->aes_key[15], 0xff);
	assert_int_equal(got->last_seen, 1704164645);
	load_files(f->s, &fseen);
	assert_int_equal(fseen.n, 1);
	assert_true(fseen.rec[0].verified);
	assert_string_equal(fseen.rec[0].path_name, "files/0001/x.bin");

	make_client(&c, 0x44, "carol");
	assert_int_equal(sq_store_client_insert(f->s, &c), BW_EEXIST);
	make_client(&c, 0x44, "dave");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	assert_int_equal(
		sqlite_cli(f->path, "pragma user_version", out, sizeof out), 0);
	assert_string_equal(out, "1");
	assert_int_equal(sqlite_cli(f->path,
				    "select count(*) from sqlite_master where "
				    "name = 'messages'",
				    out, sizeof out),
			 0);
	assert_string_equal(out, "1");
}

static void
messenger_style_database_gains_columns_and_keys(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	struct files_seen fseen;
	struct bw_client_rec c;
	struct bw_file_rec r;
	uint8_t aes[BW_AES_KEY_LEN];
	char out[256];

	assert_int_equal(
		sqlite_cli(f->path,
			   "create table clients(ID BLOB(16) PRIMARY KEY, "
			   "UserName TEXT, PublicKey BLOB(160), LastSeen TEXT);"
			   "create table files(ID BLOB(16), FileName TEXT, "
			   "PathName TEXT);"
			   "create table messages(ID INTEGER PRIMARY KEY, "
			   "ToClient BLOB(16), FromClient BLOB(16), Type "
			   "INTEGER, Content BLOB);"
			   "insert into clients values(x'11111111111111111111"
			   "111111111111', 'erin', NULL, NULL);",
			   out, sizeof out),
		0);
	open_store(f);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.rec[0].name, "erin");
	assert_false(seen.rec[0].has_aes);

	memset(aes, 0x5c, sizeof aes);
	assert_int_equal(sq_store_client_set_key(f->s, seen.rec[0].id, NULL,
						 aes, 0, 0, 1700000000),
			 0);
	make_client(&c, 0x22, "erin");
	assert_int_equal(sq_store_client_insert(f->s, &c), BW_EEXIST);

	make_file(&r, 0x11, "a.txt", "files/11/a.txt");
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	assert_int_equal(sq_store_file_set(f->s, r.client_id, r.path_name, &r),
			 0);
	reopen_store(f);
	load_clients(f->s, &seen);
	assert_true(seen.rec[0].has_aes);
	assert_memory_equal(seen.rec[0].aes_key, aes, sizeof aes);
	load_files(f->s, &fseen);
	assert_int_equal(fseen.n, 1);
	assert_false(fseen.rec[0].verified);
}

static void
last_seen_written_by_other_tools_is_read(void **state)
{
	struct fx *f = *state;
	const struct bw_client_rec *got;
	struct clients_seen seen;
	char out[256];

	assert_int_equal(
		sqlite_cli(f->path,
			   "create table clients(ID BLOB(16) PRIMARY KEY, Name "
			   "TEXT UNIQUE, PublicKey BLOB(160), LastSeen, AESKey "
			   "BLOB(16));"
			   "insert into clients(ID, Name, LastSeen) values"
			   "(x'01010101010101010101010101010101', 'iso', "
			   "'2023-11-14T22:13:20Z'),"
			   "(x'02020202020202020202020202020202', 'frac', "
			   "'2023-11-14 22:13:20.123456'),"
			   "(x'03030303030303030303030303030303', 'zone', "
			   "'2023-11-15 00:13:20+02:00'),"
			   "(x'04040404040404040404040404040404', 'int', "
			   "1700000000),"
			   "(x'05050505050505050505050505050505', 'julian', "
			   "julianday('2023-11-14 22:13:20')),"
			   "(x'06060606060606060606060606060606', 'junk', "
			   "'yesterday'),"
			   "(x'07070707070707070707070707070707', 'nul', "
			   "cast(x'323032332d31312d31342032323a31333a323000' "
			   "as text));",
			   out, sizeof out),
		0);
	open_store(f);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 7);
	assert_int_equal(find_client(&seen, "iso")->last_seen, 1700000000);
	assert_int_equal(find_client(&seen, "frac")->last_seen, 1700000000);
	assert_int_equal(find_client(&seen, "zone")->last_seen, 1700000000);
	assert_int_equal(find_client(&seen, "int")->last_seen, 1700000000);
	got = find_client(&seen, "julian");
	assert_true(got->last_seen >= 1699999999 &&
		    got->last_seen <= 1700000001);
	assert_int_equal(find_client(&seen, "junk")->last_seen, 0);
	assert_int_equal(find_client(&seen, "nul")->last_seen, 1700000000);
}

static void
unreadable_rows_are_skipped(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	struct files_seen fseen;
	char out[256];

	assert_int_equal(
		sqlite_cli(
			f->path,
			"create table clients(ID BLOB(16) PRIMARY KEY, Name "
			"TEXT UNIQUE, PublicKey BLOB(160), LastSeen, AESKey "
			"BLOB(16));"
			"create table files(ID BLOB(16), FileName TEXT, "
			"PathName TEXT, Verified BOOLEAN, PRIMARY KEY(ID, "
			"FileName));"
			"insert into clients(ID, Name, AESKey) values"
			"(x'0101', 'short id', NULL),"
			"(x'02020202020202020202020202020202', NULL, NULL),"
			"(x'03030303030303030303030303030303', 'short aes', "
			"x'0011'),"
			"(x'04040404040404040404040404040404', 'fine', "
			"NULL);"
			"insert into files values"
			"(x'04040404040404040404040404040404', 'a', NULL, 0),"
			"(x'04040404040404040404040404040404', 'b', 'pb', "
			"'true');",
			out, sizeof out),
		0);
	open_store(f);
	load_clients(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.rec[0].name, "fine");
	load_files(f->s, &fseen);
	/* the row without a path is handed on as unreadable, and only that
	 * is said of it: its files are not to be taken for nobody's */
	assert_int_equal(fseen.n, 2);
	assert_true(fseen.rec[0].unreadable);
	assert_string_equal(fseen.rec[0].file_name, "");
	assert_false(fseen.rec[1].unreadable);
	assert_string_equal(fseen.rec[1].file_name, "b");
	assert_true(fseen.rec[1].verified);
}

static void
newer_schema_version_is_refused(void **state)
{
	struct fx *f = *state;
	char out[256];

	assert_int_equal(
		sqlite_cli(f->path, "pragma user_version = 2", out, sizeof out),
		0);
	assert_int_equal(sq_store_open(&f->s, f->path), BW_EDB);
	assert_null(f->s);
}

static void
path_in_missing_directory_fails_cleanly(void **state)
{
	struct fx *f = *state;
	char path[256];

	snprintf(path, sizeof path, "%s/no/such/dir/defensive.db", f->dir);
	assert_true(sq_store_open(&f->s, path) < 0);
	assert_null(f->s);
}

static void
file_that_is_not_a_database_is_edb(void **state)
{
	struct fx *f = *state;
	FILE *fp;
	int i;

	assert_non_null(fp = fopen(f->path, "w"));
	for (i = 0; i < 200; i++)
		fputs("this is not a database, only text\n", fp);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(sq_store_open(&f->s, f->path), BW_EDB);
	assert_null(f->s);
}

static void
close_of_null_is_harmless(void **state)
{
	(void)state;
	sq_store_close(NULL);
}

/* The store holds one file row: name's, with these verified and pending
 * columns. */
static void
assert_only_file(struct fx *f, const char *name, int verified,
		 const char *pending_name, const char *pending_path)
{
	struct files_seen seen;

	load_files(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.rec[0].file_name, name);
	assert_int_equal(seen.rec[0].verified != 0, verified != 0);
	assert_string_equal(seen.rec[0].pending_name, pending_name);
	assert_string_equal(seen.rec[0].pending_path, pending_path);
}

static void
file_set_makes_one_row_own_the_path_and_keeps_pending(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec a, b;

	open_store(f);
	make_file(&a, 0x11, "dir/x.bin", "files/1111/x.bin");
	a.verified = 1;
	assert_int_equal(sq_store_file_set(f->s, a.client_id, a.path_name, &a),
			 0);
	/* another name at the same path replaces it, pending fields kept */
	make_file(&b, 0x11, "other/x.bin", "files/1111/x.bin");
	b.verified = 1;
	snprintf(b.pending_name, sizeof b.pending_name, "new/x.bin");
	snprintf(b.pending_path, sizeof b.pending_path, "files/.pending/abc");
	assert_int_equal(sq_store_file_set(f->s, b.client_id, b.path_name, &b),
			 0);
	assert_only_file(f, "other/x.bin", 1, "new/x.bin",
			 "files/.pending/abc");
	/* NULL removes the path's row */
	assert_int_equal(
		sq_store_file_set(f->s, b.client_id, b.path_name, NULL), 0);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 0);
}

/* A row kept at its path is changed in place (one page, not four); any
 * other row at that path still goes, as a delete and an insert would do
 * (a database made elsewhere may hold two). */
static void
file_set_in_place_still_drops_the_other_rows_at_the_path(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec a;
	char out[256], rowid[64];

	open_store(f);
	make_file(&a, 0x11, "a.bin", "files/1111/x.bin");
	assert_int_equal(sq_store_file_set(f->s, a.client_id, a.path_name, &a),
			 0);
	assert_int_equal(
		sqlite_cli(
			f->path,
			"INSERT INTO files(ID, FileName, PathName, Verified) "
			"VALUES(x'11111111111111111111111111111111', "
			"'b.bin', 'files/1111/x.bin', 1); "
			"SELECT count(*) FROM files",
			out, sizeof out),
		0);
	assert_string_equal(out, "2");
	assert_int_equal(sqlite_cli(f->path,
				    "SELECT rowid FROM files WHERE FileName = "
				    "'a.bin'",
				    rowid, sizeof rowid),
			 0);
	a.verified = 1;
	snprintf(a.pending_name, sizeof a.pending_name, "new/a.bin");
	snprintf(a.pending_path, sizeof a.pending_path, "files/.pending/p1");
	assert_int_equal(sq_store_file_set(f->s, a.client_id, a.path_name, &a),
			 0);
	assert_only_file(f, "a.bin", 1, "new/a.bin", "files/.pending/p1");
	/* in place: the same row, not a new one */
	assert_int_equal(sqlite_cli(f->path,
				    "SELECT rowid FROM files WHERE FileName = "
				    "'a.bin'",
				    out, sizeof out),
			 0);
	assert_string_equal(out, rowid);
	/* and back: pending cleared, verified dropped */
	a.verified = 0;
	a.pending_name[0] = a.pending_path[0] = '\0';
	assert_int_equal(sq_store_file_set(f->s, a.client_id, a.path_name, &a),
			 0);
	assert_only_file(f, "a.bin", 0, "", "");
	/* the same name at another path is not in place: the row moves */
	snprintf(a.path_name, sizeof a.path_name, "files/1111/y.bin");
	assert_int_equal(sq_store_file_set(f->s, a.client_id, a.path_name, &a),
			 0);
	load_files(f->s, &seen);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.rec[0].path_name, "files/1111/y.bin");
}

/* A database made elsewhere whose names compare without case: the row of
 * "A.bin" is not "a.bin"'s to keep in place; it goes, as the general path
 * (delete by path, by name, insert) has it. */
static void
file_set_in_place_is_byte_for_byte_on_a_caseless_schema(void **state)
{
	struct fx *f = *state;
	struct bw_file_rec a;
	char out[256];

	assert_int_equal(
		sqlite_cli(f->path,
			   "create table files(ID BLOB(16), FileName TEXT "
			   "COLLATE NOCASE, PathName TEXT COLLATE NOCASE, "
			   "Verified BOOLEAN, PRIMARY KEY(ID, FileName))",
			   out, sizeof out),
		0);
	open_store(f);
	make_file(&a, 0x11, "A.bin", "files/1111/A.bin");
	assert_int_equal(sq_store_file_set(f->s, a.client_id, a.path_name, &a),
			 0);
	make_file(&a, 0x11, "a.bin", "files/1111/a.bin");
	a.verified = 1;
	assert_int_equal(sq_store_file_set(f->s, a.client_id, a.path_name, &a),
			 0);
	assert_only_file(f, "a.bin", 1, "", "");
	assert_int_equal(sqlite_cli(f->path, "select PathName from files", out,
				    sizeof out),
			 0);
	assert_string_equal(out, "files/1111/a.bin");
}

static void
file_set_with_a_name_too_long_changes_nothing(void **state)
{
	struct fx *f = *state;
	struct files_seen seen;
	struct bw_file_rec a, bad;

	open_store(f);
	make_file(&a, 0x11, "x.bin", "files/1111/x.bin");
	assert_int_equal(sq_store_file_set(f->s, a.client_id, a.path_name, &a),
			 0);
	bad = a;
	memset(bad.pending_name, 'n', sizeof bad.pending_name);
	assert_int_equal(
		sq_store_file_set(f->s, bad.client_id, bad.path_name, &bad),
		BW_ETOOBIG);
	load_files(f->s, &seen); /* rolled back: the old row is there */
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.rec[0].file_name, "x.bin");
	assert_string_equal(seen.rec[0].pending_name, "");
}

static void
key_state_survives_reopen_and_null_revokes(void **state)
{
	struct fx *f = *state;
	struct clients_seen seen;
	const struct bw_client_rec *got;
	struct bw_client_rec c;
	uint8_t aes[BW_AES_KEY_LEN];

	open_store(f);
	make_client(&c, 0x21, "carol");
	assert_int_equal(sq_store_client_insert(f->s, &c), 0);
	memset(aes, 0x5a, sizeof aes);
	assert_int_equal(sq_store_client_set_key(f->s, c.id, NULL, aes,
						 1700000000, 1, 5),
			 0);
	reopen_store(f);
	load_clients(f->s, &seen);
	assert_non_null(got = find_client(&seen, "carol"));
	assert_true(got->has_aes);
	assert_memory_equal(got->aes_key, aes, sizeof aes);
	assert_int_equal(got->key_issued, 1700000000);
	assert_true(got->key_used);
	assert_int_equal(
		sq_store_client_set_key(f->s, c.id, NULL, NULL, 0, 1, 6), 0);
	load_clients(f->s, &seen);
	assert_non_null(got = find_client(&seen, "carol"));
	assert_false(got->has_aes);
	assert_true(got->key_used);
}

/* The paths a delete reports; a count of calls, and a refusal from the
 * refuse-th call on (0: none). */
struct paths_seen {
	int n, refuse;
	char last[BW_PATH_CAP];
};

static int
see_path(void *arg, const char *path)
{
	struct paths_seen *ps = arg;

	ps->n++;
	snprintf(ps->last, sizeof ps->last, "%s", path);
	return ps->refuse != 0 && ps->n >= ps->refuse ? BW_ENOMEM : 0;
}

static int
count_row(void *arg, const struct bw_msg_rec *m)
{
	(void)m;
	(*(int *)arg)++;
	return 0;
}

/* A delete reports each content file's path before it commits; a caller
 * that cannot keep one refuses it, and nothing is deleted (the files are
 * the caller's to remove only once the delete returned 0). */
static void
msg_delete_reports_paths_and_a_refusal_rolls_it_back(void **state)
{
	struct fx *f = *state;
	struct bw_msg_rec m;
	struct paths_seen ps;
	uint64_t n = 9, bytes = 9;
	int i, rows;

	assert_int_equal(sq_store_open(&f->s, f->path), 0);
	for (i = 0; i < 3; i++) {
		memset(&m, 0, sizeof m);
		memset(m.to, 0x11, sizeof m.to);
		memset(m.from, 0x22, sizeof m.from);
		m.type = 4;
		m.size = 100000;
		snprintf(m.path, sizeof m.path, "messages/c%d", i);
		assert_int_equal(sq_store_begin(f->s), 0);
		assert_int_equal(sq_store_msg_insert(f->s, &m), 0);
		assert_int_equal(sq_store_commit(f->s), 0);
	}
	memset(&ps, 0, sizeof ps);
	ps.refuse = 2;
	assert_int_equal(sq_store_msg_delete(f->s, m.to, m.id, see_path, &ps,
					     &n, &bytes),
			 BW_ENOMEM);
	assert_int_equal(n, 0);
	assert_int_equal(bytes, 0);
	rows = 0;
	assert_int_equal(
		sq_store_msg_each(f->s, m.to, 0, 0, 0, 0, count_row, &rows), 0);
	assert_int_equal(rows, 3);
	memset(&ps, 0, sizeof ps);
	assert_int_equal(sq_store_msg_delete(f->s, m.to, m.id, see_path, &ps,
					     &n, &bytes),
			 0);
	assert_int_equal(ps.n, 3);
	assert_string_equal(ps.last, "messages/c2");
	assert_int_equal(n, 3);
	assert_int_equal(bytes, 300000);
	rows = 0;
	assert_int_equal(
		sq_store_msg_each(f->s, m.to, 0, 0, 0, 0, count_row, &rows), 0);
	assert_int_equal(rows, 0);
}

/* The WAL header's checkpoint sequence: it counts the WAL's restarts. */
static uint32_t
wal_restarts(const char *db)
{
	unsigned char h[16];
	char p[600];
	FILE *fp;

	snprintf(p, sizeof p, "%s-wal", db);
	fp = fopen(p, "rb");
	assert_non_null(fp);
	assert_int_equal(fread(h, 1, sizeof h, fp), sizeof h);
	fclose(fp);
	return (uint32_t)h[12] << 24 | (uint32_t)h[13] << 16 |
	       (uint32_t)h[14] << 8 | h[15];
}

static void
no_checkpoint_due(void *arg)
{
	(void)arg;
}

/* Pages the owner's connection read from the file since it opened. */
static int
owner_misses(struct fx *f)
{
	int cur = 0, hi = 0;

	assert_int_equal(sqlite3_db_status(f->s->db, SQLITE_DBSTATUS_CACHE_MISS,
					   &cur, &hi, 0),
			 SQLITE_OK);
	return cur;
}

/* The WAL starts over on a worker, after a checkpoint that copied all of
 * it, with a commit on the owner's own connection: the owner's page cache
 * survives, and its next reads of the messages come from it. A commit by
 * the second connection (as the restart once was) makes SQLite drop the
 * owner's whole cache, and the same reads go back to the file. */
static void
a_wal_restart_keeps_the_owners_page_cache(void **state)
{
	static const uint8_t body[100] = {1};
	struct fx *f = *state;
	struct bw_msg_rec m;
	int i, rows, copied, misses;
	uint32_t seq;

	open_store(f);
	assert_int_equal(
		sq_store_ckpt_open(f->s, 1000000, no_checkpoint_due, NULL), 0);
	assert_non_null(f->s->ckpt_db);
	assert_int_equal(sq_store_begin(f->s), 0);
	for (i = 0; i < 2000; i++) {
		memset(&m, 0, sizeof m);
		memset(m.to, 0x11, sizeof m.to);
		memset(m.from, 0x22, sizeof m.from);
		m.type = 3;
		m.size = sizeof body;
		m.content = body;
		assert_int_equal(sq_store_msg_insert(f->s, &m), 0);
	}
	assert_int_equal(sq_store_commit(f->s), 0);
	rows = 0;
	assert_int_equal(
		sq_store_msg_each(f->s, m.to, 0, 0, 0, 1, count_row, &rows), 0);
	assert_int_equal(rows, 2000);

	/* a restart inside an open transaction of the owner's: left alone */
	assert_int_equal(sq_store_begin(f->s), 0);
	assert_int_equal(sq_store_wal_restart(f->s), BW_EDB);
	assert_int_equal(sq_store_commit(f->s), 0);

	assert_int_equal(sq_store_checkpoint(f->s, &copied), 0);
	assert_true(copied >= f->s->wal_pages);
	seq = wal_restarts(f->path);
	assert_int_equal(sq_store_wal_restart(f->s), 0);
	assert_int_equal(wal_restarts(f->path), seq + 1);
	misses = owner_misses(f);
	rows = 0;
	assert_int_equal(
		sq_store_msg_each(f->s, m.to, 0, 0, 0, 1, count_row, &rows), 0);
	assert_int_equal(rows, 2000);
	assert_int_equal(owner_misses(f), misses);

	/* the same commit on the second connection */
	assert_int_equal(sqlite3_exec(f->s->ckpt_db,
				      "UPDATE bulwark_meta SET Value = Value "
				      "+ 1 WHERE Key = 'wal_restarts'",
				      NULL, NULL, NULL),
			 SQLITE_OK);
	misses = owner_misses(f);
	rows = 0;
	assert_int_equal(
		sq_store_msg_each(f->s, m.to, 0, 0, 0, 1, count_row, &rows), 0);
	assert_int_equal(rows, 2000);
	assert_true(owner_misses(f) > misses + 10);
}

/* A transaction that failed may have given ids to messages whose senders
 * are then told "not stored" and whose rows are dropped by id: the next
 * transaction must not give those ids again, or the drop would remove
 * another sender's stored message. They are skipped, in RAM and, once a
 * later commit records the top, across a reopen. */
static void
msg_ids_of_a_failed_transaction_are_never_given_again(void **state)
{
	struct fx *f = *state;
	struct bw_msg_rec m;
	int64_t lost, kept;

	assert_int_equal(sq_store_open(&f->s, f->path), 0);
	memset(&m, 0, sizeof m);
	memset(m.to, 0x11, sizeof m.to);
	memset(m.from, 0x22, sizeof m.from);
	m.type = 3;
	m.content = (const uint8_t *)"hello";
	m.size = 5;
	assert_int_equal(sq_store_begin(f->s), 0);
	assert_int_equal(sq_store_msg_insert(f->s, &m), 0);
	lost = m.id;
	assert_int_equal(sq_store_rollback(f->s, BW_EDB), BW_EDB);
	assert_int_equal(sq_store_begin(f->s), 0);
	assert_int_equal(sq_store_msg_insert(f->s, &m), 0);
	kept = m.id;
	assert_true(kept > lost);
	assert_int_equal(sq_store_commit(f->s), 0);
	sq_store_close(f->s);
	f->s = NULL;
	assert_int_equal(sq_store_open(&f->s, f->path), 0);
	assert_int_equal(sq_store_begin(f->s), 0);
	assert_int_equal(sq_store_msg_insert(f->s, &m), 0);
	assert_true(m.id > kept);
	assert_int_equal(sq_store_commit(f->s), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(new_database_has_tables_version_1_wal_and_mode_0600),
		T(inserted_client_without_keys_loads_back_without_keys),
		T(duplicate_name_is_eexist),
		T(duplicate_id_is_eexist),
		T(name_without_nul_is_too_big),
		T(keys_names_and_last_seen_survive_reopen),
		T(set_key_without_pubkey_keeps_stored_pubkey),
		T(set_key_of_unknown_client_is_not_found),
		T(touch_updates_last_seen),
		T(touch_of_unknown_client_is_not_found),
		T(last_seen_out_of_four_digit_years_is_rejected),
		T(last_seen_is_utc_datetime_text_and_never_is_null),
		T(set_file_loads_back_as_given),
		T(same_file_name_of_two_clients_are_two_rows),
		T(set_without_a_row_removes_the_one_at_the_path),
		T(set_drops_another_name_stored_at_the_same_path),
		T(file_name_without_nul_is_too_big),
		T(client_callback_nonzero_stops_iteration_and_is_returned),
		T(file_callback_nonzero_stops_iteration_and_is_returned),
		T(spec_schema_database_without_user_version_loads),
		T(messenger_style_database_gains_columns_and_keys),
		T(last_seen_written_by_other_tools_is_read),
		T(unreadable_rows_are_skipped),
		T(newer_schema_version_is_refused),
		T(path_in_missing_directory_fails_cleanly),
		T(file_that_is_not_a_database_is_edb),
		T(close_of_null_is_harmless),
		T(file_set_makes_one_row_own_the_path_and_keeps_pending),
		T(file_set_in_place_still_drops_the_other_rows_at_the_path),
		T(file_set_in_place_is_byte_for_byte_on_a_caseless_schema),
		T(file_set_with_a_name_too_long_changes_nothing),
		T(key_state_survives_reopen_and_null_revokes),
		T(msg_delete_reports_paths_and_a_refusal_rolls_it_back),
		T(msg_ids_of_a_failed_transaction_are_never_given_again),
		T(a_wal_restart_keeps_the_owners_page_cache),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
