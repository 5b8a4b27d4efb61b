"""Accept negotiation for WADO-RS (PS3.18 8.7.5, 8.7.3.5) with what real clients send."""

from __future__ import annotations

import pytest

from dicomcloud.dicomweb.media import negotiate_frames, negotiate_instances
from dicomcloud.errors import NotAcceptable

J2K = "1.2.840.10008.1.2.4.90"
EVRLE = "1.2.840.10008.1.2.1"
DICOM_PARTS = 'multipart/related; type="application/dicom"'
OCTET_PARTS = 'multipart/related; type="application/octet-stream"'
JP2_PARTS = 'multipart/related; type="image/jp2"'


@pytest.mark.parametrize(
    ("accept", "container", "syntaxes"),
    [
        (None, "multipart", ("",)),
        ("", "multipart", ("",)),
        ("*/*", "multipart", ("",)),
        # dicomweb-client (also Slicer's DICOMweb browser) default
        ('multipart/related; type="application/dicom"', "multipart", ("",)),
        # OHIF / dicomweb-client with transfer-syntax=*, Weasis without spaces
        ('multipart/related; type="application/dicom"; transfer-syntax=*', "multipart", ("*",)),
        ('multipart/related;type="application/dicom";transfer-syntax=*', "multipart", ("*",)),
        ("multipart/related; type=application/dicom", "multipart", ("",)),
        ('Multipart/Related; Type="Application/DICOM"', "multipart", ("",)),
        (
            f'multipart/related; type="application/dicom"; transfer-syntax="{J2K}"',
            "multipart",
            (J2K,),
        ),
        ("multipart/related", "multipart", ("",)),
        ('multipart/related; type="*/*"', "multipart", ("",)),
        # several syntaxes, q-values decide the order
        (
            f'multipart/related; type="application/dicom"; transfer-syntax={EVRLE}; q=0.5, '
            f'multipart/related; type="application/dicom"; transfer-syntax={J2K}',
            "multipart",
            (J2K, EVRLE),
        ),
        ("application/zip", "zip", ("*",)),
        ('application/zip;q=0.4, multipart/related; type="application/dicom"', "multipart", ("",)),
        ('application/zip, multipart/related; type="application/dicom";q=0.9', "zip", ("*",)),
        ("application/dicom+json, */*;q=0.1", "multipart", ("",)),
    ],
)
def test_instances(accept: str | None, container: str, syntaxes: tuple[str, ...]) -> None:
    choice = negotiate_instances(accept, single=False)

    assert (choice.container, choice.syntaxes) == (container, syntaxes)


def test_single_part_only_for_an_instance() -> None:
    assert negotiate_instances("application/dicom", single=True).container == "single"
    with pytest.raises(NotAcceptable):
        negotiate_instances("application/dicom", single=False)


@pytest.mark.parametrize(
    "accept",
    ["application/dicom+json", "text/html", 'multipart/related; type="image/jpeg"', "*/*;q=0"],
)
def test_instances_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as refused:
        negotiate_instances(accept, single=False)
    assert "multipart/related" in refused.value.reason


@pytest.mark.parametrize(
    ("accept", "multipart", "options"),
    [
        ('multipart/related; type="*/*"', True, (("*", "*"),)),  # dicomweb-client default
        (None, True, (("*", "*"),)),
        ("*/*", True, (("*", "*"),)),
        ("multipart/related", True, (("*", "*"),)),
        # OHIF's dicom-image-loader
        (
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            True,
            (("application/octet-stream", "*"),),
        ),
        (
            'multipart/related; type="application/octet-stream"',
            True,
            (("application/octet-stream", ""),),
        ),
        ('multipart/related; type="image/jls"', True, (("image/jls", ""),)),
        (
            f'multipart/related; type="image/jp2"; transfer-syntax={J2K}',
            True,
            (("image/jp2", J2K),),
        ),
        ("image/jpeg", False, (("image/jpeg", ""),)),
        ("application/octet-stream", False, (("application/octet-stream", ""),)),
    ],
)
def test_frames(accept: str | None, multipart: bool, options: tuple[tuple[str, str], ...]) -> None:
    choice = negotiate_frames(accept, count=1)

    assert (choice.multipart, choice.options) == (multipart, options)


def test_several_frames_need_multipart() -> None:
    with pytest.raises(NotAcceptable):
        negotiate_frames("image/jpeg", count=2)
    assert negotiate_frames("image/jpeg, multipart/related;q=0.5", count=2).multipart
