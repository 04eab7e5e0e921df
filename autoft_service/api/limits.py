"""Request-size limit, as pure ASGI middleware: refuse by ``Content-Length`` before reading anything, and
cut off a body that streams past the limit (chunked uploads or a lying header)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoft_service.api.errors_http import MalformedJSON, PayloadTooLarge, error_response


class BodySizeLimit:
    """Buffer request bodies up to ``max_bytes`` and answer 413 beyond it; the app sees the same body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error_response(
                    MalformedJSON("invalid Content-Length header", field="Content-Length"), 400
                )(scope, receive, send)
                return
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return

        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                break
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(
            f"request body is larger than {self.max_bytes} bytes",
            field="body",
            details={"max_bytes": self.max_bytes},
        )
        await error_response(error, 413)(scope, receive, send)
