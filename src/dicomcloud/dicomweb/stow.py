"""STOW-RS: Store Instances (PS3.18 10.5).

``POST {base}/studies`` and ``POST {base}/studies/{StudyInstanceUID}`` with a
``multipart/related; type="application/dicom"`` body (or a single ``application/dicom``
body).  Parts are streamed to the ingest service as they complete; the response is the
Store Instances Response Module (PS3.18 10.5.3) in DICOM JSON, or XML on request:

* 200: every instance stored, no warning;
* 202: some instances failed or were stored with warnings;
* 409: no instance stored;
* 400 / 413 / 415: the request itself cannot be processed.

Limits (``[ingest]``): a body over ``max_request_bytes`` is refused with 413 as soon as
its Content-Length or the bytes received say so (chunked bodies too); a part over
``max_instance_bytes`` fails alone (FailureReason 0xA700, Out of Resources); reading
stops after ``max_parts`` parts.  Instances stored before a limit was hit are reported
(202, with a Warning naming the limit), never hidden.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from dicomcloud.dicomweb.access_log import notes_of
from dicomcloud.dicomweb.media import (
    DICOM,
    DICOM_JSON,
    DICOM_XML,
    JSON,
    MULTIPART_RELATED,
    parse_accept,
    parse_content_type,
)
from dicomcloud.dicomweb.multipart import MultipartReader, Part
from dicomcloud.dicomweb.responses import (
    DicomJson,
    dicom_json_response,
    element,
    warning_header,
)
from dicomcloud.domain.values import is_valid_uid
from dicomcloud.errors import (
    BadRequest,
    CannotUnderstand,
    DicomCloudError,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from dicomcloud.services.ingest import IngestContext, IngestResult, IngestService

log = logging.getLogger(__name__)

# PS3.18 table 10.5.3-1 attributes, as DICOM JSON tag keys (PS3.18 F.2.1).
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"


def wants_xml(request: Request) -> bool:
    """PS3.18 10.5.2: the response is DICOM JSON unless XML is preferred."""
    for media in parse_accept(request.headers.get("accept")):
        if media.matches(DICOM_JSON) or media.type == JSON:
            return False
        if media.type == DICOM_XML:
            return True
        if media.type == "*/*" or media.type == "application/*":
            return False
    raise NotAcceptable(
        "STOW-RS responds with application/dicom+json or application/dicom+xml; "
        f"Accept was {request.headers.get('accept')!r}"
    )


class StowHandler:
    """Reads one STOW-RS request and reports on every part."""

    def __init__(
        self,
        ingest: IngestService,
        *,
        spool_dir: Path,
        spool_threshold: int,
        max_request_bytes: int,
        max_instance_bytes: int,
        concurrency: int,
        max_parts: int | None = None,
    ) -> None:
        self._ingest = ingest
        self._spool_dir = spool_dir
        self._threshold = spool_threshold
        self._max_request = max_request_bytes
        self._max_instance = max_instance_bytes
        self._concurrency = concurrency
        self._max_parts = max_parts

    async def handle(
        self, request: Request, context: IngestContext, retrieve_base: str
    ) -> Response:
        xml = wants_xml(request)
        study = context.expected_study_uid
        if study is not None and not is_valid_uid(study):
            raise BadRequest(f"StudyInstanceUID {study!r} in the URL is not a valid UID")
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BadRequest(f"Content-Length {declared!r} is not a number")
            if int(declared) > self._max_request:
                raise PayloadTooLarge(
                    f"the request ({declared} bytes) exceeds the limit of "
                    f"{self._max_request} bytes (ingest.max_request_bytes)"
                )
        media = parse_content_type(request.headers.get("content-type"))
        if media.type == MULTIPART_RELATED:
            part_type = media.params.get("type", DICOM).lower()
            if part_type != DICOM:
                raise UnsupportedMediaType(
                    f'multipart/related; type="{part_type}" is not supported; send '
                    'multipart/related; type="application/dicom"'
                )
            boundary = media.params.get("boundary")
            if not boundary:
                raise BadRequest("Content-Type multipart/related has no boundary parameter")
            results, trailer = await self._read_multipart(request, boundary, context)
        elif media.type == DICOM:
            results, trailer = await self._read_single(request, context), None
        else:
            raise UnsupportedMediaType(
                f"Content-Type {media.type or '(none)'!r} is not supported; send "
                'multipart/related; type="application/dicom"'
            )
        notes = notes_of(request.scope)
        if notes is not None:
            for result in results:
                if result.ok:
                    notes.add_instance(
                        result.study_instance_uid,
                        result.series_instance_uid,
                        result.sop_instance_uid,
                    )
        return self._response(results, trailer, xml=xml, study=study, base=retrieve_base)

    # -- reading --------------------------------------------------------------------------

    async def _read_single(self, request: Request, context: IngestContext) -> list[IngestResult]:
        body = bytearray()
        limit = min(self._max_instance, self._max_request)
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(
                    f"the instance exceeds the limit of {limit} bytes "
                    "(ingest.max_instance_bytes, ingest.max_request_bytes)"
                )
        if not body:
            raise BadRequest("the request body is empty")
        return [await self._ingest.store_part10(bytes(body), context)]

    async def _read_multipart(
        self, request: Request, boundary: str, context: IngestContext
    ) -> tuple[list[IngestResult], str | None]:
        reader = MultipartReader(
            boundary,
            spool_threshold=self._threshold,
            spool_dir=self._spool_dir,
            max_part_bytes=self._max_instance,
            max_parts=self._max_parts,
        )
        limiter = asyncio.Semaphore(self._concurrency)
        tasks: list[asyncio.Task[IngestResult]] = []
        received = 0
        trailer: str | None = None

        async def store(part: Part) -> IngestResult:
            try:
                return await self._store_part(part, context)
            finally:
                part.discard()
                limiter.release()

        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > self._max_request:
                    raise PayloadTooLarge(
                        f"the request exceeds the limit of {self._max_request} bytes "
                        "(ingest.max_request_bytes); the rest was not read"
                    )
                reader.feed(chunk)
                for part in reader.take():
                    await limiter.acquire()  # back-pressure: stop reading while busy
                    tasks.append(asyncio.create_task(store(part)))
            reader.close()
        except ClientDisconnect:
            reader.abort()
            trailer = "the client disconnected before the end of the body"
        except DicomCloudError as exc:
            # Parts completed before the problem are stored and reported with it.
            for part in reader.take():
                await limiter.acquire()
                tasks.append(asyncio.create_task(store(part)))
            reader.abort()
            if not tasks:
                raise
            trailer = exc.reason
        results = list(await asyncio.gather(*tasks))
        if not results and trailer is None:
            raise BadRequest("the multipart body contains no part")
        return results, trailer

    async def _store_part(self, part: Part, context: IngestContext) -> IngestResult:
        if part.too_large:
            return IngestResult(
                None,
                None,
                failure=PayloadTooLarge(
                    f"a part of {part.size} bytes exceeds the instance size limit of "
                    f"{self._max_instance} bytes (ingest.max_instance_bytes)"
                ),
            )
        part_type = parse_content_type(part.content_type).type if part.content_type else DICOM
        if part_type != DICOM:
            return IngestResult(
                None,
                None,
                failure=CannotUnderstand(
                    f"a part has Content-Type {part.content_type!r}, not application/dicom"
                ),
            )
        source = part.data if part.data is not None else part.path
        assert source is not None
        return await self._ingest.store_part10(source, context)

    # -- response -------------------------------------------------------------------------

    def _response(
        self,
        results: list[IngestResult],
        trailer: str | None,
        *,
        xml: bool,
        study: str | None,
        base: str,
    ) -> Response:
        """The Store Instances Response Module (PS3.18 10.5.3, table 10.5.3-1)."""
        referenced: list[DicomJson] = []
        failed: list[DicomJson] = []
        notes: list[str] = []
        for result in results:
            item: DicomJson = {}
            if result.sop_class_uid and is_valid_uid(result.sop_class_uid):
                item[REFERENCED_SOP_CLASS_UID] = element("UI", result.sop_class_uid)
            if result.sop_instance_uid and is_valid_uid(result.sop_instance_uid):
                item[REFERENCED_SOP_INSTANCE_UID] = element("UI", result.sop_instance_uid)
            label = result.sop_instance_uid or "(unidentified part)"
            if result.failure is not None:
                item[FAILURE_REASON] = element("US", result.failure.dimse_status)
                failed.append(item)
                notes.append(f"{label}: {result.failure.reason}")
                continue
            item[RETRIEVE_URL] = element(
                "UR",
                f"{base}/studies/{result.study_instance_uid}/series/"
                f"{result.series_instance_uid}/instances/{result.sop_instance_uid}",
            )
            if result.status != 0x0000:
                item[WARNING_REASON] = element("US", result.status)
                notes.append(f"{label}: {result.comment}")
            referenced.append(item)
        if trailer:
            notes.append(trailer)
        response: DicomJson = {}
        if study is not None:
            response[RETRIEVE_URL] = element("UR", f"{base}/studies/{study}")
        if failed:
            response[FAILED_SOP_SEQUENCE] = element("SQ", *failed)
        if referenced:
            response[REFERENCED_SOP_SEQUENCE] = element("SQ", *referenced)
        if not referenced:
            status = 409
        elif failed or trailer or any(r.status != 0 for r in results):
            status = 202
        else:
            status = 200
        headers = {}
        if notes:
            headers["Warning"] = ", ".join(warning_header(n) for n in notes[:20])
        for note in notes:
            log.info("STOW-RS: %s", note)
        return dicom_json_response(response, status=status, xml=xml, headers=headers)
