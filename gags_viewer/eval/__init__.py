"""The LERF-OVS evaluation protocol (mIoU and localization accuracy), as in the official GAGS code."""

from gags_viewer.eval.labels import LabelError, LabelFrame, QueryLabel, load_labels
from gags_viewer.eval.report import EvalReport, QueryRow
from gags_viewer.eval.runner import EvalConfig, EvalError, run_eval

__all__ = [
    "EvalConfig",
    "EvalError",
    "EvalReport",
    "LabelError",
    "LabelFrame",
    "QueryLabel",
    "QueryRow",
    "load_labels",
    "run_eval",
]
