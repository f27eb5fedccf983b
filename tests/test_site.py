"""Open the built website in a real browser and check what a reader sees.

The book built by the session fixture ``built_site`` (see ``conftest.py``) is served on
127.0.0.1 and opened in headless Chromium through Selenium and Debian's ``chromedriver``. For every
page in the table of contents the tests check that it loads with no error in the browser's
console, that its figures are there with a non-zero size, that its math is typeset by MathJax, and
that a chapter offers its notebook for download and links to the right notebook in Colab and
Binder. They also walk the "next" links from the first page to the last, and search the site.

A full-page screenshot of every page, as a reader sees it in a window 1280 px wide (header, sidebar
and article), and one of a chapter at a phone's width (390 px) are saved as test artifacts in
``_build/screenshots/`` (or the folder named by ``LRBOOK_SCREENSHOTS``).

Without Chromium the tests are skipped with the command that installs it, except where
``LRBOOK_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets): there a missing browser fails them.
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
SCREENSHOTS = Path(os.environ.get("LRBOOK_SCREENSHOTS", ROOT / "_build" / "screenshots"))
PAGE_TIMEOUT_S = 30
# The widths of the screenshots, in CSS pixels: a laptop's window and a phone's screen.
DESKTOP_WIDTH = 1280
PHONE_WIDTH = 390


def toc_pages() -> list[str]:
    """Return every page of the table of contents (paths without a suffix), in reading order."""
    pages = [TOC["root"]]
    pending = list(TOC.get("chapters", []))
    while pending:
        entry = pending.pop(0)
        pages.append(entry["file"])
        pending[:0] = entry.get("sections", [])
    return pages


PAGES = toc_pages()
NOTEBOOK_PAGES = [page for page in PAGES if (ROOT / f"{page}.ipynb").exists()]


@dataclass(frozen=True)
class PageVisit:
    """What the browser saw on one page, read once and checked by several tests."""

    url: str
    title: str
    console_errors: list[str]
    images: list[dict]
    math: list[dict]
    mathjax_loaded: bool
    links: list[str]
    sidebar_links: list[str]


# Everything a test needs from a page, read in the browser after MathJax has typeset it. The
# figures are the <img> elements in the article; the math is every element Sphinx marks as math.
READ_PAGE = """
const done = arguments[arguments.length - 1];
const SIDEBAR = "nav.bd-docs-nav a[href]";
const typeset = window.MathJax && MathJax.startup && MathJax.startup.promise
  ? MathJax.startup.promise : Promise.resolve();
typeset.then(() => {
  const article = document.querySelector("article") || document.body;
  done({
    title: document.title,
    mathjax: Boolean(window.MathJax && MathJax.version),
    images: Array.from(article.querySelectorAll("img")).map(img => {
      const box = img.getBoundingClientRect();
      return {src: img.getAttribute("src"), complete: img.complete,
              natural_width: img.naturalWidth, width: box.width, height: box.height};
    }),
    math: Array.from(article.querySelectorAll(".math")).map(node => ({
      source: node.textContent.slice(0, 80),
      typeset: node.querySelector("mjx-container") !== null,
      errors: node.querySelectorAll("mjx-merror").length,
    })),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
    sidebar_links: Array.from(document.querySelectorAll(SIDEBAR)).map(a => a.href),
  });
}, error => done({error: String(error)}));
"""


@pytest.fixture(scope="module")
def site_url(built_site: Path) -> Iterator[str]:
    """Serve the built site on a free port of 127.0.0.1 for the duration of the module."""
    handler = functools.partial(QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file handler that does not log every request to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Start headless Chromium, with the browser's console log readable from the tests."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        message = (
            "Chromium and chromedriver are needed for the browser tests "
            "(Debian: apt-get install chromium chromium-driver)"
        )
        if os.environ.get("LRBOOK_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # The machine has no network: without the background-networking flags Chromium keeps trying
    # to reach Google's services. A fresh profile per run keeps earlier runs out of the results.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    profile = SCREENSHOTS.parent / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def page_url(site_url: str, page: str) -> str:
    return urllib.parse.urljoin(site_url, f"{page}.html")


def page_of(url: str) -> str:
    """Return the page a URL of the served site shows, as written in ``_toc.yml``."""
    return urllib.parse.urlparse(url).path.lstrip("/").removesuffix(".html")


def save_page_screenshot(driver, path: Path, width: int, mobile: bool = False) -> None:
    """Save a PNG of the whole page laid out in a window ``width`` CSS pixels wide.

    The window is made as tall as the page, so the page is laid out and drawn once, as a reader
    scrolling through it sees it, and captured from its top-left corner. (Chromium's
    ``captureBeyondViewport`` instead draws the part below the window in a second layout, which
    shifted the pages sideways and cut off their left side, sidebar included.) ``mobile`` also
    emulates a phone's screen: the theme then hides the sidebar behind its menu button.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics = {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": mobile}
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": height})
        driver.execute_script("window.scrollTo(0, 0)")
        clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "clip": clip})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.write_bytes(base64.b64decode(shot["data"]))


def png_size(path: Path) -> tuple[int, int]:
    """Return (width, height) of a PNG file, read from its header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is no PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def screenshot_path(page: str, prefix: str = "") -> Path:
    return SCREENSHOTS / f"{prefix}{page.replace('/', '__')}.png"


@pytest.fixture(scope="module")
def visit(browser, site_url):
    """Return a function that opens a page once, reads it, screenshots it and caches the result."""
    seen: dict[str, PageVisit] = {}

    def open_page(page: str) -> PageVisit:
        if page not in seen:
            browser.get_log("browser")  # drop what earlier pages logged
            browser.get(page_url(site_url, page))
            found = browser.execute_async_script(READ_PAGE)
            assert "error" not in found, f"{page}: MathJax failed: {found.get('error')}"
            errors = [
                entry["message"]
                for entry in browser.get_log("browser")
                if entry["level"] == "SEVERE"
            ]
            save_page_screenshot(browser, screenshot_path(page), DESKTOP_WIDTH)
            seen[page] = PageVisit(
                url=browser.current_url,
                title=found["title"],
                console_errors=errors,
                images=found["images"],
                math=found["math"],
                mathjax_loaded=found["mathjax"],
                links=found["links"],
                sidebar_links=found["sidebar_links"],
            )
        return seen[page]

    return open_page


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_console_errors(visit, page):
    seen = visit(page)
    assert seen.title and "404" not in seen.title, f"{page}: title {seen.title!r}"
    assert seen.console_errors == [], (
        f"{page}: errors in the browser console: {seen.console_errors}"
    )


@pytest.mark.parametrize("page", PAGES)
def test_figures_are_shown_with_a_size(visit, page):
    seen = visit(page)
    if page in NOTEBOOK_PAGES:
        assert seen.images, f"{page}: a notebook page shows no figure"
    for image in seen.images:
        assert image["complete"] and image["natural_width"] > 0, f"{page}: broken image {image}"
        assert image["width"] > 0 and image["height"] > 0, f"{page}: image drawn empty: {image}"


@pytest.mark.parametrize("page", PAGES)
def test_math_is_typeset(visit, page):
    seen = visit(page)
    if seen.math:
        assert seen.mathjax_loaded, f"{page}: has math but MathJax did not load"
    untypeset = [m["source"] for m in seen.math if not m["typeset"] or m["errors"]]
    assert not untypeset, f"{page}: math left as source or with errors: {untypeset[:5]}"


def test_the_book_has_typeset_math(visit):
    # The per-page check passes trivially on a page without math; this one cannot.
    typeset = sum(m["typeset"] for page in PAGES for m in visit(page).math)
    assert typeset >= 20, f"only {typeset} math elements typeset in the whole book"


def test_next_links_walk_through_every_page_in_order(browser, site_url):
    from selenium.webdriver.common.by import By

    browser.get(page_url(site_url, PAGES[0]))
    walked = [PAGES[0]]
    for _ in range(len(PAGES)):
        following = browser.find_elements(By.CSS_SELECTOR, "a.right-next")
        if not following:
            break
        browser.get(following[0].get_attribute("href"))
        walked.append(page_of(browser.current_url))
    assert walked == PAGES


def test_sidebar_links_every_page(visit, site_url):
    sidebar = set(visit(PAGES[0]).sidebar_links)
    missing = [page for page in PAGES[1:] if page_url(site_url, page) not in sidebar]
    assert not missing, f"the navigation sidebar has no link to {missing}"


@pytest.mark.parametrize(
    ("term", "expected_page"),
    [("SGDR", "chapters/07_sgdr_snapshots"), ("range test", "chapters/03_finding_a_rate")],
)
def test_search_finds_a_term(browser, site_url, term, expected_page):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(urllib.parse.urljoin(site_url, f"search.html?q={urllib.parse.quote(term)}"))
    results = WebDriverWait(browser, PAGE_TIMEOUT_S).until(
        lambda driver: driver.execute_script(
            "const items = document.querySelectorAll('#search-results li a');"
            "return items.length ? Array.from(items).map(a => a.href) : null;"
        )
    )
    found_pages = {
        urllib.parse.urlparse(url).path.lstrip("/").removesuffix(".html") for url in results
    }
    assert expected_page in found_pages, f"searching {term!r} found {sorted(found_pages)}"
    save_page_screenshot(
        browser, SCREENSHOTS / f"search__{term.replace(' ', '_')}.png", DESKTOP_WIDTH
    )


def repository_parts() -> tuple[str, str]:
    """Return (owner/name, branch) of the repository configured in ``_config.yml``."""
    url = CONFIG["repository"]["url"].removesuffix("/")
    return urllib.parse.urlparse(url).path.strip("/"), CONFIG["repository"]["branch"]


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_notebook_is_offered_for_download(visit, site_url, page):
    seen = visit(page)
    # The download button links into the site itself (_sources/...), unlike the GitHub links.
    downloads = [
        link
        for link in seen.links
        if link.startswith(site_url) and link.endswith(f"{Path(page).name}.ipynb")
    ]
    assert downloads, f"{page}: no link to download its notebook"
    with urllib.request.urlopen(downloads[0], timeout=PAGE_TIMEOUT_S) as response:
        served = nbformat.reads(response.read().decode("utf-8"), as_version=4)
    stored = nbformat.read(ROOT / f"{page}.ipynb", as_version=4)
    assert [cell.source for cell in served.cells] == [cell.source for cell in stored.cells]


# Pages that need the rest of the repository (the "Measured" appendix) get no launch buttons.
WEBSITE_ONLY = CONFIG["sphinx"]["config"].get("website_only_pages", [])


@pytest.mark.parametrize("page", WEBSITE_ONLY)
def test_website_only_pages_have_no_launch_buttons(visit, page):
    seen = visit(page)
    launch = [
        link
        for link in seen.links
        if link.startswith(
            (CONFIG["launch_buttons"]["colab_url"], CONFIG["launch_buttons"]["binderhub_url"])
        )
    ]
    assert not launch, f"{page}: {launch}"


@pytest.mark.parametrize("page", [page for page in NOTEBOOK_PAGES if page not in WEBSITE_ONLY])
def test_launch_buttons_open_this_notebook(visit, page):
    seen = visit(page)
    repository, branch = repository_parts()
    colab = (
        f"{CONFIG['launch_buttons']['colab_url']}/github/{repository}/blob/{branch}/{page}.ipynb"
    )
    assert colab in seen.links, f"{page}: no Colab link to {colab}"
    binder = [
        link for link in seen.links if link.startswith(CONFIG["launch_buttons"]["binderhub_url"])
    ]
    assert binder, f"{page}: no Binder (JupyterLab) link"
    query = urllib.parse.parse_qs(urllib.parse.urlparse(binder[0]).query)
    assert query["urlpath"] == [f"lab/tree/{page}.ipynb"], binder[0]
    assert f"/v2/gh/{repository}/{branch}" in binder[0], binder[0]
    # The links name the notebook's path in the repository; it must be a file there.
    assert (ROOT / f"{page}.ipynb").is_file()


def test_every_page_has_a_screenshot(visit):
    for page in PAGES:
        visit(page)
        width, height = png_size(screenshot_path(page))
        # The whole width of the window, from its left edge: nothing of the page cut off.
        assert width == DESKTOP_WIDTH, f"{page}: screenshot {width} px wide, not {DESKTOP_WIDTH}"
        assert height >= 500, f"{page}: screenshot only {height} px tall"


# Where the page's parts are at the current window size: the whole page's width, the sidebar's
# box, the article's box.
LAYOUT = """
const box = selector => {
  const node = document.querySelector(selector);
  if (!node) return null;
  const rect = node.getBoundingClientRect();
  return {left: rect.left, right: rect.right, width: rect.width,
          visible: rect.width > 0 && getComputedStyle(node).visibility !== "hidden"};
};
return {
  window_width: window.innerWidth,
  page_width: document.documentElement.scrollWidth,
  sidebar: box("#pst-primary-sidebar"),
  article: box("article"),
};
"""


def settled_layout(browser, timeout: float = 5.0) -> dict:
    """:data:`LAYOUT` once the page has stopped moving.

    After a change of window size the theme slides the sidebar in or out with a CSS
    transition; a reading taken during it sees the sidebar half-way (it once read
    ``left -285, right 7`` on a loaded machine). So read until two readings 0.1 s
    apart agree, for at most ``timeout`` seconds, and return the last.
    """
    deadline = time.monotonic() + timeout
    layout = browser.execute_script(LAYOUT)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        previous, layout = layout, browser.execute_script(LAYOUT)
        if layout == previous:
            break
    return layout


def test_desktop_layout_shows_sidebar_beside_the_article(browser, site_url):
    page = NOTEBOOK_PAGES[0]
    browser.get(page_url(site_url, page))
    metrics = {"width": DESKTOP_WIDTH, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
    try:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        layout = settled_layout(browser)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert layout["page_width"] <= layout["window_width"], f"{page} scrolls sideways: {layout}"
    sidebar, article = layout["sidebar"], layout["article"]
    assert sidebar and sidebar["visible"] and sidebar["left"] >= 0, f"{page}: {layout}"
    assert article and article["left"] >= sidebar["right"] - 1, f"{page}: {layout}"
    assert article["right"] <= DESKTOP_WIDTH, f"{page}: the article is cut off: {layout}"


def test_a_chapter_fits_a_phone_screen(browser, site_url):
    # A reader on a phone scrolls down, never sideways: wide tables and code scroll in their own
    # boxes, and the sidebar waits behind the menu button.
    page = NOTEBOOK_PAGES[0]
    browser.get(page_url(site_url, page))
    metrics = {"width": PHONE_WIDTH, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    try:
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        layout = settled_layout(browser)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert layout["page_width"] <= PHONE_WIDTH, f"{page} scrolls sideways on a phone: {layout}"
    sidebar, article = layout["sidebar"], layout["article"]
    assert not (sidebar and sidebar["visible"] and sidebar["right"] > 0), f"{page}: {layout}"
    assert article and 0 <= article["left"] and article["right"] <= PHONE_WIDTH, layout
    shot = screenshot_path(page, prefix="phone__")
    save_page_screenshot(browser, shot, PHONE_WIDTH, mobile=True)
    assert png_size(shot)[0] == PHONE_WIDTH
