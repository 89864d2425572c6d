r"""The latent explorer: a 2-D VAE's decoder exported for the browser, and sliders for Jupyter.

## The exported file

`export_decoder` writes the decoder $g_\theta$ of a 2-D MLP VAE, with $D = 2$ and a hidden layer
of H units,

$$h = \mathrm{relu}(W_1 z + b_1), \qquad \ell = W_2 h + b_2, \qquad
\hat x = \mathrm{sigmoid}(\ell),$$

to a JavaScript file that assigns one object to `window.VAE_EXPLORER`. The page loads it with a
`<script>` tag, which works on a site opened from disk (`file://`), where `fetch()` of a side
file fails. The weights are 16-bit floats, little-endian, row-major, base64-encoded, in the order
$W_1$ (H, 2), $b_1$ (H,), $W_2$ (784, H), $b_2$ (784,): about 0.84 MB for H = 400. Beside them:
the codes of some test digits (16-bit floats, (N, 2)) and their labels (uint8, (N,)) for the
background scatter, and reference images $\mathrm{sigmoid}(g_\theta(z))$ at a few fixed z, computed
by the model in float32 and stored as uint8 grey levels: a check of the file against the model
that does not go through the file's own weights. The page shows $\mathrm{sigmoid}(\ell)$, the
mean image of a Bernoulli decoder (`model.decode_mean`); a model whose likelihood has another mean
(the continuous Bernoulli) is refused, by name.

The bytes depend only on the weights and codes (no time stamp, fixed key order), and the file is
written only when they differ from what is there, so re-running a chapter leaves it untouched.

`explorer_widget.LatentExplorer` shows the same decoder in Jupyter, with sliders.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vae_tutorial import checks, moved
from vae_tutorial.likelihoods import likelihood_mean
from vae_tutorial.models import VAE
from vae_tutorial.networks import PIXELS

moved.keep_old_names(__name__)  # LatentExplorer: see `moved`

FORMAT = "vae-explorer/1"
MAX_BYTES = 1_000_000  # the site's budget for the exported file
GLOBAL = "VAE_EXPLORER"  # window.VAE_EXPLORER holds the exported object
WEIGHTS_FILE = "vae-explorer-weights.js"  # in the site's _static folder, beside the two below
SCRIPT_FILE = "vae-explorer.js"
STYLE_FILE = "vae-explorer.css"
REFERENCE_Z = ((0.0, 0.0), (1.5, -1.0), (-2.0, 2.5), (0.5, 3.0))  # z of the reference images
LIMIT = 4.0  # the plane spans [-LIMIT, LIMIT] prior standard deviations in each axis


def two_layer_decoder(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """The two Linear layers of a 2-D MLP VAE's decoder; ValueError for any other model."""
    checks.model_kind("model", model, (VAE,))  # not a CVAE: the page has no label
    config = model.config
    if config.arch != "mlp" or config.latent_dim != 2:
        raise ValueError(
            "model: expected a 2-D MLP VAE (ModelConfig(arch='mlp', latent_dim=2)), "
            f"got arch={config.arch!r}, latent_dim={config.latent_dim}"
        )
    if likelihood_mean(config.likelihood) is not torch.sigmoid:  # the page computes sigmoid(l)
        raise ValueError(
            f"model: expected a model whose mean image is sigmoid(g(z)), which the browser "
            f"explorer computes, got likelihood={config.likelihood!r}, whose mean is not; show "
            "it in Python with sampling.decode_grid"
        )
    layers = list(model.decoder)
    kinds = [type(layer) for layer in layers]
    if kinds != [nn.Linear, nn.ReLU, nn.Linear] or layers[2].out_features != PIXELS:
        raise ValueError(f"model.decoder: expected Linear(2, H), ReLU, Linear(H, 784), got {kinds}")
    return layers[0], layers[2]


def _float16(name: str, t: Tensor) -> np.ndarray:
    """A tensor as little-endian float16, refusing values that are not finite in float16."""
    array = t.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    if np.abs(array).max(initial=0.0) > np.finfo(np.float16).max:
        raise ValueError(
            f"{name}: values beyond float16's range (65504): max |value| {np.abs(array).max():.4g}"
        )
    return array.astype("<f2")


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def explorer_asset(model: VAE, codes: Tensor, labels: Tensor) -> bytes:
    """The bytes of the exported file: decoder weights, codes (N, 2) and labels (N,) of digits."""
    first, second = two_layer_decoder(model)
    if not isinstance(codes, Tensor) or codes.ndim != 2 or codes.shape[1] != 2:
        got = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"codes: expected a tensor of shape (N, 2), got {got}")
    if not isinstance(labels, Tensor) or labels.shape != (codes.shape[0],):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels: expected a tensor of shape ({codes.shape[0]},), got {got}")
    if (
        labels.is_floating_point()
        or labels.numel()
        and not (int(labels.min()) >= 0 and int(labels.max()) <= 9)
    ):
        raise ValueError("labels: expected integer digit labels 0..9")
    weights = [
        _float16("decoder weight W1", first.weight),  # (H, 2)
        _float16("decoder bias b1", first.bias),  # (H,)
        _float16("decoder weight W2", second.weight),  # (784, H)
        _float16("decoder bias b2", second.bias),  # (784,)
    ]
    param = first.weight
    z = torch.tensor(REFERENCE_Z, dtype=param.dtype, device=param.device)  # (K, 2)
    with torch.no_grad():
        probs = model.decode_mean(z).to("cpu", torch.float64).numpy()  # (K, 784) in (0, 1)
    reference = np.round(probs * 255).astype(np.uint8)  # grey levels, float32 model
    body = {
        "format": FORMAT,
        "layout": "float16 little-endian row-major: W1 (H, 2), b1 (H,), W2 (784, H), b2 (784,)",
        "latent_dim": 2,
        "hidden_dim": first.out_features,
        "pixels": PIXELS,
        "decoder": _b64(np.concatenate([w.ravel() for w in weights])),
        "n_codes": codes.shape[0],
        "codes": _b64(_float16("codes", codes)),  # (N, 2)
        "labels": _b64(labels.to("cpu", torch.uint8).numpy()),  # (N,)
        "reference_z": [list(point) for point in REFERENCE_Z],
        "reference": _b64(reference),  # (K, 784) uint8: round(255 sigmoid(g(z)))
    }
    lines = ",\n".join(f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in body.items())
    text = (
        "// Written by vae_tutorial.explorer.export_decoder (chapter 6): the decoder of its 2-D\n"
        "// VAE and the codes of test digits, for book/_static/vae-explorer.js. Do not edit.\n"
        f"window.{GLOBAL} = {{\n{lines}\n}};\n"
    )
    data = text.encode("ascii")
    if len(data) > MAX_BYTES:
        raise ValueError(
            f"explorer asset: {len(data):,} bytes, over the budget of {MAX_BYTES:,} "
            f"(hidden_dim={first.out_features}, {codes.shape[0]} codes): pass fewer codes"
        )
    return data


def export_decoder(model: VAE, codes: Tensor, labels: Tensor, path: str | Path) -> bool:
    """Write explorer_asset(model, codes, labels) to path (a .js file) if it differs from what is
    there; return whether the file was written."""
    path = Path(path)
    if path.suffix != ".js":
        raise ValueError(f"path: expected a .js file (loaded by a <script> tag), got {path.name!r}")
    data = explorer_asset(model, codes, labels)
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def read_explorer_asset(data: bytes | str | Path) -> dict[str, np.ndarray | dict]:
    """The arrays of an exported file (its bytes or its path): W1, b1, W2, b2 as float32, codes
    (N, 2), labels (N,), reference_z (K, 2), reference (K, 784) in [0, 1], and the header."""
    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()
    match = re.search(rb"window\.(\w+) = (\{.*\});\s*$", data, flags=re.S)
    if not match or match.group(1).decode() != GLOBAL:
        raise ValueError(f"not an explorer asset: no `window.{GLOBAL} = {{...}};` found")
    body = json.loads(match.group(2))
    if body.get("format") != FORMAT:
        raise ValueError(f"explorer asset: expected format {FORMAT!r}, got {body.get('format')!r}")
    hidden, pixels = body["hidden_dim"], body["pixels"]
    flat = np.frombuffer(base64.b64decode(body["decoder"]), dtype="<f2").astype(np.float32)
    sizes = [hidden * 2, hidden, pixels * hidden, pixels]
    if flat.size != sum(sizes):
        raise ValueError(f"explorer asset: {flat.size} weights, expected {sum(sizes)}")
    w1, b1, w2, b2 = np.split(flat, np.cumsum(sizes)[:-1])
    codes = np.frombuffer(base64.b64decode(body["codes"]), dtype="<f2").astype(np.float32)
    reference = np.frombuffer(base64.b64decode(body["reference"]), dtype=np.uint8)
    return {
        "W1": w1.reshape(hidden, 2),
        "b1": b1,
        "W2": w2.reshape(pixels, hidden),
        "b2": b2,
        "codes": codes.reshape(-1, 2),
        "labels": np.frombuffer(base64.b64decode(body["labels"]), dtype=np.uint8),
        "reference_z": np.array(body["reference_z"], dtype=np.float32),
        "reference": reference.reshape(-1, pixels).astype(np.float32) / 255,
        "header": {
            k: v for k, v in body.items() if k not in ("decoder", "codes", "labels", "reference")
        },
    }


def decode_numpy(asset: dict, z: np.ndarray) -> np.ndarray:
    """sigmoid(W2 relu(W1 z + b1) + b2) from read_explorer_asset's arrays: z (K, 2) -> (K, 784)."""
    h = np.maximum(z @ asset["W1"].T + asset["b1"], 0)  # $\mathrm{relu}(W_1 z + b_1)$, (K, H)
    logits = h @ asset["W2"].T + asset["b2"]  # $\ell = W_2 h + b_2$, (K, 784)
    return 1 / (1 + np.exp(-logits))  # $\mathrm{sigmoid}(\ell)$


def explorer_html(static: str = "../_static/") -> str:
    """The browser explorer's HTML: a container, the stylesheet and the two scripts under static."""
    return (
        '<div class="vae-explorer" id="vae-explorer">\n'
        '<p class="vae-explorer-fallback">The interactive latent explorer runs in the browser on'
        " the book's website. In Jupyter or Colab: Run this cell to get the sliders.</p>\n"
        "</div>\n"
        f'<link rel="stylesheet" href="{static}{STYLE_FILE}">\n'
        f'<script src="{static}{WEIGHTS_FILE}"></script>\n'
        f'<script src="{static}{SCRIPT_FILE}"></script>\n'
    )


# The site's explorer shows chapter 6's 2-D VAE: its Settings train it for EPOCHS_2D = 5 epochs.
BOOK_EPOCHS = 5
BOOK_ASSET = Path("book") / "_static" / WEIGHTS_FILE  # from the repository's root


def export_book_explorer(path: str | Path = BOOK_ASSET, *, device: str = "cpu") -> bool:
    """`make explorer`: export chapter 6's 2-D VAE, from the cache of trained models (trained
    there first if absent), with the codes of the 10,000 static-binarized test images, to the
    site's asset; return whether the file was written. Running chapter 6 writes nothing."""
    from vae_tutorial.cache import trained_model
    from vae_tutorial.config import ModelConfig, TrainConfig
    from vae_tutorial.data import load_mnist
    from vae_tutorial.evaluate import encode_dataset

    config = ModelConfig(latent_dim=2), TrainConfig(epochs=BOOK_EPOCHS, seed=0)
    model = trained_model(*config, device=device, progress=False).model
    images, labels = load_mnist("test", device=device, binarize="static")
    return export_decoder(model, encode_dataset(model, images), labels, path)
