"""S3 blob store (``s3://bucket/prefix``): AWS S3 and compatible servers (MinIO,
SeaweedFS, Ceph RGW...).

Built on obstore, the Python binding of the Rust ``object_store`` crate: its calls are
native asyncio coroutines (no thread per request, unlike boto3 behind aioboto3), it
signs, retries with exponential backoff and jitter, streams multipart uploads and
ranged GETs itself, and reads the usual ``AWS_*`` variables.  One small wheel, no
botocore.

Guarantees, matching the ``BlobStore`` port:

* atomic and durable: S3 makes an object visible only once the PUT (or the
  CompleteMultipartUpload) succeeded, and acknowledges only what it stored durably;
* objects up to ``multipart_threshold`` bytes go in one PUT; larger ones in a
  multipart upload of ``part_size`` parts, streamed from the source (at most
  ``max_concurrency`` parts in memory at once, never the whole object);
* ``if_absent`` is a conditional PUT (``If-None-Match: *``, honoured by AWS S3 since
  2024, MinIO and SeaweedFS): of two concurrent writers exactly one wins.  A
  multipart upload, or a server that rejects conditional writes
  (``conditional_put = False``), checks with a HEAD request first instead; two
  writers racing on one new key may then both write it (the last complete upload
  wins), which ingest tolerates: the index, not the blob store, decides which
  instance is kept, and both write the same SOP Instance;
* ``NotFound`` for a missing object; every other failure (after the retries) is
  ``StorageUnavailable``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlparse

from dicomcloud.errors import ConfigurationError, NotFound, StorageUnavailable
from dicomcloud.ports import StoredObject
from dicomcloud.storage.keys import check_key

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Store

#: S3 refuses parts smaller than this, except the last one (AWS S3 multipart limits).
MIN_PART_SIZE = 5 << 20


@dataclass(frozen=True, slots=True)
class S3Options:
    """Settings of an S3 store that do not belong in its URL (``[storage] s3_*``)."""

    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    region: str = ""
    endpoint_url: str = ""
    #: Objects larger than this are sent as multipart uploads.
    multipart_threshold: int = 16 << 20
    part_size: int = 8 << 20
    #: Parts of one object uploaded at once.
    max_concurrency: int = 4
    max_retries: int = 5
    retry_timeout: float = 60.0
    #: False for servers that do not implement ``If-None-Match: *`` on PUT.
    conditional_put: bool = True


def parse_s3_url(url: str, options: S3Options) -> tuple[str, str, S3Options]:
    """Bucket, key prefix and options of ``s3://bucket/prefix?endpoint_url=..&region=..``
    (URL parameters win over ``options``)."""
    parsed = urlparse(url)
    bucket = parsed.netloc
    if not bucket:
        raise ConfigurationError(f"storage URL {url!r} names no bucket (s3://bucket/prefix)")
    prefix = unquote(parsed.path).strip("/")
    changes: dict[str, Any] = {}
    for name, values in parse_qs(parsed.query, keep_blank_values=True).items():
        if name in ("endpoint_url", "endpoint"):
            changes["endpoint_url"] = values[-1]
        elif name == "region":
            changes["region"] = values[-1]
        else:
            raise ConfigurationError(
                f"storage URL parameter {name!r} is unknown (use endpoint_url, region)"
            )
    fields = {f: getattr(options, f) for f in S3Options.__dataclass_fields__}
    merged = S3Options(**{**fields, **changes})
    if merged.part_size < MIN_PART_SIZE:
        raise ConfigurationError(f"storage.s3_part_size must be at least {MIN_PART_SIZE} bytes")
    return bucket, prefix, merged


class S3BlobStore:
    """Objects under ``prefix`` in ``bucket``; see the module docstring."""

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        try:
            from obstore.store import S3Store
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ConfigurationError(
                "s3:// storage needs obstore: pip install 'dicomcloud[s3]'"
            ) from exc
        self.options = options = options or S3Options()
        self.bucket, self.prefix = bucket, prefix
        config: dict[str, Any] = {}
        if options.access_key_id:
            config["access_key_id"] = options.access_key_id
            config["secret_access_key"] = options.secret_access_key
            if options.session_token:
                config["session_token"] = options.session_token
        if options.region:
            config["region"] = options.region
        client: ClientConfig = {"connect_timeout": timedelta(seconds=10)}
        if options.endpoint_url:
            config["endpoint"] = options.endpoint_url
            client["allow_http"] = options.endpoint_url.startswith("http://")
        self._store: S3Store = S3Store(
            bucket,
            prefix=prefix or None,
            client_options=client,
            retry_config={
                "max_retries": options.max_retries,
                "retry_timeout": timedelta(seconds=options.retry_timeout),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=5),
                    "base": 2,
                },
            },
            **config,
        )
        self._conditional = options.conditional_put

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.bucket}/{self.prefix})"

    @staticmethod
    def _path(key: str) -> str:
        try:
            return "/".join(check_key(key))
        except ValueError as exc:
            raise StorageUnavailable(str(exc)) from exc

    # -- writing ------------------------------------------------------------------------

    async def put(
        self, key: str, chunks: Iterable[bytes | memoryview], *, if_absent: bool = False
    ) -> int | None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, NotSupportedError, PreconditionError

        path = self._path(key)
        source = iter(chunks)
        head, size, more = await _read_up_to(source, self.options.multipart_threshold)
        if not more:
            body = b"".join(head)
            if if_absent and self._conditional:
                try:
                    with _translated(key):
                        await obstore.put_async(
                            self._store, path, body, mode="create", use_multipart=False
                        )
                    return size
                except (AlreadyExistsError, PreconditionError):
                    return None
                except StorageUnavailable as exc:
                    if not isinstance(exc.__cause__, NotSupportedError):
                        raise
                    self._conditional = False  # the server said so: check first from now on
            if if_absent and await self.exists(key):
                return None
            with _translated(key):
                await obstore.put_async(self._store, path, body, use_multipart=False)
            return size
        if if_absent and await self.exists(key):
            return None
        written = 0

        async def parts() -> AsyncIterator[bytes | memoryview]:
            nonlocal written
            for first in head:
                written += len(first)
                yield first
            while (chunk := await asyncio.to_thread(_next_chunk, source)) is not None:
                written += len(chunk)
                yield chunk

        with _translated(key):
            await obstore.put_async(
                self._store,
                path,
                parts(),
                use_multipart=True,
                chunk_size=self.options.part_size,
                max_concurrency=self.options.max_concurrency,
            )
        return written

    async def delete(self, key: str) -> None:
        import obstore

        with _translated(key):
            await obstore.delete_async(self._store, self._path(key))

    # -- reading ------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        import obstore

        with _translated(key):
            result = await obstore.get_async(self._store, self._path(key))
            return bytes(await result.bytes_async())

    async def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        import obstore

        with _translated(key):
            result = await obstore.get_async(self._store, self._path(key))
            async for chunk in result.stream(min_chunk_size=chunk_size):
                yield bytes(chunk)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """One ranged GET (RFC 9110 14.1.2 ``Range: bytes=offset-(offset+length-1)``)."""
        import obstore

        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        path = self._path(key)
        if length == 0:
            await self.size(key)  # NotFound if absent
            return b""
        try:
            with _translated(key):
                data = await obstore.get_range_async(self._store, path, start=offset, length=length)
            return bytes(data)
        except StorageUnavailable:
            # A range starting at or past the end is "416 Range Not Satisfiable":
            # the port answers it with the empty remainder, like a file read.
            if offset >= await self.size(key):
                return b""
            raise

    async def size(self, key: str) -> int:
        import obstore

        with _translated(key):
            meta = await obstore.head_async(self._store, self._path(key))
        return int(meta["size"])

    async def exists(self, key: str) -> bool:
        try:
            await self.size(key)
        except NotFound:
            return False
        return True

    async def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        """ListObjectsV2 pages under ``prefix`` (obstore follows the continuation
        tokens); the ``.ping/`` probes are left out."""
        import obstore

        folder = prefix.rpartition("/")[0]  # object_store lists whole path segments
        with _translated(prefix or "/"):
            async for batch in obstore.list(self._store, folder or None, chunk_size=1000):
                for meta in batch:
                    key = str(meta["path"])
                    if key.startswith(".ping/") or not key.startswith(prefix):
                        continue
                    yield StoredObject(key, int(meta["size"]), meta["last_modified"].timestamp())

    async def ping(self) -> None:
        """Write and remove a probe object: the bucket exists and accepts writes."""
        import obstore

        probe = f".ping/{uuid.uuid4().hex}"
        with _translated(probe):
            await obstore.put_async(self._store, probe, b"ok", use_multipart=False)
            await obstore.delete_async(self._store, probe)


async def _read_up_to(
    source: Iterator[bytes | memoryview], limit: int
) -> tuple[list[bytes | memoryview], int, bool]:
    """Chunks of ``source`` until more than ``limit`` bytes: (chunks, their size,
    whether the source has more).  Iterating may read a spool file: off the loop."""
    head: list[bytes | memoryview] = []
    size = 0
    while size <= limit:
        chunk = await asyncio.to_thread(_next_chunk, source)
        if chunk is None:
            return head, size, False
        head.append(chunk)
        size += len(chunk)
    return head, size, True


def _next_chunk(source: Iterator[bytes | memoryview]) -> bytes | memoryview | None:
    return next(source, None)


@contextmanager
def _translated(key: str) -> Iterator[None]:
    """obstore's exceptions as the archive's (``raise ... from``, errors.py)."""
    from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

    try:
        yield
    except (AlreadyExistsError, PreconditionError):
        raise
    except FileNotFoundError as exc:
        raise NotFound(f"object {key} not found") from exc
    except BaseError as exc:
        if type(exc).__name__ == "NotFoundError":
            raise NotFound(f"object {key} not found") from exc
        raise StorageUnavailable(f"S3 request for {key} failed: {_first_line(exc)}") from exc
    except OSError as exc:
        raise StorageUnavailable(f"S3 request for {key} failed: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
