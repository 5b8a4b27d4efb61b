"""The OHIF viewer at /viewer/, opened from the study browser in a real Chromium: the CT
is drawn in the viewport (a screenshot that is not blank), the series panel shows its
thumbnail, and nothing is requested from another host or fails (fixture ``page``).

OHIF 3 by default (cornerstone3D, WebGL 2 from SwiftShader); OHIF v2 when the tests
run with ``DICOMCLOUD_TEST_VIEWER=4.12.51``.
"""

from __future__ import annotations

import io
import time

import pydicom
import pytest
from PIL import Image, ImageStat
from playwright.sync_api import Locator, Page, expect

from .conftest import ARTIFACTS, OHIF2, WAIT_MS, sample_file

pytestmark = pytest.mark.timeout(300)

CT = sample_file("CT_small.dcm")
if OHIF2:
    #: Cornerstone draws each image on a canvas in an element of this class.
    VIEWPORT = ".viewport-element"
    #: The series panel draws each thumbnail on its own canvas.
    THUMBNAIL = ".ImageThumbnail .image-thumbnail-canvas"
    #: Where a study opened from the study browser lands.
    STUDY_URL = "**/viewer/viewer/{uid}"
else:
    #: cornerstone3D's element, holding the canvas it draws on.
    VIEWPORT = ".cornerstone-viewport-element .viewport-element"
    #: The study panel's thumbnails: images rendered from the series' first frame.
    THUMBNAIL = '[data-cy="study-browser-thumbnail"] img'
    STUDY_URL = "**/viewer/viewer?StudyInstanceUIDs={uid}"


#: The WebGL 2 renderer's name, or null when Chromium gives no WebGL 2 context.
WEBGL2_RENDERER = """() => {
    const gl = document.createElement('canvas').getContext('webgl2');
    if (!gl) return null;
    const info = gl.getExtension('WEBGL_debug_renderer_info');
    return info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
}"""


def shows_an_image(element: Locator, name: str, *, spread: int = 100) -> None:
    """Poll until a screenshot of ``element`` is an image (not one flat colour, not a
    blank viewport): its grey levels spread over more than ``spread`` and vary.  The
    last screenshot is kept as ``{name}.png``."""
    deadline = time.monotonic() + WAIT_MS / 1000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    while True:
        shot = element.screenshot()
        (ARTIFACTS / f"{name}.png").write_bytes(shot)
        image = Image.open(io.BytesIO(shot)).convert("L")
        low, high = image.getextrema()
        deviation = ImageStat.Stat(image).stddev[0]
        if high - low > spread and deviation > 20:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{name}: no image after {WAIT_MS / 1000:.0f} s "
                f"(grey levels {low}-{high}, stddev {deviation:.1f})"
            )
        element.page.wait_for_timeout(500)


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

    page.wait_for_url(STUDY_URL.format(uid=ct.StudyInstanceUID))
    viewport = page.locator(VIEWPORT).first
    viewport.wait_for()
    shows_an_image(viewport, "viewer-ct-viewport")
    thumbnail = page.locator(THUMBNAIL).first
    thumbnail.wait_for()
    shows_an_image(thumbnail, "viewer-ct-thumbnail", spread=60)
    if OHIF2:
        # The overlay shows the patient of the file.
        overlay = page.locator(".OHIFCornerstoneViewportOverlay").first
        expect(overlay).to_contain_text("1CT1")
    else:
        # One thumbnail, of the CT's one series; the study panel shows the study's date.
        expect(page.locator('[data-cy="study-browser-thumbnail"]')).to_have_count(1)
        expect(page.locator('[data-cy="study-browser-thumbnail"]').first).to_contain_text("CT")
        expect(page.get_by_text("19-Jan-2004").first).to_be_visible()
        # Drawn with WebGL 2 (SwiftShader), not cornerstone's CPU fallback.
        renderer = page.evaluate(WEBGL2_RENDERER)
        (ARTIFACTS / "viewer-webgl2-renderer.txt").write_text(f"{renderer}\n")
        assert renderer, "no WebGL 2 context in this Chromium"


def test_viewer_routes_fall_back_to_its_page_and_load_nothing_from_outside(
    page: Page,
) -> None:
    response = page.goto("/viewer/")
    assert response is not None and response.status == 200
    assert "OHIF" in page.title()
    assert "polyfill.io" not in page.content()
    # OHIF's own study list, filled from this server's QIDO-RS.
    expect(page.get_by_text("CompressedSamples", exact=False).first).to_be_visible()
