"""`bulwark send` against the Python server (bwvault.PyServer), which can be
told to misbehave."""

import os
import subprocess

import pytest

import bwd
import bwvault as bw
from bwd import describe, unique_name

ERROR_LINE = b"server responded with an error"
NEW_CLIENT = [bw.REGISTER, bw.PUBLIC_KEY, bw.SEND_FILE, bw.CRC_OK]


def prepare(client_dir, srv, data=None, name=None):
    d = client_dir()
    data = os.urandom(40_000) if data is None else data
    path = d.write_file("upload.bin", data)
    name = name or unique_name("cli")
    d.write_transfer(srv.port, name, str(path))
    return d, name, data


def only_file(srv):
    assert len(srv.files) == 1, "server holds %r" % list(srv.files)
    (cid, fname), stored = next(iter(srv.files.items()))
    return cid, fname, stored


def has_fatal_line(stderr):
    return any(line.lstrip().startswith(b"Fatal:") for line in stderr.splitlines())


def test_client_uploads_byte_exact_to_pyserver(pyserver, client_dir):
    srv = pyserver()
    d, name, data = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes() == NEW_CLIENT
    cid, fname, stored = only_file(srv)
    assert fname == "upload.bin"
    assert stored.data == data and stored.verified
    me_name, me_id, key = d.me_info()
    assert me_name == name and me_id == cid
    assert srv.clients[cid].pubkey == bw.spki_der(key)


# The client's reader maps the file 4 MiB at a time into two slots that
# take turns (src/cli/send_src.c) and AES takes 1 MiB chunks from them:
# sizes on each side of a window's and a chunk's end, one that is not a
# whole number of AES blocks past a window, and one of five windows (each
# slot used again, twice).
@pytest.mark.parametrize("size", [(4 << 20) - 1, 4 << 20, (4 << 20) + 1,
                                  (9 << 20) + 16 + 3, (16 << 20) + 7])
def test_client_uploads_byte_exact_across_its_mapping_windows(pyserver, client_dir, size):
    srv = pyserver()
    d, _, data = prepare(client_dir, srv, data=os.urandom(size))
    r = d.run()
    assert r.returncode == 0, describe(r)
    _, _, stored = only_file(srv)
    assert stored.data == data and stored.verified


# A file that cannot be mapped is read instead, from the window whose
# mapping failed on: the first window (all of the file read), or the third
# (two windows mapped, then their slots turned into memory read into).
@pytest.mark.parametrize("failing", [1, 3])
def test_client_reads_a_file_it_cannot_map_and_uploads_it_byte_exact(pyserver, client_dir,
                                                                     shim, tmp_path, failing):
    srv = pyserver()
    d, _, data = prepare(client_dir, srv, data=os.urandom((16 << 20) + 7))
    log = tmp_path / "calls.log"
    env = {**os.environ, **bwd.fault_env(shim, fault="mmap:%d:ENODEV:upload.bin" % failing,
                                          log=log)}
    r = d.run(env=env)
    assert r.returncode == 0, describe(r)
    _, _, stored = only_file(srv)
    assert stored.data == data and stored.verified
    mapped = [line for line in log.read_text().splitlines()
              if line.startswith("mmap ") and line.endswith("upload.bin")]
    # the failed mapping was the last one tried: the rest was read
    assert len(mapped) == failing, mapped


def test_client_reconnects_with_1027_when_me_info_exists(pyserver, client_dir):
    srv = pyserver()
    d, name, data = prepare(client_dir, srv)
    assert d.run().returncode == 0
    second = os.urandom(5000)
    d.write_file("upload.bin", second)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes() == NEW_CLIENT + [bw.RECONNECT, bw.SEND_FILE, bw.CRC_OK]
    assert only_file(srv)[2].data == second


def test_client_gives_up_after_three_retries_of_2107(pyserver, client_dir):
    srv = pyserver(error_always=True)
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert r.stderr.count(ERROR_LINE) >= 3, describe(r)
    assert has_fatal_line(r.stderr), describe(r)
    assert srv.codes() == [bw.REGISTER] * 4
    assert not d.me_path.exists()


@pytest.mark.parametrize("code", [bw.REGISTER, bw.PUBLIC_KEY, bw.SEND_FILE, bw.CRC_OK])
def test_client_retries_through_two_2107_and_succeeds(pyserver, client_dir, code):
    srv = pyserver(error_times={code: 2})
    d, _, data = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert r.stderr.count(ERROR_LINE) >= 2, describe(r)
    expected = []
    for c in NEW_CLIENT:
        expected += [c] * (3 if c == code else 1)
    assert srv.codes() == expected
    assert only_file(srv)[2].data == data


def test_client_succeeds_on_the_third_retry(pyserver, client_dir):
    srv = pyserver(error_times={bw.SEND_FILE: 3})
    d, _, data = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes().count(bw.SEND_FILE) == 4
    assert only_file(srv)[2].data == data


def test_client_fails_after_four_2107_to_the_file(pyserver, client_dir):
    srv = pyserver(error_times={bw.SEND_FILE: 4})
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 1, describe(r)
    assert has_fatal_line(r.stderr), describe(r)
    assert srv.codes() == [bw.REGISTER, bw.PUBLIC_KEY] + [bw.SEND_FILE] * 4


def test_client_gives_up_with_1031_and_exit_4_when_the_crc_never_matches(pyserver, client_dir):
    srv = pyserver(wrong_crc=-1)
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 4, describe(r)
    assert srv.codes() == ([bw.REGISTER, bw.PUBLIC_KEY] + [bw.SEND_FILE, bw.CRC_BAD] * 3
                           + [bw.SEND_FILE, bw.CRC_GIVE_UP])
    names = {r.name for r in srv.requests if r.code in (bw.SEND_FILE, bw.CRC_BAD, bw.CRC_GIVE_UP)}
    assert names == {"upload.bin"}
    assert not only_file(srv)[2].verified


def test_client_resends_after_a_crc_mismatch_and_then_confirms(pyserver, client_dir):
    srv = pyserver(wrong_crc=2)
    d, _, data = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes() == ([bw.REGISTER, bw.PUBLIC_KEY] + [bw.SEND_FILE, bw.CRC_BAD] * 2
                           + [bw.SEND_FILE, bw.CRC_OK])
    stored = only_file(srv)[2]
    assert stored.data == data and stored.verified


def test_client_registers_again_when_reconnect_is_refused(pyserver, client_dir):
    first = pyserver()
    d, name, data = prepare(client_dir, first)
    assert d.run().returncode == 0
    _, old_id, old_key = d.me_info()

    # A server that does not know the client answers 1027 with 2106.
    second = pyserver()
    d.write_transfer(second.port, name, str(d.path / "upload.bin"))
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert second.codes() == [bw.RECONNECT] + NEW_CLIENT
    _, new_id, new_key = d.me_info()
    assert new_id != old_id
    assert bw.spki_der(new_key) != bw.spki_der(old_key)
    assert d.me_b64() == d.priv_b64()
    cid, _, stored = only_file(second)
    assert cid == new_id and stored.data == data
    # the refused identity was overwritten with no copy: it is kept aside
    kept = d.path / ("me.info.old-" + old_id.hex()[:8])
    assert kept.exists(), sorted(p.name for p in d.path.iterdir())
    assert bytes.fromhex(kept.read_text().splitlines()[1]) == old_id
    assert (d.path / ("priv.key.old-" + old_id.hex()[:8])).exists()
    assert ("kept as me.info.old-" + old_id.hex()[:8]).encode() in r.stderr, r.stderr


def test_an_identity_refused_elsewhere_is_kept_and_n_names_the_new_one(pyserver, client_dir):
    """bulwark send -s B -n carol2 in a directory registered on A: B refuses
    the reconnect, and the spec registers again, rewriting me.info and
    priv.key; -n was ignored and the identity registered on A was lost for
    good (A kept its name: carol could never use A again). The new one
    takes -n's name, and the old one is kept beside it, said where."""
    a, b = pyserver(), pyserver()
    d, name, data = prepare(client_dir, a)
    assert d.run().returncode == 0
    _, a_id, _ = d.me_info()
    r = d.run("-s", "127.0.0.1:%d" % b.port, "-n", name + "2",
              "-f", str(d.path / "upload.bin"))
    assert r.returncode == 0, describe(r)
    new_name, b_id, _ = d.me_info()
    assert new_name == name + "2" and b_id != a_id
    assert b.names.get(name + "2") == b_id
    # back on A with the kept identity: A knows it
    kept = d.path / ("me.info.old-" + a_id.hex()[:8])
    os.replace(kept, d.me_path)
    os.replace(d.path / ("priv.key.old-" + a_id.hex()[:8]), d.path / "priv.key")
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert d.me_info()[1] == a_id
    assert a.codes().count(bw.RECONNECT) == 1


def test_a_refused_registration_keeps_no_extra_copy(pyserver, client_dir):
    """The old identity is kept aside only once a new one is registered: a
    registration refused too (the name taken) leaves me.info as it was
    and nothing beside it."""
    a, b = pyserver(), pyserver(name_taken=True)
    d, _, _ = prepare(client_dir, a)
    assert d.run().returncode == 0
    before = d.me_path.read_bytes()
    r = d.run("-s", "127.0.0.1:%d" % b.port)
    assert r.returncode == 3, describe(r)
    assert d.me_path.read_bytes() == before
    assert not [p for p in d.path.iterdir() if ".old-" in p.name]


def test_client_registers_again_when_reconnect_is_refused_by_flag(pyserver, client_dir):
    srv = pyserver()
    d, name, data = prepare(client_dir, srv)
    assert d.run().returncode == 0
    _, old_id, _ = d.me_info()
    srv.refuse_reconnect = True
    with srv.lock:  # the name is free again, as for a server that lost the client
        del srv.names[name]
    r = d.run()
    assert r.returncode == 0, describe(r)
    assert srv.codes()[len(NEW_CLIENT):] == [bw.RECONNECT] + NEW_CLIENT
    assert d.me_info()[1] != old_id


def test_client_exits_3_on_2101_without_retrying(pyserver, client_dir):
    srv = pyserver(name_taken=True)
    d, _, _ = prepare(client_dir, srv)
    r = d.run()
    assert r.returncode == 3, describe(r)
    assert srv.codes() == [bw.REGISTER]
    assert not d.me_path.exists()


@pytest.mark.parametrize("code", [bw.REGISTER, bw.PUBLIC_KEY, bw.SEND_FILE, bw.CRC_OK])
def test_client_survives_a_close_in_the_middle_of_a_response(pyserver, client_dir, code):
    srv = pyserver(close_mid={code: 1})
    d, _, data = prepare(client_dir, srv)
    r = d.run()
    # A 2100 lost on the way leaves the name registered, so the retried 1025
    # may fairly end in 2101 (exit 3).
    allowed = (0, 1, 3) if code == bw.REGISTER else (0, 1)
    assert r.returncode in allowed, describe(r)
    assert r.returncode == 0 or r.stderr.strip(), describe(r)
    if r.returncode == 1:
        assert has_fatal_line(r.stderr), describe(r)
    elif r.returncode == 0:
        stored = only_file(srv)[2]
        assert stored.data == data and stored.verified


def test_client_without_transfer_info_exits_2(pyserver, client_dir):
    srv = pyserver()
    d = client_dir()
    r = d.run()
    assert r.returncode == 2, describe(r)
    assert srv.codes() == []


def test_client_with_an_unreadable_file_exits_2(pyserver, client_dir):
    srv = pyserver()
    d = client_dir()
    d.write_transfer(srv.port, unique_name(), str(d.path / "does-not-exist.bin"))
    r = d.run()
    assert r.returncode == 2, describe(r)
    assert not srv.files


def test_client_with_a_malformed_me_info_exits_2(pyserver, client_dir):
    srv = pyserver()
    d, name, _ = prepare(client_dir, srv)
    d.me_path.write_text("%s\nnot-a-hex-id\nAAAA\n" % name)
    os.chmod(d.me_path, 0o600)
    r = d.run()
    assert r.returncode == 2, describe(r)
    assert srv.codes() == []


def test_file_truncated_mid_upload_is_a_clear_error_not_a_crash(pyserver, client_dir, tmp_path):
    """The client maps the file to encrypt it; a file that shrinks under it
    must end in a message and exit 2, not in SIGBUS."""
    srv = pyserver()
    srv.body_delay = 0.05  # ~5 MiB/s: the client is mid-file for seconds
    d, name, _ = prepare(client_dir, srv)
    big = d.write_file("upload.bin", os.urandom(48 * 1024 * 1024))
    p = subprocess.Popen([str(bwd.BULWARK), "send", "--dir", str(d.path), "--quiet",
                          "--timeout", "30"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert srv.body_started.wait(20), "the upload never started"
        os.truncate(big, 1024 * 1024)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2, (p.returncode, err)
    assert b"Fatal:" in err
    assert not srv.files, "a truncated file must not be confirmed"
