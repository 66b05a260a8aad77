"""Windows logout: a hidden window that hears the end-session messages and runs the cleanup.

Windows does not send SIGTERM at logout; it sends WM_QUERYENDSESSION and WM_ENDSESSION to
top-level windows. A process without a window (and one started through the venv launcher,
which does not forward the messages) is killed without notice, so the daemon, started with
``pythonw.exe`` directly, opens a hidden window whose procedure is `EndSessionHandler`.
The handler is plain Python, unit-tested on any platform; only `run_hidden_window` needs Windows.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, Callable

log = logging.getLogger("reccd.winsession")

WM_QUERYENDSESSION = 0x0011
WM_ENDSESSION = 0x0016
WM_CLOSE = 0x0010
ENDSESSION_LOGOFF = 0x80000000


class EndSessionHandler:
    """Start the cleanup when Windows asks to end the session; wait for it (bounded) when it does."""

    def __init__(self, cleanup: Callable[[], None], timeout: float = 10.0) -> None:
        self._cleanup = cleanup
        self.timeout = timeout
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()

    def _start(self) -> None:
        if self._thread is None:
            def run() -> None:
                try:
                    self._cleanup()
                except Exception:  # noqa: BLE001 - logout goes on regardless
                    log.exception("cleanup at logout failed")
                finally:
                    self.finished.set()

            self._thread = threading.Thread(target=run, name="recc-logout", daemon=True)
            self._thread.start()

    def __call__(self, msg: int, wparam: int, lparam: int) -> int | None:
        """The window procedure's answer, or None for default processing."""
        if msg == WM_QUERYENDSESSION:
            # never block the logout: say yes at once, and start deleting clusters meanwhile
            self._start()
            return 1
        if msg == WM_ENDSESSION:
            if wparam:  # the session really ends (a cancelled logout sends wparam=0)
                self._start()
                self.finished.wait(self.timeout)
            return 0
        if msg == WM_CLOSE:
            self._start()
            return 0
        return None


def run_hidden_window(handler: EndSessionHandler) -> threading.Thread:  # pragma: no cover - Windows only
    """Pump messages for a hidden top-level window in a thread (Windows only)."""
    if sys.platform != "win32":
        raise OSError("the end-session window exists only on Windows")
    import ctypes
    from ctypes import wintypes

    user32 = ctypes.WinDLL("user32", use_last_error=True)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    WNDPROC = ctypes.WINFUNCTYPE(ctypes.c_ssize_t, wintypes.HWND, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM)
    user32.DefWindowProcW.argtypes = [wintypes.HWND, wintypes.UINT, wintypes.WPARAM, wintypes.LPARAM]
    user32.DefWindowProcW.restype = ctypes.c_ssize_t

    class WNDCLASSW(ctypes.Structure):
        _fields_ = [("style", wintypes.UINT), ("lpfnWndProc", WNDPROC), ("cbClsExtra", ctypes.c_int),
                    ("cbWndExtra", ctypes.c_int), ("hInstance", wintypes.HINSTANCE), ("hIcon", wintypes.HICON),
                    ("hCursor", wintypes.HANDLE), ("hbrBackground", wintypes.HBRUSH),
                    ("lpszMenuName", wintypes.LPCWSTR), ("lpszClassName", wintypes.LPCWSTR)]

    def procedure(hwnd: Any, msg: int, wparam: int, lparam: int) -> int:
        answer = handler(msg, wparam, lparam)
        return user32.DefWindowProcW(hwnd, msg, wparam, lparam) if answer is None else answer

    def pump() -> None:
        proc = WNDPROC(procedure)
        wc = WNDCLASSW(lpfnWndProc=proc, hInstance=kernel32.GetModuleHandleW(None), lpszClassName="RECCDaemon")
        user32.RegisterClassW(ctypes.byref(wc))
        user32.CreateWindowExW(0, "RECCDaemon", "RECC daemon", 0, 0, 0, 0, 0, None, None, wc.hInstance, None)
        msg = wintypes.MSG()
        while user32.GetMessageW(ctypes.byref(msg), None, 0, 0) > 0:
            user32.TranslateMessage(ctypes.byref(msg))
            user32.DispatchMessageW(ctypes.byref(msg))

    thread = threading.Thread(target=pump, name="recc-endsession", daemon=True)
    thread.start()
    return thread
