/* A migration between two stores through their tables (host/meta.h,
 * host/blob.h): every client with its keys, every file row with its
 * verified state and its content, every queued message with its id and
 * content, and the source's highest message id, so that ids issued
 * afterwards are higher. Nothing is written to the source.
 *
 * Resumable and idempotent: what the target already holds is recognised
 * (a client by its id and name, a file row by its owner and name, a
 * message by its id, a content by its size and checksum) and left alone,
 * so a run after an interruption finishes the work and a second run finds
 * nothing to do. Then it verifies: every source row is in the target with
 * the same meaning, every message count per recipient matches, and every
 * content reads back from the target with the source's CRC.
 */
#ifndef BULWARK_HOST_MIGRATE_H
#define BULWARK_HOST_MIGRATE_H

#include <stdint.h>

#include "store/blob.h"
#include "store/meta.h"

struct bw_migrate_report {
	uint64_t clients, clients_new;
	uint64_t files, files_new;
	uint64_t messages, messages_new;
	uint64_t contents, contents_copied, bytes_copied;
	int64_t last_id; /* the source's highest message id */
};

/* Copies from into to. same_blobs: both name the same blob store (the
 * contents are checked there, not copied). 0, or an error with why. */
int bw_migrate(struct bw_meta *from, struct bw_blobs *from_blobs,
	       struct bw_meta *to, struct bw_blobs *to_blobs, int same_blobs,
	       struct bw_migrate_report *rep, char *why, size_t why_cap) BW_WUR;

#endif
