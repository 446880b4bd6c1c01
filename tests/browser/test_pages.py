"""Open every page of the offline book build in headless Chromium and check how it renders.

Each page must load all its images, typeset all its math with MathJax, render its
embedded widgets, and do so without a failed or rejected request to the local server,
without any request to another host and without a JavaScript error. A full-page
screenshot of each page is saved under ``_build/offline/screenshots``.

BOOK_HTML_DIR overrides the build folder (default ``_build/offline/_build/html``). The
pages are served from 127.0.0.1 and opened in Debian's ``/usr/bin/chromium`` (``make
chromium`` installs it). Without Chromium the tests are skipped, unless
SPANLIB_REQUIRE_BROWSER is set, as ``make browser`` does, in which case they fail.
"""

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
HTML_DIR = Path(os.environ.get("BOOK_HTML_DIR", ROOT / "_build" / "offline" / "_build" / "html"))
SCREENSHOT_DIR = HTML_DIR.parent.parent / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Besides headless mode, these flags stop Chromium's own background traffic (updates,
# sync, QUIC probes). The resolver rule makes every host name lookup fail. It applies
# to IP literals too, so the address of the local server is excluded from it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def html_pages() -> list[Path]:
    """Return the HTML pages of the build, relative to HTML_DIR, without theme assets."""
    if not HTML_DIR.is_dir():
        return []
    pages = HTML_DIR.rglob("*.html")
    return sorted(page.relative_to(HTML_DIR) for page in pages if "_static" not in page.parts)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        """Keep the pytest output free of access logs, since the tests record every response."""


@pytest.fixture(scope="session")
def base_url():
    """Serve HTML_DIR on 127.0.0.1 at a free port for the whole session."""
    if not HTML_DIR.is_dir():
        pytest.fail(f"Offline build not found at {HTML_DIR}: run `make book-offline` first.")
    handler = functools.partial(QuietHandler, directory=str(HTML_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def browser():
    """Launch Debian's headless Chromium through Playwright."""
    if not CHROMIUM.exists():
        message = f"Chromium not found at {CHROMIUM}: run `make chromium` (Debian package chromium)."
        if os.environ.get("SPANLIB_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


PAGES = html_pages()
WIDGET_STATE = 'script[type="application/vnd.jupyter.widget-state+json"]'
WIDGET_VIEW = 'script[type="application/vnd.jupyter.widget-view+json"]'
MATHJAX_STARTED_JS = "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
# How long a page may take to start MathJax or to render its first widget.
WAIT_MS = 15_000

# Images may load lazily, so force all of them to load and report those that fail to decode.
BROKEN_IMAGES_JS = """async () => {
  const images = [...document.images];
  images.forEach((image) => { image.loading = "eager"; });
  await Promise.all(images.map((image) => image.decode().catch(() => null)));
  return images
    .filter((image) => !(image.complete && image.naturalWidth > 0))
    .map((image) => image.getAttribute("src"));
}"""

# Text outside code blocks that still contains a TeX delimiter was not typeset.
RAW_TEX_JS = """() => {
  const main = document.querySelector("main") || document.body;
  const copy = main.cloneNode(true);
  copy.querySelectorAll("pre, code, script, mjx-container").forEach((node) => node.remove());
  return ["\\\\(", "\\\\[", "$$"].filter((delimiter) => copy.textContent.includes(delimiter));
}"""

# The widget manager renders each view next to its view script, in a .widget-subarea.
UNRENDERED_WIDGETS_JS = f"""() => [...document.querySelectorAll('{WIDGET_VIEW}')]
  .filter((view) => !view.parentElement.querySelector(".widget-subarea .jupyter-widgets"))
  .length"""


def toc_docnames() -> list[str]:
    """Return every file named in _toc.yml, the root first."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        names += [chapter["file"] for chapter in part["chapters"]]
    return names


def test_build_has_page_per_toc_entry():
    assert HTML_DIR.is_dir(), f"Offline build not found at {HTML_DIR}: run `make book-offline` first."
    missing = [name for name in toc_docnames() if not (HTML_DIR / f"{name}.html").is_file()]
    assert not missing, f"Pages missing from {HTML_DIR}: {missing}"


def page_id(page) -> str:
    return page.as_posix()


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_page_renders_offline(page, browser, base_url):
    origin = urlsplit(base_url).netloc
    foreign_requests, failed_requests, error_responses, script_errors = [], [], [], []

    def record_request(request):
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != origin:
            foreign_requests.append(request.url)

    def record_failure(request):
        failed_requests.append(f"{request.url} ({request.failure})")

    def record_response(response):
        if response.status >= 400:
            error_responses.append(f"{response.url} (HTTP {response.status})")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.on("request", record_request)
    tab.on("requestfailed", record_failure)
    tab.on("response", record_response)
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    try:
        tab.goto(base_url + page.as_posix(), wait_until="load")
        refresh = tab.locator('meta[http-equiv="refresh"]')
        if refresh.count():
            # jupyter-book's index.html only forwards to the root chapter.
            tab.wait_for_url(lambda url: url != base_url + page.as_posix())
            tab.wait_for_load_state("load")

        math_count = tab.locator(".math").count()
        mathjax_loaded = True
        if math_count:
            try:
                tab.wait_for_function(MATHJAX_STARTED_JS, timeout=WAIT_MS)
                tab.evaluate("() => MathJax.startup.promise")
            except PlaywrightTimeoutError:
                mathjax_loaded = False
        has_widgets = tab.locator(WIDGET_STATE).count() > 0
        widgets_loaded = True
        if has_widgets:
            try:
                tab.wait_for_selector(".widget-subarea .jupyter-widgets", state="attached", timeout=WAIT_MS)
            except PlaywrightTimeoutError:
                widgets_loaded = False
        tab.wait_for_load_state("networkidle")
        broken_images = tab.evaluate(BROKEN_IMAGES_JS)

        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOT_DIR / (page.as_posix().replace("/", "__").removesuffix(".html") + ".png")
        tab.screenshot(path=str(shot), full_page=True)

        assert not foreign_requests, f"Requests to other hosts: {foreign_requests}"
        assert not failed_requests, f"Failed requests: {failed_requests}"
        assert not error_responses, f"Error responses: {error_responses}"
        assert not script_errors, f"JavaScript errors: {script_errors}"
        assert not broken_images, f"Images that did not load: {broken_images}"
        if math_count:
            assert mathjax_loaded, f"MathJax did not start within {WAIT_MS} ms"
            untypeset = tab.locator(".math:not(:has(mjx-container))").count()
            assert untypeset == 0, f"{untypeset} of {math_count} math elements were not typeset"
            assert tab.locator("mjx-merror").count() == 0, "MathJax reported a TeX error"
        assert tab.evaluate(RAW_TEX_JS) == [], "Raw TeX delimiters left in the text"
        if has_widgets:
            assert widgets_loaded, f"No widget rendered within {WAIT_MS} ms"
            views = tab.locator(WIDGET_VIEW).count()
            unrendered = tab.evaluate(UNRENDERED_WIDGETS_JS)
            assert unrendered == 0, f"{unrendered} of {views} widgets did not render"
    finally:
        context.close()


NOTEBOOK_PAGES = [page for page in PAGES if (ROOT / page.with_suffix(".ipynb")).is_file()]
COLAB_PREFIX = "https://colab.research.google.com/github/spanlib/spanlib/blob/main/"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES, ids=page_id)
def test_notebook_page_offers_colab_and_download(page, browser, base_url):
    notebook = page.with_suffix(".ipynb").as_posix()
    context = browser.new_context()
    tab = context.new_page()
    try:
        tab.goto(base_url + page.as_posix(), wait_until="load")
        colab = tab.locator(f'a[href="{COLAB_PREFIX}{notebook}"]')
        assert colab.count() == 1, f"No Colab launch link to {COLAB_PREFIX}{notebook}"

        download = tab.locator(f'a[href$="_sources/{notebook}"]')
        assert download.count() == 1, f"No download link to the source notebook {notebook}"
        href = download.get_attribute("href")
        response = tab.request.get(urljoin(tab.url, href))
        assert response.status == 200, f"Download link {href} returned HTTP {response.status}"
    finally:
        context.close()
