"""Width parametrisations of an MLP: where each layer's init, forward multiplier and learning rate go as width grows.

One idea: a parametrisation is a table with one row per layer type -- *input*
(finite -> width), *hidden* (width -> width) and *output* (width -> finite) --
giving the weight's init std, a constant multiplier in the forward pass
(``y = multiplier * x @ W.T + b``) and the factor on the optimiser's learning
rate, separately for SGD and for Adam. :func:`layer_scale` is that table;
:class:`WidthMLP` builds an MLP from it and :func:`make_optimizer` gives every
weight and bias its own parameter group with the scaled learning rate.

* ``sp`` -- standard: std ``1/sqrt(fan_in)``, multiplier 1, every lr factor 1.
* ``ntk`` -- NTK (Jacot et al. 2018): weights ~ N(0, 1), multiplier
  ``1/sqrt(fan_in)``, every lr factor 1. Under SGD a wide net trains lazily
  (its tangent kernel hardly moves). No constant-lr Adam version of the NTK
  limit is claimed here.
* ``mup`` -- maximal update parametrisation, Yang et al. 2022 (Tensor
  Programs V), Table 3, written relative to a base width as the paper's base
  shapes do (``m = width / base_width``, so at ``m = 1`` it *is* ``sp``):

  ==========  ==========================  ===================  ===============
  factor      input weights, all biases   output weights       hidden weights
  ==========  ==========================  ===================  ===============
  init var    1/fan_in                    1/fan_in^2 -> / m    1/fan_in
  SGD lr      fan_out -> x m              1/fan_in -> / m      1
  Adam lr     1                           1/fan_in -> / m      1/fan_in -> / m
  ==========  ==========================  ===================  ===============

  "fan_out" of a bias is its length, so the output layer's bias (length
  ``d_out``, finite) keeps lr factor 1. The multipliers stay 1: this is
  Table 3's form. The ``mup`` package's form (readout multiplier ``1/m``,
  readout lr unscaled) moves the readout the same way under Adam and differs
  only in starting the readout smaller, which muP allows.

Why our own implementation and not the ``mup`` package: we need MLPs only,
where the rule is the few lines of :func:`layer_scale`; the package declares
torchvision and seaborn as dependencies, and it works through base-shape
files and module replacement (``MuReadout``, ``set_base_shapes``) that would
hide the table we want to test. The tests check every factor at two widths.

Biases start at zero in every parametrisation (so ``mup`` at the base width
equals ``sp`` exactly, weights included, for the same seed).

Example::

    >>> import torch
    >>> from mechwork.studies.width import WidthConfig, WidthMLP, make_optimizer
    >>> model = WidthMLP(WidthConfig(param="mup", width=256, base_width=64))
    >>> opt = make_optimizer(model, "adam", lr=1e-2)
    >>> [round(g["lr"], 5) for g in opt.param_groups if g["name"].endswith("weight")]
    [0.01, 0.0025, 0.0025]
    >>> model(torch.zeros(3, 64)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mechwork.errors import invalid
from mechwork.studies.digits import MLP_ACTIVATIONS, Activation

__all__ = ["KINDS", "OPTIMIZERS", "PARAMETRISATIONS", "LayerScale", "ScaledLinear", "WidthConfig", "WidthMLP",
           "check_widths", "layer_scale", "make_optimizer"]

PARAMETRISATIONS = ("sp", "ntk", "mup")
KINDS = ("input", "hidden", "output")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class LayerScale:
    """One layer's row of a parametrisation's table (lr entries are factors on the optimiser's base lr)."""

    init_std: float
    multiplier: float
    lr_sgd: float
    lr_adam: float
    bias_lr_sgd: float
    bias_lr_adam: float

    def lr(self, optimizer: str, *, bias: bool = False) -> float:
        """The lr factor of this layer's weight (or bias) under ``optimizer``."""
        if optimizer not in OPTIMIZERS:
            raise invalid("optimizer", " or ".join(OPTIMIZERS), optimizer)
        if optimizer == "sgd":
            return self.bias_lr_sgd if bias else self.lr_sgd
        return self.bias_lr_adam if bias else self.lr_adam


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise invalid(name, "a positive number", value)
    return float(value)


def layer_scale(param: str, kind: str, fan_in: int, width_mult: float | int = 1.0) -> LayerScale:
    """The table entry for a ``kind`` layer (input / hidden / output) under ``param``; see the module docstring."""
    if param not in PARAMETRISATIONS:
        raise invalid("param", f"one of {', '.join(PARAMETRISATIONS)}", param)
    if kind not in KINDS:
        raise invalid("kind", f"one of {', '.join(KINDS)}", kind)
    std = 1.0 / math.sqrt(_positive("fan_in", fan_in))
    m = _positive("width_mult", width_mult)
    if param == "sp":
        return LayerScale(std, 1.0, 1.0, 1.0, 1.0, 1.0)
    if param == "ntk":
        return LayerScale(1.0, std, 1.0, 1.0, 1.0, 1.0)
    if kind == "input":  # finite -> infinite: SGD lr ~ fan_out, Adam lr 1
        return LayerScale(std, 1.0, m, 1.0, m, 1.0)
    if kind == "hidden":  # infinite -> infinite: SGD lr 1, Adam lr ~ 1/fan_in; its bias has fan_out = width
        return LayerScale(std, 1.0, 1.0, 1.0 / m, m, 1.0)
    # infinite -> finite: init var ~ 1/fan_in^2, both lrs ~ 1/fan_in; its bias has a finite fan_out
    return LayerScale(std / math.sqrt(m), 1.0, 1.0 / m, 1.0 / m, 1.0, 1.0)


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """A list of widths for a width sweep: positive integers, strictly increasing."""
    ws = list(widths)
    if not ws or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in ws):
        raise invalid("widths", "a non-empty list of positive integers", ws)
    if any(b <= a for a, b in itertools.pairwise(ws)):
        raise invalid("widths", "strictly increasing", ws)
    return tuple(ws)


@dataclass(frozen=True)
class WidthConfig:
    """An MLP ``d_in -> width x depth -> d_out`` under a parametrisation (``width_mult = width / base_width``)."""

    param: str = "sp"
    width: int = 64
    base_width: int = 64
    depth: int = 2  # hidden layers, so depth + 1 linear layers
    d_in: int = 64
    d_out: int = 10
    act: str = "relu"
    bias: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.param not in PARAMETRISATIONS:
            raise invalid("param", f"one of {', '.join(PARAMETRISATIONS)}", self.param)
        for name in ("width", "base_width", "depth", "d_in", "d_out"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise invalid(name, "a positive integer", v)
        if self.act not in MLP_ACTIVATIONS:
            raise invalid("act", f"one of {', '.join(MLP_ACTIVATIONS)}", self.act)

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width

    def kinds(self) -> list[tuple[str, int, int]]:
        """(kind, fan_in, fan_out) of every linear layer, input to output."""
        w = self.width
        return [("input", self.d_in, w)] + [("hidden", w, w)] * (self.depth - 1) + [("output", w, self.d_out)]


class ScaledLinear(nn.Module):
    """``y = multiplier * x @ W.T + b`` with ``W ~ N(0, init_std^2)``, ``b = 0``; remembers its table row."""

    def __init__(self, fan_in: int, fan_out: int, kind: str, scale: LayerScale, *, bias: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.kind, self.scale, self.multiplier = kind, scale, scale.multiplier
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in, generator=generator) * scale.init_std)
        self.bias = nn.Parameter(torch.zeros(fan_out)) if bias else None

    def forward(self, x: Float[Tensor, "batch fan_in"]) -> Float[Tensor, "batch fan_out"]:
        y = (x @ self.weight.T) * self.multiplier
        return y + self.bias if self.bias is not None else y


class WidthMLP(nn.Module):
    """An MLP whose every layer follows ``cfg.param``'s table at ``cfg.width``; seeded by ``cfg.seed``."""

    def __init__(self, cfg: WidthConfig):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        self.layers = nn.ModuleList(
            ScaledLinear(fi, fo, kind, layer_scale(cfg.param, kind, fi, cfg.width_mult), bias=cfg.bias, generator=g)
            for kind, fi, fo in cfg.kinds())
        self.act = Activation(cfg.act)

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        return self.preactivations(x)[-1]

    def preactivations(self, x: Float[Tensor, "batch d_in"]) -> list[Tensor]:
        """Every linear layer's output, input layer first; the last entry is the logits."""
        out, h = [], x
        for i, layer in enumerate(self.layers):
            z = layer(h if i == 0 else self.act(h))
            out.append(z)
            h = z
        return out


def make_optimizer(model: WidthMLP, optimizer: str, lr: float | int, *,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD or Adam with one parameter group per weight and bias, lr = ``lr`` x the table's factor."""
    if optimizer not in OPTIMIZERS:
        raise invalid("optimizer", " or ".join(OPTIMIZERS), optimizer)
    base = _positive("lr", lr)
    groups = []
    for i, layer in enumerate(model.layers):
        assert isinstance(layer, ScaledLinear)
        for pname, p in layer.named_parameters():
            factor = layer.scale.lr(optimizer, bias=pname == "bias")
            groups.append({"params": [p], "lr": base * factor, "name": f"layers.{i}.{pname}", "kind": layer.kind})
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=base, weight_decay=weight_decay)
    return torch.optim.Adam(groups, lr=base, weight_decay=weight_decay)
