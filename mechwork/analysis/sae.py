"""A sparse autoencoder: the dictionary every SAE analysis shares (ReLU + L1, or TopK).

An :class:`SAE` reads an activation ``x`` of width ``d_in`` from one hook point and writes it as a sparse,
non-negative combination of ``d_sae`` directions (the rows of ``W_dec``, kept at unit norm)::

    sae_in = x - b_dec                       (when cfg.apply_b_dec_to_input)
    pre    = sae_in @ W_enc + b_enc          [..., d_sae]   "hook_sae_acts_pre"
    acts   = ReLU(pre)  or  TopK_k(ReLU(pre)) [..., d_sae]   "hook_sae_acts_post"  (the latents)
    recon  = acts @ W_dec + b_dec             [..., d_in]    "hook_sae_recons"

This is SAELens's arithmetic and its parameter names and shapes (``W_enc [d_in, d_sae]``, ``W_dec
[d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``), so its weight files load into either library
(:mod:`mechwork.analysis.saeio` reads and writes them). Training lives in :mod:`mechwork.analysis.saetrain`,
metrics in :mod:`mechwork.analysis.saemetrics`, splicing into a model in :mod:`mechwork.analysis.saehook`.

Example::

    >>> import torch
    >>> sae = SAE(SAEConfig(d_in=8, d_sae=32, architecture="topk", k=4), seed=0)
    >>> x = torch.randn(5, 8)
    >>> acts = sae.encode(x)
    >>> tuple(acts.shape), int((acts > 0).sum(-1).max()) <= 4
    ((5, 32), True)
    >>> torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(32))
    True
    >>> SAEConfig(d_in=8, d_sae=32, architecture="topk", k=40)
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'k' must be an integer in [1, d_sae=32] for a topk SAE (got 40)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechwork.errors import check_known_fields, invalid

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig"]

ARCHITECTURES: tuple[str, ...] = ("standard", "topk")  # ReLU (trained with an L1 penalty) | TopK (Gao et al.)


@dataclass(frozen=True)
class SAEConfig:
    """The shape and identity of one SAE: what it reads (``model_name``, ``hook_name``) and how it encodes."""

    d_in: int
    d_sae: int
    architecture: str = "standard"
    k: int | None = None  # topk only: the number of latents kept per activation
    hook_name: str = ""  # the TransformerLens hook the SAE reads, e.g. "blocks.0.mlp.hook_post"
    model_name: str = ""  # the preset, run or model it was trained on
    apply_b_dec_to_input: bool = True
    dtype: str = "float32"

    def __post_init__(self) -> None:
        for name in ("d_in", "d_sae"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise invalid(name, "a positive integer", v)
        if self.architecture not in ARCHITECTURES:
            raise invalid("architecture", f"one of {', '.join(ARCHITECTURES)}", self.architecture)
        if self.architecture == "topk":
            k = self.k
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.d_sae:
                raise invalid("k", f"an integer in [1, d_sae={self.d_sae}] for a topk SAE", k)
        elif self.k is not None:
            raise invalid("k", "None for a standard (ReLU) SAE; k is for architecture='topk'", self.k)
        if self.dtype not in ("float32", "float64"):
            raise invalid("dtype", "'float32' or 'float64'", self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        check_known_fields(d, cls, "SAEConfig")
        return cls(**d)

    def replace(self, **changes: Any) -> SAEConfig:
        return replace(self, **changes)


class SAE(nn.Module):
    """A sparse autoencoder (see the module docstring). Decoder rows start at unit norm, ``W_enc = W_dec.T``,
    and biases at zero; :meth:`normalize_decoder_` puts the rows back at unit norm after an optimiser step."""

    W_enc: nn.Parameter
    b_enc: nn.Parameter
    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(self, cfg: SAEConfig, *, seed: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        gen = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen, dtype=dtype)
        w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec.to(device))
        self.W_enc = nn.Parameter(w_dec.T.clone().contiguous().to(device))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype, device=device))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in, dtype=dtype, device=device))

    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def encode_pre(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """The latents' pre-activations (SAELens's ``hook_sae_acts_pre``)."""
        if x.shape[-1] != self.cfg.d_in:
            raise invalid("x", f"a tensor whose last dimension is the SAE's d_in={self.cfg.d_in}",
                          f"shape {tuple(x.shape)}")
        sae_in = x - self.b_dec if self.cfg.apply_b_dec_to_input else x
        return sae_in @ self.W_enc + self.b_enc

    def activate(self, pre: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_sae"]:
        """ReLU, or for TopK the ``k`` largest ReLU'd pre-activations kept and the rest set to 0."""
        acts = torch.relu(pre)
        if self.cfg.architecture == "topk":
            k = int(self.cfg.k or 0)
            top = acts.topk(k, dim=-1, sorted=False)
            acts = torch.zeros_like(acts).scatter(-1, top.indices, top.values)
        return acts

    def encode(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_sae"]:
        """The latents (SAELens's ``hook_sae_acts_post``)."""
        return self.activate(self.encode_pre(x))

    def decode(self, acts: Float[Tensor, "*batch d_sae"]) -> Float[Tensor, "*batch d_in"]:
        """The reconstruction from latents (SAELens's ``hook_sae_recons``)."""
        return acts @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "*batch d_in"]) -> Float[Tensor, "*batch d_in"]:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit norm, in place."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def extra_repr(self) -> str:
        k = f", k={self.cfg.k}" if self.cfg.architecture == "topk" else ""
        hook = f", hook={self.cfg.hook_name!r}" if self.cfg.hook_name else ""
        return f"d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}, {self.cfg.architecture}{k}{hook}"
