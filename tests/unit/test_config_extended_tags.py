"""``[[search.extended_query_tags]]``: each entry resolved to the key queries use, and
every mistake a ``ConfigurationError`` naming the entry and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomcloud.config import ExtendedQueryTagSettings, load_settings
from dicomcloud.errors import ConfigurationError


def _settings(tmp_path: Path, entries: str) -> object:
    config = tmp_path / "dicomcloud.toml"
    config.write_text(entries)
    return load_settings(config, data_dir=tmp_path)


def test_public_and_private_tags_resolve(tmp_path: Path) -> None:
    config = tmp_path / "dicomcloud.toml"
    config.write_text(
        "[[search.extended_query_tags]]\n"
        'tag = "00080070"\nlevel = "series"\n'
        "[[search.extended_query_tags]]\n"
        'tag = "00191010"\nlevel = "instance"\nvr = "LO"\n'
        'private_creator = "GEMS_ACQU_01"\ntenants = ["radiology"]\n'
    )

    public, private = load_settings(config, data_dir=tmp_path).search.extended_tags()

    assert (public.key, public.level, public.vr, public.tenants) == (
        "Manufacturer",
        "series",
        "LO",
        None,
    )
    assert (private.key, private.vr, private.private_creator) == ("00191010", "LO", "GEMS_ACQU_01")
    assert private.applies_to("radiology") and not private.applies_to("default")


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ('tag = "NoSuchKeyword"\nlevel = "study"', "neither a keyword nor 8 hex digits"),
        ('tag = "00191010"\nlevel = "instance"', "vr is required for a private tag"),
        ('tag = "00190010"\nlevel = "instance"\nvr = "LO"', "private data element"),
        ('tag = "Manufacturer"\nlevel = "series"\nvr = "CS"', "is not its VR"),
        ('tag = "ReferencedImageSequence"\nlevel = "instance"', "'SQ' is not one of"),
        ('tag = "Manufacturer"\nlevel = "patient"', "level"),
        ('tag = "Manufacturer"\nlevel = "series"\nprivate_creator = "X"', "only for private"),
        ('tag = "Manufacturer"\nlevel = "series"\ntenants = ["-bad"]', "tenant"),
    ],
)
def test_bad_entry_is_named(tmp_path: Path, entry: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        _settings(tmp_path, f"[[search.extended_query_tags]]\n{entry}\n")

    assert "search.extended_query_tags.0" in str(error.value)
    assert reason in str(error.value)


def test_a_tag_configured_twice_is_refused(tmp_path: Path) -> None:
    entry = '[[search.extended_query_tags]]\ntag = "Manufacturer"\nlevel = "series"\n'
    with pytest.raises(ConfigurationError, match="Manufacturer is configured more than once"):
        _settings(tmp_path, entry + entry.replace('"Manufacturer"', '"00080070"'))


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("PatientName.CodeValue", "is not a sequence"),
        ("ProcedureCodeSequence.NoSuchKeyword", "not a path of DICOM attributes"),
        ("ProcedureCodeSequence.00091004", "not a path of DICOM attributes"),
        ("ProcedureCodeSequence.ConceptNameCodeSequence", "'SQ' is not one of"),
    ],
)
def test_bad_sequence_path_is_named(tag: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ExtendedQueryTagSettings(tag=tag, level="study").resolved()


def test_sequence_path_by_tags_is_the_keyword_path() -> None:
    by_keywords = ExtendedQueryTagSettings(tag="ProcedureCodeSequence.CodeValue", level="study")
    by_tags = ExtendedQueryTagSettings(tag="00081032.00080100", level="study")

    assert by_keywords.resolved() == by_tags.resolved()
    assert by_tags.resolved().key == "ProcedureCodeSequence.CodeValue"
    assert by_tags.resolved().hex == "00081032"  # what a response carries
