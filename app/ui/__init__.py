"""The browser UI for dataset owners: plain HTML, CSS and JavaScript (no build step, no CDN) that
call the REST API; signed in by an HttpOnly session cookie (app/api/routes/session.py)."""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

UI_PATH = "/ui"
STATIC = Path(__file__).resolve().parent / "static"

# only this origin's own files: no inline script, no third-party asset, never framed
HEADERS = {
    b"content-security-policy": b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-cache",
}


class UiFiles(StaticFiles):
    def __init__(self) -> None:
        super().__init__(directory=STATIC, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS.items()]
            await send(message)

        await super().__call__(scope, receive, with_headers)
