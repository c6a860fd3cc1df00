"""Request-body size limit, enforced before the app sees the request."""

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`, on every endpoint, whether or not it reads its body.

    A declared Content-Length is checked at once (the server never delivers more than it says).
    A body without one (Transfer-Encoding: chunked) is read here first, up to one byte over the
    limit: over it, 413; within it, the app gets the body as one message. Raising from inside the
    app's `receive` instead would reach FastAPI's body parsing, which answers any exception there
    with a 400, and an endpoint that never reads its body would not notice at all.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _reply(send, 400, "the Content-Length header is not a number")
            elif int(declared) > self.max_bytes:
                await _reply(send, 413, self._message())
            else:
                await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no body
            await self.app(scope, receive, send)
            return
        first = await self._read_body(receive)
        if first is None:
            await _reply(send, 413, self._message())
            return
        pending = [first]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> Message | None:
        """The whole body as one `http.request` message (or the `http.disconnect` that cut it
        short); None once it is over the limit."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}

    def _message(self) -> str:
        return (f"the request body is over the limit of {self.max_bytes} bytes; send a smaller one "
                "(an image: scale it down or compress it more)")


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
