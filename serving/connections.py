"""Connection hygiene: request timeouts, idle keep-alive, a connection cap below the fd limit.

uvicorn (0.54, httptools) never closes a connection whose request has not finished
arriving: a client that opens connections and sends a header line every few seconds
(slowloris), or nothing at all, holds them forever, and with them file descriptors.
When descriptors run out, everything else that needs one fails too (the version
watcher's directory listings, loading a model). This module adds, on top of uvicorn's
httptools protocol:

- a **header timeout**: a request's line and headers must arrive within
  ``header_timeout`` seconds of the connection opening (or of the request's first byte on
  a kept-alive connection); else the server answers 408 and closes;
- a **body timeout**: its body must arrive within ``body_timeout`` seconds of the
  headers. Time during which the server itself is not reading (a heavy request waiting
  for its turn, flow control) is not counted;
- uvicorn's **keep-alive timeout** (``timeout_keep_alive``) for idle connections between
  requests, set from ``keep_alive_timeout``;
- a **connection cap**: beyond ``max_connections`` open connections a new one gets a
  503 and is closed at once. The default is the descriptor limit (whose soft value is
  first raised to the hard one, as servers do) minus :data:`tfserving.defaults.FD_RESERVE`
  and the descriptors already open, so that a flood of connections runs into the cap
  before it runs the process out of descriptors.

Counted in :mod:`serving.events` (``connections_refused``, ``connection_timeouts``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from typing import Any

from serving import events
from serving.limits import Limits
from tfserving import defaults

log = logging.getLogger("serving")


def _response(status: bytes, message: str) -> bytes:
    body = ('{"error": "' + message + '"}').encode()
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


_REQUEST_TIMEOUT = _response(b"408 Request Timeout", "Request did not arrive within the timeout")
_TOO_MANY = _response(b"503 Service Unavailable", "Too many open connections; retry later")


def raise_descriptor_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as err:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, hard, err)
    return soft


def open_descriptors() -> int:
    """Descriptors this process has open (0 where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def connection_cap(limits: Limits) -> int:
    """``limits.max_connections``, or the default derived from the descriptor limit."""
    if limits.max_connections:
        return limits.max_connections
    soft = raise_descriptor_limit()
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(16, soft - defaults.FD_RESERVE - open_descriptors())


def protocol_class(limits: Limits, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the timeouts and the cap of the module doc."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    header_timeout = limits.header_timeout
    body_timeout = limits.body_timeout

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        """HttpToolsProtocol that times out requests that do not arrive, and caps connections."""

        _timer: asyncio.TimerHandle | None = None
        _phase = ""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                events.count("connections_refused", reason="max_connections")
                if events.value("connections_refused", reason="max_connections") == 1:
                    log.warning("%d connections open: refusing new ones (--max-connections)",
                                max_connections)
                transport.write(_TOO_MANY)
                transport.close()
                return
            self._arm("headers", header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm("headers", header_timeout)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm("body", body_timeout)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def _arm(self, phase: str, seconds: float) -> None:
            self._disarm()
            self._phase = phase
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._phase = ""

        def _expired(self) -> None:
            self._timer = None
            if self.transport is None or self.transport.is_closing():
                return
            if self._phase == "body" and self.flow is not None and self.flow.read_paused:
                # The server is not reading (the request waits for its turn): not the
                # client's delay. Count again from when it reads.
                self._arm("body", body_timeout)
                return
            events.count("connection_timeouts", phase=self._phase)
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self._phase == "headers":
                self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()

    return GuardedHttpToolsProtocol


def uvicorn_options(limits: Limits) -> dict[str, Any]:
    """uvicorn.run() options for the protocol (``http``: httptools with the guards of this
    module, else uvicorn's ``auto``), keep-alive timeout and connection cap."""
    import importlib.util

    options: dict[str, Any] = {"timeout_keep_alive": limits.keep_alive_timeout}
    cap = connection_cap(limits)
    if importlib.util.find_spec("httptools") is None:
        log.warning("httptools is not installed: request timeouts and the connection cap are "
                    "off (uvicorn's h11 protocol)")
        return {**options, "http": "auto"}
    options["http"] = protocol_class(limits, cap)
    log.info("connections: at most %d; headers within %gs, body within %gs, idle keep-alive "
             "%gs", cap, limits.header_timeout, limits.body_timeout, limits.keep_alive_timeout)
    return options
