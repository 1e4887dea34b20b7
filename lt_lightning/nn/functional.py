"""Pure-tensor maths of the classifier heads. Class-major ``[K, d]`` everywhere.

Every function here takes tensors and returns tensors; the stateful wrappers live in
:mod:`lt_lightning.nn.heads`. Functions that a training step calls (``causal_norm_logits``,
``lws_logits``) validate only shapes and Python scalars, never tensor values, so they cause no host
synchronisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "causal_norm_logit_parts",
    "causal_norm_logits",
    "class_centroids",
    "lws_logits",
    "ncm_logits",
    "ncm_transform",
    "simplex_etf",
    "tau_normalize",
]

# Norms below this are treated as zero (the vector is left at 0 instead of dividing by 0).
_EPS = 1e-12

_NCM_METRICS = ("euclidean", "cosine")


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_matrix(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}")
    return t


def _centering_basis(num_classes: int, dtype: torch.dtype) -> Tensor:
    """Deterministic orthonormal basis ``[K, K-1]`` of the sum-zero subspace (Helmert columns)."""
    k = num_classes
    basis = torch.zeros(k, k - 1, dtype=dtype)
    for j in range(1, k):
        # Column j-1: (1, ..., 1, -j, 0, ..., 0) / sqrt(j (j + 1)), orthogonal to 1 and to earlier columns.
        basis[:j, j - 1] = 1.0
        basis[j, j - 1] = -float(j)
        basis[:, j - 1] /= math.sqrt(j * (j + 1))
    return basis


def simplex_etf(
    num_classes: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
    canonical: bool = False,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A simplex equiangular tight frame ``[K, d]`` (Papyan et al. 2020; Yang et al. NeurIPS 2022).

    Random (default, Yang): draw a ``d x K`` Gaussian matrix, orthonormalise its columns by QR to get
    ``P`` and return ``sqrt(K/(K-1)) * C @ P.T`` with ``C = I_K - 11^T/K``. Canonical (Zhu et al. NeurIPS
    2021): ``P`` = the first ``K`` columns of ``I_d`` (no random rotation).

    The rows are unit vectors, sum to zero, and every pair has cosine ``-1/(K-1)``; ``E E^T = K/(K-1) C``.

    When ``d = K - 1`` a ``d x K`` matrix cannot have ``K`` orthonormal columns; then the frame is built
    directly in the ``(K-1)``-dimensional column space of ``C``: ``sqrt(K/(K-1)) * U R^T`` with ``U`` the
    Helmert orthonormal basis ``[K, K-1]`` of that space and ``R`` a random orthogonal ``(K-1)x(K-1)``
    matrix (``R = I`` when ``canonical``). Both constructions give a uniformly rotated ETF.

    Args:
        num_classes: K >= 2.
        dim: feature dimension d >= K - 1.
        generator: CPU generator for the random rotation (ignored when ``canonical``).
        canonical: use Zhu's canonical embedding instead of a random rotation.
        dtype: result dtype (default: ``torch.get_default_dtype()``); built in float64 then cast.
        device: result device (default CPU).

    Returns:
        ``[K, d]`` ETF.

    Raises:
        ValueError: ``d < K - 1`` (suggests ``fixdim`` or a wider backbone) or ``K < 2``.

    >>> e = simplex_etf(4, 8, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(e @ e.T, torch.full((4, 4), -1 / 3) + 4 / 3 * torch.eye(4), atol=1e-6)
    True
    """
    k = _check_int("num_classes", num_classes, 2)
    d = _check_int("dim", dim, 1)
    if d < k - 1:
        raise ValueError(
            f"simplex_etf: feature dimension d={d} is smaller than num_classes - 1 = {k - 1}; a {k}-class "
            "simplex ETF needs d >= K - 1. Use fixdim=True (feature dimension = K) or a wider backbone "
            "(e.g. resnet32 with width=32 gives 128-d features)."
        )
    out_dtype = dtype if dtype is not None else torch.get_default_dtype()
    f64 = torch.float64
    scale = math.sqrt(k / (k - 1))
    if d >= k:
        if canonical:
            p = torch.eye(d, k, dtype=f64)
        else:
            gauss = torch.randn(d, k, generator=generator, dtype=f64)
            p, _ = torch.linalg.qr(gauss)  # [d, K], orthonormal columns
        center = torch.eye(k, dtype=f64) - 1.0 / k
        etf = scale * center @ p.T
    else:  # d == K - 1
        basis = _centering_basis(k, f64)  # [K, K-1]
        if canonical:
            etf = scale * basis
        else:
            gauss = torch.randn(d, d, generator=generator, dtype=f64)
            rot, _ = torch.linalg.qr(gauss)
            etf = scale * basis @ rot.T
    return etf.to(dtype=out_dtype, device=device)


def _split_heads(t: Tensor, num_heads: int) -> Tensor:
    """``[..., d] -> [..., H, d/H]``."""
    return t.reshape(*t.shape[:-1], num_heads, t.shape[-1] // num_heads)


def _check_causal_norm_args(x: Tensor, weight: Tensor, num_heads: int, gamma: float) -> None:
    _check_matrix("x", x)
    _check_matrix("weight", weight)
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x has feature dimension {x.shape[1]} but weight is {tuple(weight.shape)}; expected weight [K, "
            f"{x.shape[1]}]"
        )
    _check_int("num_heads", num_heads, 1)
    if x.shape[1] % num_heads != 0:
        raise ValueError(f"num_heads={num_heads} must divide the feature dimension d={x.shape[1]}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")


def causal_norm_logit_parts(
    x: Tensor,
    weight: Tensor,
    *,
    num_heads: int = 2,
    tau: float = 16.0,
    gamma: float = 1 / 32,
    embed: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The two terms of the TDE logits: ``logits(alpha) = plain - alpha * counterfactual``.

    ``plain[n, i] = sum_k (tau/H) <x_hat_nk, w_hat_ik>`` and
    ``counterfactual[n, i] = sum_k (tau/H) c_nk <d_hat_k, w_hat_ik>`` (Tang et al. NeurIPS 2020); see
    :func:`causal_norm_logits` for the notation. Shared by the single-alpha call and the alpha sweep.

    Args:
        x: ``[N, d]`` features.
        weight: ``[K, d]`` classifier weight.
        num_heads: H, must divide d.
        tau: logit scale.
        gamma: weight-norm offset.
        embed: ``[d]`` moving-average feature, or ``None`` (then ``counterfactual`` is ``None``).

    Returns:
        ``(plain [N, K], counterfactual [N, K] | None)``.
    """
    _check_causal_norm_args(x, weight, num_heads, gamma)
    n, d = x.shape
    scale = tau / num_heads
    xh = _split_heads(x, num_heads)  # [N, H, m]
    x_hat = xh / xh.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    wh = _split_heads(weight, num_heads)  # [K, H, m]
    w_hat = wh / (wh.norm(dim=-1, keepdim=True) + gamma)
    # [N, H*m] @ [H*m, K] sums over heads and head dimensions in one matmul.
    plain = scale * (x_hat.reshape(n, d) @ w_hat.reshape(-1, d).T)
    if embed is None:
        return plain, None
    if embed.shape != (d,):
        raise ValueError(f"embed must have shape [{d}], got {tuple(embed.shape)}")
    eh = _split_heads(embed, num_heads)  # [H, m]
    d_hat = eh / eh.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    cos = (x_hat * d_hat).sum(-1)  # [N, H]; cos(x_k, d_hat_k) since x_hat is a unit vector
    proj = (w_hat * d_hat).sum(-1)  # [K, H]: <d_hat_k, w_hat_ik>
    counterfactual = scale * (cos @ proj.T)
    return plain, counterfactual


def causal_norm_logits(
    x: Tensor,
    weight: Tensor,
    *,
    num_heads: int = 2,
    tau: float = 16.0,
    gamma: float = 1 / 32,
    embed: Tensor | None = None,
    alpha: float = 0.0,
) -> Tensor:
    """Multi-head causal-norm logits, with the TDE counterfactual when ``alpha > 0`` (Tang et al. 2020).

    Split d into H heads. Per head k: ``x_hat_k = x_k/||x_k||``, ``w_hat_ik = w_ik/(||w_ik|| + gamma)``;
    ``logit_i = sum_k (tau/H) <x_hat_k, w_hat_ik>``. With the moving-average feature ``embed`` and
    ``alpha > 0``: ``d_hat_k = embed_k/||embed_k||``, ``c_k = cos(x_k, d_hat_k)`` and
    ``logit_i = sum_k (tau/H) <x_hat_k - alpha c_k d_hat_k, w_hat_ik>``. Zero-norm feature or embed
    slices are left at zero rather than divided by zero.

    Args:
        x: ``[N, d]`` features.
        weight: ``[K, d]`` classifier weight (no bias).
        num_heads: H, must divide d.
        tau: logit scale (16 in the paper).
        gamma: weight-norm offset (1/32 in the paper), >= 0.
        embed: ``[d]`` moving-average feature; required when ``alpha > 0``.
        alpha: TDE strength, >= 0 (0 = plain causal-norm logits).

    Returns:
        ``[N, K]`` logits.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if alpha > 0 and embed is None:
        raise ValueError("alpha > 0 (TDE) needs the moving-average feature `embed` [d]")
    plain, counterfactual = causal_norm_logit_parts(
        x, weight, num_heads=num_heads, tau=tau, gamma=gamma, embed=embed if alpha > 0 else None
    )
    if counterfactual is None:
        return plain
    return plain - alpha * counterfactual


def tau_normalize(weight: Tensor, tau: float | Tensor) -> Tensor:
    """tau-normalised classifier ``w_k / ||w_k||^tau`` (Kang et al. ICLR 2020).

    Args:
        weight: ``[K, d]`` classifier weight.
        tau: exponent >= 0 (0 leaves the weight unchanged, 1 gives unit rows). A 0-d tensor is accepted
            (not range-checked, to avoid a host sync).

    Returns:
        ``[K, d]``; zero rows stay zero.
    """
    _check_matrix("weight", weight)
    if not isinstance(tau, Tensor):
        if not isinstance(tau, (int, float)) or isinstance(tau, bool):
            raise TypeError(f"tau must be a float, got {type(tau).__name__}")
        if not math.isfinite(tau) or tau < 0:
            raise ValueError(f"tau must be a finite number >= 0, got {tau}")
    norms = weight.norm(dim=1, keepdim=True).clamp_min(_EPS)
    return weight / norms.pow(tau)


def _check_metric(metric: str) -> None:
    if metric not in _NCM_METRICS:
        raise ValueError(f"metric must be one of {_NCM_METRICS}, got {metric!r}")


def ncm_transform(features: Tensor, *, global_mean: Tensor | None = None, normalize: bool = True) -> Tensor:
    """Feature transform of Kang's NCM: subtract ``global_mean`` (if given), then L2-normalise rows.

    Args:
        features: ``[N, d]``.
        global_mean: ``[d]`` mean of the training features, or ``None`` (no centring).
        normalize: L2-normalise each row after centring.

    Returns:
        ``[N, d]`` transformed features.
    """
    _check_matrix("features", features)
    if global_mean is not None:
        if global_mean.shape != (features.shape[1],):
            raise ValueError(
                f"global_mean must have shape [{features.shape[1]}], got {tuple(global_mean.shape)}"
            )
        features = features - global_mean
    if normalize:
        features = features / features.norm(dim=1, keepdim=True).clamp_min(_EPS)
    return features


def class_centroids(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    global_mean: Tensor | None = None,
    normalize: bool = True,
) -> Tensor:
    """Per-class mean of the NCM-transformed features (Kang et al. ICLR 2020), ``[K, d]``.

    Kang's default is ``global_mean`` = the mean of the (un-augmented) training features and
    ``normalize=True``; the centroids are averages of unit vectors and are *not* re-normalised.
    Pass ``global_mean=None`` / ``normalize=False`` for the raw-feature options.

    Args:
        features: ``[N, d]`` training features.
        labels: ``[N]`` integer labels in ``[0, K)``.
        num_classes: K.
        global_mean: ``[d]`` or ``None``.
        normalize: L2-normalise features (after centring) before averaging.

    Returns:
        ``[K, d]`` centroids.

    Raises:
        ValueError: a class has no sample (its index is named), or labels are out of range.
    """
    k = _check_int("num_classes", num_classes, 1)
    feats = ncm_transform(features, global_mean=global_mean, normalize=normalize)
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape [{features.shape[0]}], got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{int(labels.min())}, {int(labels.max())}]")
    sums = feats.new_zeros(k, feats.shape[1]).index_add_(0, labels, feats)
    counts = torch.zeros(k, dtype=torch.long, device=feats.device).index_add_(
        0, labels, torch.ones_like(labels, dtype=torch.long)
    )
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"class_centroids: class(es) {empty[:20]} have no sample; NCM needs every class")
    return sums / counts.unsqueeze(1).to(sums.dtype)


def ncm_logits(
    features: Tensor,
    centroids: Tensor,
    *,
    global_mean: Tensor | None = None,
    normalize: bool = True,
    metric: str = "euclidean",
) -> Tensor:
    """Nearest-class-mean scores (Kang et al. ICLR 2020), ``[N, K]``.

    The features get the same transform as the centroids (:func:`ncm_transform`). ``"euclidean"``:
    ``-||x - c||^2``, computed as ``2 x.c - ||c||^2 - ||x||^2``; ``"cosine"``: ``cos(x, c)``.

    Args:
        features: ``[N, d]``.
        centroids: ``[K, d]`` from :func:`class_centroids` with the same options.
        global_mean: ``[d]`` or ``None``.
        normalize: L2-normalise the (centred) features.
        metric: ``"euclidean"`` or ``"cosine"``.

    Returns:
        ``[N, K]`` scores (larger is nearer).
    """
    _check_metric(metric)
    _check_matrix("centroids", centroids)
    x = ncm_transform(features, global_mean=global_mean, normalize=normalize)
    if x.shape[1] != centroids.shape[1]:
        raise ValueError(f"features are {x.shape[1]}-d but centroids are {tuple(centroids.shape)}")
    if metric == "cosine":
        c_hat = centroids / centroids.norm(dim=1, keepdim=True).clamp_min(_EPS)
        x_hat = x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)
        return x_hat @ c_hat.T
    return 2.0 * x @ centroids.T - centroids.pow(2).sum(1) - x.pow(2).sum(1, keepdim=True)


def lws_logits(x: Tensor, weight: Tensor, bias: Tensor | None, scales: Tensor) -> Tensor:
    """Learnable-weight-scaling logits ``z_i = s_i (w_i . x + b_i)`` (Kang et al. ICLR 2020).

    Args:
        x: ``[N, d]``.
        weight: ``[K, d]`` frozen classifier weight.
        bias: ``[K]`` frozen bias or ``None``.
        scales: ``[K]`` per-class scales.

    Returns:
        ``[N, K]``.
    """
    _check_matrix("weight", weight)
    if scales.shape != (weight.shape[0],):
        raise ValueError(f"scales must have shape [{weight.shape[0]}], got {tuple(scales.shape)}")
    return F.linear(x, weight, bias) * scales


# The implicit-ETF solver (an autograd.Function with its pymanopt path) lives in its own module;
# re-exported here, where DESIGN.md names it. Imported last: nearest_etf needs nothing from this file.
from lt_lightning.nn.nearest_etf import nearest_simplex_etf  # noqa: E402

__all__ += ["nearest_simplex_etf"]
