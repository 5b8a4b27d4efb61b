"""Blob stores for Part-10 files, chosen by URL."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from dicomcloud.errors import ConfigurationError
from dicomcloud.ports import BlobStore
from dicomcloud.storage.filesystem import FilesystemBlobStore
from dicomcloud.storage.keys import instance_key

__all__ = ["FilesystemBlobStore", "instance_key", "open_blob_store"]


def open_blob_store(url: str, *, fsync: bool = True) -> BlobStore:
    """The blob store for ``url`` (``file:///absolute/path``)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = unquote(parsed.netloc + parsed.path)
        if not path:
            raise ConfigurationError(f"storage.url {url!r} has no path")
        return FilesystemBlobStore(path, fsync=fsync)
    raise ConfigurationError(
        f"storage.url scheme {parsed.scheme!r} is not supported (use file:///path)"
    )
