"""The man pages against the programs: every option and command --help
lists is documented, everything documented exists, the pages say which
options SIGHUP reloads as the option table does, and they render without
a warning."""

import re
import subprocess

import pytest

import bwd
import bwdocs as docs

BULWARKD_8 = docs.MAN_DIR / "bulwarkd.8"
BULWARK_1 = docs.MAN_DIR / "bulwark.1"


@pytest.fixture(scope="module")
def daemon_help():
    bwd.require_file(bwd.BULWARKD, "bulwarkd", "BULWARKD")
    return docs.run_help([bwd.BULWARKD])


@pytest.fixture(scope="module")
def client_help():
    bwd.require_file(bwd.BULWARK, "bulwark", "BULWARK")
    return docs.run_help([bwd.BULWARK])


def test_bulwarkd_help_parses(daemon_help):
    opts = docs.help_options(daemon_help)
    # the help must list the table's options, --help and --version: a
    # change of its layout must not leave the tests below checking nothing
    table = [name for name, _ in docs.daemon_opt_table()]
    assert set(opts) == set(table) | {"help", "version"}


def test_every_bulwarkd_option_has_an_entry(daemon_help):
    opts = docs.help_options(daemon_help)
    options = docs.roff_sections(BULWARKD_8.read_text())["OPTIONS"]
    longs, shorts = set(), {}
    for tag in docs.tagged_entries(options):
        lo, sh = docs.options_in(tag)
        assert len(lo) == 1, "an OPTIONS entry with %d long options: %r" % (len(lo), tag)
        name = lo.pop()
        assert name not in longs, "--%s has two entries" % name
        longs.add(name)
        shorts[name] = sh.pop() if sh else None
    assert sorted(set(opts) - longs) == [], "in --help, not in bulwarkd.8 OPTIONS"
    assert sorted(longs - set(opts)) == [], "in bulwarkd.8 OPTIONS, not in --help"
    for name, letter in opts.items():
        assert shorts[name] == letter, "--%s: short option %r in --help, %r in bulwarkd.8" % (
            name, letter, shorts[name])


def test_every_option_in_bulwarkd_8_is_accepted(daemon_help):
    # and those of the other forms (--help lists them apart)
    known = set(docs.help_options(daemon_help)) | {"check-config", "from", "fingerprint"}
    plain = docs.roff_plain(BULWARKD_8.read_text())
    mentioned = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", plain))
    assert mentioned, "no option found in bulwarkd.8"
    assert sorted(mentioned - known) == [], "bulwarkd.8 names options bulwarkd does not list"
    for name in sorted(mentioned):
        # getopt stops at an unknown option (exit 2) before it reaches
        # --help; a known one (its value not checked yet) lets --help exit 0
        r = subprocess.run([str(bwd.BULWARKD), "--" + name, "1", "--help"],
                           capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, "bulwarkd refuses --%s: %s" % (name, r.stderr[-300:])


def test_config_keys_in_bulwarkd_8(daemon_help):
    """Keys written as "key = value" in the page are real keys."""
    keys = set(docs.help_options(daemon_help)) - {"help", "version", "config"}
    plain = docs.roff_plain(BULWARKD_8.read_text())
    used = set(re.findall(r"^#?\s*([a-z][a-z0-9-]*) = \S", plain, re.M))
    assert used, "no example configuration in bulwarkd.8"
    assert sorted(used - keys) == []


def test_sighup_options_match_the_option_table():
    reload = {name for name, r in docs.daemon_opt_table() if r}
    assert reload, "no reloadable option parsed from daemon_opts.c"
    sections = docs.roff_sections(BULWARKD_8.read_text())
    # the OPTIONS entries marked [reload]
    lines = sections["OPTIONS"]
    marked = set()
    for i, ln in enumerate(lines[:-1]):
        if ln.startswith(".TP") and i + 2 < len(lines) and lines[i + 2].startswith("[reload]"):
            marked |= docs.options_in(lines[i + 1])[0]
    assert marked == reload, "[reload] marks differ from the R options of opts[]: " \
        "missing %s, extra %s" % (sorted(reload - marked), sorted(marked - reload))
    # the list under "Reloading (SIGHUP)"
    conf = "\n".join(sections["CONFIGURATION FILE"])
    para = conf[conf.index(".SS Reloading"):]
    para = para[para.index("at once:"):para.index("each one that changed")]
    listed = set(re.findall(r"^\.BR? ([a-z][a-z0-9-]*)", para, re.M))
    assert listed == reload, "SIGHUP list differs from the R options of opts[]: " \
        "missing %s, extra %s" % (sorted(reload - listed), sorted(listed - reload))


def test_bulwarkd_8_sections():
    sections = docs.roff_sections(BULWARKD_8.read_text())
    for title in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION FILE",
                  "DATA DIRECTORY", "SIGNALS", "EXIT STATUS", "ENVIRONMENT", "FILES",
                  "SECURITY NOTES", "SEE ALSO"):
        assert title in sections, "bulwarkd.8 has no %s section" % title
    data = "\n".join(sections["DATA DIRECTORY"])
    for path in ("defensive.db", "files/.incoming/", "files/.pending/", "messages/",
                 "port.info", "myport.info", "client-id"):
        assert path in data, "DATA DIRECTORY does not mention %s" % path
    assert "BULWARK_CONSOLE_SECRET" in "\n".join(sections["ENVIRONMENT"])
    exits = [t.strip(".B ").strip() for t in docs.tagged_entries(sections["EXIT STATUS"])]
    assert exits == ["0", "1", "2"]


def test_every_client_command_and_option_in_bulwark_1(client_help):
    commands = docs.help_list(client_help)
    assert commands == ["send", "ls", "get", "rm", "tls-only", "msg", "chat", "console",
                        "probe", "trust-server"], commands
    sections = docs.roff_sections(BULWARK_1.read_text())
    synopsis = "\n".join(sections["SYNOPSIS"])
    for cmd in commands:
        assert ".B bulwark %s" % cmd in synopsis, "SYNOPSIS lacks bulwark %s" % cmd
        assert cmd.upper() in sections, "bulwark.1 has no %s section" % cmd.upper()
        opts = docs.help_options(docs.run_help([bwd.BULWARK, cmd]))
        assert "help" in opts, "bulwark %s --help lists no options" % cmd
        lines = sections[cmd.upper()]
        documented = {}
        for tag in docs.tagged_entries(lines):
            lo, sh = docs.options_in(tag)
            if lo:
                assert len(lo) == 1, tag
                documented[lo.pop()] = sh.pop() if sh else None
        assert sorted(set(opts) - set(documented)) == [], \
            "bulwark %s: in --help, not in bulwark.1" % cmd
        assert sorted(set(documented) - set(opts)) == [], \
            "bulwark %s: in bulwark.1, not in --help" % cmd
        for name, letter in opts.items():
            assert documented[name] == letter, "bulwark %s --%s: -%s in --help, -%s in bulwark.1" % (
                cmd, name, letter, documented[name])


def test_msg_commands_and_menu_in_bulwark_1(tmp_path):
    bwd.require_file(bwd.BULWARK, "bulwark", "BULWARK")
    text = docs.run_help([bwd.BULWARK, "msg"])
    commands = docs.help_list(text)
    assert len(commands) >= 9, commands
    msg = docs.roff_sections(BULWARK_1.read_text())["MSG"]
    sub = "\n".join(msg)
    cmd_part = sub[sub.index(".SS Commands"):sub.index(".SS The menu")].splitlines()
    documented = [t.split()[1] for t in docs.tagged_entries(cmd_part)]
    assert documented == commands, "bulwark.1 MSG commands %s, --help %s" % (documented, commands)
    # the menu as the client prints it (before it needs a server)
    r = subprocess.run([str(bwd.BULWARK), "msg", "--server", "127.0.0.1:1"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
                       cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    menu = [ln for ln in r.stdout.decode().splitlines() if re.match(r"^\d+\) ", ln)]
    assert len(menu) == 9, menu
    for line in menu:
        assert line in msg, "the menu line %r is not in bulwark.1" % line


def test_bulwark_1_files_and_exit_codes():
    sections = docs.roff_sections(BULWARK_1.read_text())
    files = "\n".join(sections["FILES"])
    for name in ("transfer.info", "me.info", "priv.key", "server.info", "contacts.info",
                 "my.info"):
        assert ".I %s" % name in files, "FILES has no entry for %s" % name
    exits = "\n".join(sections["EXIT STATUS"])
    for cmd in ("send", "msg", "chat", "console", "probe"):
        assert ".SS bulwark %s" % cmd in exits
    assert "EXAMPLES" in sections


@pytest.mark.parametrize("page", ["bulwarkd.8", "bulwark.1"])
def test_man_page_renders_without_warnings(page):
    rc, err = docs.render_warnings(docs.MAN_DIR / page)
    assert rc == 0 and err == "", "man --warnings -l man/%s: exit %d\n%s" % (page, rc, err)
