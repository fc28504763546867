"""What the documentation tests compare: the options and commands the
binaries list in --help, bulwarkd's option table in the source (which
options SIGHUP reloads), and the man pages' roff read as plain text."""

import os
import re
import shutil
import subprocess

import bwd

MAN_DIR = bwd.REPO / "man"
PACKAGING_DIR = bwd.REPO / "packaging"
DAEMON_OPTS_C = bwd.REPO / "src" / "daemon" / "daemon_opts.c"

# an option at the start of a line of --help: "  -d, --data-dir DIR" or
# "      --max-conns N" (continuation lines are indented further)
_HELP_OPT_RE = re.compile(r"^ {2,8}(?:-([A-Za-z]), +)?--([a-z][a-z0-9-]*)")
_LONG_RE = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
_SHORT_RE = re.compile(r"(?<![\w-])-([A-Za-z])(?![\w-])")


def require_tool(name, package):
    """The path of a program; skips the test when it is missing, or fails it
    when BULWARK_REQUIRE_BINARIES is set (CI installs it)."""
    import pytest

    path = shutil.which(name)
    if path:
        return path
    reason = "%s is not installed (Debian package %s)" % (name, package)
    if os.environ.get("BULWARK_REQUIRE_BINARIES"):
        pytest.fail(reason)
    pytest.skip(reason)


def run_help(argv):
    """The --help text of argv (a list), which must exit 0."""
    r = subprocess.run([str(a) for a in argv] + ["--help"], capture_output=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, "%s --help: exit %d\n%s" % (argv, r.returncode, r.stderr)
    return r.stdout.decode()


def help_options(text):
    """{long name: short letter or None} of a --help text."""
    opts = {}
    for line in text.splitlines():
        m = _HELP_OPT_RE.match(line)
        if m:
            opts[m.group(2)] = m.group(1)
    return opts


def help_list(text, heading="Commands:"):
    """The first words of the lines under heading, up to a blank line."""
    words, inside = [], False
    for line in text.splitlines():
        if line.strip() == heading:
            inside = True
            continue
        if inside:
            if not line.strip():
                break
            m = re.match(r"^ {2}([a-z][a-z-]*)(?: |$)", line)
            if m:
                words.append(m.group(1))
    return words


def help_defaults(text):
    """{option: its default as --help says "(default X" / "(default and
    maximum X"}, for the options whose help gives one that way."""
    out = {}
    name, body = None, []

    def flush():
        if name is not None:
            joined = " ".join(body)
            m = re.search(r"\(default(?: and maximum)?\s+([^;)\s]+)", joined)
            if m:
                out[name] = m.group(1)

    for line in text.splitlines():
        m = _HELP_OPT_RE.match(line)
        if m:
            flush()
            name, body = m.group(2), [line]
        elif line.startswith("  ") and name is not None:
            body.append(line.strip())
        else:
            flush()
            name, body = None, []
    flush()
    return out


def daemon_opt_table():
    """[(name, reloadable)] from the opts[] table of src/daemon/daemon_opts.c:
    the fourth field of each entry is R (SIGHUP applies it) or 0."""
    src = DAEMON_OPTS_C.read_text()
    start = src.index("static const struct opt opts[] = {")
    block = src[start:src.index("\n};", start)]
    rows = re.findall(r'\{"([a-z][a-z0-9-]*)",\s*(?:0|\'.\'),\s*K_[A-Z_]+,\s*(R|0),', block)
    assert len(rows) == block.count('{"'), "an entry of opts[] did not parse"
    return [(name, flag == "R") for name, flag in rows]


def roff_plain(src):
    """roff source with font changes and escapes for dashes, zero-width
    joins and quotes taken out, so that options read as on the terminal."""
    s = re.sub(r"\\f(?:\[[^\]]*\]|\(..|.)", "", src)
    s = s.replace("\\-", "-").replace("\\&", "").replace("\\(aq", "'")
    s = s.replace("\\(dq", '"').replace("\\(em", "--").replace("\\e", "\\")
    return s


def roff_sections(src):
    """{.SH title: its lines} of plain roff."""
    sections, title = {}, None
    for line in roff_plain(src).splitlines():
        if line.startswith(".SH "):
            title = line[4:].strip().strip('"')
            sections[title] = []
        elif title is not None:
            sections[title].append(line)
    return sections


def tagged_entries(lines):
    """The tag lines of the .TP paragraphs in lines."""
    return [lines[i + 1] for i, ln in enumerate(lines[:-1])
            if ln.startswith(".TP")]


def options_in(line):
    """(long names, short letters) written in a line of plain roff."""
    return set(_LONG_RE.findall(line)), set(_SHORT_RE.findall(line))


def render_warnings(page):
    """(exit status, stderr) of `man --warnings -l page` at 80 columns."""
    man = require_tool("man", "man-db")
    e = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat")
    r = subprocess.run([man, "--warnings", "-l", str(page)], capture_output=True,
                       timeout=60, env=e, stdin=subprocess.DEVNULL)
    return r.returncode, r.stderr.decode("utf-8", "replace")
