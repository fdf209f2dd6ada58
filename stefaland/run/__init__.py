"""What every run shares: the plumbing below pretraining, finetuning, prediction, embedding and k8s.

One module per concept, each imported directly (this ``__init__`` imports nothing, so a stage
pulls in only what it uses and the GPU suite can import stage modules without zarr):

* :mod:`.folder` — the run folder: its lock and marker, its ``config.yaml`` and the resume check;
* :mod:`.device` — which torch device and how many CPU threads a run uses;
* :mod:`.checkpoint` — checkpoints that are never half-written, and the newest intact one;
* :mod:`.pretrained` — a pretraining checkpoint read back as an encoder (finetune, embed, predict);
* :mod:`.record` — ``run.json``, the record a run leaves beside its weights;
* :mod:`.manifest` — ``manifest.json``, sizes and checksums that ``stefaland pull`` verifies;
* :mod:`.metrics_log` — ``metrics.csv``, rewritten whole after every checkpoint;
* :mod:`.config_io` — a run config read from YAML and validated, every problem on one line;
* :mod:`.variables` — a run's variables looked up in a store;
* :mod:`.folds` — fold ids as a store holds them (``fold_<split>`` coordinates);
* :mod:`.layout` — a run folder's layout: ``fold-<k>/``, ``temporal/``, ``predictions.nc``;
* :mod:`.trainer` — the training-loop skeleton that pretraining and finetuning specialise.
"""
