"""The configuration files' shared form: comma-separated ASCII lines, ``#`` comments."""

from __future__ import annotations

from shmex.errors import UsageError


def rows(text: str, source: str):
    """(where 'file:line', fields) for each line that is not blank or a comment."""
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            yield f"{source}:{lineno}", [p.strip() for p in line.split(",")]


def name_field(value: str, where: str, what: str, most: int) -> str:
    """A name of 1 to `most` printable ASCII characters, no spaces."""
    if not (1 <= len(value) <= most) or not value.isascii() or not value.isprintable() or " " in value:
        raise UsageError(f"{where}: {what} {value!r}: 1 to {most} printable ASCII characters, no spaces")
    return value


def read(path: str, kind: str, parse):
    """parse(text, path) of the file, its errors naming it."""
    try:
        with open(path, encoding="ascii") as f:
            return parse(f.read(), path)
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{kind} file {path}: {e}") from None
