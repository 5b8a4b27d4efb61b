"""C-MOVE destinations in the settings: the ``[dimse.destinations]`` TOML table and the
environment, validated at start-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicomcloud.config import load_settings
from dicomcloud.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("DICOMCLOUD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_destinations_from_a_toml_table(tmp_path: Path) -> None:
    config = tmp_path / "dicomcloud.toml"
    config.write_text('[dimse.destinations]\nWORKSTATION = "10.1.2.3:104"\nV6 = "[::1]:11113"\n')

    dimse = load_settings(config).dimse

    assert dimse.destination("WORKSTATION") == ("10.1.2.3", 104)
    assert dimse.destination("V6") == ("::1", 11113)
    assert dimse.destination("workstation") == ("10.1.2.3", 104)
    assert dimse.destination("OTHER") is None


def test_destinations_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMCLOUD_DIMSE__DESTINATIONS", '{"PACS": "pacs.example:4242"}')

    assert load_settings().dimse.destination("PACS") == ("pacs.example", 4242)


def test_one_destination_per_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMCLOUD_DIMSE__DESTINATIONS__VIEWER", "127.0.0.1:5104")

    assert load_settings().dimse.destination("VIEWER") == ("127.0.0.1", 5104)


@pytest.mark.parametrize(
    ("ae_title", "address", "named"),
    [
        ("PACS", "pacs.example", "not host:port"),
        ("PACS", "pacs.example:0", "not host:port"),
        ("PACS", "pacs.example:70000", "not host:port"),
        ("PACS", ":104", "not host:port"),
        ("A_TITLE_LONGER_THAN_16", "h:104", "not an AE title"),
        ("BACK\\\\SLASH", "h:104", "not an AE title"),
    ],
)
def test_bad_destinations_are_refused_naming_the_key(
    tmp_path: Path, ae_title: str, address: str, named: str
) -> None:
    config = tmp_path / "dicomcloud.toml"
    config.write_text(f'[dimse.destinations]\n"{ae_title}" = "{address}"\n')

    with pytest.raises(ConfigurationError, match=f"dimse.destinations.*{named}"):
        load_settings(config)
