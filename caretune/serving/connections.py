"""The API's connections: uvicorn's HTTP/1.1 protocol with a deadline for a request's headers and a limit on open
connections. uvicorn's h11 protocol has no header deadline and no keep-alive timer before the first response, and
`limit_concurrency` answers 503 only to complete requests: a client that sends one header line a second, or a socket
that sends nothing, stayed open indefinitely, and enough of them exhaust file descriptors."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol

from caretune.serving.defaults import HEADER_TIMEOUT_S, MAX_CONNECTIONS


def guarded_protocol(header_timeout_s: float = HEADER_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS) -> type:
    """uvicorn's h11 protocol that closes a connection whose request headers are not complete `header_timeout_s`
    after it connected (or after its last answer), and any connection past `max_connections` open at once."""

    class GuardedH11Protocol(H11Protocol):
        headers_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self.headers_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self.headers_timer is not None:
                self.headers_timer.cancel()
                self.headers_timer = None

        def _headers_late(self) -> None:
            self.headers_timer = None
            if self.cycle is None or self.cycle.response_complete:  # still no complete request headers
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:  # its headers are in: the request's limits apply
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol
