"""`bulwark probe` against servers written here (probe_targets.py) that
keep their protocol's spec but for one defect each: the probe names the
defect with the case it belongs to and the verdict docs/conformance.md
gives it (FAIL where a client written from the spec trips, DEVIATION
where the text is kept the way other implementations are known not to
keep it), and the other cases still pass, so that a verdict never comes
from a server that fails everything. One defect per kind of deviation
the suites know, and the FAILs the spec's clauses name. The same servers
without a defect pass clean: they are the control."""

import re

import pytest

import probe_targets as pt

RESTART = {"vault": {"vault.restart.registration": "SKIP"},
           "msg": {"msg.restart.queued": "SKIP"}}

# Cases on connections of their own, unaffected by what a server does to
# a session or to the padded style: they pass on every vault target.
VAULT_CORE = ("vault.register.fresh", "vault.register.taken", "vault.register.longest_name",
              "vault.register.no_nul", "vault.register.control", "vault.key.other_name",
              "vault.reconnect.unknown", "vault.reconnect.other_name", "vault.reconnect.no_key",
              "vault.framing.split", "vault.framing.unknown_code", "vault.hostile.huge_size",
              "vault.hostile.garbage", "vault.hostile.half_header")
MSG_CORE = ("msg.register.fresh", "msg.register.taken", "msg.list.unknown", "msg.key.unknown",
            "msg.send.unknown_recipient", "msg.send.unknown_sender", "msg.pull.unknown",
            "msg.hostile.huge_size", "msg.hostile.garbage")
ROOMS_CORE = ("rooms.menu.invalid", "rooms.menu.exit", "rooms.create.ok", "rooms.create.second",
              "rooms.join.unknown_id", "rooms.join.non_numeric", "rooms.join.wrong_password",
              "rooms.join.ok", "rooms.room.relay", "rooms.room.exit", "rooms.ids.not_reused")


def probe(target, suite, *opts):
    """The probe against a started target (stopped after): its run; the
    target's threads must have raised nothing."""
    with target as srv:
        run = pt.run_probe(suite, srv.port, "-t", "3", *opts)
    assert not srv.errors, "the target's threads raised:\n" + "\n".join(srv.errors)
    assert run.report is not None and run.report["cases"], run.describe()
    return run


def not_passed(run, ignore_hostile_skips=False):
    out = {}
    for i, c in run.cases.items():
        if c["verdict"] == "PASS":
            continue
        if ignore_hostile_skips and c["hostile"] and c["verdict"] == "SKIP":
            continue
        out[i] = c["verdict"]
    return out


def check_exit(run):
    """1 when a case failed, else 0 (no --strict here)."""
    failed = run.report["summary"]["fail"] > 0
    assert run.rc == (1 if failed else 0), run.describe()


def check_core(run, core, but=()):
    for i in core:
        if i not in but:
            assert run.verdict(i) == "PASS", "core case %s: %s\n%s" % (
                i, run.cases[i]["note"], run.describe())


# --------------------------------------------------------------------------
# The controls


@pytest.mark.parametrize("target,suite,opts", [
    (pt.VaultTarget, "vault", ()),
    (pt.MsgTarget, "msg", ()),
    (pt.RoomsTarget, "rooms", ("--polite",)),  # no per-address delays
    (pt.ConsoleTarget, "console", ()),
], ids=["vault", "msg", "rooms", "console"])
def test_a_target_without_a_defect_passes(target, suite, opts):
    run = probe(target(), suite, *opts)
    assert run.rc == 0, run.describe()
    expected = dict(RESTART.get(suite, {}))
    assert not_passed(run, ignore_hostile_skips=True) == expected, run.not_passed()


# --------------------------------------------------------------------------
# The vault


# defect: {case: verdict} of every case that does not pass (the restart's
# SKIP aside)
VAULT_ONLY = {
    "never_pad": {"vault.framing.padded": "DEVIATION"},
    "pad_keep_open": {"vault.framing.padded": "DEVIATION"},
    "ignore_unknown": {"vault.framing.unknown_code": "DEVIATION"},
    "wrong_cksum": {"vault.file.received": "FAIL", "vault.crc.ok": "SKIP"},
    "same_aes": {"vault.reconnect.accepted": "FAIL"},
    "taken_payload": {"vault.register.taken": "FAIL"},
    "answer_1030": {"vault.crc.retry": "FAIL"},
}
VAULT_NOTES = {
    "never_pad": "not padded",
    "pad_keep_open": "stayed open",
    "ignore_unknown": "1099 got no reply",
    "wrong_cksum": "930766865",
    "same_aes": "fresh",
    "taken_payload": "2101 with 16 bytes",
    "answer_1030": "1030 was answered",
}


@pytest.mark.parametrize("defect", sorted(VAULT_ONLY))
def test_vault_defect_is_the_only_finding(defect):
    run = probe(pt.VaultTarget(defect=defect), "vault")
    want = {**VAULT_ONLY[defect], **RESTART["vault"]}
    assert not_passed(run) == want, run.not_passed()
    case = next(i for i, v in VAULT_ONLY[defect].items() if v != "SKIP")
    assert VAULT_NOTES[defect] in run.cases[case]["note"], run.cases[case]
    check_exit(run)
    check_core(run, VAULT_CORE, but=want)


@pytest.mark.parametrize("defect,note", [
    ("close_after_reply", "closed after one reply"),
    ("pad_always", "bytes followed the 2100"),
])
def test_vault_session_defects_deviate_from_one_connection_per_session(defect, note):
    """A server that closes after each reply, or pads every reply (and so
    closes), serves clients that send one request per connection; the
    spec keeps a session on one connection: vault.framing.session
    DEVIATION. What the probe then cannot do on its session is its
    business; what it does on connections of their own passes."""
    run = probe(pt.VaultTarget(defect=defect), "vault")
    case = run.cases["vault.framing.session"]
    assert case["verdict"] == "DEVIATION" and note in case["note"], case
    assert run.verdict("vault.framing.padded") == "PASS", run.not_passed()
    check_core(run, VAULT_CORE)
    check_exit(run)


# --------------------------------------------------------------------------
# The messenger


MSG_ONLY = {
    "delete_on_send": ({"msg.pull.reset_keeps": "DEVIATION"}, "deleted when it was sent"),
    "list_self": ({"msg.list.others": "FAIL"}, "the requester is listed"),
    "refuse_version": ({"msg.send.version": "FAIL"}, "got 9000"),
    "never_pad": ({"msg.framing.padded": "DEVIATION"}, "not padded"),
    "pad_keep_open": ({"msg.framing.padded": "DEVIATION"}, "stayed open"),
}


@pytest.mark.parametrize("defect", sorted(MSG_ONLY))
def test_msg_defect_is_the_only_finding(defect):
    """The messenger's suite takes a server that serves one request per
    connection on a connection per request: its other cases pass there
    too."""
    only, note = MSG_ONLY[defect]
    run = probe(pt.MsgTarget(defect=defect), "msg")
    assert not_passed(run) == {**only, **RESTART["msg"]}, run.not_passed()
    (case,) = only
    assert note in run.cases[case]["note"], run.cases[case]
    check_exit(run)
    check_core(run, MSG_CORE)


@pytest.mark.parametrize("defect,note", [
    ("close_after_reply", "closed after one reply"),
    ("pad_always", "bytes followed the 2101"),
])
def test_msg_session_defects_deviate_from_one_connection_per_session(defect, note):
    """The messenger's suite goes on with a connection per request on such
    a server: what needs one connection for two requests (pipelining)
    cannot pass, the rest does."""
    run = probe(pt.MsgTarget(defect=defect), "msg")
    case = run.cases["msg.framing.session"]
    assert case["verdict"] == "DEVIATION" and note in case["note"], case
    assert run.verdict("msg.framing.padded") == "PASS", run.not_passed()
    for i in ("msg.list.others", "msg.key.known", "msg.send.text", "msg.send.version",
              "msg.pull.delivered", "msg.pull.deleted", "msg.pull.reset_keeps"):
        assert run.verdict(i) == "PASS", (i, run.not_passed())
    check_core(run, MSG_CORE)
    check_exit(run)


def test_msg_a_message_deleted_as_sent_is_lost_to_a_reset_client():
    """What msg.pull.reset_keeps's DEVIATION stands for, seen from the
    target: the reset client's message is gone from its queue."""
    srv = pt.MsgTarget(defect="delete_on_send")
    run = probe(srv, "msg")
    assert run.verdict("msg.pull.reset_keeps") == "DEVIATION"
    # every queue is empty: the probe pulled what it sent, and the reset
    # pull took its message with it
    assert all(not q for q in srv.queues.values()), srv.queues


# --------------------------------------------------------------------------
# The rooms (--polite: the targets have no per-address delay)


ROOMS_ONLY = {
    "other_password": ({"rooms.join.other_password": "FAIL",
                        "rooms.join.after_wrong": "SKIP"}, "password opened room"),
    "strip_tab": ({"rooms.text.controls": "DEVIATION"}, "tab was removed"),
    "help_without_who": ({"rooms.room.help": "DEVIATION"}, "does not name /who"),
    "menu_words": ({"rooms.menu.on_connect": "DEVIATION"}, "not in the seed's words"),
    "fffd_twice": ({"rooms.text.utf8": "DEVIATION"}, "U+FFFD"),
}


@pytest.mark.parametrize("defect", sorted(ROOMS_ONLY))
def test_rooms_defect_is_the_only_finding(defect):
    only, note = ROOMS_ONLY[defect]
    run = probe(pt.RoomsTarget(defect=defect), "rooms", "--polite")
    assert not_passed(run, ignore_hostile_skips=True) == only, run.not_passed()
    case = next(i for i, v in only.items() if v != "SKIP")
    assert note in run.cases[case]["note"], run.cases[case]
    check_exit(run)
    check_core(run, ROOMS_CORE)


@pytest.mark.long
def test_a_transcript_at_its_cap_still_ends_its_line():
    """A case whose transcript reaches its cap (4096 bytes: a /who answer
    of 200 lines read one at a time) is cut, and with -v the next case's
    line still starts a line of its own: one line per case on stderr."""
    with pt.RoomsTarget(who_flood=200) as srv:
        run = pt.run_probe("rooms", srv.port, "--polite", "-v")
    assert not srv.errors, srv.errors
    who = run.cases["rooms.room.who"]
    assert who["verdict"] == "PASS", who
    assert len(who["transcript"]) >= 4000, "the transcript did not reach its cap: %d bytes" % len(
        who["transcript"])
    ids = [i for _, i, _ in run.stderr_lines()]
    assert ids == [c["id"] for c in run.report["cases"]], (
        "case lines on stderr glued to a cut transcript: %r" % [
            ln[-120:] for ln in run.err.splitlines()
            if re.search(r"(PASS|FAIL|DEVIATION|SKIP) +rooms\.", ln)
            and not pt.CASE_LINE_RE.match(ln)])


# --------------------------------------------------------------------------
# The console


CONSOLE_ONLY = {
    "greeting_no_fils": ({"console.hello.greeting": "DEVIATION"}, "does not list FILS"),
    "name_no_version": ({"console.request.name": "DEVIATION"}, "no version"),
    "rand_constant": ({"console.request.rand": "DEVIATION"}, "the same number"),
    "lower_case": ({"console.request.lower_case": "DEVIATION"}, "answered"),
    # EXIT is in the pipelined case too
    "exit_open": ({"console.request.exit": "FAIL", "console.framing.pipelined": "FAIL"},
                  "stayed open"),
    "impatient": ({"console.framing.dribble": "DEVIATION"}, "under a second"),
    "stat_no_uploads": ({"console.request.stat": "DEVIATION"}, "no `upload`"),
    "no_hi_kept_open": ({"console.hello.missing": "DEVIATION"}, "still open"),
}


@pytest.mark.parametrize("defect", sorted(CONSOLE_ONLY))
def test_console_defect_is_the_only_finding(defect):
    only, note = CONSOLE_ONLY[defect]
    run = probe(pt.ConsoleTarget(defect=defect), "console")
    # (the wrong-secret case is hostile, and skipped without --secret)
    assert not_passed(run, ignore_hostile_skips=True) == only, run.not_passed()
    case = next(iter(only))
    assert note in run.cases[case]["note"], run.cases[case]
    check_exit(run)


@pytest.mark.parametrize("defect,got", [("short_greeting", "47 bytes"),
                                        ("long_greeting", "more than 48")])
def test_console_a_greeting_not_48_bytes_fails(defect, got):
    """The greeting is exactly 48 bytes: a server whose greeting is 47 or
    50 bytes fails it (and what reads a reply after it may fail too); a
    client that skips Hi is still refused as it should be."""
    run = probe(pt.ConsoleTarget(defect=defect), "console")
    greeting = [c for i, c in run.cases.items() if "greeting" in i]
    assert greeting and greeting[0]["verdict"] == "FAIL", run.not_passed()
    assert got in greeting[0]["note"], greeting[0]
    assert run.rc == 1
    assert run.verdict("console.hello.missing") == "PASS", run.not_passed()


def test_console_with_a_secret_against_a_target():
    """--secret: the hello is `Hi S`; the wrong-secret case runs."""
    run = probe(pt.ConsoleTarget(secret="pssst"), "console", "--secret", "pssst")
    assert run.rc == 0, run.describe()
    assert not_passed(run) == {}, run.not_passed()
