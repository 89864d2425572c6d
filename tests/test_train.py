"""fit: what it computes, its configs, bf16, binarization, warm-up, resume and divergence."""

import json
import math
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from torch.nn.functional import binary_cross_entropy_with_logits
from torch.nn.modules.module import register_module_forward_hook

from vae_tutorial import objective, train
from vae_tutorial.checkpoint import (
    CHECKPOINT_VERSION,
    KEYS,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from vae_tutorial.config import ModelConfig, TrainConfig, check_run
from vae_tutorial.data import Batches, load_mnist
from vae_tutorial.elbo import elbo_terms
from vae_tutorial.evaluate import evaluate_elbo
from vae_tutorial.history import SCORING, History
from vae_tutorial.models import VAE, Autoencoder, build_model
from vae_tutorial.test_set import TEST_SEED
from vae_tutorial.train import TrainingDiverged, fit

SMALL = ModelConfig(latent_dim=8, hidden_dim=64)
TINY = TrainConfig(epochs=1, train_size=2000, batch_size=128)
CPU = "cpu"


pytestmark = pytest.mark.usefixtures("one_thread")


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pa, pb = params(a), params(b)
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def losses(history: History) -> dict[str, list[float]]:
    """The history without its wall-clock timings."""
    return {k: v for k, v in history.to_dict().items() if not k.endswith("seconds")}


@pytest.fixture(autouse=True, scope="module")
def mnist_loaded_once():
    """fit calls train.load_mnist: serve each split from memory after its first load."""
    cache = {}

    def load_once(split, **kwargs):
        key = (split, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = load_mnist(split, **kwargs)
        return cache[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "load_mnist", load_once)
        yield


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory) -> tuple[train.FitResult, Path]:
    """One epoch of TINY, and the checkpoint it wrote."""
    path = tmp_path_factory.mktemp("one_epoch") / "run.pt"
    return fit(SMALL, TINY, device=CPU, checkpoint_path=path, progress=False), path


@pytest.fixture(scope="module")
def two_epochs() -> train.FitResult:
    return fit(SMALL, replace(TINY, epochs=2), device=CPU, progress=False)


def copy_of(path: Path, folder: Path, name: str = "run.pt") -> Path:
    copy = folder / name
    shutil.copyfile(path, copy)
    return copy


# --- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": -1}, r"TrainConfig.epochs: expected an int >= 0, got -1"),
        ({"epochs": 1.5}, r"TrainConfig.epochs: expected an int >= 0, got 1.5"),
        ({"batch_size": 0}, r"TrainConfig.batch_size: expected an int >= 1, got 0"),
        ({"train_size": 0}, r"TrainConfig.train_size: expected an int >= 1, got 0"),
        ({"epochs": True}, r"TrainConfig.epochs: expected an int >= 0, got True \(a bool\)"),
        ({"lr": 0.0}, r"TrainConfig.lr: expected a finite number in \(0, 10\], got 0.0"),
        (
            {"beta": math.nan},
            r"TrainConfig.beta: expected a finite number in \[0, 1e\+06\], got nan",
        ),
        ({"binarize": "static"}, r"binarize: expected one of \('none', 'dynamic'\), got 'static'"),
        ({"likelihood": "gauss"}, r"likelihood: expected one of .*'bernoulli'.*got 'gauss'"),
        ({"binarize": "none"}, r"likelihood='bernoulli' expects binary x, got binarize='none'"),
        ({"bf16": "yes"}, r"TrainConfig.bf16: expected True or False, got 'yes'"),
    ],
)
def test_bad_train_config_names_expected_and_got(change, message):
    with pytest.raises(ValueError, match=message):  # a field, or a rule fit applies (check_run)
        check_run(ModelConfig(), TrainConfig(**change))


def test_train_size_larger_than_the_training_set_is_refused():
    with pytest.raises(ValueError, match=r"train_size: expected an int <= 60000, got 60001"):
        fit(SMALL, replace(TINY, train_size=60001), device=CPU, progress=False)


def test_fit_refuses_configs_of_the_wrong_type():
    with pytest.raises(ValueError, match=r"expected a ModelConfig and a TrainConfig, got dict"):
        fit({"kind": "vae"}, TINY, device=CPU)


# --- what fit computes -----------------------------------------------------------------------


def test_same_seed_same_weights_other_seed_other_weights(one_epoch, capsys):
    again = fit(SMALL, TINY, device=CPU, progress=False)
    assert capsys.readouterr() == ("", "")  # progress=False prints nothing
    assert same_weights(again.model, one_epoch[0].model)
    assert losses(again.history) == losses(one_epoch[0].history)
    other = fit(SMALL, replace(TINY, seed=1), device=CPU, progress=False)
    assert not torch.equal(other.model.decoder[0].weight, again.model.decoder[0].weight)


def test_history_has_one_entry_per_epoch_and_training_lowers_the_loss(two_epochs):
    history = two_epochs.history
    assert history.epochs_done == 2
    columns = {k: v for k, v in history.to_dict().items() if k not in SCORING}  # not the labels
    assert all(len(column) == 2 for column in columns.values())
    for split in ("train", "test"):
        rec, kl = getattr(history, f"{split}_reconstruction"), getattr(history, f"{split}_kl")
        neg_elbo = getattr(history, f"{split}_neg_elbo")
        assert neg_elbo == pytest.approx([r + k for r, k in zip(rec, kl, strict=True)])
        assert all(value > 0 for value in rec + kl)
    assert history.test_neg_elbo[1] < history.test_neg_elbo[0] < 544  # 784 ln 2: every p = 1/2
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))) == history


def test_test_losses_are_the_sampled_elbo_of_the_returned_model(two_epochs):
    images, _ = load_mnist("test", binarize="static", seed=TEST_SEED)
    scores = evaluate_elbo(two_epochs.model, images, seed=TEST_SEED)
    history = two_epochs.history
    assert history.test_neg_elbo[-1] == pytest.approx(scores["neg_elbo"], rel=1e-6)
    assert history.test_kl[-1] == pytest.approx(scores["kl"], rel=1e-6)


def test_train_losses_are_per_example_means_over_the_epoch():
    """With lr ~ 0 the weights never move: replay the epoch by hand, batch by batch."""
    config = TrainConfig(epochs=1, train_size=300, batch_size=128, lr=1e-30)  # 128 + 128 + 44
    result = fit(SMALL, config, device=CPU, progress=False)
    torch.manual_seed(config.seed)
    model = build_model(SMALL)
    assert same_weights(model, result.model)
    images, labels = load_mnist("train")
    sums = torch.zeros(2, dtype=torch.float64)
    for x, _ in Batches(images[:300], labels[:300], 128, seed=config.seed, binarize="dynamic"):
        logits, mu, logvar, _ = model(x)
        terms = elbo_terms(logits, x, mu, logvar)
        sums += torch.stack([-terms.reconstruction.sum(), terms.kl.sum()]).double()
    reconstruction, kl = (sums / 300).tolist()
    # the same float32 sums (784 pixels, 128 examples) in two orders: each cascade sum within
    # (log2 n + 1) 2^-24 relative, twice
    rounding = 2 * (math.log2(784) + math.log2(128) + 2) * 2**-24  # 2.3e-6
    assert result.history.train_reconstruction[0] == pytest.approx(reconstruction, rel=rounding)
    assert result.history.train_kl[0] == pytest.approx(kl, rel=rounding)


def test_autoencoder_test_loss_is_the_bce_of_its_reconstructions():
    config = ModelConfig(kind="ae", latent_dim=8, hidden_dim=64)
    result = fit(config, TINY, device=CPU, progress=False)
    history = result.history
    assert history.train_kl == history.test_kl == [0.0]
    assert history.test_neg_elbo == history.test_reconstruction
    # An independent reference: torch's BCE on the logits, summed over pixels, mean over images.
    x, _ = load_mnist("test", binarize="static", seed=TEST_SEED)
    with torch.no_grad():
        bce = binary_cross_entropy_with_logits(result.model(x), x, reduction="sum") / len(x)
    # float32 sums of 10,000 x 784 terms in two orders, each within (log2 n + 1) 2^-24 relative
    rounding = 2 * (math.log2(784 * 10_000) + 1) * 2**-24  # 3.0e-6
    assert history.test_reconstruction[0] == pytest.approx(bce.item(), rel=rounding)


def forward_dtypes_and_inputs(config: TrainConfig, model_config: ModelConfig = SMALL):
    """Train one run, recording every Linear output dtype and every training-step input x."""
    dtypes, inputs = set(), []

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear):
            dtypes.add(output.dtype)
        if module.training and isinstance(module, (VAE, Autoencoder)):
            inputs.append(args[0])

    with register_module_forward_hook(record):
        result = fit(model_config, config, device=CPU, progress=False)
    return result, dtypes, inputs


def test_bf16_autocast_is_active_in_the_training_forward_pass():
    bf16, dtypes, _ = forward_dtypes_and_inputs(replace(TINY, bf16=True, train_size=256))
    assert torch.bfloat16 in dtypes  # the Linear layers really ran in bfloat16
    # bf16's own tolerance: bf16 products round differently by CPU (AMX or not), so no bf16 digit
    # is compared with float32's; the check is that bf16 training learnt: a -ELBO below 544 nats,
    # just above 784 ln 2 = 543.4, what a coin flip per pixel scores
    neg_elbo = bf16.history.test_neg_elbo[0]
    assert math.isfinite(neg_elbo) and neg_elbo < 544
    _, dtypes, _ = forward_dtypes_and_inputs(replace(TINY, train_size=256))
    assert dtypes == {torch.float32}


@pytest.mark.parametrize("binarize", ["dynamic", "none"])
def test_fit_trains_on_the_binarization_it_is_given(binarize):
    likelihood = "bernoulli" if binarize == "dynamic" else "continuous_bce"
    config = replace(TINY, binarize=binarize, likelihood=likelihood, train_size=256)
    _, _, inputs = forward_dtypes_and_inputs(config)
    x = torch.cat(inputs)  # (2 steps * 128, 784): every training input of the epoch
    grey = ((x > 0) & (x < 1)).float().mean().item()
    assert grey == 0 if binarize == "dynamic" else grey > 0.05  # MNIST: ~10% grey pixels


@pytest.mark.parametrize("warmup_epochs", [2, 4])
def test_kl_warmup_weighs_the_first_epoch_with_beta_over_warmup_epochs(warmup_epochs):
    """Epoch 1 of a warm-up trains with beta / warmup_epochs: the weights of that fixed beta."""
    config = replace(TINY, train_size=256, beta=1.0)
    warm = fit(SMALL, replace(config, warmup_epochs=warmup_epochs), device=CPU, progress=False)
    fixed = fit(SMALL, replace(config, beta=1.0 / warmup_epochs), device=CPU, progress=False)
    assert same_weights(warm.model, fixed.model)
    plain = fit(SMALL, config, device=CPU, progress=False)
    assert not same_weights(warm.model, plain.model)


def test_compile_falls_back_to_eager_with_one_warning(one_epoch, monkeypatch):
    def unavailable(*args, **kwargs):
        raise RuntimeError("no C compiler found")

    monkeypatch.setattr(torch, "compile", unavailable)
    with pytest.warns(UserWarning, match=r"torch.compile is unavailable on cpu \(no C compiler"):
        compiled = fit(SMALL, replace(TINY, compile=True), device=CPU, progress=False)
    assert same_weights(compiled.model, one_epoch[0].model)


def test_a_compiled_model_trains_as_the_eager_one(one_epoch, monkeypatch):
    """fit(compile=True) runs the compiled module (Dynamo's eager backend: the same arithmetic)."""
    compiled_calls = []
    real = torch.compile

    def eager_backend(model, **kwargs):
        compiled_calls.append(model)
        return real(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_backend)
    compiled = fit(SMALL, replace(TINY, compile=True), device=CPU, progress=False)
    assert any(isinstance(m, torch.nn.Module) for m in compiled_calls)
    assert same_weights(compiled.model, one_epoch[0].model)


def test_zero_epochs_returns_and_saves_the_initial_model_without_loading_data(
    monkeypatch, tmp_path
):
    monkeypatch.setattr(train, "load_mnist", None)  # any data access would fail
    path = tmp_path / "run.pt"
    result = fit(SMALL, replace(TINY, epochs=0), device=CPU, checkpoint_path=path)
    torch.manual_seed(TINY.seed)
    assert same_weights(result.model, build_model(SMALL))
    assert result.history.epochs_done == 0
    assert same_weights(load_checkpoint(path, CPU).model, result.model)


def test_a_run_resumed_from_its_zero_epoch_checkpoint_is_the_uninterrupted_run(one_epoch, tmp_path):
    path = tmp_path / "run.pt"
    fit(SMALL, replace(TINY, epochs=0), device=CPU, checkpoint_path=path)
    resumed = fit(SMALL, TINY, device=CPU, checkpoint_path=path, resume=True, progress=False)
    assert same_weights(resumed.model, one_epoch[0].model)


def test_captured_progress_writes_at_most_two_updates(capsys):
    fit(SMALL, replace(TINY, epochs=2, train_size=256), device=CPU)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert 1 <= captured.err.count("fit:") <= 2  # the first and the final state of the bar
    assert captured.err.count("\n") <= 1
    assert "2/2" in captured.err


# --- checkpoints and resume ------------------------------------------------------------------


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(one_epoch, two_epochs, tmp_path):
    path = copy_of(one_epoch[1], tmp_path)  # as if a 2-epoch run was stopped after epoch 1
    resumed = fit(
        SMALL,
        replace(TINY, epochs=2),
        device=CPU,
        checkpoint_path=path,
        resume=True,
        progress=False,
    )
    assert same_weights(resumed.model, two_epochs.model)
    assert losses(resumed.history) == losses(two_epochs.history)
    assert load_checkpoint(path, CPU).history.epochs_done == 2


def test_fit_checkpoint_holds_configs_optimizer_and_rng_states(one_epoch):
    raw = torch.load(one_epoch[1], weights_only=True)
    assert set(raw) == {*KEYS, "version", "scheduler_state"} and "model_state" in KEYS
    assert raw["version"] == CHECKPOINT_VERSION
    assert raw["model_config"] == asdict(SMALL) and raw["train_config"] == asdict(TINY)
    assert raw["epoch"] == 1 and raw["history"] == one_epoch[0].history.to_dict()
    assert set(raw["rng_state"]) == {"torch", "batches"}
    assert len(raw["optimizer_state"]["state"]) == len(list(one_epoch[0].model.parameters()))


def test_resume_with_other_configs_names_the_difference(one_epoch, tmp_path):
    path = copy_of(one_epoch[1], tmp_path)
    with pytest.raises(ValueError, match=r"got \(requested, saved\) \{'lr': \(0.01, 0.001\)\}"):
        fit(SMALL, replace(TINY, lr=0.01), device=CPU, checkpoint_path=path, resume=True)
    other_model = replace(SMALL, arch="conv")
    with pytest.raises(
        CheckpointError, match=r"\(requested, saved\) \{'arch': \('conv', 'mlp'\)\}"
    ):
        fit(other_model, TINY, device=CPU, checkpoint_path=path, resume=True)
    with pytest.raises(CheckpointError, match=r"\{'latent_dim': \(9, 8\)\}; resume with the saved"):
        fit(replace(SMALL, latent_dim=9), TINY, device=CPU, checkpoint_path=path, resume=True)
    with pytest.raises(ValueError, match=r"expected at most 0 finished epochs, .* has 1"):
        fit(SMALL, replace(TINY, epochs=0), device=CPU, checkpoint_path=path, resume=True)
    bare = load_checkpoint(path, CPU)
    save_checkpoint(path, bare.model, bare.history, TINY)  # no optimizer, no RNG states
    with pytest.raises(
        ValueError, match=r"expected a checkpoint written by fit .* got one without"
    ):
        fit(SMALL, replace(TINY, epochs=2), device=CPU, checkpoint_path=path, resume=True)


def test_an_existing_checkpoint_is_refused_without_resume_or_overwrite(one_epoch, tmp_path):
    path = copy_of(one_epoch[1], tmp_path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as error:
        fit(SMALL, TINY, device=CPU, checkpoint_path=path)
    assert "checkpoint_path: expected a path without a checkpoint, got '" in str(error.value)
    assert "pass resume=True to continue it (same settings), overwrite=True to replace" in str(
        error.value
    )
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match=r"expected resume=True or overwrite=True, got both"):
        fit(SMALL, TINY, device=CPU, checkpoint_path=path, resume=True, overwrite=True)
    fit(SMALL, replace(TINY, epochs=0), device=CPU, checkpoint_path=path, overwrite=True)
    assert load_checkpoint(path, CPU).history.epochs_done == 0


def test_an_unwritable_checkpoint_path_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "load_mnist", None)  # training would need the data
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"checkpoint_path: .* is a file, not a folder\)"):
        fit(SMALL, TINY, device=CPU, checkpoint_path=tmp_path / "file" / "run.pt")


def test_a_broken_checkpoint_to_resume_names_the_file(tmp_path):
    path = tmp_path / "run.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"got '.*run.pt', which torch.load cannot read"):
        fit(SMALL, TINY, device=CPU, checkpoint_path=path, resume=True)


def test_resume_on_another_device_type_continues_with_a_warning(one_epoch, tmp_path):
    path = copy_of(one_epoch[1], tmp_path)
    state = torch.load(path, weights_only=True)
    state["rng_state"]["cuda"] = torch.zeros(16, dtype=torch.uint8)  # as saved on a GPU
    state["rng_state"]["batches"] = torch.zeros(16, dtype=torch.uint8)  # Philox, not Mersenne
    torch.save(state, path)
    with pytest.warns(UserWarning, match=r"resuming on cpu a run checkpointed on cuda"):
        resumed = fit(SMALL, replace(TINY, epochs=2), device=CPU, checkpoint_path=path, resume=True)
    assert resumed.history.epochs_done == 2
    assert all(map(math.isfinite, resumed.history.test_neg_elbo))


# --- divergence ------------------------------------------------------------------------------


def test_non_finite_loss_stops_with_epoch_step_and_advice_and_keeps_the_checkpoint(
    one_epoch, tmp_path, monkeypatch
):
    path = copy_of(one_epoch[1], tmp_path)
    good = path.read_bytes()
    monkeypatch.setattr(objective, "kl_warmup", lambda epoch, warmup: math.nan)  # loss = NaN
    with pytest.raises(TrainingDiverged) as caught:
        fit(SMALL, replace(TINY, epochs=2), device=CPU, checkpoint_path=path, resume=True)
    message = str(caught.value)
    assert (caught.value.epoch, caught.value.step) == (2, 1)
    assert "non-finite loss at epoch 2 of 2, step 1 of 16" in message
    assert "lower learning rate (lr=0.001 now, e.g. 0.0001)" in message
    assert "data lie in [0, 1]" in message and "bf16 off" in message
    assert f"{path}, is untouched" in message
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def test_huge_learning_rate_diverges_mid_epoch():
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 1 of 1, step \d+ of 16"):
        # the largest lr allowed (limits.LR), on the default 784-400-20 model: it diverges
        fit(ModelConfig(), replace(TINY, lr=10.0), device=CPU, progress=False)
