"""dcmtk's storescu and echoscu against ``dicomcloud serve``, as a modality would."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
import zlib
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from conftest import RealServer, require_tool
from integration.support import (
    AS_STORED,
    dataset_bytes,
    file_meta,
    new_instance,
    pydicom_file,
    split_multipart,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

DEFLATED = "1.2.840.10008.1.2.1.99"

#: A dozen SOP classes and transfer syntaxes, each with its own SOP Instance UID.
FILES = (
    "CT_small.dcm",  # CT, Explicit VR Little Endian
    "MR_small_bigendian.dcm",  # MR, Explicit VR Big Endian
    "rtdose.dcm",  # RT Dose, Implicit VR Little Endian
    "rtplan.dcm",  # RT Plan, Implicit VR Little Endian
    "JPEG2000.dcm",  # Secondary Capture, JPEG 2000
    "JPEG-lossy.dcm",  # Secondary Capture, JPEG Extended (12 bit)
    "SC_rgb_rle.dcm",  # Secondary Capture, RLE Lossless
    "waveform_ecg.dcm",  # 12-lead ECG
    "test-SR.dcm",  # Comprehensive SR
    "examples_palette.dcm",  # Ultrasound, palette colour
    "examples_ybr_color.dcm",  # Ultrasound multi-frame, JPEG Baseline
    "liver_1frame.dcm",  # Segmentation
    "693_J2KI.dcm",  # CT, JPEG 2000 irreversible
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
)


def dcmtk_env() -> dict[str, str]:
    # dcmtk honours TCP_NODELAY from the environment: no 40 ms Nagle stalls per PDU.
    return {**os.environ, "TCP_NODELAY": "1"}


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path)


def test_echoscu_succeeds(server: RealServer) -> None:
    echoscu = require_tool("echoscu")

    result = subprocess.run(
        [echoscu, "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_echoscu_to_a_closed_port_fails() -> None:
    """The check above can fail: echoscu reports an unreachable peer."""
    echoscu = require_tool("echoscu")
    from conftest import free_port

    result = subprocess.run(
        [echoscu, "127.0.0.1", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
        check=False,
    )

    assert result.returncode != 0


def sent_by_dcmtk(path: Path, work: Path) -> bytes:
    """The dataset bytes storescu puts on the wire for a file in its own transfer syntax.

    dcmtk re-encodes what it sends: sequences with explicit lengths, no Data Set
    Trailing Padding (PS3.10 7.2 lets it go).  ``dcmconv -F -p`` writes the same
    encoding of the dataset alone, which is the oracle for what the archive received.
    """
    out = work / f"{path.name}.wire"
    subprocess.run(
        [require_tool("dcmconv"), "-q", "-F", "-p", str(path), str(out)],
        check=True,
        timeout=60,
    )
    return out.read_bytes()


def comparable(data: bytes, syntax: str) -> bytes:
    """Deflated datasets compare inflated: the compressed stream depends on the zlib run."""
    if syntax == DEFLATED:
        return zlib.decompress(data, -zlib.MAX_WBITS)
    return data


def association_profile(datasets: list[Dataset], path: Path) -> str:
    """A storescu association configuration (``-xf``) proposing, for every file, a
    presentation context with exactly its SOP Class and transfer syntax, so that
    storescu sends each dataset in its own encoding (it converts otherwise)."""
    syntaxes = sorted({str(ds.file_meta.TransferSyntaxUID) for ds in datasets})
    pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})
    lines = ["[[TransferSyntaxes]]"]
    for number, syntax in enumerate(syntaxes, start=1):
        lines += [f"[TS{number}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    for number, (sop_class, syntax) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{number} = {sop_class}\\TS{syntaxes.index(syntax) + 1}")
    lines += ["[[Profiles]]", "[Files]", "PresentationContexts = Contexts"]
    path.write_text("\n".join(lines) + "\n")
    return "Files"


def test_storescu_folder_round_trip(server: RealServer, tmp_path: Path) -> None:
    storescu = require_tool("storescu")
    folder = tmp_path / "outbox"
    (folder / "nested").mkdir(parents=True)
    sent: dict[str, Path] = {}
    for number, name in enumerate(FILES):
        target = folder / ("nested" if number % 2 else "") / name
        shutil.copyfile(pydicom_file(name), target)
        ds = _read(target)
        assert str(ds.SOPInstanceUID) not in sent, "test files must not share a SOP UID"
        sent[str(ds.SOPInstanceUID)] = target
    config = tmp_path / "storescu.cfg"
    profile = association_profile([_read(p) for p in sent.values()], config)
    files_before = len(server.files())

    result = subprocess.run(
        [
            storescu,
            "-aec",
            server.ae_title,
            "+sd",
            "+r",
            "-xf",
            str(config),
            profile,
            "127.0.0.1",
            str(server.dicom_port),
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dcmtk_env(),
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(server.files()) == files_before + len(FILES)
    same_as_file = 0
    with httpx.Client(base_url=server.dicomweb_url, timeout=30) as http:
        for sop, path in sent.items():
            ds = _read(path)
            response = http.get(
                f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{sop}",
                headers=AS_STORED,
            )
            assert response.status_code == 200, (path.name, response.text)
            (part,) = split_multipart(response.content, response.headers["content-type"])
            original = path.read_bytes()
            assert part.data != original  # header rebuilt for what came over DIMSE
            syntax = str(ds.file_meta.TransferSyntaxUID)
            # Sent in its own transfer syntax, the dataset arrives byte for byte.
            assert f"transfer-syntax={syntax}" in part.headers["content-type"], path.name
            on_the_wire = sent_by_dcmtk(path, tmp_path)
            assert comparable(dataset_bytes(part.data), syntax) == comparable(
                on_the_wire, syntax
            ), path.name
            if on_the_wire == dataset_bytes(original):  # dcmtk sent the file's own bytes
                same_as_file += 1
            meta = file_meta(part.data)
            assert meta.TransferSyntaxUID == syntax
            assert meta.MediaStorageSOPInstanceUID == sop
            assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
            assert part.data[128:132] == b"DICM"
    # The oracle is not vacuous: several files travel exactly as stored on disk.
    assert same_as_file >= 4


def test_storescu_of_a_bad_file_is_refused(server: RealServer, tmp_path: Path) -> None:
    """A dataset without a valid SOP Instance UID is answered with a failure status."""
    storescu = require_tool("storescu")
    instance = new_instance()
    good = tmp_path / "good.dcm"
    good.write_bytes(instance.data)
    ds = _read(good)
    # Same length as the UID it replaces: the File Meta stays valid, the dataset not.
    bad_uid = ("1.2.03" + "4" * 80)[: len(ds.SOPInstanceUID)]
    bad = tmp_path / "bad.dcm"
    data = instance.data
    offset = len(data) - len(dataset_bytes(data))
    body = data[offset:].replace(str(ds.SOPInstanceUID).encode(), bad_uid.encode())
    bad.write_bytes(data[:offset] + body)
    files_before = server.files()

    result = subprocess.run(
        [storescu, "-v", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Received Store Response (Error: CannotUnderstand)" in output, output
    assert server.files() == files_before
    with httpx.Client(base_url=server.dicomweb_url, timeout=30) as http:
        response = http.get(instance.path)
        assert response.status_code == 404


def test_findscu_study_root_finds_a_stored_study(server: RealServer, tmp_path: Path) -> None:
    """findscu -S at the STUDY level, with a wildcard, as a PACS user would search."""
    findscu = require_tool("findscu")
    from integration.support import multipart_related, new_dataset, part10

    name = f"Findscu^{tmp_path.name[-8:].replace('-', '')}"
    ds = new_dataset()
    ds.PatientName = name
    body, content_type = multipart_related([part10(ds)])
    with httpx.Client(base_url=server.dicomweb_url, timeout=30) as http:
        stored = http.post("/studies", content=body, headers={"Content-Type": content_type})
    assert stored.status_code == 200, stored.text

    result = subprocess.run(
        [
            findscu,
            "-S",
            "-X",
            "-aec",
            server.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"PatientName={name[:-2]}*",
            "-k",
            "StudyInstanceUID",
            "-k",
            "NumberOfStudyRelatedInstances",
            "127.0.0.1",
            str(server.dicom_port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
        cwd=tmp_path,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    (response,) = [_read(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]
    assert response.StudyInstanceUID == ds.StudyInstanceUID
    assert str(response.PatientName) == name
    assert response.NumberOfStudyRelatedInstances == 1


def test_findscu_with_a_bad_key_gets_a_failure(server: RealServer, tmp_path: Path) -> None:
    findscu = require_tool("findscu")

    result = subprocess.run(
        [
            findscu,
            "-S",
            "-v",
            "-aec",
            server.ae_title,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyDate=20241399",
            "127.0.0.1",
            str(server.dicom_port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dcmtk_env(),
        cwd=tmp_path,
        check=False,
    )

    output = result.stdout + result.stderr
    assert "Failed: UnableToProcess" in output, output  # 0xC000
    assert not list(tmp_path.glob("rsp*.dcm"))
