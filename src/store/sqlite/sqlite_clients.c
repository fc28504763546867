/* The clients table: loading every row at start-up, registering a client,
 * and its key state and LastSeen.
 */
#include <string.h>

#include "bulwark/crypto.h"
#include "bulwark/err.h"
#include "bulwark/log.h"
#include "store/sqlite/sqlite_int.h"

int
sq_store_load_clients(struct sq_store *s, sq_store_client_cb cb, void *arg)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_LOAD];
	struct bw_client_rec c;
	unsigned skipped = 0, bad_time = 0;
	int rc, step;

	memset(&c, 0, sizeof c);
	rc = 0;
	while ((step = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&c, 0, sizeof c);
		if (store_column_id(st, 0, c.id) != 0 ||
		    store_column_str(st, 1, c.name, sizeof c.name) != 0 ||
		    store_column_key(st, 2, c.pubkey, sizeof c.pubkey, 0,
				     &c.has_pubkey) != 0 ||
		    store_column_key(st, 4, c.aes_key, sizeof c.aes_key, 1,
				     &c.has_aes) != 0) {
			skipped++;
			continue;
		}
		if (store_column_time(st, 3, &c.last_seen) != 0)
			bad_time++;
		c.key_issued = sqlite3_column_int64(st, 5);
		c.key_used = sqlite3_column_int64(st, 6) != 0;
		c.tls_only = sqlite3_column_int64(st, 7) != 0;
		if ((rc = cb(arg, &c)) != 0)
			break;
	}
	if (rc == 0 && step != SQLITE_DONE)
		rc = store_db_err(s->db, "load clients");
	store_done(st);
	bw_wipe(&c, sizeof c);
	if (skipped > 0)
		bw_warn("store: skipped %u unreadable clients row(s)", skipped);
	if (bad_time > 0)
		bw_warn("store: %u LastSeen value(s) not understood, read as "
			"never",
			bad_time);
	return rc;
}

int
sq_store_client_insert(struct sq_store *s, const struct bw_client_rec *c)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_INSERT];
	char when[BW_LASTSEEN_TEXT + 1];
	int rc, ext;

	if ((rc = store_bind_blob(st, 1, c->id, BW_ID_LEN)) != 0 ||
	    (rc = store_bind_str(st, 2, c->name, sizeof c->name)) != 0 ||
	    (rc = store_bind_blob(st, 3, c->has_pubkey ? c->pubkey : NULL,
				  BW_RSA_PUB_LEN)) != 0 ||
	    (rc = store_bind_time(st, 4, c->last_seen, when)) != 0 ||
	    (rc = store_bind_blob(st, 5, c->has_aes ? c->aes_key : NULL,
				  BW_AES_KEY_LEN)) != 0)
		goto out;
	if (sqlite3_bind_int(st, 6, c->key_used != 0) != SQLITE_OK) {
		rc = BW_EDB;
		goto out;
	}
	if (sqlite3_step(st) != SQLITE_DONE) {
		ext = sqlite3_extended_errcode(s->db);
		if (ext == SQLITE_CONSTRAINT_UNIQUE ||
		    ext == SQLITE_CONSTRAINT_PRIMARYKEY)
			rc = BW_EEXIST;
		else
			rc = store_db_err(s->db, "insert client");
	}
out:
	store_done(st);
	return rc;
}

int
sq_store_client_set_key(struct sq_store *s, const uint8_t id[BW_ID_LEN],
			const uint8_t *pubkey, const uint8_t *aes_key,
			int64_t issued, int used, int64_t last_seen)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_SET_KEY];
	char when[BW_LASTSEEN_TEXT + 1];
	int rc;

	if ((rc = store_bind_blob(st, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = store_bind_blob(st, 2, pubkey, BW_RSA_PUB_LEN)) != 0 ||
	    (rc = store_bind_blob(st, 3, aes_key, BW_AES_KEY_LEN)) != 0 ||
	    sqlite3_bind_int64(st, 4, issued) != SQLITE_OK ||
	    sqlite3_bind_int(st, 5, used != 0) != SQLITE_OK ||
	    (rc = store_bind_time(st, 6, last_seen, when)) != 0) {
		store_done(st);
		return rc != 0 ? rc : BW_EDB;
	}
	return store_run_change(s, ST_CLIENT_SET_KEY, "set key");
}

int
sq_store_client_tls_only(struct sq_store *s, const uint8_t id[BW_ID_LEN])
{
	sqlite3_stmt *st = s->st[ST_CLIENT_TLS_ONLY];
	int rc;

	if ((rc = store_bind_blob(st, 1, id, BW_ID_LEN)) != 0) {
		store_done(st);
		return rc;
	}
	return store_run_change(s, ST_CLIENT_TLS_ONLY, "tls only");
}

int
sq_store_client_touch(struct sq_store *s, const uint8_t id[BW_ID_LEN],
		      int64_t last_seen)
{
	sqlite3_stmt *st = s->st[ST_CLIENT_TOUCH];
	char when[BW_LASTSEEN_TEXT + 1];
	int rc;

	if ((rc = store_bind_blob(st, 1, id, BW_ID_LEN)) != 0 ||
	    (rc = store_bind_time(st, 2, last_seen, when)) != 0) {
		store_done(st);
		return rc;
	}
	return store_run_change(s, ST_CLIENT_TOUCH, "touch client");
}
