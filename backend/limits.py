"""Limits on what a client may send: a size cap (413) and a deadline for the whole body (408), and
how many wrong credentials one address may present (429).

gunicorn's threaded workers hand a connection to a thread once its first bytes arrive, and a
client that then trickles its body holds that thread. This WSGI middleware reads every body itself,
before the app sees it: one declared (or growing) past ``max_bytes`` is refused without reading the
rest, and one not complete within ``timeout`` seconds is cut off: a watchdog shuts the socket's
read side, which ends the blocked read at once whatever the trickle rate.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import secrets
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
ARRIVED = "birads.arrived"  # WSGI environ key: when the request's body began to arrive (time.monotonic)


class BodyLimits:
    def __init__(self, app, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    def __call__(self, environ: dict, start_response):
        if environ.get("REQUEST_METHOD") not in ("POST", "PUT", "PATCH"):
            return self.app(environ, start_response)
        try:
            declared = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _answer(start_response, 400, "invalid Content-Length")
        if declared > self.max_bytes:
            return _answer(start_response, 413, f"request body of {declared} bytes is larger than "
                                                f"MAX_REQUEST_BYTES={self.max_bytes}", close=True)
        started = environ[ARRIVED] = time.monotonic()
        body, status = self._read(environ, declared)  # body is None unless complete
        if status == 413:
            return _answer(start_response, 413, f"request body is larger than MAX_REQUEST_BYTES={self.max_bytes}",
                           close=True)
        if status == 408:
            log.warning("%s %s: body not complete after %.1f s: 408", environ.get("REQUEST_METHOD"),
                        environ.get("PATH_INFO"), time.monotonic() - started)
            return _answer(start_response, 408, f"request body not received within REQUEST_TIMEOUT="
                                                f"{self.timeout:g} s", close=True)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def _read(self, environ: dict, declared: int) -> tuple[bytes | None, int]:
        """(body, 200), or (None, 413 | 408)."""
        stream = environ["wsgi.input"]
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        watchdog = Watchdog(environ.get("gunicorn.socket"), self.timeout)
        body = bytearray()
        try:
            while chunked or len(body) < declared:
                want = CHUNK if chunked else min(CHUNK, declared - len(body))
                data = stream.read(want)
                if not data:
                    break
                body += data
                if len(body) > self.max_bytes:
                    return None, 413
                if watchdog.expired:
                    break
        except (OSError, ValueError):  # the watchdog shut the socket, or the client went away
            pass
        finally:
            watchdog.cancel()
        complete = not watchdog.expired and (chunked or len(body) == declared)
        return (bytes(body), 200) if complete else (None, 408)


class Watchdog:
    """Shuts ``sock`` after ``seconds`` unless cancelled first: a read blocked on it returns at once,
    however slowly the peer trickles (a per-read timeout cannot bound a whole transfer).

    One shared thread watches every deadline (checked every ``TICK`` seconds): arming costs a lock
    and a dict entry, not a thread per request."""

    TICK = 0.1
    _armed: dict[int, Watchdog] = {}
    _lock = threading.Lock()
    _thread: threading.Thread | None = None

    def __init__(self, sock, seconds: float, how: int = socket.SHUT_RD) -> None:
        self.sock, self.how = sock, how
        self.deadline = time.monotonic() + seconds
        self.expired = False
        with Watchdog._lock:
            Watchdog._armed[id(self)] = self
            if Watchdog._thread is None or not Watchdog._thread.is_alive():
                Watchdog._thread = threading.Thread(target=Watchdog._watch, name="deadlines", daemon=True)
                Watchdog._thread.start()

    @classmethod
    def _watch(cls) -> None:
        while True:
            time.sleep(cls.TICK)
            now = time.monotonic()
            with cls._lock:
                due = [w for w in cls._armed.values() if w.deadline <= now]
                for watchdog in due:
                    del cls._armed[id(watchdog)]
            for watchdog in due:
                watchdog._expire()

    def _expire(self) -> None:
        self.expired = True
        if self.sock is not None:
            try:
                self.sock.shutdown(self.how)
            except OSError:
                pass

    def cancel(self) -> None:
        with Watchdog._lock:
            Watchdog._armed.pop(id(self), None)


def _answer(start_response, status: int, message: str, close: bool = False) -> list[bytes]:
    reasons = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large"}
    payload = json.dumps({"error": message}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    if close:  # the rest of the body is never read: the connection cannot carry another request
        headers.append(("Connection", "close"))
    start_response(f"{status} {reasons[status]}", headers)
    return [payload]


class FailedAttempts:
    """Wrong credentials per client address: one that presented ``limit`` different ones within
    ``window`` seconds is refused, right or wrong, until the oldest of those is ``window`` old, so a
    password cannot be guessed at the speed of the network. The same wrong credential again counts
    once: Label Studio retrying a stale password from one project must not lock every project out
    (all of them call from its one address), and repeating a guess guesses nothing new. Only a keyed
    hash of each is kept. In memory and per process (each gunicorn worker counts its own: WORKERS
    times ``limit`` at most); ``limit`` 0: no limit."""

    MAX_ADDRESSES = 10_000  # the longest-quiet addresses are forgotten first

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: OrderedDict[str, deque[tuple[float, bytes]]] = OrderedDict()
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)  # this process's: the kept hashes say nothing elsewhere

    def attempt(self, address: str, passed: bool, presented: bool = True, credential: str = "") -> int:
        """Whole seconds ``address`` must wait before its credentials count (then they were not
        looked at); 0: they count, and a failed attempt that presented any (``credential``, as
        presented) is recorded unless the same one already is. One step under the lock: parallel
        requests cannot all pass the check before any is recorded."""
        if self.limit <= 0:
            return 0
        with self._lock:
            times = self._recent(address)
            if len(times) >= self.limit:
                self._failures.move_to_end(address)  # still trying: not the quietest
                return max(1, math.ceil(times[0][0] + self.window - self.clock()))
            if passed or not presented:
                return 0
            fingerprint = hmac.new(self._key, credential.encode(), hashlib.sha256).digest()
            if all(seen != fingerprint for _, seen in times):
                times.append((self.clock(), fingerprint))
                self._failures[address] = times
                self._failures.move_to_end(address)
                while len(self._failures) > self.MAX_ADDRESSES:
                    self._failures.popitem(last=False)
            return 0

    def _recent(self, address: str) -> deque[tuple[float, bytes]]:
        times = self._failures.get(address) or deque()
        while times and times[0][0] <= self.clock() - self.window:
            times.popleft()
        if not times:
            self._failures.pop(address, None)
        return times
