"""Responses kept in the cache as bytes: status 200, media type, Warning header, body.

Format: one line of JSON (``{"type": ..., "warning": ...}``), a newline, the body.
"""

from __future__ import annotations

import json

from starlette.responses import Response


def freeze_response(response: Response) -> bytes:
    """A 200 response as bytes for the cache."""
    head = {
        "type": response.headers.get("content-type", ""),
        "warning": response.headers.get("warning"),
    }
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + bytes(response.body)


def cached_search_response(frozen: bytes) -> Response:
    """The response ``freeze_response`` kept."""
    line, _, body = frozen.partition(b"\n")
    head = json.loads(line)
    headers = {"Warning": head["warning"]} if head.get("warning") else {}
    response = Response(body, 200, headers)
    response.headers["content-type"] = head["type"]
    return response
