"""The package layering, checked on the source: no package imports one above it.

Every module under shmex/ is parsed with `ast`; every import counts, those inside
functions too (a lazy import is still a dependency). Bottom to top:

    0  schema, errors, crc, files     records, errors, checksums, file durability
    1  shm                            segments, headers, names
    2  ring, matcher, wal, net        independent of each other (net: protocol codecs)
    3  snapshot                       loads a matcher
    4  recovery                       the one layer reading wal/ and snapshot/ together
    5  engine                         runtime: supervisor, child, standby, control cells
    6  roles                          one module per engine process
    7  client, bench, procs           users of the engine (procs: a deprecated alias)
    8  commands, cli                  the command line

A package may import its own modules and those of lower layers only. A package may import
another of its own layer only where SAME_LAYER_ALLOWED lists the pair. KNOWN_VIOLATIONS
names the imports that break the rule today, each with what would remove it; the test
fails on any other violation, and on a listed one that is gone (so the list only shrinks).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "shmex"

LAYERS = [
    {"schema", "errors", "crc", "files"},
    {"shm"},
    {"ring", "matcher", "wal", "net"},
    {"snapshot"},
    {"recovery"},
    {"repl"},         # NATS: the stream, the lease, the follower (above recovery: it replays)
    {"engine"},
    {"roles"},
    {"client", "bench", "procs"},
    {"commands", "cli"},
]
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
SAME_LAYER_ALLOWED = {   # (importer, imported)
    ("cli", "commands"),    # cli only parses and dispatches to the verbs' modules
    ("procs", "client"),    # shmex.procs.client: the deprecated alias of shmex.client
    ("bench", "client"),    # the drill's client member (bench.api_member) is a user of the client API
    ("schema", "errors"),   # commands_from raises UsageError at its boundary; errors imports nothing
}
KNOWN_VIOLATIONS: set = set()   # (module, imported package) pairs that break the rule today: none

ROLE_NAMES = ("matcher", "walwriter", "publisher", "producer", "gateway", "feed", "tcpload")
# The one engine module that may name roles: the role registry.
ROLE_NAMES_ALLOWED_IN = {"registry.py"}
KNOWN_ROLE_LITERALS = {   # (file, literal): the publisher's inline/process mode, which
    # EngineConfig, its CLI flag (--publisher) and the summary's JSON key name after the role
    ("shmex/engine/config.py", "publisher"),
    ("shmex/engine/summary.py", "publisher"),
    ("shmex/engine/config.py", "gateway"),     # the --gateway flag's argparse attribute
    ("shmex/engine/config.py", "feed"),        # the --feed flag's argparse attribute
}


def modules() -> list[pathlib.Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: pathlib.Path) -> str:
    parts = ("shmex",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(dotted: str) -> str | None:
    """The top-level part under shmex ('shmex.wal.reader' -> 'wal'); None for shmex itself."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "shmex" else None


def imports_in(text: str, me: str, is_pkg: bool) -> list[tuple[int, str]]:
    """(line, dotted module) of every import of a shmex module in `text`, the source of
    module `me` (a package's __init__ if `is_pkg`), at any depth, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "shmex"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if is_pkg else me.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "shmex":
                continue
            if mod == "shmex" or not node.module:
                # `from shmex import wal` / `from . import x`: the names are modules
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, mod))
    return sorted(out)


def imports_of(path: pathlib.Path) -> list[tuple[int, str]]:
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def test_every_package_has_a_layer():
    found = {package_of(module_name(p)) for p in modules()} - {None}
    assert found <= set(LAYER_OF), f"packages without a layer: {sorted(found - set(LAYER_OF))}"
    assert len(modules()) > 40


def test_lazy_and_relative_imports_are_seen():
    src = ("import shmex.wal.reader\n"
           "import numpy as np\n"
           "def f():\n"
           "    from shmex.engine import cells\n"
           "    from . import sibling\n"
           "    from ..wal.layout import MAGIC\n"
           "from shmex import schema, crc\n")
    got = [m for _, m in imports_in(src, "shmex.ring.ring", is_pkg=False)]
    assert got == ["shmex.wal.reader", "shmex.engine", "shmex.ring.sibling",
                   "shmex.wal.layout", "shmex.crc", "shmex.schema"]
    assert [m for _, m in imports_in("from .layout import X\n", "shmex.ring", is_pkg=True)] == [
        "shmex.ring.layout"]


def violations() -> dict[tuple[str, str], list[str]]:
    """{(module, imported package): ["file:line: what"]} for every import that breaks the rule."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in modules():
        me = module_name(path)
        mine = package_of(me)
        if mine is None:
            continue   # shmex/__init__.py: the version string only
        for line, target in imports_of(path):
            theirs = package_of(target)
            if theirs is None or theirs == mine:
                continue
            where = f"{path.relative_to(ROOT.parent)}:{line}: {mine}"
            if theirs not in LAYER_OF:
                what = f"{where} imports {target}, a package without a layer"
            elif LAYER_OF[theirs] > LAYER_OF[mine]:
                what = (f"{where} (layer {LAYER_OF[mine]}) imports {target} "
                        f"(layer {LAYER_OF[theirs]}, above it)")
            elif LAYER_OF[theirs] == LAYER_OF[mine] and (mine, theirs) not in SAME_LAYER_ALLOWED:
                what = f"{where} imports {target}, a package of its own layer ({LAYER_OF[mine]})"
            else:
                continue
            out.setdefault((me, theirs), []).append(what)
    return out


def test_no_package_imports_one_above_it_or_beside_it():
    found = violations()
    new = [w for key, ws in sorted(found.items()) if key not in KNOWN_VIOLATIONS for w in ws]
    assert new == [], "layering violations:\n" + "\n".join(new)
    gone = KNOWN_VIOLATIONS - set(found)
    assert not gone, f"fixed, so take them off KNOWN_VIOLATIONS: {sorted(gone)}"


@pytest.mark.parametrize("a, b", [("wal", "snapshot"), ("snapshot", "wal"), ("ring", "matcher"),
                                  ("matcher", "ring"), ("ring", "wal"), ("wal", "ring"),
                                  ("matcher", "wal"), ("wal", "matcher")])
def test_named_pairs_do_not_import_each_other(a, b):
    hits = [f"{p.relative_to(ROOT.parent)}:{line}: {t}" for p in modules()
            if package_of(module_name(p)) == a for line, t in imports_of(p) if package_of(t) == b]
    assert hits == []


def role_name_literals() -> list[str]:
    out = []
    for path in sorted((ROOT / "engine").glob("*.py")):
        if path.name in ROLE_NAMES_ALLOWED_IN:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                      and n.body and isinstance(n.body[0], ast.Expr)
                      and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings and node.value in ROLE_NAMES):
                out.append((str(path.relative_to(ROOT.parent)), node.value, node.lineno))
    return out


def test_engine_names_no_role_outside_the_registry():
    # the runtime reads roles from engine/registry.py; a role name as a literal elsewhere
    # in engine/ is a special case the registry cannot see
    found = role_name_literals()
    new = [f"{f}:{line}: {lit!r}" for f, lit, line in found if (f, lit) not in KNOWN_ROLE_LITERALS]
    assert new == [], "role names as literals in shmex/engine:\n" + "\n".join(new)
    gone = KNOWN_ROLE_LITERALS - {(f, lit) for f, lit, _ in found}
    assert not gone, f"fixed, so take them off KNOWN_ROLE_LITERALS: {sorted(gone)}"
