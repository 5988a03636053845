"""The shared vocabulary of hook points: sites, hook names, the eval-mode guard, token labels.

Every analysis names activations the way TransformerLens does
(``blocks.{layer}.attn.hook_z``); this module is the one place those names are
built. It imports the standard library only, so the command line builds its
``--site``, ``--by``, ``--direction`` and ``--method`` choices from these tables before torch is loaded.

* :data:`SITES` -- the patching sites: site -> (hook name template, activation kind);
* :data:`BY` -- activation kind -> the valid ``by`` groupings; :data:`DIMS` -- ``by`` -> the
  dimensions of a result; :data:`SITE_NAMES` and :data:`BY_NAMES` list them (the CLI's choices);
* :data:`DIRECTIONS` -- the patching directions; :data:`METHODS` -- exact patching or its
  gradient approximation (``mechwork patch --method``);
* :func:`hook_name` -- the TransformerLens hook name of a site in a layer;
* :func:`check_eval` -- the eval-mode guard: analyses refuse a model in training mode;
* :func:`check_hook_name` -- refuse a hook name a model does not have, naming the nearest one it has;
* :data:`Hooks` -- a list of ``(hook name or filter, hook function)``, as ``run_with_hooks`` takes;
* :func:`token_labels` -- readable labels of token ids (decimal strings; a marker token as ``=``).

Example::

    >>> from mechwork.hooks import BY, SITES, hook_name, token_labels
    >>> hook_name("z", 1), hook_name("mlp_post", 0)
    ('blocks.1.attn.hook_z', 'blocks.0.mlp.hook_post')
    >>> BY[SITES["pattern"][1]]
    ('head', 'head_pos', 'head_dest_src')
    >>> token_labels([12, 7, 113], eq=113)
    ['12', '7', '=']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mechwork.errors import ConfigError, invalid

__all__ = ["BY", "BY_NAMES", "DIMS", "DIRECTIONS", "METHODS", "SITES", "SITE_NAMES", "Hooks", "check_eval",
           "check_hook_name", "hook_name", "token_labels"]

SITES: dict[str, tuple[str, str]] = {  # site -> (hook name template, activation kind)
    "resid_pre": ("blocks.{layer}.hook_resid_pre", "pos"),
    "resid_mid": ("blocks.{layer}.hook_resid_mid", "pos"),
    "attn_out": ("blocks.{layer}.hook_attn_out", "pos"),
    "mlp_out": ("blocks.{layer}.hook_mlp_out", "pos"),
    "z": ("blocks.{layer}.attn.hook_z", "head"),
    "q": ("blocks.{layer}.attn.hook_q", "head"),
    "k": ("blocks.{layer}.attn.hook_k", "head"),
    "v": ("blocks.{layer}.attn.hook_v", "head"),
    "pattern": ("blocks.{layer}.attn.hook_pattern", "pattern"),
    "mlp_post": ("blocks.{layer}.mlp.hook_post", "neuron"),
    # an SAE's latents, at the hook its cfg names, while it is spliced in (mechwork.analysis.saehook): patch(...,
    # site="sae", sae=sae); the template stays unformatted here, as no layer names it
    "sae": ("{{hook}}.hook_sae_acts_post", "latent"),
}
BY: dict[str, tuple[str, ...]] = {  # activation kind -> valid ``by``
    "pos": ("layer", "layer_pos"),
    "head": ("head", "head_pos"),
    "pattern": ("head", "head_pos", "head_dest_src"),
    "neuron": ("neuron", "layer", "layer_pos"),
    "latent": ("latent", "latent_pos"),
}
DIMS: dict[str, tuple[str, ...]] = {  # ``by`` -> the dimensions of a patching result
    "layer": ("layer",),
    "layer_pos": ("layer", "pos"),
    "head": ("layer", "head"),
    "head_pos": ("layer", "pos", "head"),
    # one attention-pattern entry per cell, shaped as TransformerLens's [n_layers, n_heads, dest_pos, src_pos]
    "head_dest_src": ("layer", "head", "dest", "src"),
    "neuron": ("layer", "neuron"),
    "latent": ("latent",),  # an SAE's latents, all positions
    "latent_pos": ("latent", "pos"),
}
SITE_NAMES: tuple[str, ...] = tuple(SITES)
BY_NAMES: tuple[str, ...] = tuple(DIMS)
# denoising runs the corrupted input and patches in clean activations (TransformerLens's convention);
# noising runs the clean input and patches in corrupted ones
DIRECTIONS: tuple[str, ...] = ("denoising", "noising")
# exact activation patching, or attribution patching (its gradient approximation: one forward + one backward)
METHODS: tuple[str, ...] = ("exact", "attribution")

Hooks = list[tuple[str | Callable[..., Any], Callable[..., Any]]]


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook name of ``site`` in ``layer`` (a site of :data:`SITES`).

    >>> hook_name("resid_pre", 0)
    'blocks.0.hook_resid_pre'
    >>> hook_name("embed", 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'site' must be one of resid_pre, resid_mid, ..., mlp_post, sae (got 'embed')
    """
    if site not in SITES:
        raise invalid("site", f"one of {', '.join(SITES)}", site)
    return SITES[site][0].format(layer=layer)


def check_eval(model: Any, operation: str) -> None:
    """Refuse a model in training mode (dropout would make an analysis noisy; TransformerLens refuses too)."""
    if model.training:
        raise ConfigError(f"{operation} needs a model in eval mode (got one in training mode); call model.eval()")


def check_hook_name(name: object, available: Iterable[str], what: str = "the model") -> str:
    """``name`` if it is one of ``available``; otherwise a one-line ConfigError naming the nearest hook.

    >>> check_hook_name("blocks.0.mlp.hook_post", ["blocks.0.mlp.hook_post", "blocks.0.hook_resid_pre"])
    'blocks.0.mlp.hook_post'
    >>> check_hook_name("blocks.0.mlp.hook_pots", ["blocks.0.mlp.hook_post", "blocks.0.hook_resid_pre"])
    Traceback (most recent call last):
    mechwork.errors.ConfigError: 'hook' must be a hook point of the model; the nearest is 'blocks.0.mlp.hook_post' \
(got 'blocks.0.mlp.hook_pots')
    """
    import difflib

    names = sorted(set(available))
    if isinstance(name, str) and name in names:
        return name
    near = difflib.get_close_matches(str(name), names, n=1, cutoff=0.0)
    hint = f"; the nearest is {near[0]!r}" if near else ""
    raise invalid("hook", f"a hook point of {what}{hint}", name)


def token_labels(tokens: Iterable[Any], eq: int | None = None) -> list[str]:
    """Readable labels: strings as they are, integers (and 0-d tensors) as decimal strings, token ``eq`` as ``=``."""
    out = []
    for t in tokens:
        if hasattr(t, "item"):
            t = t.item()
        out.append(t if isinstance(t, str) else "=" if eq is not None and int(t) == eq else str(int(t)))
    return out
