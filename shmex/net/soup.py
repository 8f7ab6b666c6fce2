"""SoupBinTCP 4.x session packets the gateway writes and the login it reads.

Packet: u16 big-endian length (the type byte and the payload), type, payload. Text fields
are ASCII, alphanumeric ones left-justified and numeric ones right-justified, space-padded.
The per-message framing of the hot path (Unsequenced and Sequenced Data) is in
`net.ouch`'s kernels; this module has the rest.
"""

from __future__ import annotations

import struct

LOGIN_PAYLOAD = 6 + 10 + 10 + 20          # username, password, session, sequence number
NOT_AUTHORIZED, SESSION_UNAVAILABLE = b"A", b"S"
HEARTBEAT = b"\x00\x01H"                  # server heartbeat
END_OF_SESSION = b"\x00\x01Z"
CLIENT_HEARTBEAT = b"\x00\x01R"
LOGOUT = b"\x00\x01O"


def parse_login(body: bytes) -> tuple[str, str, str, int | None]:
    """(username, password, requested session, requested sequence number or None if
    the field is not a number) from a Login Request's payload."""
    text = body.decode("ascii", "replace")
    name, password, session, seq = text[:6].strip(), text[6:16].strip(), text[16:26].strip(), text[26:46].strip()
    try:
        n = int(seq) if seq else 0
    except ValueError:
        return name, password, session, None
    return name, password, session, n if n >= 0 else None


def login_request(user: str, password: str, session: str = "", seq: int = 0) -> bytes:
    body = (user.ljust(6) + password.ljust(10) + session.ljust(10) + str(seq).rjust(20)).encode("ascii")
    return struct.pack(">H", len(body) + 1) + b"L" + body


def login_accepted(session: str, seq: int) -> bytes:
    body = (session.ljust(10) + str(seq).rjust(20)).encode("ascii")
    return struct.pack(">H", len(body) + 1) + b"A" + body


def login_rejected(reason: bytes) -> bytes:
    return b"\x00\x02J" + reason


def unsequenced(msg: bytes) -> bytes:
    return struct.pack(">H", len(msg) + 1) + b"U" + msg


def debug(text: str) -> bytes:
    body = text.encode("ascii", "replace")[:1000]
    return struct.pack(">H", len(body) + 1) + b"+" + body
