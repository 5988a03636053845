"""SAE training throughput (activations per second): ``train_sae`` against a plain PyTorch loop of the same SAE.

The data are modadd-113's ``blocks.0.mlp.hook_post`` activations at the ``=`` position over all p^2 pairs
(12,769 x 512). Both sides train the same SAE (same architecture, width, batch, steps, learning rate and initial
weights) with Adam; the plain loop is the minimum: random batches, forward, loss (MSE + L1, or TopK's MSE),
backward, step (torch's default Adam), decoder rows renormalised. ``train_sae`` uses the fused Adam kernel and,
for TopK, decodes the k latents with a gather instead of a dense product; it also removes the decoder gradient's
parallel part, tracks dead latents (and runs AuxK on them for TopK), keeps the history and draws its bar
(silenced here).
Repeats alternate the two sides; the medians and their ratio are printed. One thread.

    python benchmarks/bench_sae.py [--steps 100] [--repeats 3] [--d-sae 1024] [--batch 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import mechwork
from mechwork.analysis.sae import SAE, SAEConfig
from mechwork.analysis.saetrain import SAETrainConfig, collect_activations, train_sae
from mechwork.kit import find_preset


def plain_loop(acts: torch.Tensor, cfg: SAEConfig, steps: int, batch: int, lr: float, l1: float) -> SAE:
    """The minimal loop: Adam on the SAE's four tensors, decoder rows back at unit norm after each step."""
    sae = SAE(cfg, seed=0)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    n = acts.shape[0]
    for _ in range(steps):
        x = acts[torch.randint(n, (batch,), generator=gen)]
        pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        f = torch.relu(pre)
        if cfg.architecture == "topk":
            top = f.topk(int(cfg.k or 0), dim=-1)
            f = torch.zeros_like(f).scatter(-1, top.indices, top.values)
        recon = f @ sae.W_dec + sae.b_dec
        loss = (recon - x).pow(2).sum(-1).mean()
        if cfg.architecture == "standard":
            loss = loss + l1 * f.sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
    return sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--d-sae", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ["MECHWORK_QUIET"] = "1"
    model = mechwork.load("modadd-113").eval()
    task = find_preset("modadd-113").task
    batches = [task.batch("train"), task.batch("test")]
    acts = torch.cat([collect_activations(model, "blocks.0.mlp.hook_post", b.tokens, mask=b.mask) for b in batches])
    n_acts = args.steps * args.batch
    results = {}
    for arch, k, l1 in (("topk", 16, 1e-3), ("standard", None, 3e-2)):
        cfg = SAEConfig(d_in=acts.shape[1], d_sae=args.d_sae, architecture=arch, k=k,
                        hook_name="blocks.0.mlp.hook_post")
        train = SAETrainConfig(steps=args.steps, batch_size=args.batch, lr=1e-3, l1_coefficient=l1, b_dec_init="mean",
                               log_every=max(1, args.steps // 4))
        times: dict[str, list[float]] = {"train_sae": [], "plain": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            train_sae(acts, cfg, train, quiet=True)
            times["train_sae"].append(time.perf_counter() - t)
            t = time.perf_counter()
            plain_loop(acts, cfg, args.steps, args.batch, 1e-3, l1)
            times["plain"].append(time.perf_counter() - t)
        med = {name: statistics.median(v) for name, v in times.items()}
        rate = {name: n_acts / s for name, s in med.items()}
        results[arch] = {"train_sae_acts_per_s": rate["train_sae"], "plain_acts_per_s": rate["plain"],
                         "ratio": rate["train_sae"] / rate["plain"], "seconds": times}
        print(f"{arch} 512->{args.d_sae} (batch {args.batch}, {args.steps} steps, {acts.shape[0]} activations): "
              f"train_sae {rate['train_sae']:,.0f} act/s, plain loop {rate['plain']:,.0f} act/s, "
              f"ratio {rate['train_sae'] / rate['plain']:.2f} (medians of {args.repeats})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results | {"steps": args.steps, "batch": args.batch, "d_sae": args.d_sae}, f, indent=2)


if __name__ == "__main__":
    main()
