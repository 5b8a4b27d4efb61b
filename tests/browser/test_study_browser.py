"""The study browser at /ui/ in a real Chromium: search by a non-ASCII name, series
thumbnails, upload (file input and drag and drop), download as ZIP, sorting and paging
controls, health and counts.  Every test also fails on any failed or external request
(fixture ``page``)."""

from __future__ import annotations

import base64
import io
import re
import zipfile
from pathlib import Path

import httpx
import pydicom
import pytest
from playwright.sync_api import Browser, Page, expect
from pydicom.uid import generate_uid

from conftest import running_server
from integration.support import AS_STORED, multipart_related, split_multipart

from .conftest import DATASET, WAIT_MS, NetworkLog, Site, sample_file

pytestmark = pytest.mark.timeout(300)

CT = sample_file("CT_small.dcm")


def open_browser(page: Page) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/ui/$"))
    page.wait_for_selector("body[data-ready=true]")


FIELDS = ("PatientName", "PatientID", "AccessionNumber", "ModalitiesInStudy", "from", "to")


def search(page: Page, **fields: str) -> None:
    """Fill the form (other fields empty), submit, wait for the answer."""
    for name in FIELDS:
        page.fill(f"#search [name={name}]", fields.get(name, ""))
    submit(page)


def submit(page: Page) -> None:
    page.click("#search button[type=submit]")
    page.wait_for_selector("#studies tbody:not([aria-busy])", state="attached")


def study_rows(page: Page) -> list[str]:
    return [row.inner_text() for row in page.query_selector_all("#studies tbody tr[data-study]")]


def wait_for_thumbnails(page: Page, study_uid: str) -> int:
    """Wait until every series thumbnail of the study's row is a decoded image."""
    selector = f'#studies tr[data-study="{study_uid}"] img[data-series]'
    page.wait_for_function(
        """selector => {
            const images = [...document.querySelectorAll(selector)];
            return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=selector,
    )
    return len(page.query_selector_all(selector))


def test_root_redirects_to_the_browser_which_shows_health_and_counts(
    page: Page, site: Site
) -> None:
    open_browser(page)

    counts = httpx.get(f"{site.base_url}/api/status").json()["counts"]
    expected = (
        f"Online · {counts['studies']} studies, {counts['series']} series, "
        f"{counts['instances']} instances"
    )
    assert page.inner_text("#status").startswith(expected)
    assert counts["studies"] >= len(DATASET)
    assert page.is_visible("#viewer-link")


def test_search_by_a_german_name_shows_its_study_and_series_thumbnail(page: Page) -> None:
    german = pydicom.dcmread(DATASET[1])
    open_browser(page)

    search(page, PatientName="Äneas")
    row = page.locator(f'#studies tr[data-study="{german.StudyInstanceUID}"]')
    expect(row).to_be_visible()

    assert [text.split("\t")[0] for text in study_rows(page)] == ["Äneas^Rüdiger"]
    assert wait_for_thumbnails(page, german.StudyInstanceUID) == 1


def test_fuzzy_search_finds_the_french_name_typed_without_accents(page: Page) -> None:
    open_browser(page)

    search(page, PatientName="buc^jerome")
    expect(page.locator("#studies tbody tr[data-study]")).to_have_count(1)
    assert study_rows(page)[0].startswith("Buc^Jérôme")

    page.uncheck("#search [name=fuzzy]")
    submit(page)
    expect(page.locator("#studies tbody td.empty")).to_be_visible()


def test_search_by_modality_and_date_range(page: Page) -> None:
    ct = pydicom.dcmread(CT)
    day = f"{ct.StudyDate[:4]}-{ct.StudyDate[4:6]}-{ct.StudyDate[6:]}"
    open_browser(page)

    search(page, ModalitiesInStudy="CT", **{"from": day, "to": day})
    expect(page.locator("#studies tbody tr[data-study]")).to_have_count(1)
    assert page.get_attribute("#studies tbody tr[data-study]", "data-study") == (
        ct.StudyInstanceUID
    )
    assert wait_for_thumbnails(page, ct.StudyInstanceUID) == 1


def test_sorting_by_patient_reorders_the_rows(page: Page) -> None:
    open_browser(page)
    page.wait_for_function(
        "n => document.querySelectorAll('#studies tbody tr[data-study]').length >= n",
        arg=len(DATASET),
    )

    page.click("#studies button[data-sort=PatientName]")
    ascending = [text.split("\t")[0] for text in study_rows(page)]
    page.click("#studies button[data-sort=PatientName]")
    descending = [text.split("\t")[0] for text in study_rows(page)]

    assert ascending == sorted(ascending, key=str.lower)
    assert descending == ascending[::-1]
    assert page.get_attribute("#studies th:has(button[data-sort=PatientName])", "aria-sort") == (
        "descending"
    )


def test_paging_walks_the_studies_a_page_at_a_time(page: Page, site: Site) -> None:
    template = pydicom.dcmread(CT)
    studies = []
    for n in range(11):
        template.PatientID = f"PAGE-{n:02}"
        template.StudyInstanceUID = generate_uid()
        template.SeriesInstanceUID = generate_uid()
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        template.save_as(buffer, enforce_file_format=True)
        studies.append(buffer.getvalue())
    body, content_type = multipart_related(studies)
    stored = httpx.post(
        f"{site.base_url}/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=120,
    )
    assert stored.status_code == 200, stored.text
    open_browser(page)
    page.select_option("#page-size", "10")
    rows = page.locator("#studies tbody tr[data-study]")

    search(page, PatientID="PAGE-*")
    expect(page.locator("#page")).to_have_text("Studies 1–10")
    expect(rows).to_have_count(10)
    assert page.is_disabled("#previous")
    first_page = {row.get_attribute("data-study") for row in rows.all()}
    page.click("#next")
    expect(page.locator("#page")).to_have_text("Studies 11–11")
    expect(rows).to_have_count(1)
    assert page.is_disabled("#next")
    last = rows.first.get_attribute("data-study")
    assert last not in first_page
    assert first_page | {last} == {pydicom.dcmread(io.BytesIO(s)).StudyInstanceUID for s in studies}
    page.click("#previous")
    expect(page.locator("#page")).to_have_text("Studies 1–10")


def test_upload_with_the_file_input_stores_the_file(page: Page, site: Site) -> None:
    mr = sample_file("MR_small.dcm")
    open_browser(page)

    page.set_input_files("#files", str(mr))

    expect(page.locator("#upload-result")).to_have_text("1 instance stored.")
    assert stored_bytes(site, mr) == mr.read_bytes()
    search(page, PatientID="4MR1")
    expect(page.locator("#studies tbody tr[data-study]")).to_have_count(1)


def test_upload_by_drag_and_drop_stores_the_file(page: Page, site: Site) -> None:
    dropped = sample_file("SC_rgb_small_odd.dcm")
    open_browser(page)

    page.evaluate(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: 'application/dicom' }));
            const drop = document.querySelector('#drop');
            for (const type of ['dragover', 'drop']) {
                drop.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true }));
            }
        }""",
        [dropped.name, base64.b64encode(dropped.read_bytes()).decode()],
    )

    expect(page.locator("#upload-result")).to_have_text("1 instance stored.")
    assert stored_bytes(site, dropped) == dropped.read_bytes()


def test_upload_of_a_file_that_is_not_dicom_says_it_was_refused(
    page: Page, network: NetworkLog, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a DICOM file\n")
    open_browser(page)
    network.expect_status(409, "/dicom-web/studies")

    page.set_input_files("#files", str(text))

    expect(page.locator("#upload-result")).to_contain_text("0 instances stored, 1 refused")


def test_download_gives_the_study_as_a_zip_of_the_stored_file(page: Page) -> None:
    ct = pydicom.dcmread(CT)
    open_browser(page)
    search(page, PatientID="1CT1")
    row = page.locator(f'#studies tr[data-study="{ct.StudyInstanceUID}"]')

    expect(row).to_have_count(1)

    with page.expect_download() as download:
        row.locator("button", has_text="Download").click()

    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    members = [name for name in archive.namelist() if not name.endswith("/")]
    assert len(members) == 1
    assert archive.read(members[0]) == CT.read_bytes()


def stored_bytes(site: Site, path: Path) -> bytes:
    """The instance of ``path`` as the server returns it (as stored)."""
    ds = pydicom.dcmread(path)
    url = (
        f"{site.base_url}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    response = httpx.get(url, headers=AS_STORED)
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    return part.data


def store_ct_copies(
    site: Site, patient_id: str, series_per_study: list[int]
) -> list[pydicom.Dataset]:
    """Store copies of the CT under new UIDs: one study per entry of
    ``series_per_study``, with that many series (one instance each)."""
    stored = []
    for count in series_per_study:
        study = generate_uid()
        for _ in range(count):
            ds = pydicom.dcmread(CT)
            ds.PatientID = patient_id
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            stored.append(ds)
    parts = []
    for ds in stored:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        parts.append(buffer.getvalue())
    body, content_type = multipart_related(parts)
    answer = httpx.post(
        f"{site.base_url}/dicom-web/studies",
        content=body,
        headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return stored


def qido(site: Site, path: str, **params: str) -> list[str]:
    """The UIDs (StudyInstanceUID, or SeriesInstanceUID under a study) QIDO-RS finds."""
    answer = httpx.get(f"{site.base_url}/dicom-web{path}", params=params, timeout=60)
    assert answer.status_code in (200, 204), answer.text
    tag = "0020000E" if "/series" in path else "0020000D"
    return sorted(item[tag]["Value"][0] for item in (answer.json() if answer.content else []))


def focused(page: Page) -> str:
    return str(page.evaluate("document.activeElement && document.activeElement.id"))


def test_delete_a_study_after_confirming(page: Page, site: Site) -> None:
    """Two studies; Cancel keeps both; confirming deletes one: the list shows only the
    other, and QIDO-RS agrees."""
    first, second = store_ct_copies(site, "DEL-STUDY", [1, 1])
    open_browser(page)
    search(page, PatientID="DEL-STUDY")
    rows = page.locator("#studies tbody tr[data-study]")
    expect(rows).to_have_count(2)
    row = page.locator(f'#studies tr[data-study="{first.StudyInstanceUID}"]')
    button = row.get_by_role("button", name=re.compile(r"^Delete study of "))
    dialog = page.locator("#confirm-delete")

    button.click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("1 image")
    assert focused(page) == "confirm-delete-cancel"
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(rows).to_have_count(2)
    assert page.evaluate("document.activeElement.dataset.action") == "delete-study"

    button.click()
    page.click("#confirm-delete-ok")
    expect(page.locator("#notice")).to_have_text("Study of CompressedSamples^CT1 deleted.")
    expect(rows).to_have_count(1)
    assert rows.first.get_attribute("data-study") == second.StudyInstanceUID
    assert qido(site, "/studies", PatientID="DEL-STUDY") == [second.StudyInstanceUID]
    assert focused(page) == "notice"


def test_delete_one_series_of_a_study(page: Page, site: Site) -> None:
    (kept, gone) = store_ct_copies(site, "DEL-SERIES", [2])
    study = kept.StudyInstanceUID
    open_browser(page)
    search(page, PatientID="DEL-SERIES")
    assert wait_for_thumbnails(page, study) == 2
    figure = page.locator(f'#studies figure[data-series="{gone.SeriesInstanceUID}"]')

    figure.get_by_role("button", name=re.compile(r"^Delete series ")).click()
    expect(page.locator("#confirm-delete")).to_contain_text("Series CT")
    page.click("#confirm-delete-ok")

    expect(page.locator("#notice")).to_contain_text("deleted.")
    assert wait_for_thumbnails(page, study) == 1
    assert page.locator(f'#studies figure[data-series="{kept.SeriesInstanceUID}"]').count() == 1
    assert qido(site, f"/studies/{study}/series") == [kept.SeriesInstanceUID]


def test_no_delete_buttons_when_the_archive_never_deletes(browser: Browser, tmp_path: Path) -> None:
    """With ``[retention] allow_delete = false`` (DELETE answers 405) the page offers
    no Delete, for studies nor series."""
    env = {"DICOMCLOUD_RETENTION__ALLOW_DELETE": "false"}
    with running_server(tmp_path / "data", env) as server:
        site = Site(server.base_url, tmp_path / "data")
        (ds,) = store_ct_copies(site, "NO-DELETE", [1])
        network = NetworkLog(site.host)
        context = browser.new_context(base_url=site.base_url)
        context.on("response", lambda r: network.response(r.status, r.request.method, r.url))
        context.on("requestfailed", lambda r: network.failed(r.url, r.failure))
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            open_browser(page)
            search(page, PatientID="NO-DELETE")
            assert wait_for_thumbnails(page, ds.StudyInstanceUID) == 1
            row = page.locator(f'#studies tr[data-study="{ds.StudyInstanceUID}"]')
            expect(row.get_by_role("button", name="Download")).to_be_visible()
            assert row.get_by_role("button", name=re.compile("^Delete")).count() == 0
            page.wait_for_selector("body[data-pending='0']", state="attached")
        finally:
            context.close()
        assert not network.problems, "\n".join(network.problems)
