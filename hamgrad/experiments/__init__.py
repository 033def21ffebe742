"""Ablations: the resumable gradient-mode sweep over HamNet (ham × mode × block × K × seed), its configuration,
metrics and summary table."""

from .config import AblationConfig, RunSpec
from .metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from .runner import CSV_COLUMNS, build_model, load_model, load_results, read_config, run_ablation
from .summary import Summary, SummaryCell, summarize

__all__ = ["AblationConfig", "RunSpec", "run_ablation", "load_results", "read_config", "load_model", "build_model",
           "CSV_COLUMNS", "Summary", "SummaryCell", "summarize", "confusion_matrix", "iou_per_class", "mean_iou",
           "pixel_accuracy"]
