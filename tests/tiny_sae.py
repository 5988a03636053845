"""A small TopK SAE on induction-2l's ``blocks.1.hook_resid_pre``, fitted in a few Adam steps (shared by tests)."""

from __future__ import annotations

import torch

import mechwork
from mechwork.analysis.sae import SAE, SAEConfig

RESID = "blocks.1.hook_resid_pre"


def induction_sae(n_inputs: int, d_sae: int, steps: int):
    """(model, tokens [n_inputs, T], sae, activations [n_inputs * T, 64]) of a TopK (k=4) SAE fitted to them."""
    torch.set_num_threads(1)
    model, task = mechwork.load("induction-2l"), mechwork.preset("induction-2l").task
    toks = task.batch("test").tokens[:n_inputs]
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n == RESID)
    x = cache[RESID].detach().reshape(-1, 64)
    sae = SAE(SAEConfig(d_in=64, d_sae=d_sae, architecture="topk", k=4, hook_name=RESID, model_name="induction-2l"))
    opt = torch.optim.Adam(sae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        xb = x[torch.randint(0, len(x), (512,), generator=g)]
        loss = (sae(xb) - xb).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sae.normalize_decoder_()
    return model, toks, sae, x
