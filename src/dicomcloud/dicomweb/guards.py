"""Request guards and what error responses may say.

* :class:`QueryLengthLimit`: a query string longer than ``[search] max_query_length``
  is answered 414 URI Too Long (RFC 9110 15.5.15) before any route parses it.
* :func:`public_reason`: server-side failure reasons are shown to clients without the
  filesystem paths they may name (the log keeps them); no response ever carries a
  Python traceback (the unexpected-error handler answers a fixed text).
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Receive, Scope, Send

#: An absolute POSIX path of two segments or more, not part of a URL.
_PATH = re.compile(r"(?<![\w/:.~-])/(?:[\w.@+~-]+/)+[\w.@+~-]*")


def public_reason(reason: str) -> str:
    """``reason`` with absolute filesystem paths replaced by ``<path>``."""
    return _PATH.sub("<path>", reason)


class QueryLengthLimit:
    """ASGI middleware refusing requests whose query string is over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(scope.get("query_string", b"")) > self.limit:
            body = json.dumps(
                {
                    "status": 414,
                    "error": f"the query string is longer than {self.limit} bytes "
                    "(search.max_query_length)",
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 414,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
