"""tools/checksrc enforces what the compiler does not: each planted
violation, in a copy of the tree, must fail it with the rule's message."""

import os
import shutil
import subprocess

import pytest

import bwd

ABOVE = "a layer above it or beside it"
RULES = [
    ("src/proto/wire.c", '#include "engine/engine.h"', "the proto layer includes engine"),
    ("src/cli/common.c", '#include "engine/frame.h"', "the cli layer includes engine"),
    ("src/engine/engine.c", '#include "svc/vault/vault.h"',
     "the engine layer includes svc:vault"),
    ("src/engine/frame.c", '#include "host/registry.h"', "the engine layer includes host"),
    ("src/host/registry.c", '#include "svc/msg/msg.h"', "the host layer includes svc:msg"),
    ("src/host/registry.c", '#include "daemon/daemon.h"', "the host layer includes daemon"),
    ("src/svc/console/console.c", '#include "svc/vault/vault.h"',
     "service console includes the daemon, a client or another service"),
    ("src/svc/vault/vault.c", '#include "daemon/daemon.h"',
     "service vault includes the daemon, a client or another service"),
    ("src/core/buf.c", '#include "proto/wire.h"', "the core layer includes proto"),
    ("src/engine/frame.c", "#include <sqlite3.h>", "SQLite included outside"),
    ("src/host/registry.c", "#include <sqlite3.h>", "SQLite included outside"),
    ("src/cli/common.c", "#include <openssl/evp.h>", "OpenSSL included outside"),
    ("src/core/util.c", "static void f(char *d) { strcpy(d, \"x\"); }", "banned call"),
    # the forms a text match on '"svc/' would miss: each resolves, for the
    # compiler, to a header of a layer the file may not use
    ("src/svc/msg/msg.c", '#include "../vault/vault.h"',
     "service msg includes the daemon, a client or another service"),
    ("src/engine/engine.c", '#include "../svc/vault/vault.h"',
     "the engine layer includes svc:vault"),
    ("src/proto/msg_wire.c", "#include <engine/engine.h>", "the proto layer includes engine"),
    ("src/cli/msg_cli.c", '#  include "../engine/frame.h"', "the cli layer includes engine"),
    ("src/cmd/bulwark.c", '#include "daemon/daemon.h"', "outside what it may use"),
    ("src/engine/frame.c", '#include "store/sqlite/sqlite_int.h"',
     "the backend's private header"),
    ("src/host/registry.c", '#include "store/sqlite/sqlite_int.h"',
     "the backend's private header"),
    ("src/store/meta.c", '#include "pg/pg_int.h"', "the backend's private header"),
    ("src/store/sqlite/sqlite_store.c", "#include <libpq-fe.h>", "libpq included outside"),
    # the database is the host's business: no codec, client or core
    # module sees even the store's interface
    ("src/proto/msg_wire.c", '#include "store/meta.h"', "the proto layer includes store"),
    ("src/cli/msg_cli.c", '#include "../store/meta.h"', "the cli layer includes store"),
    ("src/core/log.c", '#include "../store/meta.h"', "the core layer includes store"),
    # the storage tables stand on core alone: no connection, no registry
    ("src/store/meta.c", '#include "engine/engine.h"', "the store layer includes engine"),
    ("src/store/blob.c", '#include "host/registry.h"', "the store layer includes host"),
    # a service reaches the contents' store through bw_blob_*, one place
    ("src/svc/msg/msg.c", "static int f(struct bw_blobs *b) { return b->be->remove(b->state, "
     '"k"); }', "the blob table called directly"),
    ("src/daemon/daemon.c", "static void f(struct bw_blobs *b) { (void)b->be->size (b->state, "
     '"k", 0); }', "the blob table called directly"),
]


@pytest.fixture
def tree(tmp_path):
    for d in ("src", "include", "tools"):
        shutil.copytree(bwd.REPO / d, tmp_path / d)
    shutil.copy(bwd.REPO / ".clang-format", tmp_path / ".clang-format")
    return tmp_path


def run(tree, analysis=False, only=None):
    env_ = dict(os.environ, CHECKSRC_SKIP_FORMAT="1")
    if not analysis:
        env_["CHECKSRC_SKIP_ANALYSIS"] = "1"
    if only is not None:
        env_["CHECKSRC_ANALYSIS_ONLY"] = only
    return subprocess.run([str(tree / "tools" / "checksrc")], cwd=tree,
                          capture_output=True, text=True, timeout=120, env=env_)


def test_the_tree_as_it_is_passes(tree):
    """Every rule holds for the tree as it is, and cppcheck finds nothing in
    the files a planted finding goes beside (the whole tree's analysis is
    scripts/check's first step: it took 14 s of a worker here again)."""
    r = run(tree, analysis=True, only="src/core/buf.c:src/core/log.c")
    assert r.returncode == 0, r.stderr


def test_an_analysis_limited_to_a_file_that_is_not_there_fails():
    """CHECKSRC_ANALYSIS_ONLY naming no C file of the tree (a file renamed
    under a test) must fail, not pass having analysed nothing."""
    r = run(bwd.REPO, analysis=True, only="src/core/no_such_file.c")
    assert r.returncode != 0
    assert "CHECKSRC_ANALYSIS_ONLY names src/core/no_such_file.c" in r.stderr, r.stderr


@pytest.mark.parametrize("code,message", [
    # a format that does not fit its argument
    ('int bw_planted(void);\nint\nbw_planted(void)\n{\n\tint n = -1;\n\n'
     '\tprintf("%u\\n", n);\n\treturn 0;\n}\n', "%u in format string"),
    # memory that leaks on a path
    ('int bw_planted(int x);\nint\nbw_planted(int x)\n{\n\tchar *p = malloc(8);\n\n'
     '\tif (p == NULL)\n\t\treturn 1;\n\tp[0] = (char)x;\n\treturn p[0];\n}\n',
     "Memory leak"),
])
def test_static_analysis_findings_fail(tree, code, message):
    f = tree / "src" / "core" / "planted.c"
    f.write_text("/* planted for the test */\n#include <stdio.h>\n"
                 "#include <stdlib.h>\n\n" + code)
    # cppcheck on the planted file and one of the tree's beside it (the
    # finding is the planted file's, not a whole tree's run)
    r = run(tree, analysis=True, only="src/core/planted.c:src/core/buf.c")
    assert r.returncode != 0
    assert "src/core/planted.c" in r.stderr and message in r.stderr, r.stderr


@pytest.mark.parametrize("path,line,message", RULES)
def test_each_planted_violation_fails(tree, path, line, message):
    f = tree / path
    text = f.read_text()
    head, _, rest = text.partition("\n#include")
    f.write_text(head + "\n" + line + "\n#include" + rest)
    r = run(tree)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


def test_a_new_file_is_checked_too(tree):
    (tree / "src" / "svc" / "newsvc").mkdir()
    (tree / "src" / "svc" / "newsvc" / "x.c").write_text(
        '/* a new service file */\n#include "svc/vault/vault.h"\n')
    r = run(tree)
    assert r.returncode != 0
    assert ("service newsvc includes the daemon, a client or another service"
            in r.stderr), r.stderr


def test_a_file_without_its_opening_comment_fails(tree):
    (tree / "src" / "core" / "y.c").write_text("int y;\n")
    r = run(tree)
    assert r.returncode != 0
    assert "does not open with a comment" in r.stderr, r.stderr


def test_without_clang_format_it_fails_rather_than_skips(tree, tmp_path):
    """A machine without clang-format must not pass the format check by
    skipping it: PATH holds only what checksrc needs besides it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "python3"):
        found = shutil.which(tool, path="/usr/bin:/bin")
        if found:
            os.symlink(found, bin_dir / tool)
    env_ = {"PATH": str(bin_dir), "HOME": os.environ.get("HOME", "/")}
    r = subprocess.run(["/usr/bin/python3", str(tree / "tools" / "checksrc")], cwd=tree,
                       capture_output=True, text=True, timeout=120, env=env_)
    assert r.returncode != 0
    assert "clang-format is missing" in r.stderr, r.stderr
