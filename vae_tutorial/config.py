"""Every option of a model and of a training run, each written once: its values, default and range.

`ModelConfig` fixes what a model is (its layout and its likelihood p_theta(x|z)); `TrainConfig`
fixes how it is trained. A field's type says what it takes (a `Literal` names the choices, read
with `typing.get_args`), its default is the dataclass default, and its `metadata` holds its help
and the range a run can honour; `__post_init__` checks every field from those alone, so a new
option is one field here, and the command line is built from the same fields (`cli`). Rules that
tie fields together are written once, here: within a config in `__post_init__`, across the two
in `check_run`, which `fit` calls, so every way into training meets them.

Each bound, and why a run cannot go past it, is in `limits`; what only memory limits is checked
against the machine when the run starts (`resources`).
"""

from __future__ import annotations

import math
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from vae_tutorial import checks, layers, limits, schedule

Kind = Literal["vae", "ae", "cvae", "hvae"]  # hvae: two stochastic layers (hierarchical)
Arch = Literal["mlp", "conv"]
# "bernoulli" (binary x), "continuous_bernoulli" (grey x), "continuous_bce" (not a likelihood)
Likelihood = Literal["bernoulli", "continuous_bce", "continuous_bernoulli"]
# training images: grey, or fresh x ~ Bernoulli(pixels) each pass
Binarize = Literal["none", "dynamic"]
TestBinarize = Literal["none", "static"]  # a fixed split: grey, or binarized once from a seed
LIKELIHOODS = typing.get_args(Likelihood)
# issue 21: vocabularies kept beside what they name
Activation = Literal[tuple(layers.ACTIVATIONS)]  # "relu", "tanh"
Init = Literal[layers.INITS]  # "pytorch", "glorot_uniform"
Schedule = Literal[schedule.SCHEDULES]  # "constant", "burda"
# A model is scored on the data it models: binary training images -> the static-binarized test set
TEST_DATA = {"dynamic": "binarized", "none": "grey"}


def option(
    default: Any, help: str, *, low: float | None = None, high: float | None = None, **more: Any
) -> Any:
    """A dataclass field with its help text and range [low, high] (`open_low=True`: (low, high])."""
    return field(default=default, metadata={"help": help, "low": low, "high": high, **more})


def _check_field(owner: str, f: Any, hint: Any, value: Any) -> Any:
    """The checked value of one field, from its type and metadata alone."""
    name, low, high = f"{owner}.{f.name}", f.metadata.get("low"), f.metadata.get("high")
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:  # sizes of hidden layers (a list from JSON: a tuple)
        return layers.hidden_sizes(name, value)
    if typing.get_origin(hint) is Literal:
        checks.one_of(name, value, args)
        return value
    if type(None) in args and value is None:  # an optional field left unset
        return None
    base = next((a for a in args if a is not type(None)), hint)
    if base is bool:
        return checks.flag(name, value)
    if base is int:
        value = checks.int_at_least(name, value, int(low))
        if high is not None and value > high:
            raise ValueError(f"{name}: expected an int <= {high:g}, got {value}")
        return value
    if base is float:
        low, high = -math.inf if low is None else low, math.inf if high is None else high
        return checks.real(
            name, value, low=low, high=high, open_low=f.metadata.get("open_low", False)
        )
    return _check_field(owner, f, base, value)  # a Literal inside an Optional


def _check_fields(config: Any) -> None:
    """Check and normalise every field of a config dataclass in place."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        setattr(
            config,
            f.name,
            _check_field(type(config).__name__, f, hints[f.name], getattr(config, f.name)),
        )


@dataclass
class ModelConfig:
    """What a model is: `build_model(config)` makes it. Checked on creation."""

    kind: Kind = option(
        "vae", "vae: Gaussian q(z|x), sampled z; ae: deterministic z; cvae: conditioned on y"
    )
    arch: Arch = option("mlp", "mlp: 784-H-D-H-784; conv: stride-2 convs (32, 64), mirrored")
    latent_dim: int = option(20, "D, the size of z", low=1, memory=True)
    hidden_dim: int = option(
        400, "H, the width of the hidden layer on each side", low=1, memory=True
    )
    likelihood: Likelihood = option(
        "bernoulli", "p(x|z): bernoulli (binary x), continuous_bernoulli (grey x), continuous_bce"
    )
    # issue 21: deeper MLPs, their activation and initialisation, a second stochastic layer
    hidden: tuple[int, ...] = option(
        (), "mlp: widths of the hidden layers x -> z, mirrored in the decoder; () = (hidden_dim,)"
    )
    activation: Activation = option("relu", "mlp: the hidden layers' nonlinearity")
    init: Init = option("pytorch", "weights: pytorch (nn.Linear's), glorot_uniform (biases 0)")
    latent_dim2: int = option(0, "hvae: D2, the size of z2 (z1 has latent_dim)", low=0)
    hidden2: tuple[int, ...] = option((), "hvae: widths of the layers z1 -> z2, mirrored")

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_layers(self)

    @property
    def widths(self) -> tuple[int, ...]:
        """The MLP's hidden widths x -> z: `hidden`, or (hidden_dim,) when hidden is ()."""
        return self.hidden or (self.hidden_dim,)


@dataclass
class TrainConfig:
    """How to train: optimiser, schedule, data and numerics. Checked on creation."""

    epochs: int = option(10, "passes over the training set", low=0, high=limits.EPOCHS)
    batch_size: int = option(
        128, "examples per Adam step", low=1, high=limits.MNIST_TRAIN, memory=True
    )
    lr: float = option(1e-3, "Adam learning rate", low=0.0, high=limits.LR, open_low=True)
    seed: int = option(
        0, "seeds the weights, shuffling, binarization and z ~ q(z|x)", low=0, high=limits.SEED
    )
    beta: float = option(1.0, "weight of the KL term; 1 = the ELBO", low=0.0, high=limits.WEIGHT)
    warmup_epochs: int = option(
        0, "KL warm-up: beta * min(1, (e + 1) / E_w); 0 = off", low=0, high=limits.EPOCHS
    )
    free_bits: float = option(
        0.0,
        "kappa, free KL in nats per latent dimension (Kingma 2016); 0 = off",
        low=0.0,
        high=limits.WEIGHT,
    )
    iwae_k: int = option(
        1, "k of the IWAE objective -L_k (Burda 2016); 1 = the -ELBO", low=1, memory=True
    )
    binarize: Binarize = option(
        "dynamic", "dynamic: fresh x ~ Bernoulli(pixels) each pass; none: grey"
    )
    # moved to ModelConfig.likelihood; kept one release for code that sets it here
    likelihood: Likelihood | None = option(None, "use ModelConfig.likelihood", deprecated=True)
    train_size: int | None = option(
        None, "train on the first N training images; None = all", low=1, high=limits.MNIST_TRAIN
    )
    bf16: bool = option(False, "bfloat16 autocast, where the device supports it")
    compile: bool = option(False, "torch.compile the model, where it works")
    # issue 21: Burda et al.'s recipe
    adam_eps: float = option(
        1e-8, "Adam's epsilon (Burda et al.: 1e-4)", low=limits.ADAM_EPS[0], high=limits.ADAM_EPS[1]
    )
    lr_schedule: Schedule = option(
        "constant", "constant, or burda: 8 stages of 3^i epochs at lr * 10^(-i/7) (3280 epochs)"
    )
    output_bias_from_mean: bool = option(
        False, "mlp: start the decoder's output bias at logit(mean training image)"
    )

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_schedule(self)
        if self.iwae_k == 1:
            return
        misfits = {"beta": 1.0, "warmup_epochs": 0, "free_bits": 0.0}
        bad = [f"{k}={getattr(self, k)!r}" for k, off in misfits.items() if getattr(self, k) != off]
        if bad:
            raise ValueError(
                f"TrainConfig: iwae_k={self.iwae_k} trains on L_k, a bound on log p(x) that has no "
                f"separate KL term to weigh, got {', '.join(bad)}; use beta=1.0, warmup_epochs=0 "
                "and free_bits=0.0 with iwae_k > 1, or iwae_k=1 (the ELBO) with them"
            )

    @property
    def test_data(self) -> str:
        """The test images the model is scored on: "binarized" (static, seeded) or "grey"."""
        return TEST_DATA[self.binarize]


def _check_layers(config: ModelConfig) -> None:
    """The rules of the issue-21 fields: deeper MLPs, activation, init, hvae's z2 (mlp only)."""
    plain = {k: getattr(ModelConfig, k) for k in ("hidden", "activation", "init")}
    used = [f"{k}={getattr(config, k)!r}" for k, off in plain.items() if getattr(config, k) != off]
    if used and (config.arch != "mlp" or config.kind == "cvae"):
        raise ValueError(
            f"ModelConfig: {', '.join(used)} shape the MLP of kinds vae, ae and hvae, got "
            f"arch={config.arch!r}, kind={config.kind!r}; use arch='mlp' or drop them"
        )
    if config.hidden and config.hidden_dim != ModelConfig.hidden_dim:
        raise ValueError(
            f"ModelConfig: got hidden={config.hidden} and hidden_dim={config.hidden_dim}; give "
            "the widths once: hidden=(H, ...) or hidden_dim=H"
        )
    hvae = config.kind == "hvae"
    if hvae != (config.latent_dim2 > 0) or (not hvae and config.hidden2):
        raise ValueError(
            f"ModelConfig: latent_dim2 > 0 (and hidden2) go with kind='hvae' and only with it, got "
            f"kind={config.kind!r}, latent_dim2={config.latent_dim2}, hidden2={config.hidden2}; "
            "e.g. ModelConfig(kind='hvae', latent_dim=100, latent_dim2=50, hidden2=(100, 100))"
        )
    if hvae and (config.arch != "mlp" or config.likelihood != "bernoulli"):
        raise ValueError(
            f"ModelConfig: kind='hvae' is an MLP with Bernoulli pixels, got arch={config.arch!r}, "
            f"likelihood={config.likelihood!r}; use arch='mlp', likelihood='bernoulli'"
        )


def _check_schedule(config: TrainConfig) -> None:
    """A schedule with a length of its own (burda) is not run past its end."""
    passes = schedule.total_passes(config.lr_schedule)
    if passes is not None and config.epochs > passes:
        raise ValueError(
            f"TrainConfig: lr_schedule={config.lr_schedule!r} lasts {passes} epochs, got "
            f"epochs={config.epochs}; use epochs <= {passes}"
        )


def resolve(
    model_config: ModelConfig, train_config: TrainConfig
) -> tuple[ModelConfig, TrainConfig]:
    """The configs with a likelihood given the old way (TrainConfig.likelihood) on the model.

    ValueError if both name a likelihood and they differ.
    """
    if not isinstance(model_config, ModelConfig) or not isinstance(train_config, TrainConfig):
        raise ValueError(
            "expected a ModelConfig and a TrainConfig, "
            f"got {type(model_config).__name__} and {type(train_config).__name__}"
        )
    old = train_config.likelihood
    if old is None:
        return model_config, train_config
    default = ModelConfig().likelihood
    if model_config.likelihood not in (default, old):
        raise ValueError(
            f"TrainConfig.likelihood={old!r} conflicts with ModelConfig.likelihood="
            f"{model_config.likelihood!r}; set the likelihood on the ModelConfig only"
        )
    return replace(model_config, likelihood=old), replace(train_config, likelihood=None)


def check_run(
    model_config: ModelConfig, train_config: TrainConfig
) -> tuple[ModelConfig, TrainConfig]:
    """The resolved configs (`resolve`), or ValueError for a pair no run can honour."""
    model, train = resolve(model_config, train_config)
    if train.binarize == "none" and model.likelihood == "bernoulli":
        raise ValueError(
            "TrainConfig: likelihood='bernoulli' expects binary x, got binarize='none' (grey "
            "levels); use binarize='dynamic', or likelihood='continuous_bernoulli' for grey x"
        )
    if train.binarize != "none" and model.likelihood == "continuous_bernoulli":
        raise ValueError(
            "TrainConfig: likelihood='continuous_bernoulli' is a density for grey x, got "
            f"binarize={train.binarize!r} (binary x, where its log-density grows without bound "
            "as the logits do); use binarize='none', or likelihood='bernoulli' for binary x"
        )
    if train.iwae_k > 1 and model.kind == "ae":
        raise ValueError(
            f"TrainConfig.iwae_k={train.iwae_k} needs a VAE's q(z|x) to weigh samples, got "
            "ModelConfig.kind='ae' (no q, no L_k); use kind='vae', or iwae_k=1"
        )
    # issue 21: hvae trains on its ELBO or L_k only; the output bias is an MLP's last Linear
    shaped = {"beta": 1.0, "warmup_epochs": 0, "free_bits": 0.0}
    shaped = [f"{k}={getattr(train, k)!r}" for k, off in shaped.items() if getattr(train, k) != off]
    if model.kind == "hvae" and shaped:
        raise ValueError(
            f"TrainConfig: {', '.join(shaped)} are not defined for kind='hvae' (two KL terms); "
            "train it on the ELBO or L_k: beta=1.0, warmup_epochs=0, free_bits=0.0"
        )
    if train.output_bias_from_mean and model.arch != "mlp":
        raise ValueError(
            f"TrainConfig: output_bias_from_mean sets an MLP decoder's last Linear, got "
            f"arch={model.arch!r} (a transposed convolution); use arch='mlp' or drop it"
        )
    if train.iwae_k > 1 and model.likelihood == "continuous_bce":
        raise ValueError(
            f"TrainConfig: iwae_k={train.iwae_k} needs a likelihood whose weights p(x, z)/q(z|x)"
            " estimate p(x), got likelihood='continuous_bce' (not a likelihood); use "
            "'bernoulli' (binary x) or 'continuous_bernoulli' (grey x)"
        )
    return model, train


def with_defaults(config: type, values: dict[str, Any]) -> dict[str, Any]:
    """A saved config's fields, those it lacks (added since it was written) at their defaults."""
    return {**{f.name: f.default for f in fields(config)}, **values}


def changed(config: Any) -> dict[str, Any]:
    """The fields of a config that differ from their defaults (a field added later is left out)."""
    defaults = {f.name: f.default for f in fields(config)}
    return {k: v for k, v in asdict(config).items() if v != defaults[k]}
