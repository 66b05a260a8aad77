"""Long-lived secrets in the OS keyring, and nowhere else.

RECC keeps one secret per name under the keyring service ``recc``. Three rules:

- **No silent plain text.** ``keyring`` picks the best backend it can find; on a headless
  Linux with ``keyrings.alt`` installed that is a plain-text file. RECC accepts a backend
  from ``keyrings.alt`` only when the user chose it explicitly (``PYTHON_KEYRING_BACKEND``
  or a ``keyringrc.cfg``); the ``fail`` / ``null`` backends, an empty chain or a locked
  keyring are a `KeyringUnavailable` error that lists the ways out.
- **Windows Credential Manager holds at most 2,560 bytes per secret** (UTF-16, so 1,280
  characters). A longer value (an access key pair with a session token can pass it) is
  split into parts stored under ``<name>#1``, ``<name>#2``, ... with a small header under
  ``<name>``; past `MAX_PARTS` parts it is refused. The same rule applies on every platform
  so that what works on Linux works on Windows.
- **Errors never carry the secret**: only the backend's name and the error's type.
"""

from __future__ import annotations

import os
from typing import Any

from recc.errors import RECCError

SERVICE = "recc"
WINDOWS_BLOB_LIMIT = 2560  # CRED_MAX_CREDENTIAL_BLOB_SIZE: 5 * 512 bytes
MAX_PARTS = 8
PARTS_HEADER = "recc-parts:"

WAYS_OUT = ("unlock or start your desktop keyring (GNOME Keyring, KWallet, KeePassXC's Secret Service; "
            "on a server run `dbus-run-session -- gnome-keyring-daemon --unlock`); "
            "or store no secret: `recc login --profile NAME` or `recc login --sso-session NAME`; "
            "or on EC2 use the instance role (no login needed); "
            "or choose a keyring explicitly, e.g. PYTHON_KEYRING_BACKEND=keyrings.alt.file.EncryptedKeyring "
            "(pip install keyrings.alt); see docs/credentials.md")


class KeyringUnavailable(RECCError):
    """No keyring RECC may keep secrets in (missing, locked, or only a silent plain-text file)."""

    code = "keyring-unavailable"
    http_status = 503


class SecretTooLarge(RECCError):
    code = "secret-too-large"


def _name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__name__}"


def explicitly_chosen() -> bool:
    """Did the user pick the keyring backend (environment variable or keyringrc.cfg)?"""
    if os.environ.get("PYTHON_KEYRING_BACKEND"):
        return True
    from keyring.core import _config_path

    try:
        return "default-keyring" in _config_path().read_text(encoding="utf-8")
    except OSError:
        return False


def backend() -> Any:
    """The keyring backend RECC may use; `KeyringUnavailable` naming the problem and the ways out otherwise."""
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:  # pragma: no cover - keyring is a dependency
        raise KeyringUnavailable("the keyring package is not installed", hint="pip install keyring") from None
    try:
        chosen = keyring.get_keyring()
    except Exception as exc:  # noqa: BLE001 - a broken keyringrc or backend import: say which, not how
        raise KeyringUnavailable(f"the keyring backend could not be loaded ({type(exc).__name__})",
                                 hint=WAYS_OUT) from None
    parts = list(chosen.backends) if isinstance(chosen, chainer.ChainerBackend) else [chosen]
    if not parts or any(isinstance(b, (fail.Keyring, null.Keyring)) for b in parts):
        raise KeyringUnavailable(f"no usable OS keyring was found (keyring chose {_name(chosen)})", hint=WAYS_OUT)
    silent_files = [b for b in parts if type(b).__module__.startswith("keyrings.alt")]
    if silent_files and not explicitly_chosen():
        # keyrings.alt's file backends are a fallback keyring picks on its own: refuse unless asked for
        raise KeyringUnavailable(f"the only keyring found is a file backend ({_name(silent_files[0])}) "
                                 "that nobody chose; RECC does not fall back to storing secrets in files",
                                 hint=WAYS_OUT)
    return chosen


def backend_name() -> str:
    return _name(backend())


def blob_size(value: str) -> int:
    """Bytes the value takes in Windows Credential Manager (UTF-16 little-endian)."""
    return len(value.encode("utf-16-le"))


def split_secret(value: str, limit: int = WINDOWS_BLOB_LIMIT, max_parts: int = MAX_PARTS) -> list[str]:
    """``[value]`` if it fits in ``limit`` bytes, else parts that each do (never splitting a character).

    `SecretTooLarge` past ``max_parts`` parts: a secret that big is not an AWS credential.
    """
    if blob_size(value) <= limit:
        return [value]
    parts, current, size = [], [], 0
    for ch in value:
        n = blob_size(ch)  # 2, or 4 for a surrogate pair
        if size + n > limit:
            parts.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += n
    parts.append("".join(current))
    if len(parts) > max_parts:
        raise SecretTooLarge(f"the secret is {blob_size(value)} bytes; the keyring allows {limit} bytes per entry "
                             f"and RECC splits into at most {max_parts} entries",
                             hint="store a shorter credential (an access key pair, or a profile name)")
    return parts


def _call(fn: Any, *args: Any) -> Any:
    from keyring.errors import KeyringError

    try:
        return fn(*args)
    except KeyringError as exc:
        locked = "locked" in type(exc).__name__.lower()
        what = "the keyring is locked" if locked else f"the keyring refused the request ({type(exc).__name__})"
        raise KeyringUnavailable(what, hint=WAYS_OUT) from None
    except Exception as exc:  # noqa: BLE001 - D-Bus and backend errors: never echo arguments (secrets)
        raise KeyringUnavailable(f"the keyring failed ({type(exc).__name__})", hint=WAYS_OUT) from None


def store(name: str, value: str) -> int:
    """Keep ``value`` under ``name`` (split if needed); returns the number of keyring entries used."""
    kr = backend()
    parts = split_secret(value)
    old = _part_count(kr, name)
    if len(parts) == 1:
        _call(kr.set_password, SERVICE, name, value)
    else:
        for i, part in enumerate(parts, 1):
            _call(kr.set_password, SERVICE, f"{name}#{i}", part)
        _call(kr.set_password, SERVICE, name, f"{PARTS_HEADER}{len(parts)}")
    first_stale = len(parts) + 1 if len(parts) > 1 else 1
    for i in range(first_stale, old + 1):  # parts of a longer old value
        _delete_one(kr, f"{name}#{i}")
    return len(parts)


def _part_count(kr: Any, name: str) -> int:
    head = _call(kr.get_password, SERVICE, name)
    if head and head.startswith(PARTS_HEADER) and head[len(PARTS_HEADER):].isdigit():
        return int(head[len(PARTS_HEADER):])
    return 0


def load(name: str) -> str | None:
    """The value under ``name``, joined from its parts; None if there is none."""
    kr = backend()
    head = _call(kr.get_password, SERVICE, name)
    if head is None:
        return None
    count = _part_count(kr, name)
    if not count:
        return head
    parts = [_call(kr.get_password, SERVICE, f"{name}#{i}") for i in range(1, count + 1)]
    if any(p is None for p in parts):
        raise KeyringUnavailable(f"the keyring entry {SERVICE}/{name} is incomplete (a part is missing)",
                                 hint="run `recc login` again")
    return "".join(parts)  # type: ignore[arg-type]


def _delete_one(kr: Any, name: str) -> bool:
    """Delete one entry; False if it was not there."""
    from keyring.errors import PasswordDeleteError

    try:
        kr.delete_password(SERVICE, name)
        return True
    except PasswordDeleteError:
        return False
    except Exception as exc:  # noqa: BLE001 - never echo arguments
        raise KeyringUnavailable(f"the keyring failed ({type(exc).__name__})", hint=WAYS_OUT) from None


def delete(name: str) -> bool:
    """Remove ``name`` and its parts; True if anything was there."""
    kr = backend()
    count = _part_count(kr, name)
    found = _delete_one(kr, name)
    for i in range(1, count + 1):
        _delete_one(kr, f"{name}#{i}")
    return found
