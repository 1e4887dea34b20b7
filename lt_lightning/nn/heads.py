"""Classifier heads: thin stateful wrappers around :mod:`lt_lightning.nn.functional`.

Every head has ``num_classes`` (K), ``in_features`` (d), ``weight -> [K, d]`` and ``bias -> [K] | None``
(the effective linear classifier, read by the NC metrics) and ``forward(features [N, d]) -> [N, K]``.
Stateful tensors (ETF, moving average, frozen stage-1 weights, scales, centroids) are buffers or
parameters, so checkpoints restore them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol, get_args, runtime_checkable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

import lt_lightning.nn.functional as LF

__all__ = [
    "LINEAR_INITS",
    "NECK_MODES",
    "CausalNormHead",
    "ClassifierHead",
    "ETFHead",
    "FeatureNeck",
    "LWSHead",
    "LinearHead",
    "LinearInit",
    "NCMHead",
    "NeckMode",
    "NormedLinearHead",
    "TauNormHead",
]


@runtime_checkable
class ClassifierHead(Protocol):
    """What every head offers (``isinstance`` checks the attribute names only)."""

    num_classes: int
    in_features: int

    @property
    def weight(self) -> Tensor: ...

    @property
    def bias(self) -> Tensor | None: ...

    def __call__(self, features: Tensor) -> Tensor: ...


def _check_dims(in_features: object, num_classes: object) -> tuple[int, int]:
    for name, v in (("in_features", in_features), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(in_features), int(num_classes)  # type: ignore[arg-type]


def _check_input(features: Tensor, in_features: int) -> None:
    if features.ndim != 2 or features.shape[1] != in_features:
        raise ValueError(f"expected features [N, {in_features}], got {tuple(features.shape)}")


#: the ``init`` values of :class:`LinearHead`
LinearInit = Literal["default", "kaiming_normal"]
LINEAR_INITS: tuple[str, ...] = get_args(LinearInit)


class LinearHead(nn.Linear):
    """Learnable linear classifier (joint training, cRT). ``reset_parameters()`` re-initialises it.

    Args:
        in_features: d.
        num_classes: K.
        bias: learn a bias.
        init: ``"default"`` (PyTorch's ``nn.Linear`` init) or ``"kaiming_normal"``: the weight drawn by
            ``nn.init.kaiming_normal_`` (fan-in, gain √2), the bias left at PyTorch's init, as
            kaidic/LDAM-DRW's ``models/resnet_cifar.py`` ``_weights_init`` and Yang's ``Classifier``.
    """

    def __init__(
        self, in_features: int, num_classes: int, bias: bool = True, init: LinearInit = "default"
    ) -> None:
        if init not in LINEAR_INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(LINEAR_INITS)}")
        d, k = _check_dims(in_features, num_classes)
        super().__init__(d, k, bias=bias)
        self.init = init
        if init != "default":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "init", "default") == "kaiming_normal":
            nn.init.kaiming_normal_(self.weight)

    @property
    def num_classes(self) -> int:
        return self.out_features

    def forward(self, features: Tensor) -> Tensor:
        _check_input(features, self.in_features)
        return F.linear(features, self.weight, self.bias)


#: the ``neck`` values of :class:`FeatureNeck` (the CLI types every ``neck`` option with it)
NeckMode = Literal["none", "bn", "l2", "bn_l2"]
NECK_MODES: tuple[str, ...] = get_args(NeckMode)


class FeatureNeck(nn.Module):
    """Feature normalisation between backbone and classifier (Yang et al. NeurIPS 2022).

    ``"bn_l2"``: BatchNorm1d(d) then L2-normalise rows (Yang, CIFAR); ``"bn"``: BatchNorm only (Yang,
    ImageNet); ``"l2"``: L2 only; ``"none"``: identity. The output is multiplied by ``scale`` (e.g. a
    feature temperature). Part of ``extract_features`` (the NC features), not of the head.

    Args:
        in_features: d.
        mode: one of ``"none"``, ``"bn"``, ``"l2"``, ``"bn_l2"``.
        scale: constant factor applied last.
    """

    def __init__(self, in_features: int, mode: str = "bn_l2", scale: float = 1.0) -> None:
        super().__init__()
        if mode not in NECK_MODES:
            raise ValueError(f"mode must be one of {NECK_MODES}, got {mode!r}")
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.mode = mode
        self.scale = float(scale)
        self.in_features = self.out_features = in_features
        self.bn = nn.BatchNorm1d(in_features) if mode in ("bn", "bn_l2") else None

    def forward(self, features: Tensor) -> Tensor:
        if self.bn is not None:
            features = self.bn(features)
        if self.mode in ("l2", "bn_l2"):
            features = F.normalize(features, dim=1)
        if self.scale != 1.0:
            features = features * self.scale
        return features


class ETFHead(nn.Module):
    """Fixed simplex-ETF classifier (Yang et al. NeurIPS 2022; Zhu et al. NeurIPS 2021).

    The ETF (:func:`~lt_lightning.nn.functional.simplex_etf`, seeded by ``seed`` through a local
    generator) is the frozen buffer ``etf`` and is also ``weight``. ``bias`` is a zero-initialised
    parameter with ``learnable_bias`` (Zhu), else ``None``. Logits ``h @ etf.T + bias``. The ETF
    buffer stays float32 under mixed precision (autocast multiplies a half-precision copy), so the
    geometry itself is never rounded.

    Args:
        in_features: d >= K - 1.
        num_classes: K >= 2.
        etf: ``"random"`` (random rotation, Yang) or ``"canonical"`` (Zhu).
        learnable_bias: add a learnable bias.
        seed: seed of the random rotation.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        etf: str = "random",
        learnable_bias: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        d, k = _check_dims(in_features, num_classes)
        if etf not in ("random", "canonical"):
            raise ValueError(f"etf must be 'random' or 'canonical', got {etf!r}")
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer("etf", LF.simplex_etf(k, d, generator=gen, canonical=etf == "canonical"))
        if learnable_bias:
            self.bias = nn.Parameter(torch.zeros(k))
        else:
            self.register_parameter("bias", None)
        self.in_features = d
        self.num_classes = k
        self.etf_kind = etf

    @property
    def weight(self) -> Tensor:
        return self.etf

    def forward(self, features: Tensor) -> Tensor:
        _check_input(features, self.in_features)
        return F.linear(features, self.etf, self.bias)


class CausalNormHead(nn.Module):
    """Multi-head causal-norm classifier with TDE inference (Tang et al. NeurIPS 2020).

    ``weight`` ``[K, d]`` is initialised uniformly in ``(-1/sqrt(d), 1/sqrt(d))`` (``nn.Linear``'s
    Kaiming-uniform, which is also the authors' ``uniform_(-stdv, stdv)``, ``stdv = 1/sqrt(d)``); no bias.
    The buffer ``embed`` ``[d]`` is the moving-average feature, updated by :meth:`update_embed` during
    training (the module's training step calls it; ``forward`` never changes state).

    Args:
        in_features: d (divisible by ``num_heads``).
        num_classes: K.
        num_heads: H.
        tau: logit scale.
        gamma: weight-norm offset.
        momentum: mu of the moving average, in [0, 1].
        alpha: TDE strength used in evaluation mode, >= 0.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        num_heads: int = 2,
        tau: float = 16.0,
        gamma: float = 1 / 32,
        momentum: float = 0.9,
        alpha: float = 0.0,
    ) -> None:
        super().__init__()
        d, k = _check_dims(in_features, num_classes)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if d % num_heads != 0:
            raise ValueError(f"num_heads={num_heads} must divide in_features={d}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.in_features = d
        self.num_classes = k
        self.num_heads = num_heads
        self.tau = float(tau)
        self.gamma = float(gamma)
        self.momentum = float(momentum)
        self.alpha = float(alpha)
        self.weight = nn.Parameter(torch.empty(k, d))
        self.register_parameter("bias", None)
        self.register_buffer("embed", torch.zeros(d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @torch.no_grad()
    def update_embed(self, features: Tensor) -> None:
        """``embed <- momentum * embed + mean_batch(features)`` (Tang's code: a decayed sum, no 1 - mu).

        Under ``torch.distributed`` the batch mean is averaged over ranks first (an all-reduce, no host
        sync), so every rank holds the same ``embed``.
        """
        _check_input(features, self.in_features)
        mean = features.detach().to(self.embed.dtype).mean(0)  # averaged in float32 under mixed precision
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(mean, op=dist.ReduceOp.SUM)
            mean /= dist.get_world_size()
        self.embed.mul_(self.momentum).add_(mean)

    def _parts(self, features: Tensor, with_embed: bool) -> tuple[Tensor, Tensor | None]:
        _check_input(features, self.in_features)
        # The per-head normalisations and the tau-scaled cosine products run in float32 even under
        # mixed precision: a bfloat16 cosine (8 mantissa bits) times tau = 16 moves logits by ~0.06,
        # and the head is a [N, d] x [d, K] product, small next to the backbone.
        dtype = torch.promote_types(features.dtype, self.weight.dtype)
        with torch.autocast(features.device.type, enabled=False):
            return LF.causal_norm_logit_parts(
                features.to(dtype),
                self.weight.to(dtype),
                num_heads=self.num_heads,
                tau=self.tau,
                gamma=self.gamma,
                embed=self.embed.to(dtype) if with_embed else None,
            )

    def forward(self, features: Tensor, *, counterfactual: bool | None = None) -> Tensor:
        """Causal-norm logits; TDE logits (with ``self.alpha``) when ``counterfactual``.

        ``counterfactual=None`` means: TDE in evaluation mode when ``alpha > 0``, plain in training.
        """
        if counterfactual is None:
            counterfactual = not self.training and self.alpha > 0
        if not counterfactual or self.alpha == 0:
            return self._parts(features, with_embed=False)[0]
        plain, cf = self._parts(features, with_embed=True)
        return plain - self.alpha * cf

    def logits_for_alphas(self, features: Tensor, alphas: Sequence[float]) -> Tensor:
        """TDE logits ``[A, N, K]`` for every alpha of a sweep, sharing the normalisations.

        ``logits(alpha) = plain - alpha * counterfactual`` (:func:`causal_norm_logit_parts`).
        """
        alphas = [float(a) for a in alphas]
        if not alphas or min(alphas) < 0:
            raise ValueError(f"alphas must be a non-empty sequence of values >= 0, got {alphas}")
        plain, cf = self._parts(features, with_embed=True)
        a = torch.tensor(alphas, dtype=plain.dtype, device=plain.device).view(-1, 1, 1)
        return plain.unsqueeze(0) - a * cf.unsqueeze(0)


class LWSHead(nn.Module):
    """Learnable weight scaling (Kang et al. ICLR 2020): ``z_i = s_i (w_i . x + b_i)``.

    ``weight``/``bias`` of the stage-1 classifier are frozen copies (buffers ``base_weight``,
    ``base_bias``); only ``scales`` ``[K]`` (init 1) is learnt. The ``weight``/``bias`` properties are
    the effective classifier ``s[:, None] * W`` and ``s * b``.

    Args:
        weight: ``[K, d]`` stage-1 weight.
        bias: ``[K]`` stage-1 bias or ``None``.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        LF._check_matrix("weight", weight)
        k, d = weight.shape
        if bias is not None and bias.shape != (k,):
            raise ValueError(f"bias must have shape [{k}], got {tuple(bias.shape)}")
        self.register_buffer("base_weight", weight.detach().clone())
        self.register_buffer("base_bias", None if bias is None else bias.detach().clone())
        self.scales = nn.Parameter(torch.ones(k, dtype=weight.dtype, device=weight.device))
        self.in_features = d
        self.num_classes = k

    @classmethod
    def from_linear(cls, linear: nn.Module) -> LWSHead:
        """From any head with ``weight``/``bias`` (e.g. a stage-1 :class:`LinearHead`)."""
        return cls(linear.weight, linear.bias)

    @property
    def weight(self) -> Tensor:
        return self.scales.unsqueeze(1) * self.base_weight

    @property
    def bias(self) -> Tensor | None:
        return None if self.base_bias is None else self.scales * self.base_bias

    def forward(self, features: Tensor) -> Tensor:
        _check_input(features, self.in_features)
        return LF.lws_logits(features, self.base_weight, self.base_bias, self.scales)


class TauNormHead(nn.Module):
    """tau-normalised classifier (Kang et al. ICLR 2020): ``w_i / ||w_i||^tau``, no bias, no training.

    Buffers: ``base_weight`` (the stage-1 weight), ``tau`` (0-d) and ``weight`` (the normalised one);
    :meth:`set_tau` recomputes ``weight`` from ``base_weight``.

    Args:
        weight: ``[K, d]`` stage-1 weight.
        tau: exponent >= 0.
    """

    bias = None

    def __init__(self, weight: Tensor, tau: float = 1.0) -> None:
        super().__init__()
        LF._check_matrix("weight", weight)
        k, d = weight.shape
        self.register_buffer("base_weight", weight.detach().clone())
        self.register_buffer("tau", torch.zeros(()))
        self.register_buffer("weight", torch.empty_like(self.base_weight))
        self.in_features = d
        self.num_classes = k
        self.set_tau(tau)

    @torch.no_grad()
    def set_tau(self, tau: float) -> None:
        """Set tau (>= 0) and recompute ``weight``."""
        self.weight.copy_(LF.tau_normalize(self.base_weight, tau))
        self.tau.fill_(float(tau))

    def forward(self, features: Tensor) -> Tensor:
        _check_input(features, self.in_features)
        return features @ self.weight.T


class NCMHead(nn.Module):
    """Nearest-class-mean classifier (Kang et al. ICLR 2020); see :func:`~lt_lightning.nn.functional.ncm_logits`.

    Buffers ``centroids`` ``[K, d]`` and ``global_mean`` ``[d]`` (or ``None``). The effective linear
    classifier acts on the *transformed* features x (centred, L2-normalised as configured): for the
    Euclidean score ``-||x - c||^2 = 2 c.x - ||c||^2 - ||x||^2`` the last term does not depend on the
    class, so ``weight = 2 C`` and ``bias = -||c||^2``; for the cosine score ``weight`` = the unit
    centroids and ``bias = None`` (on unit-normalised x).

    Args:
        centroids: ``[K, d]``, from :func:`~lt_lightning.nn.functional.class_centroids`.
        global_mean: ``[d]`` subtracted from features, or ``None``.
        normalize: L2-normalise features after centring.
        metric: ``"euclidean"`` or ``"cosine"``.
    """

    def __init__(
        self,
        centroids: Tensor,
        global_mean: Tensor | None = None,
        normalize: bool = True,
        metric: str = "euclidean",
    ) -> None:
        super().__init__()
        LF._check_matrix("centroids", centroids)
        LF._check_metric(metric)
        k, d = centroids.shape
        if global_mean is not None and global_mean.shape != (d,):
            raise ValueError(f"global_mean must have shape [{d}], got {tuple(global_mean.shape)}")
        self.register_buffer("centroids", centroids.detach().clone())
        self.register_buffer("global_mean", None if global_mean is None else global_mean.detach().clone())
        self.normalize = bool(normalize)
        self.metric = metric
        self.in_features = d
        self.num_classes = k

    @classmethod
    def from_features(
        cls,
        features: Tensor,
        labels: Tensor,
        num_classes: int,
        *,
        center: bool = True,
        normalize: bool = True,
        metric: str = "euclidean",
    ) -> NCMHead:
        """Kang's recipe from un-augmented training features: centre on their mean (``center``),
        L2-normalise (``normalize``), average per class."""
        global_mean = features.mean(0) if center else None
        centroids = LF.class_centroids(
            features, labels, num_classes, global_mean=global_mean, normalize=normalize
        )
        return cls(centroids, global_mean, normalize=normalize, metric=metric)

    @property
    def weight(self) -> Tensor:
        if self.metric == "cosine":
            return self.centroids / self.centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 2.0 * self.centroids

    @property
    def bias(self) -> Tensor | None:
        if self.metric == "cosine":
            return None
        return -self.centroids.pow(2).sum(1)

    def forward(self, features: Tensor) -> Tensor:
        _check_input(features, self.in_features)
        return LF.ncm_logits(
            features,
            self.centroids,
            global_mean=self.global_mean,
            normalize=self.normalize,
            metric=self.metric,
        )


class NormedLinearHead(nn.Module):
    """Cosine classifier of LDAM-DRW (Cao et al. NeurIPS 2019; kaidic/LDAM-DRW ``NormedLinear``).

    Logits ``cos(h, w_c) = (h / ||h||) . (w_c / ||w_c||)``, no bias; LDAM scales them by ``s``. The
    learnt ``raw_weight`` ``[K, d]`` starts with unit rows drawn uniformly from ``[-1, 1]`` and rescaled
    (the authors' ``uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)`` on their ``[d, K]`` layout).
    ``weight`` is the effective classifier, the unit rows, acting on L2-normalised features.

    Args:
        in_features: d.
        num_classes: K.
    """

    bias = None

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        d, k = _check_dims(in_features, num_classes)
        self.in_features = d
        self.num_classes = k
        self.raw_weight = nn.Parameter(torch.empty(k, d))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.raw_weight.uniform_(-1.0, 1.0)
        self.raw_weight.div_(self.raw_weight.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @property
    def weight(self) -> Tensor:
        return F.normalize(self.raw_weight, dim=1)

    def forward(self, features: Tensor) -> Tensor:
        _check_input(features, self.in_features)
        return F.normalize(features, dim=1) @ self.weight.T
