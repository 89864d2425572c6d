r"""A linear-Gaussian latent variable model, where everything a VAE approximates is exact.

## The model

$$p(z) = \mathcal N(0, I_d), \qquad p(x \mid z) = \mathcal N(W z + b,\ \sigma_x^2 I_D),$$

with $W \in \mathbb R^{D \times d}$, $b \in \mathbb R^D$ and noise standard deviation
$\sigma_x > 0$. It is a VAE whose decoder is linear (probabilistic PCA), and for it:

- the evidence is Gaussian: $p(x) = \mathcal N(x;\ b,\ C)$ with $C = W W^\top + \sigma_x^2 I_D$;
- the posterior is Gaussian: $p(z \mid x) = \mathcal N(\mu_*, \Sigma_*)$ with
  $\Sigma_* = (I_d + W^\top W / \sigma_x^2)^{-1}$ and
  $\mu_* = \Sigma_* W^\top (x - b) / \sigma_x^2$;
- the ELBO of any Gaussian $q(z \mid x) = \mathcal N(\mu, \Sigma)$ has a closed form:

$$\mathrm{ELBO}(q) = \underbrace{-\tfrac D2 \log(2\pi\sigma_x^2)
 - \frac{\lVert x - W\mu - b\rVert^2 + \operatorname{tr}(W \Sigma W^\top)}{2\sigma_x^2}}_{
 \mathbb E_q[\log p(x \mid z)]}
 \;-\; \underbrace{\tfrac12\big(\operatorname{tr}\Sigma + \mu^\top\mu - d - \log\det\Sigma\big)}_{
 \mathrm{KL}(q \,\Vert\, p(z))}.$$

So the identity $\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q \,\Vert\, p(z \mid x))$ can be checked
to floating-point precision. All log densities are in nats, one value per example.

Shapes: x (B, D); a Gaussian q is a mean (B, d) and a covariance (d, d) shared by the batch or
(B, d, d), symmetric positive definite. Use float64 for identity checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def _logdet_spd(name: str, cov: Tensor) -> Tensor:
    """log det of symmetric positive definite matrices (..., n, n) -> (...), via Cholesky."""
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError(f"{name}: expected a symmetric positive definite covariance, it is not")
    return 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(
        -1
    )  # $\log\det = 2\sum\log L_{ii}$


def _check_gaussian(mean: Tensor, cov: Tensor, dim: int, name: str) -> None:
    """Raise ValueError unless mean is (B, dim) and cov is (dim, dim) or (B, dim, dim), finite."""
    if not isinstance(mean, Tensor) or mean.ndim != 2 or mean.shape[1] != dim:
        got = tuple(mean.shape) if isinstance(mean, Tensor) else type(mean).__name__
        raise ValueError(f"{name} mean: expected shape (B, {dim}), got {got}")
    ok = isinstance(cov, Tensor) and (
        tuple(cov.shape) == (dim, dim) or tuple(cov.shape) == (mean.shape[0], dim, dim)
    )
    if not ok:
        got = tuple(cov.shape) if isinstance(cov, Tensor) else type(cov).__name__
        raise ValueError(
            f"{name} cov: expected shape ({dim}, {dim}) or (B, {dim}, {dim}), got {got}"
        )
    if not (torch.isfinite(mean).all() and torch.isfinite(cov).all()):
        raise ValueError(f"{name}: expected finite mean and covariance")


def gaussian_kl(mean_q: Tensor, cov_q: Tensor, mean_p: Tensor, cov_p: Tensor) -> Tensor:
    r"""KL(N(mean_q, cov_q) || N(mean_p, cov_p)), nats: means (B, d), covs (d, d)|(B, d, d) -> (B,).

    $\mathrm{KL} = \tfrac12\big[\operatorname{tr}(\Sigma_p^{-1}\Sigma_q)
    + (\mu_p - \mu_q)^\top \Sigma_p^{-1} (\mu_p - \mu_q) - d
    + \log\det\Sigma_p - \log\det\Sigma_q\big]$.
    """
    d = mean_q.shape[-1] if isinstance(mean_q, Tensor) and mean_q.ndim > 0 else 0
    _check_gaussian(mean_q, cov_q, d, "q")
    _check_gaussian(mean_p, cov_p, d, "p")
    batch = torch.broadcast_shapes(mean_q.shape[:1], mean_p.shape[:1])
    cov_q = cov_q.expand(*batch, d, d)  # (B, d, d)
    cov_p = cov_p.expand(*batch, d, d)  # (B, d, d)
    diff = (mean_p - mean_q).unsqueeze(-1)  # (B, d, 1)
    trace = torch.diagonal(torch.linalg.solve(cov_p, cov_q), dim1=-2, dim2=-1).sum(-1)
    mahalanobis = (diff * torch.linalg.solve(cov_p, diff)).sum(
        (-2, -1)
    )  # $\delta^\top\Sigma_p^{-1}\delta$
    logdets = _logdet_spd("p cov", cov_p) - _logdet_spd("q cov", cov_q)
    return 0.5 * (trace + mahalanobis - d + logdets)  # (B,)


@dataclass(frozen=True)
class LinearGaussian:
    """z ~ N(0, I_d), x | z ~ N(W z + b, noise_std^2 I_D): evidence, posterior, ELBO, exactly."""

    weight: Tensor  # W, (D, d): the linear decoder
    bias: Tensor  # b, (D,): the decoder's offset, also the mean of p(x)
    noise_std: float  # sigma_x > 0: standard deviation of the observation noise

    def __post_init__(self) -> None:
        w, b = self.weight, self.bias
        if not isinstance(w, Tensor) or w.ndim != 2 or not w.is_floating_point():
            got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"LinearGaussian.weight: expected a float tensor (D, d), got {got}")
        if not isinstance(b, Tensor) or tuple(b.shape) != (w.shape[0],) or b.dtype != w.dtype:
            got = (tuple(b.shape), b.dtype) if isinstance(b, Tensor) else type(b).__name__
            want = f"shape ({w.shape[0]},) and dtype {w.dtype}"
            raise ValueError(f"LinearGaussian.bias: expected {want}, got {got}")
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise ValueError("LinearGaussian: expected finite weight and bias")
        s = self.noise_std
        if isinstance(s, bool) or not isinstance(s, int | float) or not (0 < s < math.inf):
            raise ValueError(f"LinearGaussian.noise_std: expected a positive float, got {s!r}")

    @classmethod
    def random(
        cls, data_dim: int, latent_dim: int, noise_std: float, *, seed: int = 0
    ) -> LinearGaussian:
        """A model with W and b drawn from N(0, 1) by a seeded generator, in float64."""
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
        bias = torch.randn(data_dim, generator=g, dtype=torch.float64)
        return cls(weight, bias, float(noise_std))

    @property
    def data_dim(self) -> int:
        """D, the size of x."""
        return self.weight.shape[0]

    @property
    def latent_dim(self) -> int:
        """d, the size of z."""
        return self.weight.shape[1]

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.data_dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (B, {self.data_dim}), got {got}")
        if x.dtype != self.weight.dtype:
            raise ValueError(f"x: expected dtype {self.weight.dtype} (the model's), got {x.dtype}")

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n draws from the joint: z ~ p(z), x ~ p(x|z) -> x (n, D), z (n, d)."""
        dtype = self.weight.dtype
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=dtype)  # (n, d)
        noise = torch.randn(n, self.data_dim, generator=generator, dtype=dtype)  # (n, D)
        return (
            z @ self.weight.T + self.bias + self.noise_std * noise,
            z,
        )  # $x = Wz + b + \sigma_x\epsilon$

    def evidence_cov(self) -> Tensor:
        """C = W W^T + sigma_x^2 I_D, the covariance of p(x): (D, D)."""
        eye = torch.eye(self.data_dim, dtype=self.weight.dtype)
        return self.weight @ self.weight.T + self.noise_std**2 * eye  # $C = WW^\top + \sigma_x^2 I$

    def log_evidence(self, x: Tensor) -> Tensor:
        """Exact log p(x) = log N(x; b, C) in nats: x (B, D) -> (B,)."""
        self._check_x(x)
        chol = torch.linalg.cholesky(self.evidence_cov())  # C = L L^T
        r = torch.linalg.solve_triangular(
            chol, (x - self.bias).T, upper=False
        )  # L^{-1}(x - b): (D, B)
        logdet = 2 * torch.log(torch.diagonal(chol)).sum()  # $\log\det C$
        # $\log p(x) = -\tfrac12[D\log 2\pi + \log\det C + (x-b)^\top C^{-1}(x-b)]$
        return -0.5 * (self.data_dim * LOG_2PI + logdet + (r**2).sum(0))

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) = log N(x; Wz + b, sigma_x^2 I), nats: x (B, D), z (..., B, d) -> (..., B)."""
        self._check_x(x)
        resid = x - (z @ self.weight.T + self.bias)  # (..., B, D)
        var = self.noise_std**2
        return -0.5 * (self.data_dim * math.log(2 * math.pi * var) + (resid**2).sum(-1) / var)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The exact posterior p(z|x) = N(mu_*, Sigma_*): x (B, D) -> mean (B, d), cov (d, d)."""
        self._check_x(x)
        var = self.noise_std**2
        eye = torch.eye(self.latent_dim, dtype=self.weight.dtype)
        precision = (
            eye + self.weight.T @ self.weight / var
        )  # $\Sigma_*^{-1} = I + W^\top W/\sigma_x^2$
        cov = torch.linalg.inv(precision)  # (d, d)
        cov = 0.5 * (cov + cov.T)  # symmetric to the last bit
        mean = (
            (x - self.bias) @ self.weight @ cov / var
        )  # $\mu_* = \Sigma_* W^\top (x - b)/\sigma_x^2$
        return mean, cov

    def expected_log_likelihood(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
        """E_q[log p(x|z)] for q = N(mean, cov), the reconstruction term, in nats: -> (B,)."""
        self._check_x(x)
        _check_gaussian(mean, cov, self.latent_dim, "q")
        var = self.noise_std**2
        resid = x - (mean @ self.weight.T + self.bias)  # (B, D)
        w_cov_wt = self.weight @ cov @ self.weight.T  # $W\Sigma W^\top$: (D, D) or (B, D, D)
        trace = torch.diagonal(w_cov_wt, dim1=-2, dim2=-1).sum(-1)  # (1,) or (B,)
        sq_err = (resid**2).sum(
            -1
        ) + trace  # $\lVert x - W\mu - b\rVert^2 + \operatorname{tr}(W\Sigma W^\top)$
        # $-\tfrac D2\log(2\pi\sigma_x^2) - \text{sq\_err} / (2\sigma_x^2)$
        return -0.5 * (self.data_dim * math.log(2 * math.pi * var) + sq_err / var)

    def kl_to_prior(self, mean: Tensor, cov: Tensor) -> Tensor:
        """KL(q || p(z)) for q = N(mean, cov) and p(z) = N(0, I), in nats: -> (B,)."""
        eye = torch.eye(self.latent_dim, dtype=mean.dtype)
        return gaussian_kl(mean, cov, torch.zeros_like(mean), eye)

    def elbo(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
        """ELBO(q) = E_q[log p(x|z)] - KL(q || p(z)) for q = N(mean, cov), in nats: -> (B,)."""
        return self.expected_log_likelihood(x, mean, cov) - self.kl_to_prior(mean, cov)

    def kl_to_posterior(self, x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
        """KL(q || p(z|x)) for q = N(mean, cov), in nats: the gap log p(x) - ELBO(q). -> (B,)."""
        post_mean, post_cov = self.posterior(x)
        return gaussian_kl(mean, cov, post_mean, post_cov)
