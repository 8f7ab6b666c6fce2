"""Users: who may log in to the gateway, with which account.

One user per line, ``#`` starts a comment, fields separated by commas::

    # username, account, password hash[, cancel_on_disconnect]
    alice, 101, pbkdf2_sha256$20000$<salt hex>$<hash hex>

- ``username``: 1 to 6 ASCII characters (SoupBinTCP's login field).
- ``account``: a positive integer, stamped by the gateway on every command of the user.
- the password is kept only as a salted PBKDF2-SHA256 hash (`hash_password`; the
  command ``shmex ouch --hash-password`` prints one). A password is 1 to 10 characters.
- ``cancel_on_disconnect``: ``yes`` (the default) cancels the user's resting orders when
  its session goes away; ``no`` keeps them.

The line order is the user index (0, 1, ...): a user's orders carry it in their client id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from shmex.errors import UsageError
from shmex.net import textfile

USER_LEN, PASSWORD_LEN = 6, 10
ITERATIONS = 20_000
SCHEME = "pbkdf2_sha256"


@dataclass(frozen=True)
class User:
    index: int
    name: str
    account: int
    password_hash: str
    cancel_on_disconnect: bool = True

    def check(self, password: str) -> bool:
        return verify_password(password, self.password_hash)


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    if not 1 <= len(password) <= PASSWORD_LEN:
        raise UsageError(f"password: 1 to {PASSWORD_LEN} characters (SoupBinTCP's login field)")
    salt = salt or secrets.token_bytes(16)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{SCHEME}${iterations}${salt.hex()}${dk.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, iters, salt, want = stored.split("$")
        if scheme != SCHEME:
            return False
        dk = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(iters))
    except ValueError:
        return False
    return hmac.compare_digest(dk.hex(), want)


def parse(text: str, source: str = "<users>") -> list[User]:
    out: list[User] = []
    seen: dict[str, str] = {}
    for where, parts in textfile.rows(text, source):
        if len(parts) not in (3, 4):
            raise UsageError(f"{where}: want 'username, account, password hash[, cancel_on_disconnect]'")
        name, account, phash = parts[:3]
        textfile.name_field(name, where, "username", USER_LEN)
        if name in seen:
            raise UsageError(f"{where}: user {name} already defined at {seen[name]}")
        try:
            acct = int(account)
        except ValueError:
            raise UsageError(f"{where}: account {account!r} is not an integer") from None
        if not 0 < acct < 2 ** 32:
            raise UsageError(f"{where}: account {acct}: want 1 .. 2**32-1")
        if not phash.startswith(SCHEME + "$") or phash.count("$") != 3:
            raise UsageError(f"{where}: password hash must be '{SCHEME}$iterations$salt$hash' "
                             f"(shmex ouch --hash-password prints one)")
        cod = True
        if len(parts) == 4:
            if parts[3].lower() not in ("yes", "no"):
                raise UsageError(f"{where}: cancel_on_disconnect {parts[3]!r}: yes or no")
            cod = parts[3].lower() == "yes"
        seen[name] = where
        out.append(User(len(out), name, acct, phash, cod))
    if not out:
        raise UsageError(f"{source}: no users")
    return out


def load(path: str) -> list[User]:
    return textfile.read(path, "users", parse)
