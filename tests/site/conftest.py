"""Fixtures of the browser test: the site on localhost, headless Chromium."""

import functools
import http.server
import threading

import pytest
from sitecheck import (
    CHAPTERS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PAGES,
    SITE,
    Visit,
    new_context,
    visit,
)


def pytest_generate_tests(metafunc):
    """`page` runs a test on every page of _toc.yml, `chapter` on every notebook among them."""
    if "page" in metafunc.fixturenames:
        metafunc.parametrize("page", PAGES, ids=[p.name for p in PAGES])
    if "chapter" in metafunc.fixturenames:
        metafunc.parametrize("chapter", CHAPTERS, ids=[p.name for p in CHAPTERS])


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a tab closed mid-response; real failures show up as failed requests


@pytest.fixture(scope="session")
def server():
    """Base URL of _build/html served on an ephemeral localhost port."""
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built site at {SITE}: run `jupyter-book build .` first")
    handler = functools.partial(QuietHandler, directory=str(SITE))
    httpd = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"CI is set but {CHROMIUM} is missing: `apt-get install chromium` first")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def light(browser, server):
    context = new_context(browser, server, dark=False)
    yield context
    context.close()


@pytest.fixture(scope="session")
def dark(browser, server):
    context = new_context(browser, server, dark=True)
    yield context
    context.close()


@pytest.fixture(scope="session")
def visits(light, server):
    """Each page visited once in light mode, on first use."""
    cache: dict[str, Visit] = {}

    def get(page) -> Visit:
        if page.name not in cache:
            cache[page.name] = visit(light, server, page)
        return cache[page.name]

    return get
