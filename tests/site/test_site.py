"""The built site as a reader's browser shows it: every page of _toc.yml in headless Chromium.

Run after `jupyter-book build .`; `make test` does both. Failures name the page and the element.
"""

import json
from urllib.parse import urlsplit

import pytest
import yaml
from sitecheck import (
    CHAPTERS,
    CHROMIUM,
    PAGES,
    ROOT,
    SCREENSHOTS,
    SITE,
    border_colour,
    fetch,
    has_math,
    http_status,
    in_ci,
    luminance,
    page_url,
    remote_scripts,
    visit,
)

if not CHROMIUM.exists() and not in_ci():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
# Below this relative luminance, black axis labels on the figure's background are unreadable
# (contrast under 7:1); matplotlib's white, dimmed by the dark theme's image filter, is 0.69.
LIGHT_BACKGROUND = 0.3


def colab_url(chapter) -> str:
    """Where the chapter's Colab button must point, from repository.url in _config.yml."""
    repository = urlsplit(CONFIG["repository"]["url"]).path.strip("/").removesuffix(".git")
    branch = CONFIG["repository"].get("branch", "main")
    return (
        f"https://colab.research.google.com/github/{repository}/blob/{branch}/"
        f"{chapter.source.relative_to(ROOT).as_posix()}"
    )


def check(page, problems: list[str]) -> None:
    """Fail with one line per problem, each naming the page."""
    if problems:
        pytest.fail("\n".join(f"{page.html}: {problem}" for problem in problems), pytrace=False)


def test_page_loads_without_errors(page, visits):
    seen = visits(page)
    problems = [] if seen.status == 200 else [f"answered HTTP {seen.status}"]
    problems += seen.console_errors
    problems += [f"request for a file of the site failed: {r}" for r in seen.failed_requests]
    check(page, problems)


def test_no_script_comes_from_outside(page):
    # Offline reading: MathJax and every other script ship with the build.
    html = (SITE / page.html).read_text()
    check(page, [f"loads {url} from outside the site" for url in remote_scripts(html)])


def test_every_image_loads(page, visits, server):
    problems = [
        f"{img['element']} did not load"
        + ("" if img["url"].startswith(server) else " (outside the site: blocked in this test)")
        for img in visits(page).data["images"]
        if not (img["complete"] and img["width"] > 0)
    ]
    check(page, problems)


def test_math_is_typeset(page, visits):
    seen = visits(page)
    problems = [f"raw TeX left visible in {text}" for text in seen.data["raw"]]
    if has_math(page) and not seen.data["math"]:
        problems.append(f"{page.source.name} has math but the page has no span.math or div.math")
    if seen.data["math"]:
        if seen.mathjax_problem:
            problems.append(seen.mathjax_problem)
        problems += [
            f"{m['element']} was not typeset by MathJax"
            for m in seen.data["math"]
            if not m["typeset"]
        ]
        problems += [f"MathJax could not typeset {tex}" for tex in seen.math_errors]
    check(page, problems)


def test_no_block_scrolls_sideways_at_1280_px(page, visits):
    # Code, outputs and tables fit the page (the book's code is at most 78 characters).
    check(page, [f"scrolls sideways: {block}" for block in visits(page).data["wide"]])


def test_every_figure_has_alt_text(page, visits):
    check(page, [f"{img} has no alt text" for img in visits(page).data["noAlt"]])


def test_no_test_marker_shows(page, visits):
    # nbval's markers are cell tags, never text a reader sees (folded checks included).
    check(page, ["shows the text NBVAL"] if visits(page).data["nbval"] else [])


def test_internal_links_resolve(page, visits, server):
    problems = []
    for link in visits(page).data["links"]:
        status = http_status(link["url"])
        if status != 200:
            target = page_url(server, link["url"])
            problems.append(f"{link['element']} leads to {target}, which answers HTTP {status}")
    check(page, problems)


def test_colab_button_opens_this_chapter(chapter, visits):
    button = visits(chapter).data["colab"]
    expected = colab_url(chapter)
    if not button:
        check(chapter, [f"no Colab launch button (expected one pointing at {expected})"])
    elif button["href"] != expected:
        check(chapter, [f"Colab launch button {button['element']} should point at {expected}"])


def test_download_button_serves_the_notebook(chapter, visits):
    button = visits(chapter).data["download"]
    problems = []
    if not button:
        problems.append("no download button for the source file (a.btn-download-source-button)")
    elif not urlsplit(button["href"]).path.endswith(f"/{chapter.source.name}"):
        problems.append(f"download button {button['element']} is not {chapter.source.name}")
    else:
        try:
            notebook = json.loads(fetch(button["href"]))
        except Exception as error:  # noqa: BLE001 - any failure is the message
            problems.append(f"download button {button['element']} serves no JSON: {error}")
        else:
            if notebook.get("nbformat") != 4 or not notebook.get("cells"):
                problems.append(
                    f"download button {button['element']} serves no nbformat 4 notebook"
                )
            elif notebook["cells"] != json.loads(chapter.source.read_text())["cells"]:
                problems.append(f"download button {button['element']} serves another notebook")
    check(chapter, problems)


def test_navigation_lists_every_page(visits, server):
    root = PAGES[0]
    listed = {page_url(server, url) for url in visits(root).data["nav"]}
    missing = [page.html for page in PAGES if page.html not in listed]
    check(root, [f"the navigation sidebar has no link to {html}" for html in missing])


def test_search_finds_reparameterization(light, server):
    from playwright.sync_api import Error as PlaywrightError

    tab = light.new_page()
    errors = []
    tab.on("pageerror", lambda error: errors.append(f"uncaught exception: {error}"))
    try:
        tab.goto(f"{server}/search.html?q=reparameterization")
        # Results arrive asynchronously; the summary line appears when the search has finished.
        tab.wait_for_function(
            "() => (document.querySelector('#search-results .search-summary') || {}).textContent"
        )
        summary = tab.locator("#search-results .search-summary").inner_text().strip()
        results = tab.locator("#search-results ul.search li").all_inner_texts()
    except PlaywrightError as error:
        summary, results = f"the search did not finish: {str(error).splitlines()[0]}", []
    finally:
        tab.close()
    problems = errors + ([] if results else [f"no result in #search-results ({summary!r})"])
    if problems:
        where = "search.html?q=reparameterization"
        pytest.fail("\n".join(f"{where}: {problem}" for problem in problems), pytrace=False)


def test_figures_keep_a_light_background_in_dark_mode(page, dark, server):
    seen = visit(dark, server, page, dark=True)
    theme = seen.data["theme"]
    problems = [] if theme == "dark" else [f'dark mode did not engage: <html data-theme="{theme}">']
    for element, png, inset in seen.figures:
        colour = border_colour(png, inset)
        if luminance(colour) < LIGHT_BACKGROUND:
            problems.append(
                f"{element} shows a dark background in dark mode (colour of its border rgb{colour},"
                f" luminance {luminance(colour):.2f} < {LIGHT_BACKGROUND}): its dark ink is"
                " unreadable; the figure needs an opaque light background"
            )
    check(page, problems)


def test_screenshots_for_review(light, dark, server):
    """Index (light) and one chapter with a figure (light and dark) under _build/screenshots."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    chapter = next(
        (c for c in CHAPTERS if '"image/png"' in c.source.read_text()),
        CHAPTERS[0] if CHAPTERS else None,
    )
    shots = [(light, PAGES[0], "light")]
    if chapter:
        shots += [(light, chapter, "light"), (dark, chapter, "dark")]
    for context, page, mode in shots:
        tab = context.new_page()
        try:
            tab.goto(f"{server}/{page.html}")
            tab.wait_for_load_state("networkidle")
            figure = tab.locator(".bd-article img")
            if page is not PAGES[0] and figure.count():
                figure.first.evaluate("(img) => img.scrollIntoView({block: 'center'})")
            path = SCREENSHOTS / f"{page.name.replace('/', '_')}-{mode}.png"
            tab.screenshot(path=path, animations="disabled")
        finally:
            tab.close()
        assert path.stat().st_size > 0
