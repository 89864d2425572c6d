"""The explorer's export: the file's bytes, decoded with numpy, against the PyTorch decoder."""

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_tutorial.config import ModelConfig
from vae_tutorial.explorer import (
    MAX_BYTES,
    REFERENCE_Z,
    explorer_asset,
    explorer_html,
    export_decoder,
    read_explorer_asset,
)
from vae_tutorial.explorer_widget import LatentExplorer
from vae_tutorial.models import VAE, Autoencoder

ASSET = Path(__file__).resolve().parents[1] / "book" / "_static" / "vae-explorer-weights.js"


def vae_2d(hidden_dim: int = 16, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(ModelConfig(latent_dim=2, hidden_dim=hidden_dim))


def codes_and_labels(n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def parse(data: bytes) -> dict:
    """The file as the page reads it, written here from its documented layout, not the package's
    reader: W1 (H, 2), b1 (H,), W2 (784, H), b2 (784,), float16 little-endian, row-major."""
    body = json.loads(re.search(rb"window\.VAE_EXPLORER = (\{.*\});\s*$", data, re.S).group(1))
    hidden = body["hidden_dim"]
    flat = np.frombuffer(base64.b64decode(body["decoder"]), dtype="<f2").astype(np.float64)
    sizes = np.cumsum([2 * hidden, hidden, 784 * hidden])
    w1, b1, w2, b2 = np.split(flat, sizes)
    return {
        "W1": w1.reshape(hidden, 2),
        "b1": b1,
        "W2": w2.reshape(784, hidden),
        "b2": b2,
        "codes": np.frombuffer(base64.b64decode(body["codes"]), dtype="<f2").reshape(-1, 2),
        "labels": np.frombuffer(base64.b64decode(body["labels"]), dtype=np.uint8),
        "reference": np.frombuffer(base64.b64decode(body["reference"]), dtype=np.uint8),
        "body": body,
    }


def numpy_decoder(weights: dict, z: np.ndarray) -> np.ndarray:
    """sigmoid(W2 relu(W1 z + b1) + b2): z (K, 2) -> (K, 784)."""
    h = np.maximum(z @ weights["W1"].T + weights["b1"], 0)
    return 1 / (1 + np.exp(-(h @ weights["W2"].T + weights["b2"])))


def test_file_decoded_with_numpy_matches_the_torch_decoder(one_thread):
    model = vae_2d()
    codes, labels = codes_and_labels()
    weights = parse(explorer_asset(model, codes, labels))
    z = torch.tensor([[0.0, 0.0], [1.5, -1.0], [-3.0, 2.5], [4.0, 4.0], [-0.3, 0.7]])
    with torch.no_grad():
        expected = model.decode_mean(z).numpy()
    got = numpy_decoder(weights, z.numpy().astype(np.float64))
    # float16 rounds each weight w by at most U |w| + S (U = 2^-11; S = 2^-25, half the spacing of
    # its subnormals). To first order: the hidden units move by U (|W1| |z| + |b1|) + 3S at most
    # (ReLU is 1-Lipschitz), the logits by |W2| times that plus U (|W2| |h| + |b2|) + (H + 1) S,
    # the pixel means by a quarter of it (sigmoid' <= 1/4); 1e-6 covers float32's own rounding.
    u, sub = 2.0**-11, 2.0**-25
    w1, b1, w2, b2 = (t.detach().double().numpy() for t in model.decoder.state_dict().values())
    zd = z.double().numpy()
    h = np.maximum(zd @ w1.T + b1, 0)  # (K, H)
    d_h = u * (np.abs(zd) @ np.abs(w1).T + np.abs(b1)) + 3 * sub
    d_logit = d_h @ np.abs(w2).T + u * (h @ np.abs(w2).T + np.abs(b2)) + (len(b1) + 1) * sub
    bound = 0.25 * d_logit * (1 + 4 * u) + 1e-6  # (K, 784); (1 + 4u): the second-order terms
    assert (np.abs(got - expected) <= bound).all() and bound.max() < 0.01
    np.testing.assert_array_equal(weights["W2"], model.decoder[2].weight.detach().half().double())
    np.testing.assert_allclose(weights["codes"], codes.numpy(), rtol=u, atol=sub)  # as above
    np.testing.assert_array_equal(weights["labels"], labels.numpy())


def test_reference_images_are_the_float32_model_in_grey_levels(one_thread):
    model = vae_2d()
    weights = parse(explorer_asset(model, *codes_and_labels()))
    with torch.no_grad():
        probs = model.decode_mean(torch.tensor(REFERENCE_Z)).numpy()
    reference = weights["reference"].reshape(len(REFERENCE_Z), 784) / 255
    assert np.abs(reference - probs).max() <= 0.5 / 255 + 1e-6
    assert weights["body"]["reference_z"] == [list(z) for z in REFERENCE_Z]


def test_package_reader_agrees_with_the_documented_layout(one_thread):
    data = explorer_asset(vae_2d(), *codes_and_labels())
    ours, package = parse(data), read_explorer_asset(data)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(package[name], ours[name])


def test_book_sized_decoder_with_all_test_codes_fits_the_budget():
    model = vae_2d(hidden_dim=400)  # the chapter's 2-400-784 decoder
    data = explorer_asset(model, *codes_and_labels(10_000))
    assert len(data) <= MAX_BYTES
    assert 800_000 < len(data)  # 315,584 float16 weights in base64 are 841,560 characters


def test_over_the_budget_is_refused():
    with pytest.raises(ValueError, match="over the budget"):
        explorer_asset(vae_2d(hidden_dim=600), *codes_and_labels(10))


def test_same_weights_give_the_same_bytes_and_the_file_is_not_rewritten(tmp_path):
    codes, labels = codes_and_labels()
    path = tmp_path / "_static" / "weights.js"
    assert export_decoder(vae_2d(seed=1), codes, labels, path) is True
    first, stamp = path.read_bytes(), path.stat().st_mtime_ns
    assert export_decoder(vae_2d(seed=1), codes, labels, path) is False  # a fresh, equal model
    assert path.read_bytes() == first and path.stat().st_mtime_ns == stamp
    assert explorer_asset(vae_2d(seed=1), codes, labels) == first
    assert export_decoder(vae_2d(seed=2), codes, labels, path) is True  # other weights
    assert path.read_bytes() != first


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Autoencoder(ModelConfig(kind="ae", latent_dim=2, hidden_dim=8)), "expected a VAE"),
        (VAE(ModelConfig(latent_dim=3, hidden_dim=8)), "2-D MLP VAE"),
        (VAE(ModelConfig(arch="conv", latent_dim=2, hidden_dim=8)), "2-D MLP VAE"),
        (torch.nn.Linear(2, 784), "expected a VAE"),
    ],
)
def test_models_that_are_not_a_2d_mlp_vae_are_refused(model, match):
    with pytest.raises(ValueError, match=match):
        explorer_asset(model, *codes_and_labels())


def test_bad_weights_codes_labels_and_paths_are_refused(tmp_path):
    codes, labels = codes_and_labels()
    broken = vae_2d()
    with torch.no_grad():
        broken.decoder[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        explorer_asset(broken, codes, labels)
    with torch.no_grad():
        broken.decoder[0].weight[0, 0] = 1e6
    with pytest.raises(ValueError, match="float16"):
        explorer_asset(broken, codes, labels)
    model = vae_2d()
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        explorer_asset(model, torch.zeros(5, 3), labels[:5])
    with pytest.raises(ValueError, match="labels"):
        explorer_asset(model, codes, labels[:-1])
    with pytest.raises(ValueError, match="0..9"):
        explorer_asset(model, codes, labels + 10)
    with pytest.raises(ValueError, match=r"\.js"):
        export_decoder(model, codes, labels, tmp_path / "weights.bin")
    assert not (tmp_path / "weights.bin").exists()


def test_notebook_output_offers_the_html_explorer_and_the_sliders():
    explorer = LatentExplorer(vae_2d(), *codes_and_labels())
    bundle = explorer._repr_mimebundle_()
    html = bundle["text/html"]
    assert html == explorer_html()  # deterministic: nbval compares it run to run
    assert 'id="vae-explorer"' in html
    for name in ("vae-explorer.css", "vae-explorer-weights.js", "vae-explorer.js"):
        assert f'"../_static/{name}"' in html
    assert bundle["text/plain"].startswith("LatentExplorer(decoder 2-16-784")
    pytest.importorskip("ipywidgets")
    assert "model_id" in bundle["application/vnd.jupyter.widget-view+json"]


def test_sliders_decode_the_model_at_their_z():
    explorer = LatentExplorer(vae_2d(), *codes_and_labels())
    with torch.no_grad():
        expected = vae_2d().decode_mean(torch.tensor([[1.0, -2.0]])).numpy().reshape(28, 28)
    np.testing.assert_allclose(explorer.decode((1.0, -2.0)), expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(not ASSET.exists(), reason="chapter 6 has not exported its decoder yet")
def test_committed_asset_is_a_small_2d_decoder_that_reproduces_its_reference_images():
    data = ASSET.read_bytes()
    assert len(data) <= MAX_BYTES, f"{ASSET}: {len(data):,} bytes, over {MAX_BYTES:,}"
    weights = parse(data)
    body = weights["body"]
    assert (body["latent_dim"], body["pixels"]) == (2, 784)
    probs = numpy_decoder(weights, np.array(body["reference_z"], dtype=np.float64))
    reference = weights["reference"].reshape(len(body["reference_z"]), 784) / 255
    difference = np.abs(probs - reference).max()
    assert difference <= 2 / 255, (
        f"{ASSET}: its weights decode its reference z to images up to {difference * 255:.1f}/255"
        " away from the model's own: the exported weights are broken"
    )


def test_sliders_and_sample_button_redraw_the_digit():
    pytest.importorskip("ipywidgets")
    box = LatentExplorer(vae_2d(), *codes_and_labels()).widget()
    (plane, digit), (z1, z2, button) = box.children[0].children, box.children[1].children
    before = (plane.value, digit.value)
    z1.value = 2.0
    assert plane.value != before[0] and digit.value != before[1]
    drawn = digit.value
    button.click()  # z ~ N(0, I)
    assert (z1.value, z2.value) != (2.0, 0.0) and digit.value != drawn


def test_stored_output_tells_a_jupyter_reader_to_run_the_cell():
    """JupyterLab shows a stored output's HTML when no widget state is stored: its fallback
    paragraph (which the site's script replaces) must say what to do to get the sliders."""
    fallback = re.search(r'class="vae-explorer-fallback">(.*?)</p>', explorer_html(), re.S)
    assert fallback and "Run this cell to get the sliders" in fallback[1]
