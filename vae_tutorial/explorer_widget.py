"""The latent explorer in Jupyter: sliders over z with the decoded digit, beside the browser's.

`LatentExplorer` displays sliders over z (ipywidgets) in Jupyter and Colab, and, in the same output,
the HTML of the browser explorer (`explorer`), which a static site shows instead of the widget.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import Tensor

from vae_tutorial.explorer import LIMIT, explorer_html, two_layer_decoder
from vae_tutorial.models import VAE
from vae_tutorial.networks import PIXELS


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class LatentExplorer:
    """Sliders over z with the decoded digit (Jupyter, Colab), or the browser explorer (the site).

    Displayed, it offers both views in one output: a notebook front end with ipywidgets shows the
    sliders; the static site, which has no kernel, shows the HTML explorer instead.
    """

    SIZE = 240  # pixels of the scatter image, and of the decoded digit (28 x 28, enlarged)

    def __init__(self, model: VAE, codes: Tensor, labels: Tensor, static: str = "../_static/"):
        self.first, self.second = two_layer_decoder(model)
        self.model, self.static = model, static
        self.codes = codes.detach().to("cpu", torch.float32)[:, :2].numpy()  # (N, 2)
        self.labels = labels.detach().to("cpu").numpy()
        self._widget = None

    def decode(self, z: tuple[float, float]) -> np.ndarray:
        """sigmoid(g_theta(z)) at one z, as a (28, 28) array in (0, 1)."""
        param = self.first.weight
        with torch.no_grad():
            z_t = torch.tensor([z], dtype=param.dtype, device=param.device)  # (1, 2)
            return self.model.decode_mean(z_t).to("cpu", torch.float32).numpy().reshape(28, 28)

    def _scatter(self) -> np.ndarray:
        """The codes as coloured dots on a white square spanning [-LIMIT, LIMIT]^2: (S, S, 3)."""
        import matplotlib

        size = self.SIZE
        image = np.full((size, size, 3), 255, dtype=np.uint8)
        colours = (np.array(matplotlib.colormaps["tab10"].colors) * 255).astype(np.uint8)
        cols = np.round((self.codes[:, 0] + LIMIT) / (2 * LIMIT) * (size - 1)).astype(int)
        rows = np.round((LIMIT - self.codes[:, 1]) / (2 * LIMIT) * (size - 1)).astype(int)
        inside = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
        image[rows[inside], cols[inside]] = colours[self.labels[inside] % 10]
        image[size // 2, :] = image[:, size // 2] = 200  # the axes z_1 = 0 and z_2 = 0
        return image

    def _views(self, z: tuple[float, float], scatter: np.ndarray) -> tuple[bytes, bytes]:
        size = self.SIZE
        plane = scatter.copy()
        col = int(round((z[0] + LIMIT) / (2 * LIMIT) * (size - 1)))
        row = int(round((LIMIT - z[1]) / (2 * LIMIT) * (size - 1)))
        for r in range(row - 6, row + 7):  # a black cross marks z
            if 0 <= r < size and 0 <= col < size:
                plane[r, max(col - 1, 0) : col + 2] = 0
        for c in range(col - 6, col + 7):
            if 0 <= c < size and 0 <= row < size:
                plane[max(row - 1, 0) : row + 2, c] = 0
        digit = np.round(self.decode(z) * 255).astype(np.uint8)
        digit = np.kron(digit, np.ones((size // 28 + 1, size // 28 + 1), dtype=np.uint8))
        return _png(plane), _png(digit)

    def widget(self):
        """The ipywidgets view: sliders for z_1 and z_2, a sample button, plane and digit."""
        import ipywidgets as widgets

        scatter = self._scatter()
        sliders = [
            widgets.FloatSlider(
                0.0, min=-LIMIT, max=LIMIT, step=0.05, description=name, readout_format=".2f"
            )
            for name in ("z₁ (prior sd)", "z₂ (prior sd)")
        ]
        for slider in sliders:
            slider.style.description_width = "initial"
        button = widgets.Button(description="sample z ~ N(0, I)")
        plane, digit = (widgets.Image(format="png", width=self.SIZE) for _ in range(2))
        generator = np.random.default_rng()

        def update(_=None):
            plane.value, digit.value = self._views((sliders[0].value, sliders[1].value), scatter)

        def sample(_):
            z = generator.standard_normal(2).clip(-LIMIT, LIMIT)
            with sliders[0].hold_trait_notifications(), sliders[1].hold_trait_notifications():
                sliders[0].value, sliders[1].value = float(z[0]), float(z[1])

        for slider in sliders:
            slider.observe(update, names="value")
        button.on_click(sample)
        update()
        return widgets.VBox([widgets.HBox([plane, digit]), widgets.HBox([*sliders, button])])

    def __repr__(self) -> str:
        hidden = self.first.out_features
        return f"LatentExplorer(decoder 2-{hidden}-{PIXELS}, {len(self.codes)} codes)"

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        bundle = {"text/plain": repr(self), "text/html": explorer_html(self.static)}
        try:
            if self._widget is None:
                self._widget = self.widget()
            view = self._widget._repr_mimebundle_()
        except ImportError:  # no ipywidgets: the HTML explorer alone
            return bundle
        if isinstance(view, tuple):
            view = view[0]
        widget_view = "application/vnd.jupyter.widget-view+json"
        if view and widget_view in view:
            bundle[widget_view] = view[widget_view]
        return bundle
