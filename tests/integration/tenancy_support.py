"""Two tenants holding the same study, series and SOP Instance UIDs with different bytes
(and UIDs only the second one has), for the cross-tenant matrix of DICOMweb and DIMSE.

``alpha``: STUDY / SERIES / SOP, pixels rising from the top left corner, PatientID
PAT-alpha.  ``beta``: the same three UIDs, pixels falling, PatientID PAT-beta, plus
BETA_SOP in the same series and BETA_STUDY / BETA_SERIES / BETA_STUDY_SOP: UIDs that
are guessed when asked of alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydicom.uid import generate_uid

from integration.support import dataset_bytes, multipart_related, new_dataset, part10

SIZE = 64
STUDY, SERIES, SOP = generate_uid(), generate_uid(), generate_uid()
BETA_SOP = generate_uid()
BETA_STUDY, BETA_SERIES, BETA_STUDY_SOP = generate_uid(), generate_uid(), generate_uid()

#: Arguments of ``make_archive``: alpha is the default tenant, two tenants allowed.
TENANCY = {"default_tenant": "alpha", "tenancy__tenants": ["alpha", "beta"]}


def gradient(rising: bool) -> bytes:
    """SIZE x SIZE 8-bit pixels, rising (or falling) from the top left corner."""
    values = [
        (r + c) if rising else (2 * (SIZE - 1) - r - c) for r in range(SIZE) for c in range(SIZE)
    ]
    return bytes(values)


def instance(tenant: str, study: str, series: str, sop: str, *, number: int = 1) -> bytes:
    """One instance of ``tenant``: its PatientID and pixel direction are its own."""
    ds = new_dataset(
        study=study, series=series, sop=sop, patient_id=f"PAT-{tenant}", pixels=SIZE * SIZE
    )
    ds.PatientName = f"{tenant}^Patient"
    ds.InstanceNumber = number
    ds.PixelData = gradient(rising=tenant == "alpha")
    return part10(ds)


@dataclass(frozen=True)
class TenantData:
    """What one tenant holds: its files by SOP Instance UID."""

    name: str
    files: dict[str, bytes]

    @property
    def patient_id(self) -> str:
        return f"PAT-{self.name}"

    @property
    def pixels(self) -> bytes:
        return gradient(rising=self.name == "alpha")

    def in_series(self, series: str = SERIES) -> set[str]:
        return {sop for sop in self.files if sop in _SERIES_OF and _SERIES_OF[sop] == series}

    def datasets(self, sops: set[str]) -> set[bytes]:
        """The data sets (without File Meta) of ``sops``, as a C-GET receives them."""
        return {dataset_bytes(self.files[sop]) for sop in sops}


_SERIES_OF = {SOP: SERIES, BETA_SOP: SERIES, BETA_STUDY_SOP: BETA_SERIES}

ALPHA = TenantData("alpha", {SOP: instance("alpha", STUDY, SERIES, SOP)})
BETA = TenantData(
    "beta",
    {
        SOP: instance("beta", STUDY, SERIES, SOP),
        BETA_SOP: instance("beta", STUDY, SERIES, BETA_SOP, number=2),
        BETA_STUDY_SOP: instance("beta", BETA_STUDY, BETA_SERIES, BETA_STUDY_SOP),
    },
)
TENANTS = {"alpha": ALPHA, "beta": BETA}

#: Paths (below a DICOMweb service) naming UIDs only beta holds.
GUESSED_INSTANCES = (
    (STUDY, SERIES, BETA_SOP),
    (BETA_STUDY, BETA_SERIES, BETA_STUDY_SOP),
)


def service(tenant: str) -> str:
    """The DICOMweb service path of ``tenant``."""
    return f"/tenants/{tenant}/dicom-web"


async def stow_into(
    client: httpx.AsyncClient, web: str, files: list[bytes], study: str | None = None
) -> httpx.Response:
    """STOW-RS ``files`` to the service ``web`` (to the study resource if ``study``)."""
    body, content_type = multipart_related(files)
    return await client.post(
        f"{web}/studies" + (f"/{study}" if study else ""),
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
    )


async def load_both(client: httpx.AsyncClient) -> None:
    """Store ALPHA and BETA, each through its own service."""
    for data in (ALPHA, BETA):
        response = await stow_into(client, service(data.name), list(data.files.values()))
        assert response.status_code == 200, response.text
