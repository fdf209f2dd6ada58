"""Train and test hydroDL's own LSTM on its SMAP example, through hydroDL's own code path (hydroDL venv only).

Run by ``benchmarks/skill_smap.py`` with the *hydroDL* interpreter (``--hydrodl-python``), never imported by
StefaLand (hydroDL is not one of our dependencies). It does what hydroDL's ``example/train-lstm.py`` and
``example/test-lstm.py`` do -- ``default.optDataSMAP`` / ``optLstm`` / ``optLossRMSE`` / ``optTrainSMAP``
updated with the data root, periods, inputs and budget, then ``master.train`` and ``master.test`` -- with a
``perf_counter`` around each, and writes the test-period simulation and observation to an ``.npz`` so that
the caller scores both tools with the same metric code.

Without CUDA the example itself switches to ``hydroDL.model.rnn.CpuLstmModel`` (its ``CudnnLstmModel`` calls
cuDNN directly); so does this script. Everything else is the example's: RmseLoss, Adadelta, hidden 256,
DropConnect 0.5 on the LSTM weights, windows of ``rho`` days, ``nIterEp`` by hydroDL's own rule,
normalisation by the database's ``Statistics/`` files, test from a cold start on the first test day.

    python hydrodl_their_side.py SPEC.json RESULT.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydroDL.master import default, master


def _day(text: str) -> int:
    """``2016-04-01`` → hydroDL's tRange integer ``20160401``."""
    return int(text.replace("-", ""))


def main(spec_file: str, result_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    torch.set_num_threads(int(spec.get("threads", 1)))
    out = spec["out"]
    os.makedirs(out, exist_ok=True)
    train_range = [_day(spec["train"][0]), _day(spec["train"][1])]
    test_range = [_day(spec["test"][0]), _day(spec["test"][1])]
    opt_data = default.update(dict(default.optDataSMAP), rootDB=spec["root"], subset=spec["subset"],
                              tRange=train_range, varT=spec["dynamic"], varC=spec["static"])
    name = "hydroDL.model.rnn.CudnnLstmModel" if torch.cuda.is_available() else "hydroDL.model.rnn.CpuLstmModel"
    opt_model = default.update(dict(default.optLstm), name=name, hiddenSize=spec["hidden"],
                               nx=len(spec["dynamic"]) + len(spec["static"]))
    opt_loss = dict(default.optLossRMSE)
    opt_train = default.update(dict(default.optTrainSMAP), miniBatch=[spec["batch_size"], spec["rho"]],
                               nEpoch=spec["epochs"], saveEpoch=spec["epochs"], seed=spec["seed"])
    started = time.perf_counter()
    master.train(master.wrapMaster(out, opt_data, opt_model, opt_loss, opt_train))
    train_s = time.perf_counter() - started
    # torch >= 2.6 loads weights only by default; hydroDL saves whole modules (torch.save(model)). The file
    # is the one this process has just written, so the pre-2.6 behaviour is safe here.
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    started = time.perf_counter()
    df, sim, obs = master.test(out, tRange=test_range, subset=spec["subset"], epoch=spec["epochs"], reTest=True)
    test_s = time.perf_counter() - started
    days = np.arange(np.datetime64(spec["test"][0]), np.datetime64(spec["test"][1]) + 1)
    np.savez(Path(result_file).with_suffix(".npz"), cells=np.asarray(df.indSub), dates=days.astype(str),
             sim=sim[:, :, 0], obs=obs[:, :, 0])
    losses = [float(line.split("Loss")[1].split()[0]) for line in Path(out, "run.csv").read_text().splitlines() if "Loss" in line]
    Path(result_file).write_text(json.dumps({"train_s": train_s, "test_s": test_s, "model": name,
                                             "train_loss": losses, "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
