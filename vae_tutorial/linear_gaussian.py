r"""A linear-Gaussian latent variable model, where everything a VAE approximates is exact.

## The model

$$p(z) = \mathcal N(0, I_D), \qquad p(x \mid z) = \mathcal N(W z + b,\ \sigma_x^2 I_P),$$

with $W \in \mathbb R^{P \times D}$, $b \in \mathbb R^P$ and noise standard deviation
$\sigma_x > 0$ ($D$ the latent size, $P$ the data size). It is a VAE whose decoder is linear
(probabilistic PCA), and for it:

- the evidence is Gaussian: $p(x) = \mathcal N(x;\ b,\ C)$ with $C = W W^\top + \sigma_x^2 I_P$;
- the posterior is Gaussian: $p(z \mid x) = \mathcal N(\mu_*, \Sigma_*)$ with
  $\Sigma_* = (I_D + W^\top W / \sigma_x^2)^{-1}$ and
  $\mu_* = \Sigma_* W^\top (x - b) / \sigma_x^2$;
- the ELBO of any Gaussian $q(z \mid x) = \mathcal N(\mu, \Sigma)$ has a closed form:

$$\mathrm{ELBO}(q) = \underbrace{-\tfrac P2 \log(2\pi\sigma_x^2)
 - \frac{\lVert x - W\mu - b\rVert^2 + \operatorname{tr}(W \Sigma W^\top)}{2\sigma_x^2}}_{
 \mathbb E_q[\log p(x \mid z)]}
 \;-\; \underbrace{\tfrac12\big(\operatorname{tr}\Sigma + \mu^\top\mu - D - \log\det\Sigma\big)}_{
 \mathrm{KL}(q \,\Vert\, p(z))}.$$

So the identity $\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q \,\Vert\, p(z \mid x))$ can be checked
to floating-point precision. All log densities are in nats, one value per example.

Shapes: x (B, P); a Gaussian q is a mean (B, D) and a covariance (D, D) shared by the batch or
(B, D, D), symmetric positive definite, of the mean's dtype. Use float64 for identity checks.
Inputs are checked (shape, dtype, finite values, symmetric positive definite covariances), each
failure a ValueError saying what was expected and what came.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vae_tutorial import checks

LOG_2PI = math.log(2 * math.pi)


def _logdet(chol: Tensor) -> Tensor:
    """log det of L L^T from its Cholesky factor L (..., n, n) -> (...)."""
    # $\log\det \Sigma = 2\sum_i \log L_{ii}$
    return 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def _check_gaussian(mean: object, cov: object, dim: int, name: str) -> Tensor:
    """Check mean (B, dim) and cov (dim, dim) or (B, dim, dim): finite, one float dtype, SPD.

    Returns the Cholesky factor of cov.
    """
    mean = checks.tensor(f"{name} mean", mean, f"(B, {dim})")
    if mean.ndim != 2 or mean.shape[1] != dim:
        raise ValueError(f"{name} mean: expected shape (B, {dim}), got {tuple(mean.shape)}")
    checks.floating(f"{name} mean", mean)
    cov = checks.tensor(f"{name} cov", cov, f"({dim}, {dim})")
    if tuple(cov.shape) not in ((dim, dim), (mean.shape[0], dim, dim)):
        raise ValueError(
            f"{name} cov: expected shape ({dim}, {dim}) or (B, {dim}, {dim}) with B = "
            f"{mean.shape[0]}, got {tuple(cov.shape)}"
        )
    if cov.dtype != mean.dtype:
        raise ValueError(
            f"{name} cov: expected dtype {mean.dtype} (the mean's), got {cov.dtype}; "
            "convert both with .double()"
        )
    checks.finite(f"{name} mean", mean)
    checks.finite(f"{name} cov", cov)
    return checks.symmetric_positive_definite(f"{name} cov", cov)


def gaussian_kl(mean_q: Tensor, cov_q: Tensor, mean_p: Tensor, cov_p: Tensor) -> Tensor:
    r"""KL(N(mean_q, cov_q) || N(mean_p, cov_p)), nats: means (B, D), covs (D, D)|(B, D, D) -> (B,).

    $\mathrm{KL} = \tfrac12\big[\operatorname{tr}(\Sigma_p^{-1}\Sigma_q)
    + (\mu_p - \mu_q)^\top \Sigma_p^{-1} (\mu_p - \mu_q) - D
    + \log\det\Sigma_p - \log\det\Sigma_q\big]$.
    """
    checks.tensor("q mean", mean_q, "(B, D)")
    d = mean_q.shape[-1] if mean_q.ndim > 0 else 0
    chol_q = _check_gaussian(mean_q, cov_q, d, "q")
    chol_p = _check_gaussian(mean_p, cov_p, d, "p")
    b_q, b_p = len(mean_q), len(mean_p)
    if mean_p.dtype != mean_q.dtype or (b_q != b_p and 1 not in (b_q, b_p)):
        raise ValueError(
            f"gaussian_kl: expected q and p with one dtype and batch sizes B or 1, got "
            f"{tuple(mean_q.shape)} {mean_q.dtype} and {tuple(mean_p.shape)} {mean_p.dtype}"
        )
    batch = torch.broadcast_shapes(mean_q.shape[:1], mean_p.shape[:1])
    cov_q = cov_q.expand(*batch, d, d)  # (B, D, D)
    cov_p = cov_p.expand(*batch, d, d)  # (B, D, D)
    diff = (mean_p - mean_q).unsqueeze(-1)  # $\delta = \mu_p - \mu_q$, (B, D, 1)
    # $\operatorname{tr}(\Sigma_p^{-1}\Sigma_q)$, (B,)
    trace = torch.diagonal(torch.linalg.solve(cov_p, cov_q), dim1=-2, dim2=-1).sum(-1)
    # $\delta^\top\Sigma_p^{-1}\delta$, (B,)
    mahalanobis = (diff * torch.linalg.solve(cov_p, diff)).sum((-2, -1))
    return 0.5 * (trace + mahalanobis - d + _logdet(chol_p) - _logdet(chol_q))  # (B,)


@dataclass(frozen=True)
class LinearGaussian:
    """z ~ N(0, I_D), x | z ~ N(W z + b, noise_std^2 I_P): evidence, posterior, ELBO, exactly."""

    weight: Tensor  # W, (P, D): the linear decoder
    bias: Tensor  # b, (P,): the decoder's offset, also the mean of p(x)
    noise_std: float  # sigma_x > 0: standard deviation of the observation noise

    def __post_init__(self) -> None:
        w, b = self.weight, self.bias
        if not isinstance(w, Tensor) or w.ndim != 2 or not w.is_floating_point():
            got = checks.describe(w)
            raise ValueError(f"LinearGaussian.weight: expected a float tensor (P, D), got {got}")
        if not isinstance(b, Tensor) or tuple(b.shape) != (w.shape[0],) or b.dtype != w.dtype:
            got = checks.describe(b)
            want = f"shape ({w.shape[0]},) and dtype {w.dtype}"
            raise ValueError(f"LinearGaussian.bias: expected {want}, got {got}")
        checks.finite("LinearGaussian.weight", w)
        checks.finite("LinearGaussian.bias", b)
        checks.real("LinearGaussian.noise_std", self.noise_std, low=0.0, open_low=True)

    @classmethod
    def random(
        cls, data_dim: int, latent_dim: int, noise_std: float, *, seed: int = 0
    ) -> LinearGaussian:
        """A model with W and b drawn from N(0, 1) by a seeded generator, in float64."""
        data_dim = checks.positive_int("data_dim", data_dim)
        latent_dim = checks.positive_int("latent_dim", latent_dim)
        g = torch.Generator().manual_seed(checks.int_at_least("seed", seed, 0))
        weight = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
        bias = torch.randn(data_dim, generator=g, dtype=torch.float64)
        return cls(weight, bias, noise_std)

    @property
    def data_dim(self) -> int:
        """P, the size of x."""
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        """D, the size of z."""
        return self.weight.shape[1]

    def _check_x(self, x: object) -> Tensor:
        x = checks.tensor("x", x, f"(B, {self.data_dim})")
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"x: expected shape (B, {self.data_dim}), got {tuple(x.shape)}")
        if x.dtype != self.weight.dtype:
            raise ValueError(f"x: expected dtype {self.weight.dtype} (the model's), got {x.dtype}")
        checks.finite("x", x)
        return x

    def _check_q(self, x: Tensor, mean: Tensor, cov: Tensor) -> None:
        """x (B, P) and a Gaussian q with mean (B, D) for the same B."""
        self._check_x(x)
        _check_gaussian(mean, cov, self.latent_dim, "q")
        if len(mean) != len(x):
            raise ValueError(f"q mean: expected {len(x)} rows (one per x), got {len(mean)}")

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n draws from the joint: z ~ p(z), x ~ p(x|z) -> x (n, P), z (n, D)."""
        n = checks.positive_int("n", n)
        dtype = self.weight.dtype
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=dtype)  # (n, D)
        noise = torch.randn(n, self.data_dim, generator=generator, dtype=dtype)  # (n, P)
        # $x = Wz + b + \sigma_x\epsilon$
        x = z @ self.weight.T + self.bias + self.noise_std * noise
        return x, z

    def evidence_cov(self) -> Tensor:
        """C = W W^T + sigma_x^2 I_P, the covariance of p(x): (P, P)."""
        eye = torch.eye(self.data_dim, dtype=self.weight.dtype)
        # $C = WW^\top + \sigma_x^2 I$
        return self.weight @ self.weight.T + self.noise_std**2 * eye

    def log_evidence(self, x: Tensor) -> Tensor:
        """Exact log p(x) = log N(x; b, C) in nats: x (B, P) -> (B,)."""
        self._check_x(x)
        chol = torch.linalg.cholesky(self.evidence_cov())  # C = L L^T
        # $L^{-1}(x - b)$, (P, B)
        r = torch.linalg.solve_triangular(chol, (x - self.bias).T, upper=False)
        # $\log p(x) = -\tfrac12[P\log 2\pi + \log\det C + (x-b)^\top C^{-1}(x-b)]$
        return -0.5 * (self.data_dim * LOG_2PI + _logdet(chol) + (r**2).sum(0))

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) = log N(x; Wz + b, sigma_x^2 I), nats: x (B, P), z (..., B, D) -> (..., B)."""
        self._check_x(x)
        z = checks.tensor("z", z, f"(..., B, {self.latent_dim})")
        if z.ndim < 2 or z.shape[-1] != self.latent_dim or z.shape[-2] not in (1, len(x)):
            want = f"(..., {len(x)}, {self.latent_dim})"
            raise ValueError(f"z: expected shape {want}, got {tuple(z.shape)}")
        if z.dtype != self.weight.dtype:
            raise ValueError(f"z: expected dtype {self.weight.dtype} (the model's), got {z.dtype}")
        checks.finite("z", z)
        resid = x - (z @ self.weight.T + self.bias)  # (..., B, P)
        var = self.noise_std**2
        # $-\tfrac12[P \log(2\pi\sigma_x^2) + \lVert x - Wz - b\rVert^2 / \sigma_x^2]$
        return -0.5 * (self.data_dim * math.log(2 * math.pi * var) + (resid**2).sum(-1) / var)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The exact posterior p(z|x) = N(mu_*, Sigma_*): x (B, P) -> mean (B, D), cov (D, D)."""
        self._check_x(x)
        var = self.noise_std**2
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype)
        # $\Sigma_*^{-1} = I + W^\top W/\sigma_x^2$
        precision = eye + self.weight.T @ self.weight / var
        cov = torch.linalg.inv(precision)  # (D, D)
        cov = 0.5 * (cov + cov.T)  # symmetric to the last bit
        # $\mu_* = \Sigma_* W^\top (x - b)/\sigma_x^2$, (B, D)
        mean = (x - self.bias) @ self.weight @ cov / var
        return mean, cov

    def expected_log_likelihood(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
        """E_q[log p(x|z)] for q = N(mean, cov), the reconstruction term, in nats: -> (B,)."""
        self._check_q(x, mean, cov)
        var = self.noise_std**2
        resid = x - (mean @ self.weight.T + self.bias)  # (B, P)
        w_cov_wt = self.weight @ cov @ self.weight.T  # $W\Sigma W^\top$: (P, P) or (B, P, P)
        trace = torch.diagonal(w_cov_wt, dim1=-2, dim2=-1).sum(-1)  # (1,) or (B,)
        # $\lVert x - W\mu - b\rVert^2 + \operatorname{tr}(W\Sigma W^\top)$, (B,)
        sq_err = (resid**2).sum(-1) + trace
        # $-\tfrac P2\log(2\pi\sigma_x^2) - \text{sq\_err} / (2\sigma_x^2)$
        return -0.5 * (self.data_dim * math.log(2 * math.pi * var) + sq_err / var)

    def kl_to_prior(self, mean: Tensor, cov: Tensor) -> Tensor:
        """KL(q || p(z)) for q = N(mean, cov) and p(z) = N(0, I), in nats: -> (B,)."""
        _check_gaussian(mean, cov, self.latent_dim, "q")
        eye = torch.eye(self.latent_dim, dtype=mean.dtype)
        return gaussian_kl(mean, cov, torch.zeros_like(mean), eye)

    def elbo(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
        """ELBO(q) = E_q[log p(x|z)] - KL(q || p(z)) for q = N(mean, cov), in nats: -> (B,)."""
        return self.expected_log_likelihood(x, mean, cov) - self.kl_to_prior(mean, cov)

    def kl_to_posterior(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
        """KL(q || p(z|x)) for q = N(mean, cov), in nats: the gap log p(x) - ELBO(q). -> (B,)."""
        self._check_q(x, mean, cov)
        post_mean, post_cov = self.posterior(x)
        return gaussian_kl(mean, cov, post_mean, post_cov)
