"""Apply a finetuned run to new (ungauged) sites: ``predict_run``.

The run record it relies on is written by finetuning; ``make_record`` and ``write_run_record``
stay importable from here, where docs/PREDICT.md names them.
"""

from stefaland.finetune.record import make_record
from stefaland.run.record import RECORD_FILE, write_run_record

from .run import PredictSummary, fold_directories, predict_run

__all__ = ["RECORD_FILE", "PredictSummary", "fold_directories", "make_record", "predict_run", "write_run_record"]
