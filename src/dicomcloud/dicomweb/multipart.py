"""Streaming ``multipart/related`` reading (RFC 2387, PS3.18 8.6.1.2).

The body is fed to python-multipart's streaming parser chunk by chunk; each part is
spooled in memory up to a threshold and to a temporary file beyond it, so memory stays
bounded whatever the size of the request or of one part.  A part over the size limit
is read on (and dropped) so that it can be reported alone; more parts than allowed end
the reading with ``PayloadTooLarge``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from dicomcloud.errors import BadRequest, PayloadTooLarge


@dataclass
class Part:
    """One received body part: its headers and its content (bytes or a spool file)."""

    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None
    path: Path | None = None
    size: int = 0
    #: The part exceeded the instance size limit: its bytes were dropped, not kept.
    too_large: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
        self.data = None


class _Spool:
    """Collects a part's bytes: in memory, then in a file once over ``threshold``;
    past ``limit`` it only counts them (the part is reported as too large)."""

    def __init__(self, threshold: int, directory: Path, limit: int) -> None:
        self._threshold = threshold
        self._directory = directory
        self._limit = limit
        self._memory = bytearray()
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None
        self.size = 0
        self.too_large = False

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.too_large:
            return
        if self.size > self._limit:
            self.too_large = True
            self.abort()
            self._memory = bytearray()
            return
        if self._file is None and self.size <= self._threshold:
            self._memory += chunk
            return
        if self._file is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in finish()
                dir=self._directory, prefix="stow-", suffix=".part", delete=False
            )
            self._file.write(self._memory)
            self._memory = bytearray()
        self._file.write(chunk)

    def finish(self, part: Part) -> None:
        part.size = self.size
        part.too_large = self.too_large
        if self.too_large:
            return
        if self._file is None:
            part.data = bytes(self._memory)
            self._memory = bytearray()
        else:
            self._file.close()
            part.path = Path(self._file.name)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            os.unlink(self._file.name)
            self._file = None


class MultipartReader:
    """Feed body chunks with ``feed``; take completed parts with ``take``."""

    def __init__(
        self,
        boundary: str,
        *,
        spool_threshold: int,
        spool_dir: Path,
        max_part_bytes: int,
        max_parts: int | None = None,
    ) -> None:
        if not boundary or len(boundary) > 70:
            raise BadRequest("the multipart boundary must be 1-70 characters (RFC 2046 5.1.1)")
        self._threshold = spool_threshold
        self._spool_dir = spool_dir
        self._max_part = max_part_bytes
        self._max_parts = max_parts
        self._completed: list[Part] = []
        self._current: Part | None = None
        self._spool: _Spool | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self.parts_seen = 0
        self.ended = False
        self._delimiter = b"--" + boundary.encode("latin-1")
        #: Unmatched end of the preamble (RFC 2046 5.1.1: ignored); None after it.
        self._preamble: bytes | None = b""
        self._dropped = False  # whether preamble bytes were discarded already
        self._parser = MultipartParser(
            boundary.encode("latin-1"),
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_end": self._on_end,
            },
            max_header_count=32,
        )

    # -- parser callbacks -----------------------------------------------------------------

    def _on_part_begin(self) -> None:
        if self._max_parts is not None and self.parts_seen >= self._max_parts:
            raise PayloadTooLarge(
                f"the request has more than {self._max_parts} parts (ingest.max_parts); "
                "the parts after it were not read"
            )
        self._current = Part()
        self._spool = _Spool(self._threshold, self._spool_dir, self._max_part)
        self.parts_seen += 1

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._spool is not None
        self._spool.write(data[start:end])

    def _on_part_end(self) -> None:
        assert self._current is not None and self._spool is not None
        self._spool.finish(self._current)
        self._completed.append(self._current)
        self._current = None
        self._spool = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        assert self._current is not None
        name = self._header_field.decode("latin-1").strip().lower()
        self._current.headers[name] = self._header_value.decode("latin-1").strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_end(self) -> None:
        self.ended = True

    # -- API ------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if self.ended:
            return  # epilogue after the close delimiter is ignored (RFC 2046 5.1.1)
        if self._preamble is not None:
            chunk = self._skip_preamble(chunk)
            if not chunk:
                return
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self.abort()
            raise BadRequest(f"malformed multipart body: {exc}") from exc

    def _skip_preamble(self, chunk: bytes) -> bytes:
        """Drop what precedes the first delimiter (RFC 2046 5.1.1 preamble).

        The delimiter starts the body or follows a CRLF; a delimiter split across chunks
        is found because the unmatched tail of the previous chunk is kept.
        """
        assert self._preamble is not None
        data = self._preamble + chunk
        if not self._dropped and self._delimiter.startswith(data):
            self._preamble = data  # too short to tell yet
            return b""
        if not self._dropped and data.startswith(self._delimiter):
            start = 0
        else:
            found = data.find(b"\r\n" + self._delimiter)
            if found == -1:
                keep = len(self._delimiter) + 1
                self._dropped |= len(data) > keep
                self._preamble = data[-keep:]
                return b""
            start = found + 2
        self._preamble = None
        return data[start:]

    def take(self) -> list[Part]:
        done, self._completed = self._completed, []
        return done

    def close(self) -> None:
        """The body ended: it must have been complete."""
        if not self.ended:
            self.abort()
            if self.parts_seen == 0:
                raise BadRequest(
                    "no multipart body part found: the body is empty or does not use the "
                    "boundary given in Content-Type"
                )
            raise BadRequest("the multipart body is truncated: no closing boundary")

    def abort(self) -> None:
        if self._spool is not None:
            self._spool.abort()
            self._spool = None
        for part in self._completed:
            part.discard()
        self._completed = []
