"""The keyring rules in-process: the Windows size limit, splitting, refusing silent plain text, locked keyrings."""

from __future__ import annotations

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import KeyringLocked, PasswordDeleteError

from recc import secretstore
from recc.secretstore import (WINDOWS_BLOB_LIMIT, KeyringUnavailable, SecretTooLarge, blob_size, split_secret)


class MemoryKeyring(KeyringBackend):
    """An in-memory keyring (a stand-in for the OS one; the code under test is RECC's)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if blob_size(password) > WINDOWS_BLOB_LIMIT:  # behave like Windows Credential Manager
            raise keyring.errors.PasswordSetError("blob too large")
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.items.pop((service, username), None) is None:
            raise PasswordDeleteError("not found")


class LockedKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise KeyringLocked("locked")

    set_password = get_password  # type: ignore[assignment]


@pytest.fixture
def memory():
    kr = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(kr)
    yield kr
    keyring.set_keyring(previous)


def test_size_is_counted_in_utf16_bytes_and_parts_stay_under_the_limit():
    assert blob_size("a" * 1280) == WINDOWS_BLOB_LIMIT
    assert split_secret("a" * 1280) == ["a" * 1280]
    parts = split_secret("a" * 1281)
    assert [len(p) for p in parts] == [1280, 1]
    emoji = "\U0001f511" * 700  # 4 bytes each in UTF-16: a pair is never cut in half
    parts = split_secret(emoji)
    assert "".join(parts) == emoji and all(blob_size(p) <= WINDOWS_BLOB_LIMIT for p in parts)
    assert all(len(p.encode("utf-16-le", "strict")) % 4 == 0 for p in parts)
    with pytest.raises(SecretTooLarge, match="2560 bytes"):
        split_secret("x" * (1280 * 8 + 1))


def test_store_load_delete_round_trip_with_split_and_shrink(memory):
    long_value = "s" * 3000
    assert secretstore.store("aws", long_value) == 3
    assert secretstore.load("aws") == long_value
    assert all(blob_size(v) <= WINDOWS_BLOB_LIMIT for v in memory.items.values())
    assert secretstore.store("aws", "short") == 1  # the old parts do not linger
    assert memory.items == {("recc", "aws"): "short"}
    assert secretstore.delete("aws") is True
    assert secretstore.load("aws") is None and memory.items == {}
    assert secretstore.delete("aws") is False


def test_a_file_keyring_nobody_chose_is_refused(monkeypatch, tmp_path):
    from keyrings.alt.file import PlaintextKeyring

    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no keyringrc.cfg
    previous = keyring.get_keyring()
    keyring.set_keyring(PlaintextKeyring())
    try:
        with pytest.raises(KeyringUnavailable, match="does not fall back to storing secrets in files") as err:
            secretstore.store("aws", "secret-value")
        assert "secret-value" not in str(err.value)
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
        assert secretstore.backend_name() == "keyrings.alt.file.PlaintextKeyring"  # chosen: accepted
    finally:
        keyring.set_keyring(previous)


def test_fail_backend_and_locked_keyring_are_clear_errors(monkeypatch):
    from keyring.backends import fail

    previous = keyring.get_keyring()
    try:
        keyring.set_keyring(fail.Keyring())
        with pytest.raises(KeyringUnavailable, match="no usable OS keyring") as err:
            secretstore.load("aws")
        assert "--profile" in err.value.hint and "--sso-session" in err.value.hint
        keyring.set_keyring(LockedKeyring())
        with pytest.raises(KeyringUnavailable, match="the keyring is locked"):
            secretstore.store("aws", "top-secret")
    finally:
        keyring.set_keyring(previous)
