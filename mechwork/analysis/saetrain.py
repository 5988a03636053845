"""Training a sparse autoencoder on activations cached from one hook of a model.

:func:`collect_activations` runs a model and keeps the activation at one hook, flattened over the batch and the
positions a mask selects; :func:`train_sae` fits an :class:`~mechwork.analysis.sae.SAE` to such a matrix with Adam:

* the loss is the squared reconstruction error summed over ``d_in`` and averaged over the batch (SAELens's), plus
  ``l1_coefficient`` times the latents' L1 norm for a ReLU ("standard") SAE (Bricken et al. 2023), or, for a TopK SAE
  (Gao et al. 2024), ``aux_coefficient`` times the AuxK loss: the ``aux_k`` largest pre-activations of the dead
  latents reconstruct the main reconstruction's error;
* decoder rows are put back at unit norm after every step, and the part of their gradient parallel to the row is
  removed before it (as Anthropic and SAELens do);
* ``b_dec`` starts at the geometric median of the data (or its mean), the decoder at random unit rows and the
  encoder at the decoder's transpose;
* a latent that has not fired for ``dead_after`` steps is dead. A standard SAE resamples its dead latents every
  ``resample_every`` steps (Anthropic's recipe: the decoder row becomes the direction of an input drawn with
  probability proportional to its squared loss, the encoder row that direction at 0.2 times the mean live encoder
  norm, the bias 0, and Adam's moments of those rows are reset);
* a tqdm bar on stderr shows live L0 and loss (silent when ``quiet`` or ``MECHWORK_QUIET`` is set).

The history (loss, MSE, L0, dead count per logged step) is read on the logging steps only, and the dead set AuxK
uses is refreshed every ``DEAD_CHECK`` steps, so most steps cost no device-to-host synchronisation. Adam is torch's
fused kernel, and in training a TopK SAE decodes its k latents with a gather rather than a dense product.

Example::

    >>> import torch
    >>> from mechwork.analysis.sae import SAEConfig
    >>> g = torch.Generator().manual_seed(0)
    >>> acts = torch.relu(torch.randn(2048, 16, generator=g))
    >>> out = train_sae(acts, SAEConfig(d_in=16, d_sae=32, architecture="topk", k=4),
    ...                 SAETrainConfig(steps=50, batch_size=256, log_every=25), quiet=True)
    >>> out.history["step"], out.history["loss"][-1] < out.history["loss"][0]
    ([25, 50], True)
    >>> bool(torch.allclose(out.sae.W_dec.norm(dim=-1), torch.ones(32)))
    True
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechwork import bars
from mechwork.analysis.sae import SAE, SAEConfig
from mechwork.errors import ConfigError, check_counts, invalid
from mechwork.hooks import check_eval, check_hook_name
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["SAETrainConfig", "TrainedSAE", "check_width", "collect_activations", "train_sae"]

B_DEC_INITS = ("median", "mean", "zeros")
DEAD_CHECK = 25  # steps between updates of the dead latents AuxK uses (it is skipped while there are none)


@torch.no_grad()
def collect_activations(
    model: Any,
    hook_name: str,
    tokens: Int[Tensor, "batch pos"],
    *,
    mask: Bool[Tensor, "batch pos"] | None = None,
    batch_size: int = 256,
) -> Float[Tensor, "n d_in"]:
    """The activations at ``hook_name``, one row per (sequence, position) where ``mask`` is True (every position
    when ``mask`` is None), in row-major order, on the CPU. The model must be in eval mode."""
    check_eval(model, "collecting activations")
    hook_name = check_hook_name(hook_name, model.hook_dict)
    check_counts(batch_size=batch_size)
    if tokens.ndim != 2:
        raise invalid("tokens", "a [batch, pos] tensor of token ids", f"shape {tuple(tokens.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(tokens.shape):
        raise invalid("mask", f"a boolean tensor of the tokens' shape {tuple(tokens.shape)}",
                      f"shape {tuple(mask.shape)}")
    device = next(model.parameters()).device
    kept: list[Tensor] = []
    store: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: Any) -> None:
        store["act"] = act

    for i in range(0, tokens.shape[0], batch_size):
        model.run_with_hooks(tokens[i:i + batch_size].to(device), fwd_hooks=[(hook_name, grab)])
        act = store.pop("act")
        if act.ndim < 3:
            raise ConfigError(f"hook {hook_name!r} gives a {act.ndim}-d activation; an SAE reads [batch, pos, d] ones")
        act = act.reshape(act.shape[0], act.shape[1], -1)  # per-head hooks ([b, p, h, d]) flatten to h*d
        act = act[mask[i:i + batch_size].to(act.device)] if mask is not None else act.reshape(-1, act.shape[-1])
        kept.append(act.detach().to("cpu", copy=True))
    return torch.cat(kept) if kept else torch.zeros(0, 0)


@dataclass(frozen=True)
class SAETrainConfig:
    """How to train an SAE (the SAE's shape is its :class:`~mechwork.analysis.sae.SAEConfig`)."""

    steps: int = 2000
    batch_size: int = 1024
    lr: float = 1e-3
    l1_coefficient: float = 1e-3  # standard (ReLU) SAEs only; must be > 0
    l1_warmup_steps: int = 0  # the L1 coefficient rises linearly from 0 over these steps
    lr_warmup_steps: int = 0  # the learning rate rises linearly from 0 over these steps
    lr_decay_steps: int = 0  # ... and falls linearly to 0 over the last ones
    adam_betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    b_dec_init: str = "median"  # the geometric median of (up to 4096 rows of) the data, its mean, or zeros
    dead_after: int = 200  # steps without firing after which a latent counts as dead
    resample_every: int = 0  # standard: resample dead latents every this many steps (0: never)
    resample_until: float = 0.8  # ... but not after this fraction of the steps
    resample_sample: int = 8192  # inputs whose loss is evaluated to pick resampling directions
    aux_k: int | None = None  # topk: latents in the AuxK reconstruction (None: d_in // 2; 0: no AuxK loss)
    aux_coefficient: float = 1 / 32
    log_every: int = 50

    def __post_init__(self) -> None:
        check_counts(steps=self.steps, batch_size=self.batch_size, dead_after=self.dead_after,
                     log_every=self.log_every, resample_sample=self.resample_sample)
        for name in ("lr", "l1_coefficient"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise invalid(name, "a finite number > 0", v)
        for name in ("l1_warmup_steps", "lr_warmup_steps", "lr_decay_steps", "resample_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise invalid(name, "an integer >= 0", v)
        if self.aux_k is not None and (isinstance(self.aux_k, bool) or not isinstance(self.aux_k, int)
                                       or self.aux_k < 0):
            raise invalid("aux_k", "None or an integer >= 0", self.aux_k)
        if not (isinstance(self.aux_coefficient, int | float) and math.isfinite(self.aux_coefficient)
                and self.aux_coefficient >= 0):
            raise invalid("aux_coefficient", "a finite number >= 0", self.aux_coefficient)
        if not 0.0 <= self.resample_until <= 1.0:
            raise invalid("resample_until", "a fraction in [0, 1]", self.resample_until)
        if self.b_dec_init not in B_DEC_INITS:
            raise invalid("b_dec_init", f"one of {', '.join(B_DEC_INITS)}", self.b_dec_init)
        b1, b2 = self.adam_betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise invalid("adam_betas", "two numbers in [0, 1)", self.adam_betas)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainedSAE(Result):
    """A trained SAE and its training history (one entry per logged step)."""

    sae: SAE
    history: dict[str, list[Any]]  # step, loss, mse, aux, l0, dead, lr
    train: SAETrainConfig
    n_activations: int
    dead: list[int] = field(default_factory=list)  # latents dead at the end (not fired for dead_after steps)

    def summary(self) -> str:
        c, h = self.sae.cfg, self.history
        k = f" k={c.k}" if c.architecture == "topk" else ""
        at = f" at {c.hook_name}" if c.hook_name else ""
        if not h["step"]:
            return f"{c.architecture}{k} SAE {c.d_in}->{c.d_sae}{at}: not trained"
        return (f"{c.architecture}{k} SAE {c.d_in}->{c.d_sae}{at}, {self.train.steps} steps on {self.n_activations} "
                f"activations: loss {h['loss'][-1]:.4g}, MSE {h['mse'][-1]:.4g}, L0 {h['l0'][-1]:.3g}, "
                f"{len(self.dead)} dead latents")

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.history)

    def figure(self) -> Any:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        h = self.history
        fig = make_subplots(rows=1, cols=3, subplot_titles=("loss", "L0", "dead latents"))
        for col, key in enumerate(("loss", "l0", "dead"), start=1):
            fig.add_trace(go.Scatter(x=h["step"], y=h[key], mode="lines", name=key), row=1, col=col)
            fig.update_xaxes(title_text="step", row=1, col=col)
        fig.update_yaxes(title_text="loss", type="log", row=1, col=1)
        fig.update_yaxes(title_text="mean nonzero latents", row=1, col=2)
        fig.update_yaxes(title_text="latents", row=1, col=3)
        fig.update_layout(title="SAE training", showlegend=False)
        return fig


def check_width(acts: Tensor, cfg: SAEConfig) -> None:
    """Refuse activations whose width is not the SAE's ``d_in``, in one line naming both (and the hook)."""
    if acts.ndim != 2:
        raise invalid("acts", "an [n, d_in] matrix of activations", f"shape {tuple(acts.shape)}")
    if acts.shape[-1] != cfg.d_in:
        at = f"hook {cfg.hook_name!r} gives" if cfg.hook_name else "the activations have"
        raise ConfigError(f"the SAE's d_in={cfg.d_in} does not match the activations' width: {at} "
                          f"width {acts.shape[-1]}")


@torch.no_grad()
def geometric_median(x: Float[Tensor, "n d"], iters: int = 100, tol: float = 1e-6) -> Float[Tensor, " d"]:
    """The geometric median of the rows of ``x`` (Weiszfeld's iteration, started at the mean)."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=-1).clamp_min(1e-8)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        done = float((y_new - y).norm()) <= tol * max(float(y.norm()), 1.0)
        y = y_new
        if done:
            break
    return y


def _lr_scale(step: int, train: SAETrainConfig) -> float:
    """The learning rate's factor at 0-based ``step``: linear warmup, constant, linear decay to 0."""
    s = 1.0
    if train.lr_warmup_steps:
        s = min(s, (step + 1) / train.lr_warmup_steps)
    if train.lr_decay_steps:
        s = min(s, (train.steps - step) / train.lr_decay_steps)
    return s


def _losses(sae: SAE, x: Tensor, dead: Tensor | None, train: SAETrainConfig, l1: float
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(total loss, MSE, auxiliary term, which latents fired [d_sae], L0) on one batch; ``dead``: the dead
    latents' indices (topk). A TopK SAE decodes its k latents per row with a gather (embedding_bag), not a dense
    [batch, d_sae] @ [d_sae, d_in] product: the same sum, d_sae / k times fewer multiplications."""
    pre = sae.encode_pre(x)
    if sae.cfg.architecture == "topk":
        top = torch.relu(pre).topk(int(sae.cfg.k or 0), dim=-1, sorted=False)  # = SAE.activate's choice and values
        recon = F.embedding_bag(top.indices, sae.W_dec, per_sample_weights=top.values, mode="sum") + sae.b_dec
        on = top.values > 0
        fired = torch.zeros(sae.cfg.d_sae, dtype=torch.int8, device=pre.device).scatter_reduce(
            0, top.indices.flatten(), on.flatten().to(torch.int8), "amax").bool()
    else:
        acts = torch.relu(pre)
        recon = acts @ sae.W_dec + sae.b_dec
        on = acts > 0
        fired = on.any(0)
    err = recon - x
    mse = err.pow(2).sum(-1).mean()
    # standard: decoder rows are unit norm, so |acts| is SAELens's decoder-norm-weighted L1
    aux = acts.sum(-1).mean() * l1 if sae.cfg.architecture == "standard" else _auxk(sae, pre, err, dead, train)
    return mse + aux, mse, aux, fired, on.sum(-1).to(x.dtype).mean()


def _auxk(sae: SAE, pre: Tensor, err: Tensor, dead: Tensor | None, train: SAETrainConfig) -> Tensor:
    """Gao et al.'s AuxK term: the top ``aux_k`` pre-activations among the dead latents (indices ``dead``)
    reconstruct the (detached) error of the main reconstruction; scaled by ``min(1, n_dead / aux_k)`` (as SAELens)."""
    aux_k = sae.cfg.d_in // 2 if train.aux_k is None else train.aux_k
    aux_k = min(aux_k, sae.cfg.d_sae)
    if aux_k == 0 or train.aux_coefficient == 0 or dead is None or dead.numel() == 0:
        return pre.new_zeros(())
    n_dead = dead.numel()
    sub = pre[:, dead]  # [batch, n_dead]
    top = sub.topk(min(aux_k, n_dead), dim=-1, sorted=False)
    aux_acts = torch.zeros_like(sub).scatter(-1, top.indices, top.values)
    residual = -err.detach()  # x - recon
    loss = (aux_acts @ sae.W_dec[dead] - residual).pow(2).sum(-1).mean()
    return train.aux_coefficient * min(1.0, n_dead / aux_k) * loss


@torch.no_grad()
def _resample(sae: SAE, opt: torch.optim.Adam, acts: Tensor, dead: Tensor, gen: torch.Generator) -> None:
    """Anthropic's resampling of the latents in ``dead`` (indices), in place (see the module docstring)."""
    n = min(acts.shape[0], 8192)
    idx = torch.randperm(acts.shape[0], generator=gen)[:n]
    x = acts[idx].to(sae.W_dec.device)
    loss = (sae(x) - x).pow(2).sum(-1)
    if float(loss.sum()) <= 0:
        return
    pick = torch.multinomial(loss.pow(2).cpu(), dead.numel(), replacement=True, generator=gen)
    d = x[pick.to(x.device)] - (sae.b_dec if sae.cfg.apply_b_dec_to_input else 0)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    alive = torch.ones(sae.cfg.d_sae, dtype=torch.bool, device=dead.device)
    alive[dead] = False
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if bool(alive.any()) else torch.tensor(1.0)
    sae.W_dec[dead] = d
    sae.W_enc[:, dead] = (d * 0.2 * enc_norm).T
    sae.b_enc[dead] = 0.0
    for p, sl in ((sae.W_dec, (dead,)), (sae.W_enc, (slice(None), dead)), (sae.b_enc, (dead,))):
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][sl] = 0.0


def _init_b_dec(sae: SAE, acts: Tensor, how: str, gen: torch.Generator) -> None:
    if how == "zeros":
        return
    n = acts.shape[0]
    sample = acts[torch.randperm(n, generator=gen)[:4096]] if n > 4096 else acts
    sample = sample.to(sae.b_dec.device, sae.b_dec.dtype)
    with torch.no_grad():
        sae.b_dec.copy_(geometric_median(sample) if how == "median" else sample.mean(0))


def _start(acts: Tensor, cfg: SAEConfig, train: SAETrainConfig, init: SAE | None,
           gen: torch.Generator) -> tuple[SAE, torch.optim.Adam]:
    """The SAE to train (fresh, with ``b_dec`` from the data, or a copy of ``init``) and its Adam."""
    if init is None:
        sae = SAE(cfg, seed=train.seed)
        _init_b_dec(sae, acts, train.b_dec_init, gen)
    else:
        sae = copy.deepcopy(init)
    sae.train()
    try:  # the fused kernel: one pass over every parameter, ~10x faster than the default per-tensor loop on CPU
        opt = torch.optim.Adam(sae.parameters(), lr=train.lr, betas=train.adam_betas, fused=True)
    except (RuntimeError, ValueError):
        opt = torch.optim.Adam(sae.parameters(), lr=train.lr, betas=train.adam_betas)
    return sae, opt


def _log(history: dict[str, list[Any]], means: Tensor, n_dead: int, done: int, lr: float,
         train: SAETrainConfig) -> None:
    """Append one logged step (the means of loss, mse, aux and L0 since the last); refuse a non-finite one."""
    vals = means.tolist()
    for key, v in zip(("loss", "mse", "aux", "l0"), vals, strict=True):
        history[key].append(float(v))
    history["step"].append(done)
    history["dead"].append(n_dead)
    history["lr"].append(lr)
    if not all(math.isfinite(v) for v in vals):
        raise ConfigError(f"SAE training diverged at step {done} (loss {vals[0]}): lower the learning "
                          f"rate (lr={train.lr})")


def train_sae(
    acts: Float[Tensor, "n d_in"],
    cfg: SAEConfig,
    train: SAETrainConfig | None = None,
    *,
    quiet: bool = False,
    init: SAE | None = None,
) -> TrainedSAE:
    """Train an SAE of shape ``cfg`` on the rows of ``acts`` (see the module docstring); ``init`` (an SAE with the
    same config) continues from its weights instead of a fresh SAE, and is not changed."""
    train = train or SAETrainConfig()
    check_width(acts, cfg)
    if acts.shape[0] < 1:
        raise invalid("acts", "at least one activation", "0 rows")
    if init is not None and init.cfg != cfg:
        raise invalid("init", "an SAE with the config being trained", init.cfg)
    gen = torch.Generator().manual_seed(train.seed)
    sae, opt = _start(acts, cfg, train, init, gen)
    device = sae.W_dec.device
    data = acts.to(device, getattr(torch, cfg.dtype))
    n = data.shape[0]
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    history: dict[str, list[Any]] = {k: [] for k in ("step", "loss", "mse", "aux", "l0", "dead", "lr")}
    standard = cfg.architecture == "standard"
    resample_stop = int(train.resample_until * train.steps)

    from tqdm.auto import tqdm

    bar = tqdm(total=train.steps, desc="sae", disable=bars.silenced(quiet), file=sys.stderr, dynamic_ncols=True)
    perm, pos = torch.randperm(n, generator=gen), 0
    acc = torch.zeros(4, dtype=data.dtype, device=device)  # loss, mse, aux, l0 summed since the last log
    since_log, dead_idx = 0, None
    try:
        for step in range(train.steps):
            if pos + train.batch_size > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            x = data[perm[pos:pos + train.batch_size].to(device)]
            pos += train.batch_size
            lr = train.lr * _lr_scale(step, train)
            for g in opt.param_groups:
                g["lr"] = lr
            l1 = train.l1_coefficient * (min(1.0, (step + 1) / train.l1_warmup_steps) if train.l1_warmup_steps else 1.0)
            if not standard and step % DEAD_CHECK == 0:  # one host sync every DEAD_CHECK steps: the dead latents
                dead_idx = (since_fired >= train.dead_after).nonzero().flatten()
            loss, mse, aux, fired, l0 = _losses(sae, x, dead_idx, train, l1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():
                g_dec = sae.W_dec.grad
                if g_dec is not None:  # remove the gradient component parallel to each (unit) decoder row
                    g_dec.sub_((g_dec * sae.W_dec).sum(-1, keepdim=True) * sae.W_dec)
            opt.step()
            sae.normalize_decoder_()
            with torch.no_grad():
                since_fired.add_(1).masked_fill_(fired, 0)
                acc += torch.stack([loss.detach(), mse.detach(), aux.detach(), l0])
            since_log += 1
            done = step + 1
            if standard and train.resample_every and done % train.resample_every == 0 and done <= resample_stop:
                dead = (since_fired >= train.dead_after).nonzero().flatten()
                if dead.numel():
                    _resample(sae, opt, data, dead, gen)
                    since_fired[dead] = 0
            if done % train.log_every == 0 or done == train.steps:
                _log(history, acc / since_log, int((since_fired >= train.dead_after).sum()), done, lr, train)
                acc.zero_()
                bar.update(since_log)
                bar.set_postfix(L0=f"{history['l0'][-1]:.3g}", loss=f"{history['loss'][-1]:.4g}",
                                dead=history["dead"][-1], refresh=False)
                since_log = 0
    finally:
        bar.close()
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(True)
        p.grad = None
    dead_ids = (since_fired >= train.dead_after).nonzero().flatten().tolist()
    return TrainedSAE(sae=sae, history=history, train=train, n_activations=n, dead=dead_ids)
