"""Blob stores for Part-10 files, chosen by URL."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from dicomcloud.errors import ConfigurationError
from dicomcloud.ports import BlobStore
from dicomcloud.storage.encrypted import EncryptedBlobStore
from dicomcloud.storage.filesystem import FilesystemBlobStore
from dicomcloud.storage.keys import instance_key
from dicomcloud.storage.s3 import S3BlobStore, S3Options, parse_s3_url

if TYPE_CHECKING:
    from dicomcloud.config import EncryptionSettings

__all__ = [
    "EncryptedBlobStore",
    "FilesystemBlobStore",
    "S3BlobStore",
    "S3Options",
    "instance_key",
    "open_blob_store",
]


def open_blob_store(
    url: str,
    *,
    fsync: bool = True,
    s3: S3Options | None = None,
    encryption: EncryptionSettings | None = None,
) -> BlobStore:
    """The blob store for ``url``: ``file:///absolute/path`` or
    ``s3://bucket/prefix?endpoint_url=...&region=...`` (``s3`` holds the other S3
    settings: credentials, multipart sizes, retries), sealing its objects with
    AES-256-GCM when ``encryption`` is enabled."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = unquote(parsed.netloc + parsed.path)
        if not path:
            raise ConfigurationError(f"storage.url {url!r} has no path")
        store: BlobStore = FilesystemBlobStore(path, fsync=fsync)
    elif parsed.scheme == "s3":
        bucket, prefix, options = parse_s3_url(url, s3 or S3Options())
        store = S3BlobStore(bucket, prefix, options)
    else:
        raise ConfigurationError(
            f"storage.url scheme {parsed.scheme!r} is not supported "
            "(use file:///path or s3://bucket/prefix)"
        )
    if encryption is not None and encryption.enabled:
        return EncryptedBlobStore(
            store,
            encryption.keyring(),
            segment_size=encryption.segment_bytes,
            allow_plaintext=encryption.allow_plaintext,
        )
    return store
