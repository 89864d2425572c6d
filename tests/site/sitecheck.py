"""The built site in headless Chromium: pages of _toc.yml, one visit per page.

The site under test is `_build/html` of the repository, or of the book folder named by the
environment variable BOOK_ROOT (handy for a scratch copy). Nothing leaves the machine: every
request that is not for the local server is aborted, MathJax's included, so a formula is typeset
only by the MathJax that ships with the build (sphinx-mathjax-offline, under _static/mathjax).
"""

import functools
import io
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
ROOT = Path(os.environ.get("BOOK_ROOT", REPO)).resolve()
SITE = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class Page:
    """One page of _toc.yml: its source file and where the build puts it."""

    name: str  # "book/02_elbo"
    source: Path  # book/02_elbo.ipynb

    @property
    def html(self) -> str:
        return f"{self.name}.html"

    @property
    def is_notebook(self) -> bool:
        return self.source.suffix == ".ipynb"


def toc_pages(root: Path) -> list[Page]:
    """Every file of _toc.yml in reading order: root, parts, chapters and their sections."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    pages = []
    for name in names:
        name = re.sub(r"\.(md|ipynb|rst)$", "", name)
        found = [root / f"{name}{ext}" for ext in (".ipynb", ".md", ".rst")]
        pages.append(Page(name, next((p for p in found if p.exists()), found[0])))
    return pages


def has_math(page: Page) -> bool:
    """Whether the page's Markdown (a notebook's Markdown cells) holds TeX math."""
    if page.is_notebook:
        cells = json.loads(page.source.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    else:
        text = page.source.read_text()
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)  # not in code fences
    text = re.sub(r"`[^`\n]*`", "", text)  # nor in inline code
    return bool(re.search(r"\$\$|\$[^$\n]+\$|\\begin\{|\{math\}", text))


PAGES = toc_pages(ROOT)
CHAPTERS = [page for page in PAGES if page.is_notebook]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# ---------------------------------------------------------------- the local server


@functools.cache
def http_status(url: str) -> int:
    """HTTP status of a GET on the local server (links are checked once per run)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


# ---------------------------------------------------------------- MathJax


def remote_scripts(html: str) -> list[str]:
    """The scripts a page loads from outside the site (none should be)."""
    return re.findall(r'<script[^>]*\ssrc="((?:https?:)?//[^"]*)"', html)


# ---------------------------------------------------------------- the browser


@dataclass
class Network:
    """What the route handler did: the requests it blocked (not for the site)."""

    blocked: set[str] = field(default_factory=set)


def new_context(browser, server, dark: bool):
    """A browser context that sees only the local site."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, color_scheme="dark" if dark else "light"
    )
    context.set_default_timeout(TIMEOUT_MS)
    if dark:
        # pydata-sphinx-theme reads the reader's choice from localStorage "mode" and "theme".
        context.add_init_script(
            "try { localStorage.setItem('mode', 'dark'); localStorage.setItem('theme', 'dark'); }"
            " catch (e) {}"
        )
    network = Network()

    def route(route):
        network.blocked.add(route.request.url)
        return route.abort()

    # Requests for the site go straight through; the pattern keeps them out of Python.
    context.route(re.compile(rf"^(?!{re.escape(server)}/)"), route)
    context.network = network
    return context


# ---------------------------------------------------------------- one visit of a page

# Everything the tests look at, read from the live DOM once the page has settled.
COLLECT = r"""
() => {
  const tag = (el, attr) => {
    const value = el.getAttribute(attr);
    return `<${el.localName}${value === null ? '' : ` ${attr}="${value}"`}>`;
  };
  const images = Array.from(document.images).map((img) => ({
    element: tag(img, 'src'), url: img.currentSrc || img.src,
    complete: img.complete, width: img.naturalWidth,
  }));
  const oneLine = (text) => text.replace(/\s+/g, ' ').trim();
  const math = Array.from(document.querySelectorAll('span.math, div.math')).map((el) => ({
    element: `<${el.localName} class="math">${oneLine(el.textContent).slice(0, 80)}`,
    typeset: !!el.querySelector('mjx-container'),
  }));
  // Raw TeX left in the text a reader sees: outside code, scripts and typeset math.
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  // $$, \( \) \[ \], a TeX command such as \mu, or $...$ holding ^ _ { or a command.
  const rawTex = /\$\$|\\[()[\]]|\\[a-zA-Z]{2,}|\$[^$\n]*[\\^_{][^$\n]*\$/;
  const raw = [];
  // The whole page: the contents sidebars repeat headings outside MathJax's reach.
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || parent.closest(skip)) continue;
    const match = rawTex.exec(node.textContent);
    if (match) {
      const text = node.textContent;
      const at = Math.max(0, match.index - 30);
      raw.push(`<${parent.localName}> "...${oneLine(text.slice(at, match.index + 50))}..."`);
    }
  }
  const origin = (a) => { try { return new URL(a.href).origin; } catch (e) { return ''; } };
  const links = Array.from(document.querySelectorAll('a[href]'))
    .filter((a) => origin(a) === location.origin)
    .map((a) => ({ element: tag(a, 'href'), url: a.href.split('#')[0] }));
  const colab = Array.from(document.querySelectorAll('.dropdown-launch-buttons a, a[title]'))
    .find((a) => /colab/i.test(a.title || '') || /colab/i.test(a.textContent || ''));
  const download = document.querySelector('a.btn-download-source-button');
  const nav = Array.from(document.querySelectorAll('.bd-sidebar-primary a[href]'))
    .map((a) => a.href.split('#')[0]);
  // Blocks a reader would have to scroll sideways: code, outputs and tables wider than their box.
  const wide = Array.from(document.querySelectorAll('article pre, article table'))
    .filter((el) => el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
    .map((el) => `<${el.localName}> ${el.scrollWidth}px in ${el.clientWidth}px: `
      + `"${oneLine(el.textContent).slice(0, 60)}..."`);
  // Figures of a chapter's outputs without a text alternative.
  const noAlt = Array.from(document.querySelectorAll('article .cell_output img'))
    .filter((img) => !(img.getAttribute('alt') || '').trim())
    .map((img) => tag(img, 'src'));
  const nbval = /NBVAL/i.test(document.body.textContent);
  return {
    images, math, raw, links, nav, wide, noAlt, nbval,
    colab: colab ? { element: tag(colab, 'href'), href: colab.href } : null,
    download: download ? { element: tag(download, 'href'), href: download.href } : null,
    theme: document.documentElement.dataset.theme || '',
  };
}
"""

# TeX that MathJax could not typeset: an error node, or an undefined macro drawn in red.
MATH_ERRORS = r"""
async () => {
  await window.MathJax.startup.promise;
  const bad = [];
  for (const item of window.MathJax.startup.document.math) {
    const mml = window.MathJax.startup.toMML(item.root);
    if (!/<merror|mathcolor="red"/.test(mml)) continue;
    const parent = item.typesetRoot && item.typesetRoot.parentElement;
    const where = parent ? `<${parent.localName} class="${parent.className}">` : '';
    bad.push(`${where}${item.math.replace(/\s+/g, ' ').trim()}`);
  }
  return bad;
}
"""


@dataclass
class Visit:
    """What a reader's browser did with one page."""

    page: Page
    url: str
    status: int
    console_errors: list[str]
    failed_requests: list[str]
    data: dict
    math_errors: list[str]
    mathjax_problem: str | None
    figures: list[tuple[str, bytes]]  # (element, screenshot PNG), dark visits only


def visit(context, server: str, page: Page, dark: bool = False) -> Visit:
    """Open the page, wait for images, MathJax and the network to settle, and read it."""
    from playwright.sync_api import Error as PlaywrightError

    url = f"{server}/{page.html}"
    tab = context.new_page()
    errors, failed = [], []
    site = server + "/"

    def on_console(message):
        if message.type != "error":
            return
        location = (message.location or {}).get("url", "")
        if location in context.network.blocked:
            return  # a resource outside the site, blocked by this test, not by the reader
        where = f" ({location.removeprefix(site)})" if location else ""
        errors.append(f"console error: {message.text}{where}")

    def on_request_failed(request):
        if request.url.startswith(site):
            failed.append(f"{request.url.removeprefix(site)} ({request.failure})")

    def on_response(response):
        if response.status >= 400 and response.url.startswith(site):
            failed.append(f"{response.url.removeprefix(site)} (HTTP {response.status})")

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: errors.append(f"uncaught exception: {error}"))
    tab.on("requestfailed", on_request_failed)
    tab.on("response", on_response)
    try:
        response = tab.goto(url, wait_until="load")
        status = response.status if response else 0
        tab.evaluate("() => document.querySelectorAll('img').forEach((i) => (i.loading = 'eager'))")
        try:  # images that never finish are reported by name from COLLECT
            tab.wait_for_function("() => Array.from(document.images).every((i) => i.complete)")
        except PlaywrightError:
            pass
        mathjax_problem, math_errors = None, []
        if tab.locator("span.math, div.math").count():
            try:
                tab.wait_for_function(
                    "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
                )
                math_errors = tab.evaluate(MATH_ERRORS)
            except PlaywrightError as error:  # reported by test_math_is_typeset
                mathjax_problem = f"MathJax did not run ({str(error).splitlines()[0]})"
        tab.evaluate("() => document.fonts.ready.then(() => true)")
        tab.wait_for_load_state("networkidle")
        data = tab.evaluate(COLLECT)
        figures = []
        if dark:
            for img in tab.locator(".bd-article img").all():
                box = img.bounding_box()
                if box and box["width"] > 0 and box["height"] > 0:
                    element = img.evaluate("(i) => `<img src=\"${i.getAttribute('src')}\">`")
                    inset = img.evaluate(INSET)
                    figures.append((element, img.screenshot(animations="disabled"), inset))
    finally:
        tab.close()
    return Visit(page, url, status, errors, failed, data, math_errors, mathjax_problem, figures)


# ---------------------------------------------------------------- pixels


def luminance(rgb) -> float:
    """WCAG relative luminance of an sRGB colour with channels 0..255."""

    def linear(c):
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


# Pixels between an <img>'s box and its picture (padding and border), left, top, right, bottom.
INSET = """(i) => { const s = getComputedStyle(i);
  const px = (name) => parseFloat(s[name]);
  return ["Left", "Top", "Right", "Bottom"].map(
    (side) => Math.ceil(px("padding" + side) + px("border" + side + "Width")));
}"""


def border_colour(png: bytes, inset: list[int]) -> tuple[int, int, int]:
    """The most common colour of the picture's outer frame, to 16 levels a channel: the figure's
    background (its middle may be mostly dark, as in a grid of white-on-black digits). `inset`
    crops away the theme's padding around the picture."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").point(lambda v: v // 16 * 16 + 8)
    left, top, right, bottom = inset
    image = image.crop((left, top, image.width - right, image.height - bottom))
    width, height, edge = image.width, image.height, 3
    frame = [
        image.getpixel((x, y))
        for x in range(width)
        for y in range(height)
        if x < edge or y < edge or x >= width - edge or y >= height - edge
    ]
    return max(set(frame), key=frame.count)


def page_url(server: str, url: str) -> str:
    """A URL of the local server as a path of the site, for messages."""
    return url.removeprefix(server + "/") if url.startswith(server) else url
