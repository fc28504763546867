/* The messenger's codecs (proto/msg_wire.c) and the client's contacts file
 * (cli/contacts.c): exact sizes, every malformed case, byte-at-a-time
 * feeding of the 2104 record stream, inputs that end at a guard page.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bulwark/cur.h"
#include "cli/contacts.h"
#include "proto/msg_wire.h"
#include "support/guard.h"

static const uint8_t id_a[BW_ID_LEN] = {1, 2,  3,  4,  5,  6,  7,  8,
					9, 10, 11, 12, 13, 14, 15, 16};

static void
fake_key(uint8_t k[BW_RSA_PUB_LEN])
{
	size_t i;

	for (i = 0; i < BW_RSA_PUB_LEN; i++)
		k[i] = (uint8_t)(i * 7 + 3);
}

static void
register_round_trips_and_points_into_the_input(void **state)
{
	uint8_t key[BW_RSA_PUB_LEN], wire[BW_MSG_REGISTER_LEN];
	char name[BW_NAME_CAP];
	const uint8_t *k = NULL, *p;
	struct guard g;

	(void)state;
	fake_key(key);
	assert_int_equal(bw_msg_register_encode("alice", key, wire), 0);
	guard_init(&g);
	p = place(&g, wire, sizeof(wire));
	assert_int_equal(bw_msg_register_decode(p, sizeof(wire), name, &k), 0);
	assert_string_equal(name, "alice");
	assert_ptr_equal(k, p + BW_NAME_FIELD);
	assert_memory_equal(k, key, BW_RSA_PUB_LEN);
	guard_fini(&g);
}

static void
register_of_every_wrong_size_is_refused(void **state)
{
	uint8_t key[BW_RSA_PUB_LEN], wire[BW_MSG_REGISTER_LEN + 1];
	char name[BW_NAME_CAP] = "untouched";
	const uint8_t *k = NULL;
	struct guard g;
	size_t n;

	(void)state;
	fake_key(key);
	assert_int_equal(bw_msg_register_encode("bob", key, wire), 0);
	guard_init(&g);
	for (n = 0; n <= sizeof(wire); n++) {
		if (n == BW_MSG_REGISTER_LEN)
			continue;
		assert_int_equal(
			bw_msg_register_decode(place(&g, wire, n), n, name, &k),
			BW_EPROTO);
	}
	assert_null(k);
	assert_string_equal(name, "untouched");
	guard_fini(&g);
}

static void
name_without_nul_or_with_controls_is_refused(void **state)
{
	uint8_t wire[BW_MSG_REGISTER_LEN], key[BW_RSA_PUB_LEN];
	char name[BW_NAME_CAP];
	const uint8_t *k;

	(void)state;
	memset(wire, 'x', BW_NAME_FIELD);
	assert_int_equal(bw_msg_register_decode(wire, sizeof(wire), name, &k),
			 BW_EPROTO);
	memset(wire, 0, sizeof(wire));
	assert_int_equal(bw_msg_register_decode(wire, sizeof(wire), name, &k),
			 BW_EPROTO);
	memcpy(wire, "a\x1b[2J", 6);
	assert_int_equal(bw_msg_register_decode(wire, sizeof(wire), name, &k),
			 BW_EPROTO);
	fake_key(key);
	assert_int_equal(bw_msg_register_encode("tab\there", key, wire),
			 BW_EPROTO);
}

static void
send_prefix_round_trips_and_types_are_checked_apart(void **state)
{
	struct bw_msg_send s = {{0}, 9, 0xFFFFFFFFu}, t;
	uint8_t wire[BW_MSG_SEND_PREFIX];
	unsigned type;

	(void)state;
	memcpy(s.to, id_a, BW_ID_LEN);
	bw_msg_send_encode(&s, wire);
	assert_int_equal(bw_msg_send_decode(wire, sizeof(wire), &t), 0);
	assert_memory_equal(t.to, id_a, BW_ID_LEN);
	assert_int_equal(t.type, 9);
	assert_int_equal(t.content_size, 0xFFFFFFFFu);
	assert_int_equal(bw_msg_send_decode(wire, sizeof(wire) - 1, &t),
			 BW_EPROTO);
	for (type = 0; type < 256; type++)
		assert_int_equal(bw_msg_type_known(type),
				 type >= 1 && type <= 4);
}

static void
responses_decode_only_at_their_exact_size(void **state)
{
	uint8_t buf[BW_MSG_LIST_ENTRY_LEN + 1], id[BW_ID_LEN], key[160];
	char name[BW_NAME_CAP];
	const uint8_t *k;
	uint32_t mid;
	size_t n;

	(void)state;
	fake_key(key);
	bw_msg_list_entry_encode(id_a, "carol", buf);
	assert_int_equal(
		bw_msg_list_entry_decode(buf, BW_MSG_LIST_ENTRY_LEN, id, name),
		0);
	assert_string_equal(name, "carol");
	bw_msg_stored_encode(id_a, 77, buf);
	assert_int_equal(bw_msg_stored_decode(buf, BW_MSG_STORED_LEN, id, &mid),
			 0);
	assert_int_equal(mid, 77);
	memcpy(buf, id_a, BW_ID_LEN);
	memcpy(buf + BW_ID_LEN, key, sizeof(key));
	assert_int_equal(bw_msg_pubkey_decode(buf, BW_MSG_PUBKEY_LEN, id, &k),
			 0);
	assert_ptr_equal(k, buf + BW_ID_LEN);
	for (n = 0; n < BW_MSG_LIST_ENTRY_LEN; n++) {
		assert_int_equal(bw_msg_list_entry_decode(buf, n, id, name),
				 BW_EPROTO);
		if (n != BW_MSG_PUBKEY_LEN)
			assert_int_equal(bw_msg_pubkey_decode(buf, n, id, &k),
					 BW_EPROTO);
		if (n != BW_MSG_STORED_LEN)
			assert_int_equal(bw_msg_stored_decode(buf, n, id, &mid),
					 BW_EPROTO);
	}
}

/* A 2104 payload of three records, fed a byte at a time: a header is
 * decoded only once whole, and a record that would overrun is refused. */
static void
record_stream_fed_byte_by_byte(void **state)
{
	static const uint32_t sizes[] = {0, 128, 16};
	uint8_t payload[3 * BW_MSG_RECORD_HDR + 144];
	struct bw_msg_record r = {{0}, 0, 0, 0}, got;
	size_t off = 0, i, have, k;
	uint64_t left;

	(void)state;
	for (i = 0; i < 3; i++) {
		memcpy(r.from, id_a, BW_ID_LEN);
		r.id = (uint32_t)(i + 1);
		r.type = (uint8_t)(i + 1);
		r.size = sizes[i];
		bw_msg_record_encode(&r, payload + off);
		memset(payload + off + BW_MSG_RECORD_HDR, 'a' + (int)i,
		       sizes[i]);
		off += BW_MSG_RECORD_HDR + sizes[i];
	}
	assert_int_equal(off, sizeof(payload));
	left = sizeof(payload);
	off = 0;
	for (i = 0; i < 3; i++) {
		for (have = 0; have < BW_MSG_RECORD_HDR; have++)
			assert_int_equal(bw_msg_record_decode(payload + off,
							      have, left, &got),
					 BW_EMORE);
		assert_int_equal(
			bw_msg_record_decode(payload + off, have, left, &got),
			BW_MSG_RECORD_HDR);
		assert_int_equal(got.id, i + 1);
		assert_int_equal(got.size, sizes[i]);
		k = BW_MSG_RECORD_HDR + got.size;
		off += k;
		left -= k;
	}
	assert_int_equal(left, 0);
	/* the same stream, one byte short: the last record overruns */
	assert_int_equal(bw_msg_record_decode(payload + sizeof(payload) - 41,
					      BW_MSG_RECORD_HDR, 40, &got),
			 BW_EPROTO);
	/* fewer than a header's bytes left in the payload */
	assert_int_equal(bw_msg_record_decode(payload, 7, 7, &got), BW_EPROTO);
}

static void
record_with_huge_size_is_refused_not_trusted(void **state)
{
	struct bw_msg_record r = {{0}, 1, 4, 0xFFFFFFFFu}, got;
	uint8_t hdr[BW_MSG_RECORD_HDR];

	(void)state;
	bw_msg_record_encode(&r, hdr);
	assert_int_equal(bw_msg_record_decode(hdr, sizeof(hdr), 1000, &got),
			 BW_EPROTO);
	assert_int_equal(bw_msg_record_decode(hdr, sizeof(hdr),
					      BW_MSG_RECORD_HDR + 0xFFFFFFFFull,
					      &got),
			 BW_MSG_RECORD_HDR);
}

/* --- contacts.info -------------------------------------------------------- */

/* The ids remembered after a complete pull are that pull's (anything
 * older the server did not repeat is gone); a pull cut short adds its
 * ids, and an id of a message that was not read whole is never among
 * them (bw_contacts_got is called only for messages read whole). */
static void
seen_ids_follow_complete_and_cut_pulls(void **state)
{
	struct bw_contacts a;

	(void)state;
	bw_contacts_init(&a);
	assert_int_equal(bw_contacts_got(&a, 10), 0);
	assert_int_equal(bw_contacts_got(&a, 11), 0);
	bw_contacts_pull_end(&a, 1);
	assert_true(bw_contacts_seen(&a, 10) && bw_contacts_seen(&a, 11));
	/* cut short after 11 came again and 12 was shown */
	assert_int_equal(bw_contacts_got(&a, 11), 0);
	assert_int_equal(bw_contacts_got(&a, 12), 0);
	bw_contacts_pull_end(&a, 0);
	assert_true(bw_contacts_seen(&a, 10) && bw_contacts_seen(&a, 12));
	/* complete: 10 was not repeated, so it is gone from the server */
	assert_int_equal(bw_contacts_got(&a, 11), 0);
	assert_int_equal(bw_contacts_got(&a, 12), 0);
	assert_int_equal(bw_contacts_got(&a, 13), 0);
	bw_contacts_pull_end(&a, 1);
	assert_false(bw_contacts_seen(&a, 10));
	assert_true(bw_contacts_seen(&a, 11) && bw_contacts_seen(&a, 13));
	assert_false(bw_contacts_seen(&a, 14));
	/* an empty complete pull: nothing can come again */
	bw_contacts_pull_end(&a, 1);
	assert_false(bw_contacts_seen(&a, 11));
	bw_contacts_fini(&a);
}

static void
contacts_round_trip_with_keys_names_and_seen_ids(void **state)
{
	struct bw_contacts a, b;
	struct bw_contact *c;
	char *text = NULL, *again = NULL;
	size_t n = 0, m = 0, line;
	uint8_t id2[BW_ID_LEN], key[BW_RSA_PUB_LEN];

	(void)state;
	bw_contacts_init(&a);
	bw_contacts_init(&b);
	c = bw_contacts_add(&a, id_a, "bob smith");
	assert_non_null(c);
	fake_key(key);
	assert_int_equal(bw_contacts_pin(&a, c, key), 0);
	memset(c->aes, 0x42, BW_AES_KEY_LEN);
	c->has_aes = 1;
	memcpy(id2, id_a, BW_ID_LEN);
	id2[0] = 0xee;
	assert_non_null(bw_contacts_add(&a, id2, "שרה"));
	/* a third id given the pinned bob's name: a key change, kept */
	id2[0] = 0xef;
	c = bw_contacts_add(&a, id2, "bob smith");
	assert_non_null(c);
	assert_true(c->moved);
	assert_ptr_equal(bw_contacts_by_name(&a, "bob smith"), c);
	/* the pinned bob renamed first, in the same list or long before:
	 * its name is still its own */
	assert_non_null(bw_contacts_add(&a, id_a, "robert"));
	id2[0] = 0xed;
	assert_true(bw_contacts_add(&a, id2, "bob smith")->moved);
	id2[0] = 0xee;
	assert_int_equal(bw_contacts_seen(&a, 5), 0);
	assert_int_equal(bw_contacts_got(&a, 5), 0);
	assert_int_equal(bw_contacts_got(&a, 4000000000u), 0);
	bw_contacts_pull_end(&a, 1);
	assert_int_equal(bw_contacts_seen(&a, 5), 1);
	assert_int_equal(bw_contacts_encode(&a, &text, &n), 0);
	assert_int_equal(bw_contacts_decode(text, n, &b, &line), 0);
	assert_int_equal(b.n, 4);
	c = bw_contacts_by_id(&b, id_a);
	assert_non_null(c);
	assert_true(c->has_key && c->has_aes && !c->has_offered && !c->moved);
	assert_memory_equal(c, a.c[0], sizeof(*c));
	assert_string_equal(c->pin_name, "bob smith");
	id2[0] = 0xef;
	assert_true(bw_contacts_by_id(&b, id2)->moved);
	id2[0] = 0xed;
	assert_true(bw_contacts_by_id(&b, id2)->moved);
	id2[0] = 0xee;
	assert_non_null(bw_contacts_by_id(&b, id2));
	assert_int_equal(bw_contacts_seen(&b, 5), 1);
	assert_int_equal(bw_contacts_seen(&b, 4000000000u), 1);
	assert_int_equal(bw_contacts_encode(&b, &again, &m), 0);
	assert_int_equal(n, m);
	assert_memory_equal(text, again, n);
	/* accepting the name's new holder: the old pin gives the name up */
	id2[0] = 0xed;
	bw_contacts_accept(&b, bw_contacts_by_id(&b, id2));
	assert_false(bw_contacts_by_id(&b, id2)->moved);
	assert_string_equal(bw_contacts_by_id(&b, id_a)->pin_name, "");
	bw_secure_free(text, n);
	bw_secure_free(again, m);
	bw_contacts_fini(&a);
	bw_contacts_fini(&b);
}

static void
contacts_bad_lines_are_refused_with_their_number(void **state)
{
	static const struct {
		const char *text;
		size_t line;
	} bad[] = {
		{"", 1},
		{"bulwark-contacts 2\n", 1},
		{"bulwark-contacts 1\nx\n", 2},
		{"bulwark-contacts 1\nc 0102 - - - a\n", 2},
		{"bulwark-contacts 1\nc 0102030405060708090a0b0c0d0e0f10 - - "
		 "-\n",
		 2},
		{"bulwark-contacts 1\nc 0102030405060708090a0b0c0d0e0f10 - zz "
		 "- "
		 "a\n",
		 2},
		{"bulwark-contacts 1\nc 0102030405060708090a0b0c0d0e0f10 - - - "
		 "a\x1b\n",
		 2},
		{"bulwark-contacts 1\nc 0102030405060708090a0b0c0d0e0f10 - - - "
		 "a\nc 0102030405060708090a0b0c0d0e0f10 - - - b\n",
		 3},
		{"bulwark-contacts 1\ns 1 -2\n", 2},
		{"bulwark-contacts 1\ns 99999999999\n", 2},
		{"bulwark-contacts 1\n\nc\n", 2},
	};
	struct bw_contacts cs;
	size_t i, line;

	(void)state;
	bw_contacts_init(&cs);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(bw_contacts_decode(bad[i].text,
						    strlen(bad[i].text), &cs,
						    &line),
				 BW_EPROTO);
		assert_int_equal(line, bad[i].line);
		assert_int_equal(cs.n, 0);
	}
	bw_contacts_fini(&cs);
}

static void
fingerprint_is_sixteen_groups_of_sha256(void **state)
{
	uint8_t key[BW_RSA_PUB_LEN];
	char fp[BW_FINGERPRINT_CAP];

	(void)state;
	memset(key, 0, sizeof(key));
	assert_int_equal(bw_fingerprint(key, fp), 0);
	/* sha256 of 160 zero bytes, as `head -c 160 /dev/zero | sha256sum` */
	assert_string_equal(fp, "b393 9788 42a0 fa3d 3e14 7019 6f09 8f47 3f96 "
				"78e7 2463 cb65 ec4a b558 1856 c2e4");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			register_round_trips_and_points_into_the_input),
		cmocka_unit_test(register_of_every_wrong_size_is_refused),
		cmocka_unit_test(name_without_nul_or_with_controls_is_refused),
		cmocka_unit_test(
			send_prefix_round_trips_and_types_are_checked_apart),
		cmocka_unit_test(responses_decode_only_at_their_exact_size),
		cmocka_unit_test(record_stream_fed_byte_by_byte),
		cmocka_unit_test(record_with_huge_size_is_refused_not_trusted),
		cmocka_unit_test(
			contacts_round_trip_with_keys_names_and_seen_ids),
		cmocka_unit_test(seen_ids_follow_complete_and_cut_pulls),
		cmocka_unit_test(
			contacts_bad_lines_are_refused_with_their_number),
		cmocka_unit_test(fingerprint_is_sixteen_groups_of_sha256),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
