"""The OHIF viewer at /viewer/, opened from the study browser in a real Chromium: the CT
is drawn in the viewport (a screenshot that is not blank), the series panel shows its
thumbnail, and nothing is requested from another host or fails (fixture ``page``)."""

from __future__ import annotations

import io

import pydicom
import pytest
from PIL import Image, ImageStat
from playwright.sync_api import Page, expect

from .conftest import ARTIFACTS, sample_file

pytestmark = pytest.mark.timeout(300)

CT = sample_file("CT_small.dcm")
#: Cornerstone draws each image on a canvas in an element of this class.
VIEWPORT = ".viewport-element canvas.cornerstone-canvas"
#: The series panel draws each thumbnail on its own canvas.
THUMBNAIL = ".ImageThumbnail .image-thumbnail-canvas canvas"


def drawn(page: Page, selector: str) -> None:
    """Wait until the canvas has pixels that are not all one value."""
    page.wait_for_function(
        """selector => {
            const canvas = document.querySelector(selector);
            if (!canvas || canvas.width === 0 || canvas.height === 0) return false;
            const context = canvas.getContext('2d');
            const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let low = 255, high = 0;
            for (let i = 0; i < pixels.length; i += 4 * 97) {
                low = Math.min(low, pixels[i]);
                high = Math.max(high, pixels[i]);
            }
            return high - low > 32;
        }""",
        arg=selector,
    )


def test_open_a_ct_from_the_study_browser_shows_its_image(page: Page) -> None:
    ct = pydicom.dcmread(CT)
    page.goto("/ui/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#search [name=PatientID]", "1CT1")
    page.click("#search button[type=submit]")
    row = page.locator(f'#studies tr[data-study="{ct.StudyInstanceUID}"]')
    expect(row).to_have_count(1)
    # Leave once the thumbnails are in (leaving earlier would abort their requests).
    page.wait_for_selector("body[data-pending='0']", state="attached")

    row.locator("a", has_text="Open in viewer").click()

    page.wait_for_url(f"**/viewer/viewer/{ct.StudyInstanceUID}")
    page.wait_for_selector(VIEWPORT)
    drawn(page, VIEWPORT)
    drawn(page, THUMBNAIL)
    # The overlay shows the patient of the file.
    expect(page.locator(".OHIFCornerstoneViewportOverlay").first).to_contain_text("1CT1")
    shot = page.locator(".viewport-element").first.screenshot()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "viewer-ct-viewport.png").write_bytes(shot)
    image = Image.open(io.BytesIO(shot)).convert("L")
    stats = ImageStat.Stat(image)
    assert stats.stddev[0] > 20, f"the viewport looks blank (stddev {stats.stddev[0]:.1f})"
    low, high = image.getextrema()
    assert high - low > 100


def test_viewer_routes_fall_back_to_its_page_and_load_nothing_from_outside(
    page: Page,
) -> None:
    response = page.goto("/viewer/")
    assert response is not None and response.status == 200
    assert "OHIF" in page.title()
    assert "polyfill.io" not in page.content()
    # OHIF's own study list, filled from this server's QIDO-RS.
    expect(page.get_by_text("CompressedSamples^CT1").first).to_be_visible()
