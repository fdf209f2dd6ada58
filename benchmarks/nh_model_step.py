"""Model-only step time: our LSTM-SL network vs neuralhydrology's ``CudaLSTM`` on identical tensors.

``vs_neuralhydrology.py`` times whole epochs (data pipeline included) in two processes one after the
other, which a shared machine makes noisy. This isolates the model: same batch (256 x 365, 6 forcings +
26 statics), same Adam step, the two models alternated step by step in one process so both see the
same machine load. neuralhydrology's site-packages are appended to ``sys.path`` (ours stay first, so
both models run on our torch); nothing is installed.

    python benchmarks/nh_model_step.py --nh-site-packages /work/venv-nh/lib/python3.11/site-packages
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch


def nh_model(site_packages: str, hidden: int, n_dyn: int, n_static: int, seq: int) -> torch.nn.Module:
    sys.path.append(site_packages)
    from neuralhydrology.modelzoo.cudalstm import CudaLSTM
    from neuralhydrology.utils.config import Config

    dynamic = [f"d{i}" for i in range(n_dyn)]
    cfg = Config({"model": "cudalstm", "hidden_size": hidden, "initial_forget_bias": 3, "output_dropout": 0.2,
                  "head": "regression", "output_activation": "linear", "dynamic_inputs": dynamic,
                  "static_attributes": [f"s{i}" for i in range(n_static)], "target_variables": ["q"],
                  "seq_length": seq, "predict_last_n": seq})
    return CudaLSTM(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nh-site-packages", default="/work/venv-nh/lib/python3.11/site-packages")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq", type=int, default=365)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (after one warm-up each)")
    args = parser.parse_args()
    from stefaland.finetune.models.lstm import LSTMSL

    n_dyn, n_static = 6, 26
    torch.manual_seed(0)
    dynamic, static = torch.randn(args.batch, args.seq, n_dyn), torch.randn(args.batch, n_static)
    target = torch.randn(args.batch, args.seq)
    ours = LSTMSL(n_dyn, n_static, args.hidden, 0.2)
    theirs = nh_model(args.nh_site_packages, args.hidden, n_dyn, n_static, args.seq)
    nh_batch = {"x_d": {f"d{i}": dynamic[..., i:i + 1] for i in range(n_dyn)}, "x_s": static}
    optimisers = {"ours": torch.optim.Adam(ours.parameters(), 1e-3),
                  "theirs": torch.optim.Adam(theirs.parameters(), 1e-3)}
    forwards = {"ours": lambda: ours(dynamic, static),
                "theirs": lambda: theirs(theirs.pre_model_hook(dict(nh_batch), is_train=True))["y_hat"][..., 0]}
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for step in range(args.steps + 1):
        for name in ("ours", "theirs"):
            started = time.perf_counter()
            loss = torch.sqrt(((forwards[name]() - target) ** 2).mean())
            optimisers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimisers[name].step()
            if step:  # step 0 warms up allocators and oneDNN primitives
                times[name].append(time.perf_counter() - started)
    mine, other = statistics.median(times["ours"]), statistics.median(times["theirs"])
    print(f"# model-only step, batch {args.batch} x seq {args.seq}, hidden {args.hidden}, "
          f"{torch.get_num_threads()} threads, median of {args.steps} alternated steps")
    print(f"ours (LSTM-SL): {mine:.3f} s/step; theirs (cudalstm): {other:.3f} s/step; ours/theirs {mine / other:.2f}")


if __name__ == "__main__":
    main()
