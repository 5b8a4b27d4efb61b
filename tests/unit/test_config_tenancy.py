"""Tenancy settings: ``[tenancy] tenants`` (DICOMweb allow-list) and ``[[dimse.tenants]]``
(called AE title -> tenant), from TOML and the environment, validated at start-up; and
which tenant an association gets (``dicomcloud.dimse.tenancy.resolve_tenant``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dicomcloud.config import Settings, load_settings
from dicomcloud.dimse.tenancy import (
    REASON_CALLED_AE_NOT_RECOGNIZED,
    REASON_CALLING_AE_NOT_RECOGNIZED,
    AssociationRejected,
    resolve_tenant,
)
from dicomcloud.errors import ConfigurationError

TOML = """
default_tenant = "main"

[tenancy]
tenants = ["main", "north", "south"]

[dimse.destinations]
VIEWER = "10.9.9.9:104"

[[dimse.tenants]]
called_ae_title = "NORTH_PACS"
tenant = "north"
calling_ae_titles = ["CT_NORTH", "MR_NORTH"]
destinations = { NORTH_VIEWER = "10.1.0.5:104" }

[[dimse.tenants]]
called_ae_title = "SHARED"
tenant = "north"
peers = ["10.1.0.0/16"]

[[dimse.tenants]]
called_ae_title = "SHARED"
tenant = "south"
peers = ["10.2.0.0/16", "2001:db8::/32"]

[[dimse.tenants]]
called_ae_title = "MAIN"
tenant = "main"
"""


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("DICOMCLOUD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "dicomcloud.toml"
    config.write_text(TOML)
    return load_settings(config)


def test_tenancy_from_toml(settings: Settings) -> None:
    assert settings.tenancy.tenants == ("main", "north", "south")
    assert settings.tenancy.allows("north")
    assert not settings.tenancy.allows("west")
    assert [t.called_ae_title for t in settings.dimse.tenants] == [
        "NORTH_PACS",
        "SHARED",
        "SHARED",
        "MAIN",
    ]


def test_an_empty_allow_list_allows_every_tenant() -> None:
    assert load_settings().tenancy.allows("anyone")


def test_tenancy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMCLOUD_TENANCY__TENANTS", '["a", "b"]')
    entries = [{"called_ae_title": "A_PACS", "tenant": "a", "calling_ae_titles": ["CT1"]}]
    monkeypatch.setenv("DICOMCLOUD_DIMSE__TENANTS", json.dumps(entries))

    settings = load_settings()

    assert settings.tenancy.tenants == ("a", "b")
    assert resolve_tenant(settings, "A_PACS", "CT1", "127.0.0.1").tenant_id == "a"


@pytest.mark.parametrize(
    ("called", "calling", "address", "tenant"),
    [
        ("NORTH_PACS", "CT_NORTH", "192.168.1.1", "north"),
        ("NORTH_PACS", "MR_NORTH  ", "192.168.1.1", "north"),  # trailing spaces: PS3.5 6.2
        ("SHARED", "ANY", "10.1.2.3", "north"),
        ("SHARED", "ANY", "10.2.2.3", "south"),
        ("SHARED", "ANY", "::ffff:10.2.0.9", "south"),  # IPv4-mapped
        ("SHARED", "ANY", "2001:db8::7", "south"),
        ("MAIN", "WHOEVER", "8.8.8.8", "main"),
    ],
)
def test_the_first_admitting_entry_names_the_tenant(
    settings: Settings, called: str, calling: str, address: str, tenant: str
) -> None:
    assert resolve_tenant(settings, called, calling, address).tenant_id == tenant


@pytest.mark.parametrize(
    ("called", "calling", "address", "reason"),
    [
        ("UNKNOWN", "CT_NORTH", "10.1.0.1", REASON_CALLED_AE_NOT_RECOGNIZED),
        ("north_pacs", "CT_NORTH", "10.1.0.1", REASON_CALLED_AE_NOT_RECOGNIZED),
        ("NORTH_PACS", "CT_SOUTH", "10.1.0.1", REASON_CALLING_AE_NOT_RECOGNIZED),
        ("SHARED", "ANY", "10.3.0.1", REASON_CALLING_AE_NOT_RECOGNIZED),
        ("SHARED", "ANY", "not-an-address", REASON_CALLING_AE_NOT_RECOGNIZED),
    ],
)
def test_associations_no_entry_admits_are_rejected(
    settings: Settings, called: str, calling: str, address: str, reason: int
) -> None:
    with pytest.raises(AssociationRejected) as raised:
        resolve_tenant(settings, called, calling, address)
    assert raised.value.reason == reason


def test_move_destinations_are_the_tenants_own_or_the_global_table(settings: Settings) -> None:
    north = resolve_tenant(settings, "NORTH_PACS", "CT_NORTH", "10.1.0.1")
    main = resolve_tenant(settings, "MAIN", "X", "10.1.0.1")

    assert north.destination("NORTH_VIEWER") == ("10.1.0.5", 104)
    assert north.destination("VIEWER") is None
    assert main.destination("VIEWER") == ("10.9.9.9", 104)
    assert main.destination("NORTH_VIEWER") is None


def test_without_entries_every_association_gets_the_default_tenant() -> None:
    settings = load_settings(default_tenant="solo")

    tenant = resolve_tenant(settings, "ANYTHING", "ANYONE", "203.0.113.9")

    assert (tenant.tenant_id, tenant.called_ae_title) == ("solo", "ANYTHING")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[tenancy]\ntenants = ["-bad"]', "tenancy.tenants"),
        ('[tenancy]\ntenants = ["a b"]', "tenancy.tenants"),
        ('[[dimse.tenants]]\ncalled_ae_title = "A"\ntenant = "x/y"', "dimse.tenants.0.tenant"),
        (
            '[[dimse.tenants]]\ncalled_ae_title = "A_TITLE_LONGER_THAN_16"\ntenant = "x"',
            "called_ae_title",
        ),
        ('[[dimse.tenants]]\ncalled_ae_title = "A"\ntenant = "x"\npeers = ["10.0.0.300"]', "peers"),
        (
            '[[dimse.tenants]]\ncalled_ae_title = "A"\ntenant = "x"\n'
            'calling_ae_titles = ["B\\\\C"]',
            "calling_ae_titles",
        ),
        (
            '[[dimse.tenants]]\ncalled_ae_title = "A"\ntenant = "x"\ndestinations = { D = "h" }',
            "destinations",
        ),
        ('[[dimse.tenants]]\ncalled_ae_title = "A"', "dimse.tenants.0.tenant"),
        ('[[dimse.tenants]]\ncalled_ae_title = "A"\ntenant = "x"\ncolour = "red"', "colour"),
    ],
)
def test_bad_tenancy_settings_are_refused_naming_the_key(
    tmp_path: Path, text: str, named: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text + "\n")

    with pytest.raises(ConfigurationError) as raised:
        load_settings(config)

    assert named in str(raised.value)
