"""C-GET (PS3.4 C.4.3) and C-MOVE (PS3.4 C.4.2) over loopback with pynetdicom peers:
the stored bytes arrive unchanged, counts in every response, all levels of both
information models, transcoding for peers that refuse the stored transfer syntax,
failures with a reason, unknown destinations and C-CANCEL."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from conftest import ArchiveFactory, LocalArchive, dimse_for, free_port
from integration.retrieve_support import (
    CANCEL,
    MOVE_DESTINATION_UNKNOWN,
    PATIENT_ROOT_GET,
    PATIENT_ROOT_MOVE,
    PENDING,
    SUCCESS,
    UNABLE_TO_PERFORM_SUB_OPERATIONS,
    WARNING,
    Received,
    Response,
    StoreSCP,
    c_get,
    c_move,
    identifier,
)
from integration.support import (
    SECONDARY_CAPTURE_STORAGE,
    dataset_bytes,
    new_dataset,
    part10,
    pydicom_file,
)

pytestmark = pytest.mark.timeout(90)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@contextlib.asynccontextmanager
async def retrieve_scp(local: LocalArchive) -> AsyncIterator[int]:
    """The archive's DIMSE server with C-GET and C-MOVE, on an ephemeral port."""
    async with dimse_for(local) as running:
        yield running.port


async def stow(local: LocalArchive, files: list[bytes]) -> None:
    """Store ``files``; all must be stored (202: some with a warning, e.g. rtdose.dcm)."""
    response = await local.stow(files)
    assert response.status_code in (200, 202), response.text
    assert "00081198" not in response.json(), response.text


def study(study_uid: str, count: int, *, patient_id: str = "PAT-1") -> list[bytes]:
    """``count`` instances of one study in two series, alternating Explicit and
    Implicit VR Little Endian."""
    series = [generate_uid(), generate_uid()]
    files = []
    for number in range(count):
        ds = new_dataset(study=study_uid, series=series[number % 2], patient_id=patient_id)
        ds.InstanceNumber = number + 1
        files.append(part10(ds, UNCOMPRESSED[number % 2]))
    return files


def read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(io.BytesIO(data), force=True)


def decoded(received: Received) -> Dataset:
    """A received data set, with the File Meta its transfer syntax implies."""
    ds = read(received.data)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = received.transfer_syntax
    return ds


def by_uid(files: list[bytes]) -> dict[str, bytes]:
    return {str(read(data).SOPInstanceUID): data for data in files}


def assert_counts(responses: list[Response], total: int) -> None:
    """One pending response per sub-operation counting down, then the final one."""
    *pending, final = responses
    assert [r.status for r in pending] == [PENDING] * total
    assert [r.remaining for r in pending] == list(range(total - 1, -1, -1))
    assert [r.completed for r in pending] == list(range(1, total + 1))
    assert all(r.failed == 0 and r.warning == 0 for r in pending)
    assert (final.status, final.completed, final.failed, final.warning) == (SUCCESS, total, 0, 0)


@pytest.fixture
async def archive(make_archive: ArchiveFactory) -> LocalArchive:
    return await make_archive(server__host="127.0.0.1", server__dicom_port=0)


# --- C-GET -----------------------------------------------------------------------------


async def test_c_get_of_a_study_sends_the_stored_bytes_with_counts(
    archive: LocalArchive,
) -> None:
    study_uid = generate_uid()
    files = study(study_uid, 3)
    await stow(archive, files + study(generate_uid(), 1))
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get,
            port,
            identifier("STUDY", StudyInstanceUID=study_uid),
            {SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED},
        )

    assert_counts(responses, 3)
    sent = by_uid(files)
    assert sorted(r.sop_instance_uid for r in received) == sorted(sent)
    for item in received:
        original = sent[item.sop_instance_uid]
        assert item.transfer_syntax == read(original).file_meta.TransferSyntaxUID
        assert item.data == dataset_bytes(original)


async def test_c_get_sends_pydicom_files_byte_for_byte(archive: LocalArchive) -> None:
    """Objects with group lengths, sequences and encapsulated pixel data, each sent in
    its stored transfer syntax."""
    names = ["CT_small.dcm", "JPEG2000.dcm", "rtdose.dcm", "SC_rgb_rle.dcm", "test-SR.dcm"]
    files = [pydicom_file(name).read_bytes() for name in names]
    await stow(archive, files)
    datasets = [read(data) for data in files]
    storage: dict[str, list[str]] = {}
    for ds in datasets:
        storage.setdefault(str(ds.SOPClassUID), []).append(str(ds.file_meta.TransferSyntaxUID))
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get, port, identifier("IMAGE", SOPInstanceUID=uids), storage
        )

    assert_counts(responses, len(files))
    sent = by_uid(files)
    assert {r.sop_instance_uid: r.data for r in received} == {
        uid: dataset_bytes(data) for uid, data in sent.items()
    }


@pytest.mark.parametrize(
    ("model", "level", "keys", "expected"),
    [
        (None, "SERIES", {"SeriesInstanceUID": "series0"}, [0, 2, 4]),
        (None, "SERIES", {"SeriesInstanceUID": ["series0", "series1"]}, [0, 1, 2, 3, 4]),
        (None, "IMAGE", {"SOPInstanceUID": ["sop1", "sop3"]}, [1, 3]),
        (None, "IMAGE", {"StudyInstanceUID": "study", "SOPInstanceUID": "sop4"}, [4]),
        (PATIENT_ROOT_GET, "PATIENT", {"PatientID": "PAT-7"}, [0, 1, 2, 3, 4]),
        (
            PATIENT_ROOT_GET,
            "STUDY",
            {"PatientID": "PAT-7", "StudyInstanceUID": "study"},
            [0, 1, 2, 3, 4],
        ),
        (PATIENT_ROOT_GET, "IMAGE", {"SOPInstanceUID": "sop2"}, [2]),
        (None, "STUDY", {"StudyInstanceUID": "1.2.3.4.5.6.7"}, []),
    ],
)
async def test_c_get_levels(
    archive: LocalArchive,
    model: str | None,
    level: str,
    keys: dict[str, Any],
    expected: list[int],
) -> None:
    study_uid = generate_uid()
    files = study(study_uid, 5, patient_id="PAT-7")
    await stow(archive, files + study(generate_uid(), 2, patient_id="PAT-8"))
    datasets = [read(data) for data in files]
    names = {"study": study_uid}
    for index, ds in enumerate(datasets):
        names[f"sop{index}"] = str(ds.SOPInstanceUID)
        names[f"series{index % 2}"] = str(ds.SeriesInstanceUID)

    def resolve(value: Any) -> Any:
        if isinstance(value, list):
            return [names.get(v, v) for v in value]
        return names.get(value, value)

    query = identifier(level, **{k: resolve(v) for k, v in keys.items()})
    options = {"model": model} if model else {}
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get, port, query, {SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED}, **options
        )

    assert_counts(responses, len(expected))
    assert sorted(r.sop_instance_uid for r in received) == sorted(
        str(datasets[i].SOPInstanceUID) for i in expected
    )


@pytest.mark.parametrize(
    ("model", "keys", "named"),
    [
        (None, {"StudyInstanceUID": "1.2.3"}, "QueryRetrieveLevel"),
        (None, {"QueryRetrieveLevel": "FRAME", "StudyInstanceUID": "1.2.3"}, "QueryRetrieveLevel"),
        (None, {"QueryRetrieveLevel": "PATIENT", "PatientID": "P"}, "QueryRetrieveLevel"),
        (None, {"QueryRetrieveLevel": "STUDY"}, "StudyInstanceUID"),
        (None, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2.3"}, "SeriesInstanceUID"),
        (
            None,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3", "SOPInstanceUID": "1.2"},
            "SOPInstanceUID",
        ),
        (None, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.02.3"}, "StudyInstanceUID"),
        (
            None,
            {
                "QueryRetrieveLevel": "SERIES",
                "StudyInstanceUID": ["1.2.3", "1.2.4"],
                "SeriesInstanceUID": "1.2.5",
            },
            "StudyInstanceUID",
        ),
        (PATIENT_ROOT_GET, {"QueryRetrieveLevel": "PATIENT", "PatientID": "P*"}, "PatientID"),
        (PATIENT_ROOT_GET, {"QueryRetrieveLevel": "PATIENT"}, "PatientID"),
    ],
)
async def test_c_get_with_a_bad_identifier_fails_with_a_reason(
    archive: LocalArchive, model: str | None, keys: dict[str, Any], named: str
) -> None:
    await stow(archive, study(generate_uid(), 1))
    query = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UID
        for keyword, value in keys.items():
            setattr(query, keyword, value)
    options = {"model": model} if model else {}
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get, port, query, {SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED}, **options
        )

    (final,) = responses
    assert final.status == 0xC000
    assert named in final.error_comment
    assert received == []


async def test_c_get_transcodes_for_a_peer_that_accepts_only_implicit_vr(
    archive: LocalArchive,
) -> None:
    original = pydicom_file("JPEG2000.dcm").read_bytes()
    await stow(archive, [original])
    stored = read(original)
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get,
            port,
            identifier("IMAGE", SOPInstanceUID=str(stored.SOPInstanceUID)),
            {str(stored.SOPClassUID): [ImplicitVRLittleEndian]},
        )

    assert_counts(responses, 1)
    (item,) = received
    assert item.transfer_syntax == ImplicitVRLittleEndian
    assert np.array_equal(decoded(item).pixel_array, stored.pixel_array)


@pytest.mark.parametrize(
    "proposed",
    [
        [JPEG2000, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        [JPEG2000, ImplicitVRLittleEndian, ExplicitVRLittleEndian],
    ],
)
async def test_c_get_into_one_context_per_sop_class_uses_the_preferred_uncompressed_syntax(
    archive: LocalArchive, proposed: list[str]
) -> None:
    """A single context listing a compressed syntax first: the archive accepts the first
    uncompressed Little Endian syntax listed (any object can be sent in it); objects
    stored in it are sent unchanged, the others converted."""
    study_uid = generate_uid()
    files = study(study_uid, 2)
    await stow(archive, files)
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get,
            port,
            identifier("STUDY", StudyInstanceUID=study_uid),
            {SECONDARY_CAPTURE_STORAGE: proposed},
            single_context=True,
        )

    assert_counts(responses, 2)
    assert {r.transfer_syntax for r in received} == {proposed[1]}
    sent = by_uid(files)
    for item in received:
        original = sent[item.sop_instance_uid]
        if read(original).file_meta.TransferSyntaxUID == proposed[1]:
            assert item.data == dataset_bytes(original)
        else:
            assert np.array_equal(decoded(item).pixel_array, read(original).pixel_array)


async def test_c_get_sub_operation_that_cannot_be_converted_fails(
    archive: LocalArchive,
) -> None:
    """The peer accepts CT only in lossy JPEG baseline, which the archive never makes of
    a lossless original on its own initiative: that sub-operation fails, the other
    completes, the final status is the 0xB000 warning
    with the failed instance listed (PS3.4 C.4.3.1.3.2)."""
    ct = pydicom_file("CT_small.dcm").read_bytes()
    j2k = pydicom_file("JPEG2000.dcm").read_bytes()
    await stow(archive, [ct, j2k])
    ct_uid, j2k_ds = str(read(ct).SOPInstanceUID), read(j2k)
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get,
            port,
            identifier("IMAGE", SOPInstanceUID=[ct_uid, str(j2k_ds.SOPInstanceUID)]),
            {
                CT_IMAGE_STORAGE: [JPEGBaseline8Bit],
                str(j2k_ds.SOPClassUID): [str(j2k_ds.file_meta.TransferSyntaxUID)],
            },
        )

    final = responses[-1]
    assert (final.status, final.completed, final.failed, final.warning) == (WARNING, 1, 1, 0)
    assert final.failed_uids == (ct_uid,)
    assert [r.sop_instance_uid for r in received] == [str(j2k_ds.SOPInstanceUID)]


async def test_c_get_where_every_sub_operation_fails_is_a_failure(
    archive: LocalArchive,
) -> None:
    ct = pydicom_file("CT_small.dcm").read_bytes()
    await stow(archive, [ct])
    ct_uid = str(read(ct).SOPInstanceUID)
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get,
            port,
            identifier("IMAGE", SOPInstanceUID=ct_uid),
            {CT_IMAGE_STORAGE: [JPEGBaseline8Bit]},
        )

    final = responses[-1]
    assert (final.status, final.completed, final.failed) == (UNABLE_TO_PERFORM_SUB_OPERATIONS, 0, 1)
    assert final.failed_uids == (ct_uid,)
    assert received == []


async def test_c_get_of_an_instance_whose_stored_object_is_gone_fails_that_one(
    archive: LocalArchive,
) -> None:
    study_uid = generate_uid()
    files = study(study_uid, 3)
    await stow(archive, files)
    lost = str(read(files[1]).SOPInstanceUID)
    (path,) = [p for p in archive.files() if p.name == f"{lost}.dcm"]
    (archive.blobs_root / path).unlink()
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get,
            port,
            identifier("STUDY", StudyInstanceUID=study_uid),
            {SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED},
        )

    final = responses[-1]
    assert (final.status, final.completed, final.failed) == (WARNING, 2, 1)
    assert final.failed_uids == (lost,)
    assert sorted(r.sop_instance_uid for r in received) == sorted(set(by_uid(files)) - {lost})


async def test_c_get_stops_on_c_cancel(archive: LocalArchive) -> None:
    study_uid = generate_uid()
    await stow(archive, study(study_uid, 6))
    async with retrieve_scp(archive) as port:
        responses, received = await asyncio.to_thread(
            c_get,
            port,
            identifier("STUDY", StudyInstanceUID=study_uid),
            {SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED},
            cancel_after=2,
        )

    final = responses[-1]
    assert final.status == CANCEL
    assert (final.completed, final.remaining, final.failed) == (2, 4, 0)
    assert len(received) == 2


# --- C-MOVE ----------------------------------------------------------------------------


async def move_archive(make_archive: ArchiveFactory, port: int) -> LocalArchive:
    return await make_archive(
        server__host="127.0.0.1",
        server__dicom_port=0,
        dimse__destinations={"MOVESCP": f"127.0.0.1:{port}"},
    )


async def test_c_move_of_a_study_sends_the_stored_bytes_to_the_destination(
    make_archive: ArchiveFactory,
) -> None:
    port = free_port()
    local = await move_archive(make_archive, port)
    study_uid = generate_uid()
    files = [*study(study_uid, 4), pydicom_file("JPEG2000.dcm").read_bytes()]
    j2k = read(files[-1])
    await stow(local, files[:4] + study(generate_uid(), 1))
    await stow(local, [files[-1]])
    receiver = StoreSCP(
        {
            SECONDARY_CAPTURE_STORAGE: [*UNCOMPRESSED, str(j2k.file_meta.TransferSyntaxUID)],
        }
    )
    query = identifier(
        "IMAGE",
        SOPInstanceUID=[str(read(f).SOPInstanceUID) for f in files],
    )
    with receiver.running(port):
        async with retrieve_scp(local) as scp_port:
            responses = await asyncio.to_thread(c_move, scp_port, query, "MOVESCP")

    assert_counts(responses, 5)
    sent = by_uid(files)
    assert {r.sop_instance_uid: r.data for r in receiver.received} == {
        uid: dataset_bytes(data) for uid, data in sent.items()
    }
    assert {r.move_originator for r in receiver.received} == {"MOVESCU"}


async def test_c_move_patient_root_study_level(make_archive: ArchiveFactory) -> None:
    port = free_port()
    local = await move_archive(make_archive, port)
    study_uid = generate_uid()
    files = study(study_uid, 3, patient_id="PAT-9")
    await stow(local, files)
    receiver = StoreSCP({SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED})
    query = identifier("STUDY", PatientID="PAT-9", StudyInstanceUID=study_uid)
    with receiver.running(port):
        async with retrieve_scp(local) as scp_port:
            responses = await asyncio.to_thread(
                c_move, scp_port, query, "MOVESCP", model=PATIENT_ROOT_MOVE
            )

    assert_counts(responses, 3)
    assert sorted(r.sop_instance_uid for r in receiver.received) == sorted(by_uid(files))


async def test_c_move_to_an_unknown_destination_is_refused(make_archive: ArchiveFactory) -> None:
    port = free_port()
    local = await move_archive(make_archive, port)
    study_uid = generate_uid()
    await stow(local, study(study_uid, 2))
    receiver = StoreSCP({SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED})
    with receiver.running(port):
        async with retrieve_scp(local) as scp_port:
            responses = await asyncio.to_thread(
                c_move, scp_port, identifier("STUDY", StudyInstanceUID=study_uid), "NOSUCHAE"
            )

    assert [r.status for r in responses] == [MOVE_DESTINATION_UNKNOWN]
    assert receiver.received == []


async def test_c_move_with_a_bad_identifier_fails_with_a_reason(
    make_archive: ArchiveFactory,
) -> None:
    port = free_port()
    local = await move_archive(make_archive, port)
    receiver = StoreSCP({SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED})
    with receiver.running(port):
        async with retrieve_scp(local) as scp_port:
            responses = await asyncio.to_thread(
                c_move, scp_port, identifier("SERIES", StudyInstanceUID="1.2.3"), "MOVESCP"
            )

    (final,) = responses
    assert final.status == 0xC000
    assert "SeriesInstanceUID" in final.error_comment
    assert receiver.received == []


async def test_c_move_transcodes_for_a_destination_that_accepts_only_implicit_vr(
    make_archive: ArchiveFactory,
) -> None:
    port = free_port()
    local = await move_archive(make_archive, port)
    original = pydicom_file("JPEG2000.dcm").read_bytes()
    await stow(local, [original])
    stored = read(original)
    receiver = StoreSCP({str(stored.SOPClassUID): [ImplicitVRLittleEndian]})
    query = identifier("IMAGE", SOPInstanceUID=str(stored.SOPInstanceUID))
    with receiver.running(port):
        async with retrieve_scp(local) as scp_port:
            responses = await asyncio.to_thread(c_move, scp_port, query, "MOVESCP")

    assert_counts(responses, 1)
    (item,) = receiver.received
    assert item.transfer_syntax == ImplicitVRLittleEndian
    assert np.array_equal(decoded(item).pixel_array, stored.pixel_array)


async def test_c_move_stops_on_c_cancel(make_archive: ArchiveFactory) -> None:
    port = free_port()
    local = await move_archive(make_archive, port)
    study_uid = generate_uid()
    await stow(local, study(study_uid, 5))
    receiver = StoreSCP({SECONDARY_CAPTURE_STORAGE: UNCOMPRESSED}, release_first=threading.Event())

    def cancel_during_the_first_store(assoc: Any) -> None:
        assert receiver.first_arrived.wait(timeout=20)
        assoc.send_c_cancel(1, query_model="1.2.840.10008.5.1.4.1.2.2.2")
        # The C-CANCEL and the C-STORE response travel on different associations: give
        # the SCP time to see the first before the second resumes the sub-operations.
        time.sleep(0.5)
        assert receiver.release_first is not None
        receiver.release_first.set()

    with receiver.running(port):
        async with retrieve_scp(local) as scp_port:
            responses = await asyncio.to_thread(
                c_move,
                scp_port,
                identifier("STUDY", StudyInstanceUID=study_uid),
                "MOVESCP",
                after_request=cancel_during_the_first_store,
            )

    final = responses[-1]
    assert final.status == CANCEL
    assert final.completed is not None and final.remaining is not None
    assert final.completed + final.remaining == 5 and final.remaining >= 1
    assert final.failed == 0
    assert len(receiver.received) == final.completed
