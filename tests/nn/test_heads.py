"""Classifier heads: the head protocol, state in buffers, and agreement with the functional maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from lt_lightning.nn import (
    CausalNormHead,
    ClassifierHead,
    ETFHead,
    FeatureNeck,
    LinearHead,
    LWSHead,
    NCMHead,
    NormedLinearHead,
    TauNormHead,
)
from lt_lightning.nn.functional import (
    causal_norm_logits,
    class_centroids,
    ncm_logits,
    ncm_transform,
    simplex_etf,
    tau_normalize,
)

D, K, N = 8, 5, 6


def _feats(n: int = N, d: int = D, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _all_heads() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    w, b = torch.randn(K, D), torch.randn(K)
    labels = torch.arange(20) % K
    return {
        "linear": LinearHead(D, K),
        "linear_nobias": LinearHead(D, K, bias=False),
        "etf": ETFHead(D, K),
        "etf_bias": ETFHead(D, K, etf="canonical", learnable_bias=True),
        "causal_norm": CausalNormHead(D, K, alpha=1.0),
        "lws": LWSHead(w, b),
        "lws_nobias": LWSHead(w, None),
        "tau_norm": TauNormHead(w, 0.5),
        "ncm": NCMHead.from_features(_feats(20, seed=1), labels, K),
        "ncm_cosine": NCMHead.from_features(_feats(20, seed=1), labels, K, center=False, metric="cosine"),
    }


@pytest.mark.parametrize("name", list(_all_heads()))
@pytest.mark.parametrize("training", [True, False])
def test_head_protocol(name: str, training: bool) -> None:
    head = _all_heads()[name].train(training)
    assert isinstance(head, ClassifierHead)
    assert head.num_classes == K and head.in_features == D
    assert head.weight.shape == (K, D)
    assert head.bias is None or head.bias.shape == (K,)
    logits = head(_feats())
    assert logits.shape == (N, K) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match=f"\\[N, {D}\\]"):
        head(torch.randn(N, D + 1))


@pytest.mark.parametrize(
    "name", ["linear", "linear_nobias", "etf", "etf_bias", "lws", "lws_nobias", "tau_norm"]
)
def test_weight_and_bias_are_the_effective_linear_classifier(name: str) -> None:
    head = _all_heads()[name]
    x = _feats()
    expected = F.linear(x, head.weight, head.bias)
    assert torch.allclose(head(x), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["linear", "etf_bias", "causal_norm", "lws", "tau_norm", "ncm"])
def test_state_dict_roundtrip(name: str) -> None:
    head = _all_heads()[name]
    with torch.no_grad():  # perturb every learnt/stateful tensor so a fresh head differs
        for t in [*head.parameters(), *(b for b in head.buffers() if b.is_floating_point())]:
            t.add_(torch.randn_like(t) * 0.1)
    fresh = _all_heads()[name]
    fresh.load_state_dict(head.state_dict())
    x = _feats(seed=9)
    head.eval()
    fresh.eval()
    assert torch.allclose(fresh(x), head(x))


# ----------------------------------------------------------------------------------------------------
# LinearHead / FeatureNeck


def test_linear_head_reset_parameters() -> None:
    head = LinearHead(D, K)
    before = head.weight.detach().clone()
    head.reset_parameters()
    assert not torch.allclose(before, head.weight)
    assert isinstance(head, nn.Linear)
    with pytest.raises(ValueError, match="num_classes"):
        LinearHead(D, 0)


@pytest.mark.parametrize("mode", ["none", "bn", "l2", "bn_l2"])
def test_feature_neck_modes(mode: str) -> None:
    neck = FeatureNeck(D, mode)
    x = _feats(16) * 5 + 3
    out = neck(x)
    ref = x
    if mode in ("bn", "bn_l2"):  # train mode: batch statistics, biased variance (BN init: gamma 1, beta 0)
        ref = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + neck.bn.eps)
    if mode in ("l2", "bn_l2"):
        ref = ref / ref.norm(dim=1, keepdim=True)
    assert torch.allclose(out, ref, atol=1e-5)
    assert neck.out_features == D
    assert (neck.bn is not None) == (mode in ("bn", "bn_l2"))


def test_feature_neck_scale_and_errors() -> None:
    out = FeatureNeck(D, "l2", scale=5.0)(_feats())
    assert torch.allclose(out.norm(dim=1), torch.full((N,), 5.0))
    with pytest.raises(ValueError, match="mode"):
        FeatureNeck(D, "layernorm")
    with pytest.raises(ValueError, match="scale"):
        FeatureNeck(D, "l2", scale=0.0)


# ----------------------------------------------------------------------------------------------------
# ETFHead


def test_etf_head_buffer_frozen_and_saved() -> None:
    head = ETFHead(D, K, seed=3)
    assert "etf" in head.state_dict() and "etf" in dict(head.named_buffers())
    assert "etf" not in dict(head.named_parameters())
    assert not head.etf.requires_grad and head.weight is head.etf
    assert list(head.parameters()) == [] and head.bias is None
    assert torch.equal(head.etf, simplex_etf(K, D, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(ETFHead(D, K, seed=3).etf, head.etf)
    assert not torch.allclose(ETFHead(D, K, seed=4).etf, head.etf)
    # loading a checkpoint restores the saved ETF even when the new head was built with another seed
    other = ETFHead(D, K, seed=99)
    other.load_state_dict(head.state_dict())
    assert torch.equal(other.etf, head.etf)


def test_etf_head_canonical_and_bias() -> None:
    head = ETFHead(D, K, etf="canonical", learnable_bias=True)
    assert torch.allclose(head.etf, simplex_etf(K, D, canonical=True))
    assert isinstance(head.bias, nn.Parameter) and torch.equal(head.bias, torch.zeros(K))
    head(_feats()).sum().backward()
    assert torch.allclose(head.bias.grad, torch.full((K,), float(N)))


def test_etf_head_errors() -> None:
    with pytest.raises(ValueError, match="fixdim"):
        ETFHead(8, 100)
    with pytest.raises(ValueError, match="etf"):
        ETFHead(D, K, etf="orthogonal")
    ETFHead(K - 1, K)  # d = K - 1 is allowed


# ----------------------------------------------------------------------------------------------------
# CausalNormHead


def test_causal_norm_head_init_and_buffers() -> None:
    head = CausalNormHead(D, K)
    assert head.weight.abs().max() <= 1 / math.sqrt(D)
    assert "embed" in head.state_dict() and torch.equal(head.embed, torch.zeros(D))
    assert [n for n, _ in head.named_parameters()] == ["weight"] and head.bias is None


def test_causal_norm_head_update_embed_vs_loop() -> None:
    head = CausalNormHead(D, K, momentum=0.7)
    ref = np.zeros(D)
    for step in range(4):
        x = _feats(3 + step, seed=step).requires_grad_(True)
        head.update_embed(x)
        ref = 0.7 * ref + x.detach().numpy().mean(0)  # decayed sum, no (1 - mu)
        assert not head.embed.requires_grad
    assert np.allclose(head.embed.numpy(), ref, atol=1e-6)


def test_causal_norm_head_forward_modes() -> None:
    head = CausalNormHead(D, K, num_heads=4, tau=10.0, gamma=0.1, alpha=1.5)
    head.update_embed(_feats(seed=5) + 1.0)
    x = _feats(seed=6)
    kw = {"num_heads": 4, "tau": 10.0, "gamma": 0.1}
    plain = causal_norm_logits(x, head.weight, **kw)
    tde = causal_norm_logits(x, head.weight, embed=head.embed, alpha=1.5, **kw)
    assert not torch.allclose(plain, tde)
    head.train()
    assert torch.allclose(head(x), plain)
    assert torch.allclose(head(x, counterfactual=True), tde, atol=1e-5)
    head.eval()
    assert torch.allclose(head(x), tde, atol=1e-5)
    assert torch.allclose(head(x, counterfactual=False), plain)
    head.alpha = 0.0
    assert torch.allclose(head(x), plain)


def test_causal_norm_head_forward_does_not_touch_embed() -> None:
    head = CausalNormHead(D, K).train()
    head(_feats())
    assert torch.equal(head.embed, torch.zeros(D))


def test_causal_norm_head_logits_for_alphas() -> None:
    head = CausalNormHead(D, K, alpha=1.0).eval()
    head.update_embed(_feats(seed=1) + 0.5)
    x = _feats(seed=2)
    alphas = [0.0, 0.5, 1.0, 2.5]
    sweep = head.logits_for_alphas(x, alphas)
    assert sweep.shape == (len(alphas), N, K)
    for i, a in enumerate(alphas):
        ref = (
            causal_norm_logits(x, head.weight, embed=head.embed, alpha=a)
            if a > 0
            else causal_norm_logits(x, head.weight)
        )
        assert torch.allclose(sweep[i], ref, atol=1e-5)
    with pytest.raises(ValueError, match="alphas"):
        head.logits_for_alphas(x, [])
    with pytest.raises(ValueError, match="alphas"):
        head.logits_for_alphas(x, [1.0, -0.5])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_heads": 3}, "divide"),
        ({"momentum": 1.5}, "momentum"),
        ({"alpha": -1.0}, "alpha"),
        ({"gamma": -1.0}, "gamma"),
        ({"num_heads": 0}, "num_heads"),
    ],
)
def test_causal_norm_head_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        CausalNormHead(D, K, **kwargs)


def _embed_worker(rank: int, world: int, tmp: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.FileStore(f"{tmp}/store", world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    try:
        head = CausalNormHead(4, 3, momentum=0.5)
        for step in range(2):
            feats = torch.full((2, 4), float(10 * step + rank))  # rank-dependent batches
            head.update_embed(feats)
        torch.save(head.embed, f"{tmp}/embed{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_causal_norm_head_update_embed_agrees_across_ranks(tmp_path) -> None:
    mp.start_processes(_embed_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    out = [torch.load(tmp_path / f"embed{r}.pt") for r in range(2)]
    # rank means 0 and 1 -> 0.5; then 10 and 11 -> 10.5: embed = 0.5 * 0.5 + 10.5
    assert torch.equal(out[0], out[1])
    assert torch.allclose(out[0], torch.full((4,), 0.5 * 0.5 + 10.5))


# ----------------------------------------------------------------------------------------------------
# LWS / tau-norm / NCM


def test_lws_head_scales_one_equals_linear_and_only_scales_learn() -> None:
    lin = LinearHead(D, K)
    lws = LWSHead.from_linear(lin)
    x = _feats()
    assert torch.allclose(lws(x), lin(x))
    assert [n for n, _ in lws.named_parameters()] == ["scales"]
    assert {"base_weight", "base_bias", "scales"} <= set(lws.state_dict())
    with torch.no_grad():
        lws.scales.copy_(torch.linspace(0.5, 2.0, K))
    s = lws.scales.detach()
    assert torch.allclose(lws(x), lin(x) * s)
    assert torch.allclose(lws.weight, s[:, None] * lin.weight) and torch.allclose(lws.bias, s * lin.bias)
    lws(x).sum().backward()
    assert lws.scales.grad is not None and lws.base_weight.grad is None
    # the stage-1 head is not tied to the copy
    with torch.no_grad():
        lin.weight.zero_()
    assert lws.base_weight.abs().sum() > 0


def test_lws_head_errors() -> None:
    with pytest.raises(ValueError, match="bias"):
        LWSHead(torch.randn(K, D), torch.randn(K + 1))


def test_tau_norm_head_set_tau() -> None:
    w = torch.randn(K, D) * torch.linspace(0.1, 3, K)[:, None]
    head = TauNormHead(w, 0.0)
    x = _feats()
    assert torch.allclose(head(x), x @ w.T, atol=1e-6)
    for tau in (0.3, 1.0, 2.0):
        head.set_tau(tau)
        assert torch.allclose(head.weight, tau_normalize(w, tau))
        assert torch.allclose(head(x), x @ tau_normalize(w, tau).T, atol=1e-6)
        assert float(head.tau) == pytest.approx(tau)
    assert {"base_weight", "tau", "weight"} <= set(head.state_dict())
    assert list(head.parameters()) == [] and head.bias is None
    with pytest.raises(ValueError, match="tau"):
        head.set_tau(-0.5)
    assert float(head.tau) == pytest.approx(2.0)  # a rejected tau leaves the head unchanged


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("center", [True, False])
def test_ncm_head_from_features_and_effective_classifier(metric: str, center: bool) -> None:
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2 + [3, 4])
    feats = _feats(labels.numel(), seed=4) + 1.0
    head = NCMHead.from_features(feats, labels, K, center=center, metric=metric)
    gm = feats.mean(0) if center else None
    assert torch.allclose(head.centroids, class_centroids(feats, labels, K, global_mean=gm))
    x = _feats(seed=8)
    assert torch.allclose(head(x), ncm_logits(x, head.centroids, global_mean=gm, metric=metric))
    xt = ncm_transform(x, global_mean=gm)
    linear = F.linear(xt, head.weight, head.bias)
    if metric == "euclidean":  # -||x - c||^2 = 2 c.x - ||c||^2 - ||x||^2
        assert torch.allclose(linear - xt.pow(2).sum(1, keepdim=True), head(x), atol=1e-5)
    else:
        assert torch.allclose(linear, head(x), atol=1e-5)
    assert torch.equal(linear.argmax(1), head(x).argmax(1))


def test_ncm_head_errors() -> None:
    with pytest.raises(ValueError, match="metric"):
        NCMHead(torch.randn(K, D), metric="l1")
    with pytest.raises(ValueError, match="global_mean"):
        NCMHead(torch.randn(K, D), global_mean=torch.zeros(D + 1))
    with pytest.raises(ValueError, match=r"\[4\]"):
        NCMHead.from_features(_feats(8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), K)


def test_normed_head_is_the_authors_cosine_classifier():
    head = NormedLinearHead(8, 4)
    torch.testing.assert_close(head.raw_weight.norm(dim=1), torch.ones(4))  # unit rows at init
    with torch.no_grad():
        head.raw_weight.mul_(torch.tensor([[1.0], [2.0], [0.5], [3.0]]))
    h = torch.randn(5, 8)
    # kaidic/LDAM-DRW NormedLinear on the [d, K] layout: normalize(x, dim=1) @ normalize(W.T, dim=0)
    ref = F.normalize(h, dim=1) @ F.normalize(head.raw_weight.T, dim=0)
    torch.testing.assert_close(head(h), ref)
    assert head.bias is None and head.weight.shape == (4, 8)


def test_causal_norm_head_stays_float32_under_autocast() -> None:
    head = CausalNormHead(16, 5, num_heads=2)
    head.embed.copy_(torch.randn(16))
    x = torch.randn(8, 16)
    head.eval()
    head.alpha = 1.0
    ref = head(x, counterfactual=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head(x, counterfactual=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)  # not bfloat16's ~1e-2
    with torch.autocast("cpu", dtype=torch.float16):  # what 16-mixed needs, checked on the CPU
        assert head(x.half()).dtype == torch.float32


def test_linear_head_kaiming_normal_init() -> None:
    # kaidic/LDAM-DRW models/resnet_cifar.py _weights_init: init.kaiming_normal_(m.weight) for nn.Linear
    # (fan-in, gain sqrt(2): std sqrt(2 / d)); the bias keeps PyTorch's U(-1/sqrt(d), 1/sqrt(d))
    d, k = 256, 400
    torch.manual_seed(0)
    head = LinearHead(d, k, init="kaiming_normal")
    w = head.weight.detach().double()
    assert abs(w.mean().item()) < 4 * (2 / d) ** 0.5 / (d * k) ** 0.5
    assert w.std().item() == pytest.approx((2 / d) ** 0.5, rel=0.02)
    assert head.bias.abs().max().item() <= 1 / d**0.5
    default = LinearHead(d, k)  # PyTorch's init: U(-1/sqrt(d), 1/sqrt(d)), std 1/sqrt(3d)
    assert default.weight.abs().max().item() <= 1 / d**0.5
    assert default.weight.std().item() == pytest.approx((1 / (3 * d)) ** 0.5, rel=0.02)
    torch.manual_seed(1)
    head.reset_parameters()  # re-initialises with the same rule
    assert head.weight.std().item() == pytest.approx((2 / d) ** 0.5, rel=0.02)
    with pytest.raises(ValueError, match="unknown init 'xavier'; valid: default, kaiming_normal"):
        LinearHead(d, k, init="xavier")  # type: ignore[arg-type]
