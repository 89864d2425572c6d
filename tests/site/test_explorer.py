"""Chapter 6's latent explorer in headless Chromium, served and opened from disk (file://).

The page decodes z in JavaScript from _static/vae-explorer-weights.js; this test sets z through
the page's own controls, reads the exact z and the unscaled 28 x 28 output the page used
(window.vaeExplorer.state), and compares them with PyTorch on the same file's weights, and with
the reference images that the model itself wrote into the file. Failures name page and element.
"""

import json
import re

import numpy as np
import pytest
import torch
from sitecheck import CHROMIUM, PAGES, SCREENSHOTS, SITE, TIMEOUT_MS, in_ci, luminance

from vae_tutorial.explorer import WEIGHTS_FILE, read_explorer_asset

if not CHROMIUM.exists() and not in_ci():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)", allow_module_level=True)

WEIGHTS = SITE / "_static" / WEIGHTS_FILE
TOLERANCE = 2 / 255  # per pixel, between the page's image and PyTorch's
FIXED = [(0.0, 0.0), (1.5, -1.0), (-2.25, 0.75), (3.0, 3.5), (-0.6, -3.2)]
DIGIT = '<canvas id="vae-explorer-digit">'
INPUTS = '<input id="vae-explorer-z1">, <input id="vae-explorer-z2">'
SCRIPT = f'<script src="../_static/{WEIGHTS_FILE}">'


def explorer_page():
    """The page of _toc.yml whose built HTML holds the explorer, or None."""
    for page in PAGES:
        built = SITE / page.html
        if built.exists() and 'id="vae-explorer"' in built.read_text():
            return page
    return None


PAGE = explorer_page()
if PAGE is None:
    reason = f'no page of {SITE} holds the explorer (<div id="vae-explorer">)'
    if WEIGHTS.exists():  # the asset is built, so a page should show it
        pytest.fail(f"{reason}, but {WEIGHTS} exists", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

READ_STATE = """() => {
  const s = window.vaeExplorer.state;
  const digit = document.getElementById('vae-explorer-digit');
  const rgba = digit.getContext('2d').getImageData(0, 0, 28, 28).data;
  return { z: s.z.slice(), output: Array.from(s.output), source: s.source, updates: s.updates,
           canvas: Array.from(rgba.filter((_, i) => i % 4 === 0)),
           inputs: ['vae-explorer-z1', 'vae-explorer-z2']
             .map((id) => document.getElementById(id).value) };
}"""


def fail(where: str, problems: list[str]) -> None:
    if problems:
        pytest.fail("\n".join(f"{where}: {problem}" for problem in problems), pytrace=False)


@pytest.fixture(scope="module")
def weights():
    """The exported file, as served, read into float32 arrays."""
    if not WEIGHTS.exists():
        pytest.fail(f"{PAGE.html}: {SCRIPT} has no file: {WEIGHTS} is missing", pytrace=False)
    return read_explorer_asset(WEIGHTS)


def torch_decoder(weights: dict, z) -> np.ndarray:
    """sigmoid(g_theta(z)) by PyTorch, from the file's weights: z (2,) -> (784,)."""
    first, second = torch.nn.Linear(2, len(weights["b1"])), torch.nn.Linear(len(weights["b1"]), 784)
    with torch.no_grad():
        for layer, w, b in ((first, "W1", "b1"), (second, "W2", "b2")):
            layer.weight.copy_(torch.from_numpy(weights[w]))
            layer.bias.copy_(torch.from_numpy(weights[b]))
        decoder = torch.nn.Sequential(first, torch.nn.ReLU(), second)
        logits = decoder(torch.tensor([z], dtype=torch.float32))
    return torch.sigmoid(logits)[0].numpy()


class Explorer:
    """One tab on the explorer's page, with its console errors."""

    def __init__(self, context, url: str, where: str, ignored: set[str] = frozenset()):
        self.where, self.errors, self.ignored = where, [], ignored  # URLs blocked by the test
        self.tab = context.new_page()
        self.tab.on("pageerror", lambda error: self.errors.append(f"uncaught exception: {error}"))
        self.tab.on("console", self._console)
        self.tab.goto(url, wait_until="load")
        try:
            self.tab.wait_for_function(
                "() => window.vaeExplorer && window.vaeExplorer.state.updates > 0",
                timeout=TIMEOUT_MS,
            )
        except Exception:  # noqa: BLE001 - the message says what the page showed
            text = self.tab.locator("#vae-explorer").inner_text()[:300]
            fail(where, [f'<div id="vae-explorer"> did not start ({text!r})', *self.errors])

    def _console(self, message):
        where = (message.location or {}).get("url", "")
        if message.type == "error" and where not in self.ignored:
            self.errors.append(f"console error: {message.text} ({where.rsplit('/', 1)[-1]})")

    def state(self) -> dict:
        return self.tab.evaluate(READ_STATE)

    def set_z(self, z1: float, z2: float) -> dict:
        self.tab.fill("#vae-explorer-z1", repr(z1))
        self.tab.fill("#vae-explorer-z2", repr(z2))
        return self.state()

    def close(self):
        self.tab.close()


def compare(state: dict, weights: dict, reference=None) -> list[str]:
    """What differs between the page's image at its z and PyTorch's (and the model's reference)."""
    z, output = state["z"], np.array(state["output"])
    where = f"{DIGIT} at z = ({z[0]:.4g}, {z[1]:.4g}), set by {state['source']}"
    problems = []
    expected = torch_decoder(weights, z)
    difference = np.abs(output - expected).max() if output.shape == expected.shape else np.inf
    if not difference <= TOLERANCE:
        problems.append(
            f"{where} differs from the PyTorch decoder of {WEIGHTS_FILE} by up to"
            f" {difference * 255:.1f}/255 (allowed 2/255): the JavaScript forward pass is broken"
        )
    drawn = np.array(state["canvas"])
    if output.shape == (784,) and np.abs(drawn - np.round(255 * output)).max() > 1:
        problems.append(f"{where} draws other grey levels than its output buffer holds")
    if reference is not None:  # the file's weights against the model itself, not the page
        gap = np.abs(expected - reference).max()
        if not gap <= TOLERANCE:
            problems.append(
                f"{SCRIPT}: its weights decode z = ({z[0]:.4g}, {z[1]:.4g}) to an image up to"
                f" {gap * 255:.1f}/255 away from the model's own image, stored beside them by"
                " export_decoder (allowed 2/255): the exported weights are broken"
            )
    return problems


def references(weights: dict) -> dict:
    return {
        tuple(map(float, z)): r
        for z, r in zip(weights["reference_z"], weights["reference"], strict=True)
    }


def test_page_decodes_fixed_points_like_pytorch_and_the_model(light, server, weights):
    explorer = Explorer(light, f"{server}/{PAGE.html}", PAGE.html)
    problems = []
    try:
        stored = references(weights)
        for z in [*stored, *(z for z in FIXED if z not in stored)]:
            state = explorer.set_z(*z)
            if state["z"] != list(z):
                problems.append(
                    f'<input id="vae-explorer-z1/z2"> set {z}, the page used {state["z"]}'
                )
            problems += compare(state, weights, stored.get(z))
    finally:
        explorer.close()
    fail(PAGE.html, problems + explorer.errors)


def test_pointer_keys_and_sample_button_move_z_and_change_the_image(light, server, weights):
    explorer = Explorer(light, f"{server}/{PAGE.html}", PAGE.html)
    tab, problems = explorer.tab, []

    def step(what: str, action, check) -> None:
        before = explorer.state()
        action()
        after = explorer.state()
        change = np.abs(np.array(after["output"]) - np.array(before["output"])).max()
        if change < 1 / 255:
            problems.append(f"{what} left the image unchanged (z {before['z']} -> {after['z']})")
        problems.extend(check(before, after))
        problems.extend(compare(after, weights))

    try:
        plane = tab.locator("#vae-explorer-plane")
        plane.scroll_into_view_if_needed()
        box = plane.bounding_box()
        limit = tab.evaluate("() => window.vaeExplorer.state.limit")

        def z_at(u: float, v: float) -> tuple[float, float]:
            return (-limit + 2 * limit * u, limit - 2 * limit * v)

        def near(target, what):
            slack = 2 * limit / box["width"] * 1.5  # a pixel and a half
            return lambda _, after: (
                []
                if max(abs(a - b) for a, b in zip(after["z"], target, strict=True)) <= slack
                and after["source"] == "pointer"
                else [f"{what} should put z near {target}, the page used {after['z']}"]
            )

        explorer.set_z(0.0, 0.0)
        where = '<canvas id="vae-explorer-plane">'
        step(
            f"a click on {where}",
            lambda: plane.click(position={"x": 0.25 * box["width"], "y": 0.3 * box["height"]}),
            near(z_at(0.25, 0.3), f"a click on {where} at (25%, 30%)"),
        )

        def drag():
            tab.mouse.move(box["x"] + 0.25 * box["width"], box["y"] + 0.3 * box["height"])
            tab.mouse.down()
            tab.mouse.move(box["x"] + 0.7 * box["width"], box["y"] + 0.6 * box["height"], steps=5)
            tab.mouse.up()

        step(f"a drag on {where}", drag, near(z_at(0.7, 0.6), f"a drag on {where} to (70%, 60%)"))

        def keys():
            plane.focus()
            for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowUp"):
                tab.keyboard.press(key)

        def moved_by_keys(before, after):
            expected = [round(before["z"][0] + 0.3, 2), round(before["z"][1] + 0.1, 2)]
            if np.allclose(after["z"], expected, atol=1e-9) and after["source"] == "keys":
                return []
            return [f"3 x ArrowRight, ArrowUp on {where} should give z = {expected}: {after['z']}"]

        step(f"arrow keys on {where}", keys, moved_by_keys)

        button = '<button id="vae-explorer-sample">'
        for _ in range(3):
            step(
                f"{button}",
                lambda: tab.click("#vae-explorer-sample"),
                lambda before, after: (
                    []
                    if after["source"] == "sample" and after["z"] != before["z"]
                    else [f"{button} should draw a new z: {before['z']} -> {after['z']}"]
                ),
            )
        shown = explorer.state()
        if [float(v) for v in shown["inputs"]] != [round(v, 2) for v in shown["z"]]:
            problems.append(
                f'<input id="vae-explorer-z1/z2"> show {shown["inputs"]}, z is {shown["z"]}'
            )
    finally:
        explorer.close()
    fail(PAGE.html, problems + explorer.errors)


def test_explorer_follows_light_and_dark_mode_and_is_screenshot(light, dark, server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for context, mode in ((light, "light"), (dark, "dark")):
        explorer = Explorer(context, f"{server}/{PAGE.html}", PAGE.html)
        try:
            explorer.set_z(1.5, -1.0)
            root = explorer.tab.locator("#vae-explorer")
            root.scroll_into_view_if_needed()
            root.screenshot(path=SCREENSHOTS / f"explorer-{mode}.png", animations="disabled")
            seen = explorer.tab.evaluate(
                """() => {
                  const plane = document.getElementById('vae-explorer-plane');
                  const corner = plane.getContext('2d').getImageData(1, 1, 1, 1).data;
                  const rgb = (c) => (c.match(/\\d+(\\.\\d+)?/g) || []).slice(0, 3).map(Number);
                  const text = getComputedStyle(document.getElementById('vae-explorer-readout'));
                  let el = document.getElementById('vae-explorer-readout'), bg = [255, 255, 255];
                  for (; el; el = el.parentElement) {
                    const c = getComputedStyle(el).backgroundColor;
                    if (!/rgba\\(.*, 0\\)|transparent/.test(c)) { bg = rgb(c); break; }
                  }
                  return { theme: document.documentElement.dataset.theme,
                           corner: Array.from(corner).slice(0, 3), text: rgb(text.color), bg };
                }"""
            )
        finally:
            explorer.close()
        problems += [f"({mode} mode) {error}" for error in explorer.errors]
        if seen["theme"] != mode:
            problems.append(f'{mode} mode did not engage: <html data-theme="{seen["theme"]}">')
        dark_plane = luminance(seen["corner"]) < 0.2
        if dark_plane != (mode == "dark"):
            problems.append(
                f'<canvas id="vae-explorer-plane"> has background rgb{tuple(seen["corner"])}'
                f" in {mode} mode: it does not follow the theme"
            )
        lighter, darker = sorted((luminance(seen["text"]), luminance(seen["bg"])), reverse=True)
        contrast = (lighter + 0.05) / (darker + 0.05)
        if contrast < 4.5:
            problems.append(
                f'<p id="vae-explorer-readout"> has contrast {contrast:.1f}:1 in {mode} mode'
                " (under 4.5:1)"
            )
    fail(PAGE.html, problems)


def test_explorer_works_from_disk(browser, weights):
    """Opened as file://, where fetch() of a side file fails: the <script> tags still load."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    blocked = set()

    def offline(route):  # nothing but the files on disk
        blocked.add(route.request.url)
        route.abort()

    context.route(re.compile(r"^(?!file://)"), offline)
    url = (SITE / PAGE.html).as_uri()
    where = f"{PAGE.html} (file://)"
    try:
        explorer = Explorer(context, url, where, ignored=blocked)
        try:
            problems = []
            for z in FIXED[1:3]:
                state = explorer.set_z(*z)
                problems += compare(state, weights)
            timing = explorer.tab.evaluate(
                f"""() => ({{ start: window.vaeExplorer.state.startMs,
                    weights: (performance.getEntriesByType('resource')
                      .find((e) => e.name.endsWith('{WEIGHTS_FILE}')) || {{}}).duration }})"""
            )
        finally:
            explorer.close()
        fail(where, problems + explorer.errors)
        (SCREENSHOTS / "explorer-timing-file.json").parent.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / "explorer-timing-file.json").write_text(json.dumps(timing))
    finally:
        context.close()
