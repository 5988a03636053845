"""How good an SAE is: sparsity, reconstruction, dead and dense latents, and the loss recovered in the model.

On ``n`` activations ``x`` (rows) with reconstructions ``x^ = sae(x)`` and latents ``f = sae.encode(x)``:

* **L0**: the mean number of nonzero latents per activation;
* **FVE** (fraction of variance explained): ``1 - sum |x - x^|^2 / sum |x - mean(x)|^2``;
* **MSE**: ``sum |x - x^|^2 / n`` (summed over the width, as the training loss);
* **dead** latents never fire on these activations; **dense** ones fire on more than ``dense_threshold`` of them;
* **loss recovered** (:func:`evaluate_sae` only): ``(L_zero - L_sae) / (L_zero - L_clean)``, where ``L`` is the
  task's cross-entropy over the batch's ``mask`` positions and ``L_sae`` runs the model with the reconstruction in
  place of the activation at the SAE's hook (``L_zero``: the activation set to 0). Both replace the activation only
  at the positions of ``positions`` (default: the loss mask, e.g. the ``=`` token for modular addition); the model
  runs clean elsewhere. 1 means the SAE loses nothing, 0 that it is as bad as deleting the activation.

Example::

    >>> import torch
    >>> from mechwork.analysis.sae import SAE, SAEConfig
    >>> sae = SAE(SAEConfig(d_in=4, d_sae=4), seed=0)
    >>> with torch.no_grad():
    ...     _ = sae.W_dec.copy_(torch.eye(4)); _ = sae.W_enc.copy_(torch.eye(4))
    >>> m = activation_metrics(sae, torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]]))
    >>> m.l0, m.fve, m.n_dead, m.n_dense
    (1.0, 1.0, 2, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechwork.analysis.sae import SAE
from mechwork.errors import ConfigError, check_counts, invalid
from mechwork.hooks import check_eval, check_hook_name
from mechwork.kit import Batch
from mechwork.results import Result

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["SAEMetrics", "activation_metrics", "clean_run", "evaluate_sae"]


@dataclass(frozen=True)
class SAEMetrics(Result):
    """An SAE's metrics on held-out activations (the loss fields are NaN without a model)."""

    l0: float
    fve: float
    mse: float
    n_dead: int
    n_dense: int
    dense_threshold: float
    n_activations: int
    d_sae: int
    frequency: Tensor  # [d_sae]: the fraction of activations on which each latent fires
    clean_loss: float = math.nan
    sae_loss: float = math.nan
    zero_loss: float = math.nan
    hook_name: str = ""

    @property
    def dead_fraction(self) -> float:
        return self.n_dead / self.d_sae

    @property
    def dense_fraction(self) -> float:
        return self.n_dense / self.d_sae

    @property
    def loss_recovered(self) -> float:
        gap = self.zero_loss - self.clean_loss
        if not math.isfinite(gap) or abs(gap) < 1e-12:
            return math.nan
        return (self.zero_loss - self.sae_loss) / gap

    def as_dict(self) -> dict[str, float]:
        """Every scalar metric by name (for JSON)."""
        return {"l0": self.l0, "fve": self.fve, "mse": self.mse, "n_dead": self.n_dead,
                "dead_fraction": self.dead_fraction, "n_dense": self.n_dense, "dense_fraction": self.dense_fraction,
                "dense_threshold": self.dense_threshold, "n_activations": self.n_activations, "d_sae": self.d_sae,
                "clean_loss": self.clean_loss, "sae_loss": self.sae_loss, "zero_loss": self.zero_loss,
                "loss_recovered": self.loss_recovered}

    def summary(self) -> str:
        at = f" at {self.hook_name}" if self.hook_name else ""
        s = (f"SAE{at} on {self.n_activations} activations: L0 {self.l0:.3g}, FVE {self.fve:.4f}, "
             f"{self.n_dead}/{self.d_sae} dead, {self.n_dense} dense (> {self.dense_threshold:.0%})")
        if math.isfinite(self.sae_loss):
            s += (f"; loss recovered {self.loss_recovered:.4f} (clean {self.clean_loss:.4g}, SAE {self.sae_loss:.4g}, "
                  f"zero-ablated {self.zero_loss:.4g})")
        return s

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"metric": list(self.as_dict()), "value": [float(v) for v in self.as_dict().values()]})


class _Stats:
    """Running sums for the activation metrics, chunk by chunk (float64)."""

    def __init__(self, d_sae: int) -> None:
        self.n = 0
        self.fires = torch.zeros(d_sae, dtype=torch.float64)
        self.nonzero = self.sse = self.sum_sq = 0.0
        self.sum: Tensor | None = None

    @torch.no_grad()
    def add(self, sae: SAE, x: Tensor) -> Tensor:
        """Count ``x``'s rows in; their reconstruction ``sae(x)``."""
        x = x.to(sae.W_dec.device, sae.W_dec.dtype)
        f = sae.encode(x)
        r = sae.decode(f)
        on = f > 0
        x64 = x.double()
        self.n += x.shape[0]
        self.fires += on.sum(0).double().cpu()
        self.nonzero += float(on.sum())
        self.sse += float((r.double() - x64).pow(2).sum())
        self.sum_sq += float(x64.pow(2).sum())
        s = x64.sum(0).cpu()
        self.sum = s if self.sum is None else self.sum + s
        return r

    def result(self, sae: SAE, dense_threshold: float, **losses: Any) -> SAEMetrics:
        if self.n == 0:
            raise invalid("activations", "at least one activation", "none")
        assert self.sum is not None
        var = self.sum_sq - float(self.sum.pow(2).sum()) / self.n  # sum |x - mean x|^2
        freq = (self.fires / self.n).float()
        return SAEMetrics(l0=self.nonzero / self.n, fve=1.0 - self.sse / var if var > 0 else math.nan,
                          mse=self.sse / self.n, n_dead=int((self.fires == 0).sum()),
                          n_dense=int((freq > dense_threshold).sum()), dense_threshold=dense_threshold,
                          n_activations=self.n, d_sae=sae.cfg.d_sae, frequency=freq,
                          **({"hook_name": sae.cfg.hook_name} | losses))


def _check_threshold(dense_threshold: float) -> None:
    if isinstance(dense_threshold, bool) or not isinstance(dense_threshold, int | float) \
            or not 0 <= dense_threshold < 1:
        raise invalid("dense_threshold", "a fraction in [0, 1)", dense_threshold)


def activation_metrics(sae: SAE, acts: Float[Tensor, "n d_in"], *, dense_threshold: float = 0.1,
                       batch_size: int = 4096) -> SAEMetrics:
    """L0, FVE, MSE, dead and dense latents of ``sae`` on the rows of ``acts`` (no model: loss fields NaN)."""
    from mechwork.analysis.saetrain import check_width

    _check_threshold(dense_threshold)
    check_counts(batch_size=batch_size)
    check_width(acts, sae.cfg)
    stats = _Stats(sae.cfg.d_sae)
    for i in range(0, acts.shape[0], batch_size):
        stats.add(sae, acts[i:i + batch_size])
    return stats.result(sae, dense_threshold)


def _as_batch(batch: Batch | Tensor) -> Batch:
    if isinstance(batch, Batch):
        return batch
    if not isinstance(batch, Tensor) or batch.ndim != 2 or batch.shape[1] < 2:
        raise invalid("batch", "a Batch or a [batch, pos >= 2] tensor of token ids", type(batch).__name__)
    targets = torch.zeros_like(batch)
    targets[:, :-1] = batch[:, 1:]
    mask = torch.ones_like(batch, dtype=torch.bool)
    mask[:, -1] = False
    return Batch(batch, targets, mask)


def _ce_sum(logits: Tensor, b: Batch) -> float:
    logp = logits.float().log_softmax(-1)
    picked = logp.gather(-1, b.targets.to(logits.device)[..., None])[..., 0]
    return -float(picked[b.mask.to(logits.device)].double().sum())


@torch.no_grad()
def evaluate_sae(
    model: Any,
    sae: SAE,
    batch: Batch | Int[Tensor, "batch pos"],
    *,
    positions: Bool[Tensor, "batch pos"] | None = None,
    hook: str | None = None,
    dense_threshold: float = 0.1,
    batch_size: int = 512,
    clean: tuple[Tensor, Tensor] | None = None,
) -> SAEMetrics:
    """Every metric of the module docstring for ``sae`` spliced into ``model`` at ``hook`` (default: the SAE's
    ``hook_name``). ``batch`` is a :class:`~mechwork.kit.Batch` (loss over its ``mask``) or token ids (loss on
    the next token at every position but the last). The activation metrics and both replacements use the
    activations at ``positions`` (default: the loss mask). ``clean``: ``(logits, activations at the hook)`` of the
    model on the batch's tokens (:func:`clean_run`), when the caller has them; else that run is made here.

    The spliced run puts in the reconstruction the metrics computed: the activation arriving at the hook is the
    clean run's, so one encoding serves both."""
    check_eval(model, "SAE evaluation")
    _check_threshold(dense_threshold)
    check_counts(batch_size=batch_size)
    name = hook or sae.cfg.hook_name
    if not name:
        raise ConfigError("the SAE names no hook (cfg.hook_name is empty): pass hook=")
    name = check_hook_name(name, model.hook_dict)
    b = _as_batch(batch)
    pos = b.mask if positions is None else positions
    if tuple(pos.shape) != tuple(b.tokens.shape):
        raise invalid("positions", f"a boolean mask of the tokens' shape {tuple(b.tokens.shape)}",
                      f"shape {tuple(pos.shape)}")
    if int(b.mask.sum()) == 0:
        raise invalid("batch", "a batch whose mask selects at least one position for the loss", "an empty mask")
    device = next(model.parameters()).device
    sae = sae.to(device).eval()
    stats = _Stats(sae.cfg.d_sae)
    clean_sum = spliced = zeroed = 0.0
    n_loss = int(b.mask.sum())
    seen: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: Any) -> None:
        seen["act"] = act

    def replace(fn: Callable[[Tensor], Tensor], where: Tensor) -> Callable[[Tensor, Any], Tensor]:
        def hook_fn(act: Tensor, hook: Any) -> Tensor:
            flat = act.reshape(act.shape[0], act.shape[1], -1).clone()
            flat[where] = fn(flat[where]).to(flat.dtype)
            return flat.reshape(act.shape)
        return hook_fn

    if clean is not None and (len(clean) != 2 or clean[0].shape[:2] != b.tokens.shape
                              or clean[1].shape[:2] != b.tokens.shape):
        raise invalid("clean", f"(logits, activations) of the batch's {tuple(b.tokens.shape)} tokens",
                      f"shapes {[tuple(t.shape) for t in clean]}")
    for i in range(0, len(b), batch_size):
        chunk = Batch(b.tokens[i:i + batch_size], b.targets[i:i + batch_size], b.mask[i:i + batch_size]).to(device)
        where = pos[i:i + batch_size].to(device)
        if clean is None:
            logits = model.run_with_hooks(chunk.tokens, fwd_hooks=[(name, grab)])
            act = seen.pop("act")
        else:
            logits, act = clean[0][i:i + batch_size].to(device), clean[1][i:i + batch_size].to(device)
        act = act.reshape(act.shape[0], act.shape[1], -1)
        if act.shape[-1] != sae.cfg.d_in:
            raise ConfigError(f"the SAE's d_in={sae.cfg.d_in} does not match the hook's width: hook {name!r} "
                              f"gives width {act.shape[-1]}")
        recon = stats.add(sae, act[where])
        clean_sum += _ce_sum(logits, chunk)
        splice = replace(recon.expand_as, where)  # the reconstruction, in place of the same activation
        spliced += _ce_sum(model.run_with_hooks(chunk.tokens, fwd_hooks=[(name, splice)]), chunk)
        zeroed += _ce_sum(model.run_with_hooks(chunk.tokens, fwd_hooks=[(name, replace(torch.zeros_like, where))]),
                          chunk)
    return stats.result(sae, dense_threshold, clean_loss=clean_sum / n_loss, sae_loss=spliced / n_loss,
                        zero_loss=zeroed / n_loss, hook_name=name)


@torch.no_grad()
def clean_run(model: Any, hook: str, tokens: Int[Tensor, "batch pos"], batch_size: int = 512
              ) -> tuple[Float[Tensor, "batch pos d_vocab_out"], Float[Tensor, "batch pos d_act"]]:
    """The model's logits and its activations at ``hook`` on ``tokens``, run in chunks of ``batch_size`` inputs as
    :func:`evaluate_sae` runs them (its ``clean``), both on the CPU."""
    device = next(model.parameters()).device
    runs = [model.run_with_cache(tokens[i:i + batch_size].to(device), names_filter=lambda n: n == hook)
            for i in range(0, tokens.shape[0], batch_size)]
    return torch.cat([lg.cpu() for lg, _ in runs]), torch.cat([c[hook].cpu() for _, c in runs])
