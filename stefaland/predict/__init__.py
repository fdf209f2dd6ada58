"""Apply a finetuned run to new (ungauged) sites: ``predict_run`` and the run record it relies on."""

from .record import RECORD_FILE, make_record, read_run_record, record_from_store, write_run_record
from .run import PredictSummary, fold_directories, predict_run

__all__ = ["RECORD_FILE", "PredictSummary", "fold_directories", "make_record", "predict_run", "read_run_record",
           "record_from_store", "write_run_record"]
