"""SAE training and metrics: a known sparse dictionary is recovered, decoder rows stay at unit norm, resampling and
AuxK revive dead latents, the metrics equal hand computations (loss recovered against hand-written hooks on
modadd-113), the bar shows L0 and loss, and bad input is refused in one line."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mechwork
from mechwork.analysis.sae import SAE, SAEConfig
from mechwork.analysis.saemetrics import activation_metrics, evaluate_sae
from mechwork.analysis.saetrain import SAETrainConfig, collect_activations, train_sae
from mechwork.errors import MechworkError
from mechwork.kit import find_preset

HOOK = "blocks.0.mlp.hook_post"


def sparse_data(n: int = 8192, d: int = 16, n_features: int = 32, p: float = 0.06, seed: int = 123
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations built from a known dictionary: each is a sparse non-negative mix of ``n_features`` unit
    directions (each on with probability p, at a uniform(0, 1) size)."""
    g = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(n_features, d, generator=g)
    dictionary = dictionary / dictionary.norm(dim=-1, keepdim=True)
    coef = (torch.rand(n, n_features, generator=g) < p) * torch.rand(n, n_features, generator=g)
    return coef @ dictionary, dictionary


def mean_max_cosine(decoder: torch.Tensor, truth: torch.Tensor) -> float:
    """For each true direction, the best |cosine| with any decoder row, averaged: explicit loops."""
    best = []
    for t in truth:
        cos = [float(torch.dot(t, r)) / (float(t.norm()) * float(r.norm())) for r in decoder]
        best.append(max(cos))
    return sum(best) / len(best)


def never_fire(sae: SAE, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int((~(sae.encode(x) > 0).any(0)).sum())


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, truth = sparse_data()
    # the SAEs below start from SAE(seed=0..9): none of their random rows is already a true direction
    for seed in range(10):
        assert mean_max_cosine(SAE(SAEConfig(d_in=16, d_sae=64), seed=seed).W_dec.detach(), truth) < 0.8
    return x, truth


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_training_recovers_a_known_sparse_dictionary(data, arch):
    x, truth = data
    cfg = SAEConfig(d_in=16, d_sae=64, architecture=arch, k=4 if arch == "topk" else None)
    train = SAETrainConfig(steps=1500, batch_size=256, lr=3e-3, l1_coefficient=0.3, log_every=100)
    out = train_sae(x, cfg, train, quiet=True)
    h = out.history
    assert h["step"][-1] == 1500 and len(h["loss"]) == 15
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    mmc = mean_max_cosine(out.sae.W_dec.detach(), truth)
    print(f"{arch}: mean max cosine to the true dictionary {mmc:.3f}, final L0 {h['l0'][-1]:.2f}")
    assert mmc > 0.9
    # decoder rows at unit norm, by hand
    for row in out.sae.W_dec.detach():
        assert abs(math.sqrt(sum(float(v) ** 2 for v in row)) - 1.0) < 1e-5
    if arch == "topk":
        assert h["l0"][-1] <= 4.0 + 1e-6
    m = activation_metrics(out.sae, x)
    assert m.fve > 0.8 and m.l0 == pytest.approx(h["l0"][-1], rel=0.25)


def test_a_random_sae_reconstructs_much_worse(data):
    """The recovery threshold can fail: an untrained SAE's decoder is far from the dictionary."""
    _, truth = data
    assert mean_max_cosine(SAE(SAEConfig(d_in=16, d_sae=64), seed=5).W_dec.detach(), truth) < 0.8
    assert mean_max_cosine(truth + 0.01 * SAE(SAEConfig(d_in=16, d_sae=32), seed=5).W_dec.detach(), truth) > 0.99


def test_resampling_revives_dead_latents(data):
    x, _ = data
    cfg = SAEConfig(d_in=16, d_sae=32)
    init = SAE(cfg, seed=0)
    with torch.no_grad():
        init.b_enc[:8] = -50.0  # latents 0-7 can never fire
    assert never_fire(init, x) >= 8
    runs = {}
    for every in (0, 50):
        train = SAETrainConfig(steps=300, batch_size=256, lr=3e-3, l1_coefficient=3e-2, dead_after=30,
                               resample_every=every, log_every=50)
        runs[every] = train_sae(x, cfg, train, quiet=True, init=init)
    assert float(init.b_enc[0].detach()) == -50.0  # init is not changed
    with torch.no_grad():
        fired_without = (runs[0].sae.encode(x) > 0).any(0)[:8]
        fired_with = (runs[50].sae.encode(x) > 0).any(0)[:8]
    assert not fired_without.any()
    assert fired_with.all()
    assert runs[0].history["dead"][-1] >= 8 and runs[50].history["dead"][-1] == 0


def test_auxk_leaves_fewer_dead_latents(data):
    x, _ = data
    cfg = SAEConfig(d_in=16, d_sae=128, architecture="topk", k=4)
    dead = {}
    for aux_k in (0, None):
        train = SAETrainConfig(steps=1000, batch_size=256, lr=3e-3, dead_after=50, aux_k=aux_k, log_every=250)
        dead[aux_k] = never_fire(train_sae(x, cfg, train, quiet=True).sae, x)
    print(f"latents that never fire: without AuxK {dead[0]}, with AuxK {dead[None]} of 128")
    assert dead[None] < dead[0]


# -- metrics against hand computations -------------------------------------------------------------------------------
def test_activation_metrics_against_explicit_loops():
    g = torch.Generator().manual_seed(3)
    sae = SAE(SAEConfig(d_in=5, d_sae=12), seed=1)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(12, generator=g))
        sae.b_enc[0] = -100.0  # dead
        sae.b_enc[1] = 100.0  # fires on everything
        sae.b_dec.copy_(torch.randn(5, generator=g))
    x = torch.randn(40, 5, generator=g)
    m = activation_metrics(sae, x, dense_threshold=0.3, batch_size=7)
    with torch.no_grad():
        f, r = sae.encode(x), sae(x)
    n, d_sae = x.shape[0], 12
    nonzero = sum(1 for i in range(n) for j in range(d_sae) if float(f[i, j]) != 0.0)
    mean = [sum(float(x[i, k]) for i in range(n)) / n for k in range(5)]
    sse = sum((float(x[i, k]) - float(r[i, k])) ** 2 for i in range(n) for k in range(5))
    sst = sum((float(x[i, k]) - mean[k]) ** 2 for i in range(n) for k in range(5))
    fires = [sum(1 for i in range(n) if float(f[i, j]) > 0) for j in range(d_sae)]
    assert m.l0 == pytest.approx(nonzero / n, abs=1e-12)
    assert m.fve == pytest.approx(1 - sse / sst, rel=1e-6)
    assert m.mse == pytest.approx(sse / n, rel=1e-6)
    assert m.n_dead == sum(1 for c in fires if c == 0) >= 1
    assert m.n_dense == sum(1 for c in fires if c / n > 0.3) >= 1
    assert m.dead_fraction == m.n_dead / 12 and m.n_activations == 40
    assert [round(float(v) * n) for v in m.frequency] == fires
    assert math.isnan(m.loss_recovered) and "L0" in m.summary()


@pytest.fixture(scope="module")
def modadd():
    torch.manual_seed(0)
    model = mechwork.load("modadd-113").eval()
    batch = find_preset("modadd-113").task.batch("test")
    small = type(batch)(batch.tokens[:600], batch.targets[:600], batch.mask[:600])
    return model, small


def test_collect_activations_equals_the_cache(modadd):
    model, b = modadd
    _, cache = model.run_with_cache(b.tokens[:50], names_filter=lambda n: n == HOOK)
    ref = cache[HOOK]
    last = torch.zeros_like(b.mask[:50])
    last[:, -1] = True
    got = collect_activations(model, HOOK, b.tokens[:50], mask=last)
    assert got.shape == (50, 512) and torch.equal(got, ref[:, -1])
    every = collect_activations(model, HOOK, b.tokens[:50], batch_size=7)  # chunks: equal up to matmul rounding
    assert every.shape == (150, 512) and torch.allclose(every, ref.reshape(-1, 512), atol=1e-5, rtol=1e-5)


def test_loss_recovered_against_hand_written_hooks_on_modadd(modadd):
    model, b = modadd
    assert bool(b.mask[:, -1].all()) and not bool(b.mask[:, :-1].any())  # the loss is on the '=' position only
    acts = collect_activations(model, HOOK, b.tokens, mask=b.mask)
    cfg = SAEConfig(d_in=512, d_sae=256, architecture="topk", k=16, hook_name=HOOK, model_name="modadd-113")
    sae = train_sae(acts, cfg, SAETrainConfig(steps=120, batch_size=200, lr=3e-3, log_every=60), quiet=True).sae
    m = evaluate_sae(model, sae, b, batch_size=256)

    W_enc, b_enc, W_dec, b_dec = (p.detach() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))

    def by_hand(x: torch.Tensor) -> torch.Tensor:
        pre = (x - b_dec) @ W_enc + b_enc
        vals, idx = pre.topk(16, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, vals.relu()) @ W_dec + b_dec

    def at_last(fn):
        def hook(act, hook):
            act = act.clone()
            act[:, -1] = fn(act[:, -1])
            return act
        return hook

    def ce(logits: torch.Tensor) -> float:
        return float(F.cross_entropy(logits[:, -1].double(), b.targets[:, -1]))

    with torch.no_grad():
        clean = ce(model(b.tokens))
        spliced = ce(model.run_with_hooks(b.tokens, fwd_hooks=[(HOOK, at_last(by_hand))]))
        zero = ce(model.run_with_hooks(b.tokens, fwd_hooks=[(HOOK, at_last(torch.zeros_like))]))
    recovered = (zero - spliced) / (zero - clean)
    print(f"modadd-113 {HOOK}: loss recovered {m.loss_recovered:.4f} (hand {recovered:.4f}), L0 {m.l0:.1f}, "
          f"FVE {m.fve:.3f}")
    assert m.clean_loss == pytest.approx(clean, rel=1e-4, abs=1e-7)
    assert m.sae_loss == pytest.approx(spliced, rel=1e-4)
    assert m.zero_loss == pytest.approx(zero, rel=1e-4)
    assert m.loss_recovered == pytest.approx(recovered, abs=1e-4)
    assert 0.0 < m.loss_recovered <= 1.0 and m.l0 <= 16
    assert m.n_activations == len(b)


# -- the bar ---------------------------------------------------------------------------------------------------------
def test_the_bar_shows_l0_and_loss(data, capsys, monkeypatch):
    x, _ = data
    cfg = SAEConfig(d_in=16, d_sae=32, architecture="topk", k=3)
    train = SAETrainConfig(steps=40, batch_size=128, log_every=10)
    monkeypatch.delenv("MECHWORK_QUIET", raising=False)
    train_sae(x, cfg, train)
    err = capsys.readouterr().err
    assert "L0=" in err and "loss=" in err and "40/40" in err
    train_sae(x, cfg, train, quiet=True)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("MECHWORK_QUIET", "1")
    train_sae(x, cfg, train)
    assert capsys.readouterr().err == ""


def test_history_figure_and_summary(data):
    x, _ = data
    out = train_sae(x, SAEConfig(d_in=16, d_sae=32), SAETrainConfig(steps=20, batch_size=64, log_every=10),
                    quiet=True)
    assert list(out.to_frame()["step"]) == [10, 20]
    assert "standard SAE 16->32" in out.summary()
    layout = out.figure().to_plotly_json()["layout"]
    for axis in ("xaxis", "xaxis2", "xaxis3", "yaxis", "yaxis2", "yaxis3"):
        assert layout[axis]["title"]["text"]


# -- bad input, one line each ----------------------------------------------------------------------------------------
def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, MechworkError), msg
    return msg


def test_d_in_mismatch_names_both_widths(modadd, data):
    model, b = modadd
    sae = SAE(SAEConfig(d_in=128, d_sae=256, hook_name=HOOK))
    with pytest.raises(MechworkError) as e:
        evaluate_sae(model, sae, b)
    msg = _one_line(e)
    assert "d_in=128" in msg and "width 512" in msg and HOOK in msg
    acts = collect_activations(model, HOOK, b.tokens[:20], mask=b.mask[:20])
    with pytest.raises(MechworkError) as e:
        train_sae(acts, SAEConfig(d_in=128, d_sae=256, hook_name=HOOK), quiet=True)
    msg = _one_line(e)
    assert "d_in=128" in msg and "width 512" in msg and HOOK in msg
    with pytest.raises(MechworkError) as e:
        train_sae(data[0], SAEConfig(d_in=15, d_sae=32), quiet=True)
    assert "d_in=15" in _one_line(e) and "width 16" in str(e.value)


def test_unknown_hook_names_the_nearest(modadd):
    model, b = modadd
    with pytest.raises(MechworkError) as e:
        collect_activations(model, "blocks.0.mlp.hook_pots", b.tokens[:4])
    assert "'blocks.0.mlp.hook_post'" in _one_line(e) and "'blocks.0.mlp.hook_pots'" in str(e.value)
    with pytest.raises(MechworkError) as e:
        evaluate_sae(model, SAE(SAEConfig(d_in=512, d_sae=8, hook_name="blocks.0.hook_mlp_pst")), b)
    assert "nearest" in _one_line(e)


def test_topk_k_above_d_sae_is_refused(data):
    with pytest.raises(MechworkError) as e:
        train_sae(data[0], SAEConfig(d_in=16, d_sae=32, architecture="topk", k=33), quiet=True)
    msg = _one_line(e)
    assert "'k'" in msg and "d_sae=32" in msg and "(got 33)" in msg


@pytest.mark.parametrize("l1", [0.0, -0.01, float("nan")])
def test_non_positive_l1_coefficient_is_refused(l1):
    with pytest.raises(MechworkError) as e:
        SAETrainConfig(l1_coefficient=l1)
    assert "'l1_coefficient' must be a finite number > 0" in _one_line(e)


def test_train_mode_is_refused(modadd):
    model, b = modadd
    model.train()
    try:
        with pytest.raises(MechworkError) as e:
            collect_activations(model, HOOK, b.tokens[:4])
        assert "eval mode" in _one_line(e)
    finally:
        model.eval()


@pytest.mark.parametrize("arch", ["topk", "standard"])
def test_the_training_forward_equals_the_sae(data, arch):
    """train_sae's loss (TopK decodes by a gather) is the SAE's own forward: same MSE, L0 and firing latents."""
    from mechwork.analysis.saetrain import _losses

    x = data[0][:300]
    sae = SAE(SAEConfig(d_in=16, d_sae=64, architecture=arch, k=5 if arch == "topk" else None), seed=3)
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-0.5, 0.2, 64))
        sae.b_dec.copy_(x.mean(0))
        _, mse, _, fired, l0 = _losses(sae, x, None, SAETrainConfig(), 1e-3)
        f = sae.encode(x)
        assert float(mse) == pytest.approx(float((sae(x) - x).pow(2).sum(-1).mean()), rel=1e-5)
        assert torch.equal(fired, (f > 0).any(0)) and float(l0) == pytest.approx(float((f > 0).sum(-1).float().mean()))
