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


def lstm_flops(args: argparse.Namespace, n_in: int, input_layer: int) -> float:
    """Multiply-adds x 2 of the GEMMs of one step, backward counted as twice the forward.

    ``input_layer`` = width of a Linear before the LSTM (ours: hidden; neuralhydrology: none, the
    LSTM reads the n_in inputs directly), which sets the width of the LSTM's input GEMM.
    """
    rows, gates = args.batch * args.seq, 4 * args.hidden
    lstm_in = input_layer or n_in
    forward = 2 * rows * (lstm_in * gates + args.hidden * gates + (n_in * input_layer if input_layer else 0))
    return 3.0 * forward


class BeforeIssue7(torch.nn.Module):
    """The baseline LSTM-SL: batch-first LSTM, dropout on its outputs (ours is time-major with weight dropout)."""

    def __init__(self, n_dyn: int, n_static: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(n_dyn + n_static, hidden)
        self.lstm = torch.nn.LSTM(hidden, hidden, batch_first=True)
        self.drop = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(hidden, 1)

    def forward(self, dynamic: torch.Tensor, static: torch.Tensor) -> torch.Tensor:
        from stefaland.finetune.models.base import lstm_inputs

        h, _ = self.lstm(torch.relu(self.inp(lstm_inputs(dynamic, static))))
        return self.out(self.drop(h)).squeeze(-1)


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
    before = BeforeIssue7(n_dyn, n_static, args.hidden, 0.2)
    optimisers = {"ours": torch.optim.Adam(ours.parameters(), 1e-3),
                  "theirs": torch.optim.Adam(theirs.parameters(), 1e-3),
                  "before": torch.optim.Adam(before.parameters(), 1e-3)}
    forwards = {"ours": lambda: ours(dynamic, static),
                "theirs": lambda: theirs(theirs.pre_model_hook(dict(nh_batch), is_train=True))["y_hat"][..., 0],
                "before": lambda: before(dynamic, static)}
    times: dict[str, list[float]] = {name: [] for name in forwards}
    for step in range(args.steps + 1):
        for name in forwards:
            started = time.perf_counter()
            loss = torch.sqrt(((forwards[name]() - target) ** 2).mean())
            optimisers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimisers[name].step()
            if step:  # step 0 warms up allocators and oneDNN primitives
                times[name].append(time.perf_counter() - started)
    mine, other, old = (statistics.median(times[name]) for name in ("ours", "theirs", "before"))
    print(f"# model-only step, batch {args.batch} x seq {args.seq}, hidden {args.hidden}, "
          f"{torch.get_num_threads()} threads, median of {args.steps} alternated steps")
    print(f"ours (LSTM-SL): {mine:.3f} s/step; theirs (cudalstm): {other:.3f} s/step; ours/theirs {mine / other:.2f}")
    print(f"LSTM-SL before issue 7 (batch-first, output dropout): {old:.3f} s/step; ours/before {mine / old:.2f}")
    flops = {"ours": lstm_flops(args, n_dyn + n_static, args.hidden), "theirs": lstm_flops(args, n_dyn + n_static, 0)}
    for name, count in flops.items():
        seconds = mine if name == "ours" else other
        print(f"{name}: {count / 1e9:.0f} GFLOP per step (LSTM + input layer, forward + backward) = "
              f"{count / seconds / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
