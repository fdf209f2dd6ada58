"""Scoring predictions files and writing the paper-style report (tables, per-site CSV, JSON, plots)."""

from stefaland.report.build import FORMATS, Report, make_report
from stefaland.report.tasks import TASKS
from stefaland.run.predictions import read_predictions, write_predictions

__all__ = ["FORMATS", "Report", "TASKS", "make_report", "read_predictions", "write_predictions"]
