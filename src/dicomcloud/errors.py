"""One exception tree for the whole archive.

Every error knows how each transport reports it: the HTTP status of a request-level
failure, the STOW-RS FailureReason (PS3.18 10.5.3, codes from PS3.4 Annex B.2.3) of a
per-instance failure, and the DIMSE status of a C-STORE response (PS3.4 B.2.3,
PS3.7 Annex C).  Third-party exceptions are translated into these once, at the adapter
boundary, with ``raise ... from``.
"""

from __future__ import annotations


class DicomCloudError(Exception):
    """Base of every error the archive raises on purpose."""

    http_status: int = 500
    #: PS3.4 B.2.3 status used as STOW-RS FailureReason and C-STORE status.
    dimse_status: int = 0x0110  # Processing failure

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- request level (transport input) --------------------------------------------------


class BadRequest(DicomCloudError):
    """The request itself is malformed (HTTP 400)."""

    http_status = 400


class UnsupportedMediaType(DicomCloudError):
    """The request body has a media type the resource does not accept (HTTP 415)."""

    http_status = 415


class NotAcceptable(DicomCloudError):
    """No representation satisfies the Accept header (HTTP 406)."""

    http_status = 406


class NotFound(DicomCloudError):
    """The addressed resource does not exist (HTTP 404)."""

    http_status = 404


class MethodNotAllowed(DicomCloudError):
    """The resource exists but this archive refuses the method (HTTP 405), e.g. DELETE
    with ``[retention] allow_delete = false``."""

    http_status = 405


class PayloadTooLarge(DicomCloudError):
    """A request or part exceeds a configured limit (HTTP 413)."""

    http_status = 413
    dimse_status = 0xA700


class ConfigurationError(DicomCloudError):
    """A setting is invalid; the message names the key."""


# --- instance level (ingest) ----------------------------------------------------------


class InstanceRejected(DicomCloudError):
    """One instance cannot be stored; the others in the same request may be."""

    http_status = 409


class CannotUnderstand(InstanceRejected):
    """Not a parsable DICOM dataset, or an identifying attribute is missing or invalid.

    PS3.4 B.2.3: 0xC000 "Error: Cannot understand".
    """

    dimse_status = 0xC000


class NotDicom(CannotUnderstand):
    """The bytes are not a DICOM object at all (no PS3.10 prefix, nothing parsable).

    Reported like any CannotUnderstand (0xC000); ``dicomcloud import`` lists such files
    as skipped rather than failed.
    """


class DataSetDoesNotMatchSOPClass(InstanceRejected):
    """PS3.4 B.2.3: 0xA900 "Error: Data Set does not match SOP Class".

    PS3.18 10.5.3 also uses it when an instance's StudyInstanceUID differs from the
    study addressed by the STOW-RS request.
    """

    dimse_status = 0xA900


class IdentityConflict(InstanceRejected):
    """A UID already belongs to another parent (a series under another study, say)."""

    dimse_status = 0x0110


class OutOfResources(InstanceRejected):
    """Storage or index could not take the instance now (PS3.4 B.2.3: 0xA700)."""

    http_status = 503
    dimse_status = 0xA700


class StorageUnavailable(OutOfResources):
    """The blob store failed to write or fsync."""


class IndexUnavailable(OutOfResources):
    """The index database failed or could not be reached."""


class CacheUnavailable(DicomCloudError):
    """The cache failed or could not be reached; callers fall through to the source
    (``dicomcloud.cache.FailSafeCache``), so no request ever reports it."""


# --- stored objects -------------------------------------------------------------------


class StoredObjectUnreadable(DicomCloudError):
    """A stored object cannot be returned as it was stored: its encryption key is not
    configured, or it fails its integrity check (modified, truncated, wrong key).
    Nothing of it is served."""

    http_status = 500
    dimse_status = 0x0110
