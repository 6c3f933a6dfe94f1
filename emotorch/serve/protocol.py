"""uvicorn's HTTP/1.1 protocol with a deadline on request headers: a client that opens a connection
and sends its headers slowly, or never finishes them, is cut off instead of holding the connection
(and its memory) for ever. Bodies have their own limit (:class:`emotorch.serve.middleware.BodyLimit`)."""

from __future__ import annotations

import asyncio
from functools import cache

from uvicorn.protocols.http.h11_impl import H11Protocol

from emotorch.serve.settings import Settings


@cache
def _deadline_s() -> float:
    return Settings.from_env().read_timeout_s  # this worker's settings: read once, not on every connection


class HeaderDeadline(H11Protocol):
    """H11Protocol that closes a connection whose request headers have not all arrived within the
    server's ``read_timeout_s`` of it opening, or of the previous response."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._waiting_for = self.cycle  # headers have arrived once uvicorn starts a new cycle
        self._timer = self.loop.call_later(_deadline_s(), self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        if self.cycle is self._waiting_for and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not self._waiting_for:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
