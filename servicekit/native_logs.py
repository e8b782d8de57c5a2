"""gRPC core's own log lines (and whatever else C code or a child process writes to stderr) as JSON log lines.

gRPC core writes through absl straight to file descriptor 2, past Python's logging, so its lines broke the JSON
stream: `I1207 20:50:56.030129 31410 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL:
error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE: ...`. `route()` points fd 2
at a pipe; a thread reads it line by line and logs each line through logger `grpc` (absl's I/W/E/F letter as
the level; other lines through `stderr`). Python's own stderr (the JSON handler, a traceback at exit) keeps
the original descriptor, so nothing of ours waits on that thread.

A TLS handshake failure (a client without a certificate on an mTLS port, plaintext on a TLS port, an
untrusted certificate) becomes one WARNING `TLS handshake failed` with the reason and what it usually means,
at most once a minute per reason, counting the ones folded into it: a client retrying in a loop cannot flood
the log. gRPC's line does not name the peer (only its debug handshake trace does), so the key is the reason.

`route()` is for a serving process only (servicekit.startup.until_stopped): it changes the process's fd 2.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_LINE = 16 * 1024  # longer lines are logged in pieces
WINDOW_S = 60.0
MAX_REASONS = 64  # distinct handshake reasons remembered; the oldest is forgotten first

# absl's prefix: severity letter, MMDD, time, thread id, file:line, then the message.
_ABSL = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] (.*)$")
_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_HANDSHAKE = "Handshake failed with error "
# What an OpenSSL reason in a failed server handshake usually means, for the person reading the log.
MEANINGS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate, and this port requires one (mTLS)",
    "WRONG_VERSION_NUMBER": "the client does not speak TLS (plaintext on a TLS port?)",
    "CERTIFICATE_VERIFY_FAILED": "the client's certificate is not signed by the trusted CA",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust this server's CA",
    "CERTIFICATE_UNKNOWN": "the client refused this server's certificate",
}

log = logging.getLogger("grpc")
other = logging.getLogger("stderr")


class Folding:
    """Once per `key` per window: `observe` says whether to log now, and how many were folded since the last."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def observe(self, key: str) -> int | None:
        """None: within the window of the last line for `key` (counted); else the count folded since it."""
        now, last = self.clock(), self._seen.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_REASONS:
            self._seen.popitem(last=False)
        return last[1] if last is not None else 0


def emit(line: str, handshakes: Folding) -> None:
    """Log one line read from fd 2."""
    match = _ABSL.match(line)
    if match is None:
        if line.strip():
            other.warning(line)
        return
    letter, source, message = match.groups()
    if message.startswith(_HANDSHAKE):
        reason = message[len(_HANDSHAKE) :]
        folded = handshakes.observe(reason)
        if folded is not None:
            meaning = next((text for code, text in MEANINGS.items() if code in reason), "")
            extra = {"reason": reason, "meaning": meaning, "folded": folded, "window_s": handshakes.window_s}
            log.warning("TLS handshake failed", extra=extra)
        return
    log.log(_LEVELS[letter], message, extra={"source": source})


def _read(fd: int) -> None:
    handshakes = Folding()
    with os.fdopen(fd, "rb") as pipe:
        for raw in iter(lambda: pipe.readline(MAX_LINE), b""):
            emit(raw.decode(errors="replace").rstrip("\n"), handshakes)


_routed = False


def route() -> None:
    """Point fd 2 at a pipe read by a thread that logs each line (idempotent); our own output keeps stderr."""
    global _routed
    if _routed:
        return
    _routed = True
    original = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handler.setStream(original)
    sys.stderr = original
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    threading.Thread(target=_read, args=(read_end,), name="native-stderr", daemon=True).start()
