"""uvicorn's HTTP/1.1 protocol (httptools) with a deadline and a size cap for request headers.

uvicorn 0.54 times out only a connection that idles between requests (`timeout_keep_alive`): one
that never sends a request, or sends its headers a byte at a time, is held for ever, an open file
each (200 slow and 200 idle connections took the server from 23 to 423 open files). Here a
connection must deliver a request's complete headers within `header_timeout_s` of connecting,
and within the same time of the first byte of each later request. When the time is up a partial
request gets a 408 and the connection is closed; a connection that sent nothing is just closed.

httptools itself accepts headers of any size (a 20 MB header was read into memory); past
`max_header_bytes` (the request line's URL and the header names and values) a request gets a 431
and the connection is closed. Headers still arriving are counted per read from the socket (less
the body bytes the read carried), so they are cut off before they pile up.

Request bodies are not timed here: a reverse proxy that buffers them is the place for that (see
the README).
"""

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _error_response(status: str, detail: str) -> bytes:
    """A complete response with the service's error body; the connection closes after it."""
    body = json.dumps({"detail": detail})
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}"
    ).encode()


class HeaderLimitsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` plus the header deadline and size cap; uvicorn builds it through
    `functools.partial(HeaderLimitsProtocol, header_timeout_s=..., max_header_bytes=...)`."""

    def __init__(self, *args: object, header_timeout_s: float, max_header_bytes: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.header_timeout_s = header_timeout_s
        self.max_header_bytes = max_header_bytes
        self.header_deadline: asyncio.TimerHandle | None = None
        self.in_headers = False  # a request has begun and its headers are not complete
        self.header_bytes = 0
        self.too_large = False  # complete headers over the cap: the request is not run
        self.body_bytes_read = 0  # of the read being parsed

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.body_bytes_read = 0
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.in_headers:
            self.header_bytes += len(data) - self.body_bytes_read
        if self.too_large or self.header_bytes > self.max_header_bytes:
            self._refuse("431 Request Header Fields Too Large",
                         f"the request headers are over {self.max_header_bytes} bytes; send smaller ones")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_headers = True
        if self.header_deadline is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self.in_headers = False
        self.header_bytes = 0
        if len(self.url) + sum(len(name) + len(value) for name, value in self.headers) > self.max_header_bytes:
            self.too_large = True
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_bytes_read += len(body)
        if not self.too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.too_large:
            super().on_message_complete()

    def _arm(self) -> None:
        self.header_deadline = self.loop.call_later(self.header_timeout_s, self._time_out)

    def _disarm(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _time_out(self) -> None:
        self.header_deadline = None
        if self.transport.is_closing():
            return
        responding = self.cycle is not None and not self.cycle.response_complete  # a 408 now would cut into it
        if self.in_headers and not responding:
            self._refuse("408 Request Timeout",
                         f"the request headers did not arrive within {self.header_timeout_s:g} s; send them at once")
        else:
            self.transport.close()

    def _refuse(self, status: str, detail: str) -> None:
        self._disarm()
        self.transport.write(_error_response(status, detail))
        self.transport.close()
