"""Lottery tickets as sweep points: IMP on a digits MLP, and grokking tickets on modular addition.

* :func:`mlp_tickets` -- Frankle & Carbin's experiment on an MLP (default
  64-300-100-10) on scikit-learn's digits: iterative magnitude pruning (20% of
  the hidden weights and 10% of the output weights per round), rewinding to
  the initialisation (or to step ``rewind``), against two controls at every
  sparsity: the same mask on a fresh random initialisation, and a random mask.
* :func:`grok_tickets` -- Minegishi et al.'s grokking tickets: a magnitude mask
  taken from a *grokked* model, applied at the original initialisation,
  against the dense model and a random mask of the same sparsity, measured
  in steps to grok; also whether the ticket keeps the dense model's key
  frequencies.

Both are module-level functions returning JSON-ready dicts, so
:func:`mechwork.studies.sweep.sweep` can run seeds in parallel.

Example::

    >>> from mechwork.studies.tickets import mlp_tickets
    >>> r = mlp_tickets(seed=0, rounds=1, steps=100, sizes=(64, 32, 10))
    >>> [round(row["remaining"], 2) for row in r["rounds"]]
    [1.0, 0.81]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["grok_tickets", "mlp_tickets"]


def mlp_tickets(
    *, seed: int, rounds: int, steps: int, sizes: Sequence[int] = (64, 300, 100, 10), lr: float = 1.2e-3,
    rewind: int = 0, label_noise: float = 0.0,
) -> dict[str, Any]:
    """Test accuracy of tickets, re-initialised tickets and random masks at each IMP round."""
    from mechwork.studies.digits import digits_data, make_mlp, train_mlp
    from mechwork.studies.prune import iterative_magnitude_pruning, random_masks, sparsity_of

    data = digits_data(seed=seed, label_noise=label_noise)
    model = make_mlp(list(sizes), seed=seed)
    weight_names = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    if rewind > 0:  # rewind to an early step of the dense run instead of the initialisation
        train_mlp(model, data, steps=rewind, lr=lr, seed=seed)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    accs: list[float] = []

    def train_from(masks: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        model.load_state_dict(start)
        res = train_mlp(model, data, steps=steps, lr=lr, masks=masks, seed=seed)
        accs.append(res.test_acc)
        return {k: v.detach().clone() for k, v in model.named_parameters() if k in weight_names}

    rates = {k: (0.1 if k == weight_names[-1] else 0.2) for k in weight_names}
    history = iterative_magnitude_pruning(train_from, rounds, rates)
    rows = []
    for r, ((sparsity, masks, _), ticket_acc) in enumerate(zip(history, accs, strict=True)):
        row = {"round": r, "remaining": 1.0 - sparsity, "ticket": ticket_acc}
        if masks is not None:
            fresh = make_mlp(list(sizes), seed=seed + 1000)  # same mask, another initialisation
            row["reinit"] = train_mlp(fresh, data, steps=steps, lr=lr, masks=masks, seed=seed).test_acc
            rnd = make_mlp(list(sizes), seed=seed)
            rnd.load_state_dict(start)
            rmask = {k: random_masks({k: m}, sparsity_of({k: m}), seed=seed + r)[k] for k, m in masks.items()}
            row["random_prune"] = train_mlp(rnd, data, steps=steps, lr=lr, masks=rmask, seed=seed).test_acc
        rows.append(row)
    return {"rounds": rows, "dense": accs[0]}


def grok_tickets(
    *, seed: int, p: int, sparsity: float, steps: int, train_frac: float = 0.3, lr: float = 1e-2,
    weight_decay: float = 1.0, target: float = 0.99,
) -> dict[str, Any]:
    """Steps to grok for the dense model, its grokking ticket, and a random mask of the same sparsity."""
    from mechwork.analysis.fourier import key_frequencies
    from mechwork.models import ToyConfig, build_model, weights
    from mechwork.studies.prune import magnitude_masks, random_masks
    from mechwork.tasks import ModularArithmetic
    from mechwork.training import TrainConfig, train

    task = ModularArithmetic(p=p, op="add", train_frac=train_frac, seed=seed)
    cfg = ToyConfig.for_task(task, seed=seed)
    tcfg = TrainConfig(lr=lr, weight_decay=weight_decay, steps=steps, eval_every=50, seed=seed)
    init = {k: v.detach().clone() for k, v in weights(build_model(cfg, "cpu")).items()}
    prunable = [k for k in init if k.endswith("weight")]

    def stop(row: dict[str, Any]) -> bool:
        return row["test_acc"] >= target and row["step"] >= 100

    def run(masks: dict[str, torch.Tensor] | None) -> tuple[int | None, Any]:
        res = train(task, cfg, tcfg, quiet=True, device="cpu", init=init, masks=masks, stop_when=stop)
        return res.first_step("test_acc", target), res.model

    dense_step, dense = run(None)
    trained = {k: v.detach() for k, v in weights(dense).items() if k in prunable}
    ticket_masks = magnitude_masks(trained, sparsity)
    ticket_step, ticket = run(ticket_masks)
    random_step, _ = run(random_masks(trained, sparsity, seed=seed, scope="global"))
    dense_k = key_frequencies(dense, task).freqs if dense_step is not None else []
    ticket_k = key_frequencies(ticket, task).freqs if ticket_step is not None else []
    return {"dense": dense_step, "ticket": ticket_step, "random": random_step, "dense_freqs": dense_k,
            "ticket_freqs": ticket_k, "shared_freqs": sorted(set(dense_k) & set(ticket_k))}
