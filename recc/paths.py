"""Where RECC keeps its files, and the checks that keep them private.

Runtime files (socket, lock, info file) live in the user's runtime folder, which may
vanish at logout; state and logs live in the user's data and log folders, which
survive it. Every folder is overridable by an environment variable (tests use them).
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

import platformdirs

from recc.errors import InsecureRuntimeDir

APP = "recc"
# sockaddr_un.sun_path is 108 bytes on Linux, 104 on macOS: stay under the smaller.
MAX_SOCKET_PATH = 103


def runtime_dir() -> Path:
    """The per-user runtime folder (socket, lock, info file)."""
    if os.environ.get("RECC_RUNTIME_DIR"):
        return Path(os.environ["RECC_RUNTIME_DIR"])
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / APP
    if sys.platform == "win32":
        return Path(platformdirs.user_runtime_dir(APP, appauthor=False))
    # platformdirs would fall back to a shared /tmp/runtime-<uid>; name our own and
    # check it like any other (owner and mode), never trusting a pre-existing folder.
    return Path(tempfile.gettempdir()) / f"recc-{os.getuid()}"


def data_dir() -> Path:
    """Local (non-roaming) data: the state database and per-cluster working folders."""
    return Path(os.environ.get("RECC_DATA_DIR") or platformdirs.user_data_dir(APP, appauthor=False, roaming=False))


def log_dir() -> Path:
    return Path(os.environ.get("RECC_LOG_DIR") or platformdirs.user_log_dir(APP, appauthor=False))


def config_dir() -> Path:
    return Path(os.environ.get("RECC_CONFIG_DIR") or platformdirs.user_config_dir(APP, appauthor=False))


def socket_path() -> Path:
    return runtime_dir() / "reccd.sock"


def daemon_log_path() -> Path:
    return log_dir() / "reccd.log"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700 if missing; refuse it if someone else owns it or others can use it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise InsecureRuntimeDir(f"{path} is not a plain folder", hint="remove it and start again")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise InsecureRuntimeDir(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})",
            hint="another user may be trying to intercept RECC; remove the folder or set RECC_RUNTIME_DIR",
        )
    if st.st_mode & 0o077:
        raise InsecureRuntimeDir(
            f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"run `chmod 700 {path}` or remove it",
        )


def check_socket_path(path: Path) -> None:
    if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
        raise InsecureRuntimeDir(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes",
            hint="set RECC_RUNTIME_DIR to a shorter folder",
        )


def write_private_file(path: Path, data: str) -> None:
    """Write atomically (temp file + rename) with mode 0600 from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
