/* The PostgreSQL backend's SQL: the schema's steps, one per version, and
 * the statements every session prepares (by their enum pg_stmt, named
 * "bw<N>").
 */
#include "store/pg/pg_int.h"

/* The schema, one step per version: each runs in a transaction with the
 * version's row. Tables and meanings are the embedded database's
 * (docs/storage.md): ids as 16 bytes, the verified flag, the recipient. */
static const char *const migrations[PG_SCHEMA_VERSION] = {
	/* names are bytes (0x20-0xff, not always UTF-8): kept exactly as
	 * bytea, each shown beside itself as text for psql (NameText) */
	"CREATE TABLE clients("
	"ID bytea PRIMARY KEY CHECK (octet_length(ID) = 16), "
	"Name bytea NOT NULL UNIQUE, PublicKey bytea, LastSeen timestamptz, "
	"AESKey bytea, KeyIssued bigint NOT NULL DEFAULT 0, "
	"KeyUsed boolean NOT NULL DEFAULT false, "
	"NameText text GENERATED ALWAYS AS (encode(Name, 'escape')) STORED);"
	"CREATE TABLE files("
	"ID bytea NOT NULL, FileName bytea NOT NULL, PathName text NOT NULL, "
	"Verified boolean NOT NULL DEFAULT false, PendingName bytea, "
	"PendingPath text, "
	"FileNameText text GENERATED ALWAYS AS (encode(FileName, 'escape')) "
	"STORED, PRIMARY KEY (ID, FileName));"
	"CREATE INDEX files_path ON files(ID, PathName);"
	/* ids travel as u32: the sequence ends there, and is never reused
	 * (nextval is not rolled back) */
	"CREATE SEQUENCE message_ids AS bigint MINVALUE 1 "
	"MAXVALUE 4294967295 NO CYCLE;"
	"CREATE TABLE messages("
	"ID bigint PRIMARY KEY, ToClient bytea NOT NULL, "
	"FromClient bytea NOT NULL, Type integer NOT NULL, Content bytea, "
	"ContentSize bigint, ContentPath text);"
	"CREATE INDEX messages_to ON messages(ToClient, ID);"
	"COMMENT ON TABLE clients IS 'bulwarkd: registered clients';"
	"COMMENT ON TABLE files IS 'bulwarkd: the vault''s stored files';"
	"COMMENT ON TABLE messages IS 'bulwarkd: messages not yet "
	"delivered';",
	/* 2: the order clients were registered in, across every daemon
	 * sharing the database: a node lists the clients others added since
	 * it last looked (rows that exist are numbered as they lie) */
	"ALTER TABLE clients ADD COLUMN Seq bigserial;"
	"CREATE UNIQUE INDEX clients_seq ON clients(Seq);"
	"COMMENT ON COLUMN clients.Seq IS 'bulwarkd: registration order';",
	/* 3: decryption failures with the current AES key, counted in the
	 * row: a client failing through three nodes is revoked as through
	 * one */
	"ALTER TABLE clients ADD COLUMN KeyFailures integer NOT NULL "
	"DEFAULT 0;",
	/* 4: the lock its uploader's connection holds while the version
	 * waits for its verdict: the verdict is that connection's, whichever
	 * node it reached */
	"ALTER TABLE files ADD COLUMN Uploader bigint NOT NULL DEFAULT 0;"
	"COMMENT ON COLUMN files.Uploader IS 'bulwarkd: the advisory lock "
	"of the connection that owes the verdict';",
	/* 5: what a name is compared by (its visible characters, in one
	 * canonical form): two nodes cannot register look-alikes at once.
	 * Older rows have none; every node's RAM holds their keys. */
	"ALTER TABLE clients ADD COLUMN NameKey bytea;"
	"CREATE UNIQUE INDEX clients_namekey ON clients(NameKey);"
	"COMMENT ON COLUMN clients.NameKey IS 'bulwarkd: the name as it "
	"reads (no two clients share one)';",
	/* 6: a client's pulls numbered across the nodes: a pull's deletion
	 * of what it delivered goes only while no later pull, through any
	 * node, may have planned the same rows */
	"ALTER TABLE clients ADD COLUMN PullGen bigint NOT NULL DEFAULT 0;"
	"COMMENT ON COLUMN clients.PullGen IS 'bulwarkd: the client''s "
	"latest pull';",
	/* 7: its owner, proven over TLS, asked that the plain listeners of
	 * every node refuse its id (never undone) */
	"ALTER TABLE clients ADD COLUMN TlsOnly boolean NOT NULL DEFAULT "
	"false;"
	"COMMENT ON COLUMN clients.TlsOnly IS 'bulwarkd: refused on the "
	"plain listeners';",
};

#define TS(n)	 "CASE WHEN " n " = 0 THEN NULL ELSE to_timestamp(" n ") END"
#define MSG_SIZE "coalesce(ContentSize, octet_length(Content), 0)"

/* OIDs of the built-in types the statements take */
enum {
	T_BOOL = 16,
	T_BYTEA = 17,
	T_INT8 = 20,
	T_INT4 = 23,
	T_TEXT = 25,
	T_BYTEA_ARRAY = 1001,
	T_INT8_ARRAY = 1016,
};

static const struct {
	const char *sql;
	int n;
	Oid types[PG_MAX_PARAMS];
} stmts[PS_N] = {
	[PS_CLIENT_INSERT] = {"INSERT INTO clients(ID, Name, PublicKey, "
			      "LastSeen, AESKey, KeyIssued, KeyUsed, "
			      "NameKey) "
			      "VALUES($1, $2, $3, " TS(
				      "$4") ", $5, $6, $7, $8) "
					    "ON CONFLICT DO NOTHING",
			      8,
			      {T_BYTEA, T_BYTEA, T_BYTEA, T_INT8, T_BYTEA,
			       T_INT8, T_BOOL, T_BYTEA}},
	[PS_CLIENT_SET_KEY] = {"UPDATE clients SET PublicKey = "
			       "coalesce($2, PublicKey), AESKey = $3, "
			       "KeyFailures = CASE WHEN AESKey IS DISTINCT "
			       "FROM $3 THEN 0 ELSE KeyFailures END, "
			       "KeyIssued = $4, KeyUsed = $5, "
			       "LastSeen = " TS("$6") " WHERE ID = $1",
			       6,
			       {T_BYTEA, T_BYTEA, T_BYTEA, T_INT8, T_BOOL,
				T_INT8}},
	/* many clients in one round trip: ids and times as two arrays */
	[PS_CLIENT_TOUCH] =
		{"UPDATE clients AS c SET LastSeen = "
		 "CASE WHEN v.t = 0 THEN NULL ELSE to_timestamp(v.t) "
		 "END FROM unnest($1::bytea[], $2::int8[]) AS v(id, t) "
		 "WHERE c.ID = v.id",
		 2,
		 {T_BYTEA_ARRAY, T_INT8_ARRAY}},
	[PS_FILE_DROP] = {"DELETE FROM files WHERE ID = $1 AND "
			  "(PathName = $2 OR FileName = $3)",
			  3,
			  {T_BYTEA, T_TEXT, T_BYTEA}},
	[PS_FILE_INSERT] = {"INSERT INTO files(ID, FileName, PathName, "
			    "Verified, PendingName, PendingPath, Uploader) "
			    "VALUES($1, $2, $3, $4, $5, $6, $7)",
			    7,
			    {T_BYTEA, T_BYTEA, T_TEXT, T_BOOL, T_BYTEA, T_TEXT,
			     T_INT8}},
	[PS_MSG_INSERT] = {"INSERT INTO messages(ID, ToClient, FromClient, "
			   "Type, Content, ContentSize, ContentPath) "
			   "VALUES(nextval('message_ids'), $1, $2, $3, $4, "
			   "$5, $6) RETURNING ID",
			   6,
			   {T_BYTEA, T_BYTEA, T_INT4, T_BYTEA, T_INT8, T_TEXT}},
	[PS_MSG_EACH] = {"SELECT ID, FromClient, Type, " MSG_SIZE
			 ", ContentPath, CASE WHEN $5 THEN Content END "
			 "FROM messages WHERE ToClient = $1 AND ID > $2 AND "
			 "ID <= $3 ORDER BY ID LIMIT $4",
			 5,
			 {T_BYTEA, T_INT8, T_INT8, T_INT8, T_BOOL}},
	[PS_MSG_DELETE] = {"DELETE FROM messages WHERE ToClient = $1 AND "
			   "ID <= $2 AND ($3::text IS NULL OR "
			   "ID = ANY($3::text::int8[])) "
			   "RETURNING ContentPath, " MSG_SIZE,
			   3,
			   {T_BYTEA, T_INT8, T_TEXT}},
	[PS_MSG_DROP] = {"DELETE FROM messages WHERE ID = $1", 1, {T_INT8}},
	[PS_MSG_DROP_PATH] = {"DELETE FROM messages WHERE ContentPath = $1",
			      1,
			      {T_TEXT}},
	[PS_CLIENT_GET] = {"SELECT ID, Name, PublicKey, "
			   "coalesce(extract(epoch FROM LastSeen)::int8, 0), "
			   "AESKey, KeyIssued, KeyUsed, TlsOnly FROM clients "
			   "WHERE ID = $1",
			   1,
			   {T_BYTEA}},
	[PS_FILE_GET] = {"SELECT ID, FileName, PathName, Verified, "
			 "PendingName, PendingPath, Uploader FROM files "
			 "WHERE ID = $1",
			 1,
			 {T_BYTEA}},
	/* a pull numbered (committed before its plan is read), and a
	 * deletion that goes only while its pull is the latest, the row
	 * locked so that no pull is numbered between the check and the
	 * commit */
	[PS_PULL_GEN] = {"UPDATE clients SET PullGen = PullGen + 1 WHERE ID = "
			 "$1 RETURNING PullGen",
			 1,
			 {T_BYTEA}},
	[PS_CLIENT_TLS_ONLY] = {"UPDATE clients SET TlsOnly = true WHERE ID = "
				"$1",
				1,
				{T_BYTEA}},
	[PS_PULL_HOLD] = {"SELECT 1 FROM clients WHERE ID = $1 AND PullGen = "
			  "$2 FOR UPDATE",
			  2,
			  {T_BYTEA, T_INT8}},
	[PS_CLIENT_FAIL] = {"UPDATE clients SET KeyFailures = KeyFailures + 1 "
			    "WHERE ID = $1 AND AESKey = $2 RETURNING "
			    "KeyFailures::int8",
			    2,
			    {T_BYTEA, T_BYTEA}},
	[PS_CLIENT_SINCE] = {"SELECT ID, Name, PublicKey, "
			     "coalesce(extract(epoch FROM LastSeen)::int8, 0), "
			     "AESKey, KeyIssued, KeyUsed, TlsOnly, Seq FROM "
			     "clients "
			     "WHERE Seq > $1 ORDER BY Seq LIMIT $2",
			     2,
			     {T_INT8, T_INT8}},
	[PS_MSG_PUT] = {"INSERT INTO messages(ID, ToClient, FromClient, Type, "
			"Content, ContentSize, ContentPath) "
			"VALUES($1, $2, $3, $4, $5, $6, $7) "
			"ON CONFLICT DO NOTHING",
			7,
			{T_INT8, T_BYTEA, T_BYTEA, T_INT4, T_BYTEA, T_INT8,
			 T_TEXT}},
	/* setval past id, never back */
	[PS_MSG_FLOOR] = {"SELECT setval('message_ids', greatest($1, "
			  "(SELECT CASE WHEN is_called THEN last_value ELSE 0 "
			  "END FROM message_ids)))",
			  1,
			  {T_INT8}},
};

const char *
pg_sql_migration(int64_t v)
{
	return migrations[v];
}

PGresult *
pg_sql_prepare(PGconn *c, const char *name, enum pg_stmt id)
{
	return PQprepare(c, name, stmts[id].sql, stmts[id].n, stmts[id].types);
}
