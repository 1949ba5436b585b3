"""A training run's folder: starting or resuming it, and the logs process 0 writes into it.

    config.yaml        the resolved config of the run (each checkpoint also keeps its own)
    log.jsonl          loss, learning rate per part, samples/s; validation scores
    skipped.jsonl      samples not trained on: file, line, id, reason
    tensorboard/       the same numbers for TensorBoard (accelerate's tracker), when it is installed
    checkpoints/       step-NNNNNN folders (see checkpoint.py)
    train_result.json  written at the end
"""

from __future__ import annotations

from pathlib import Path

from vidlab.errors import VidlabError
from vidlab.files import LineAppender, read_jsonl, write_atomic, write_jsonl
from vidlab.training.checkpoint import latest_checkpoint
from vidlab.training.config import TrainConfig
from vidlab.training.data import SkipNote

LOG_FILE = "log.jsonl"
SKIPPED_FILE = "skipped.jsonl"
CONFIG_FILE = "config.yaml"
RESULT_FILE = "train_result.json"
TENSORBOARD_DIR = "tensorboard"


class RunFolderError(VidlabError):
    """An output folder that holds another run, or nothing to resume."""


def prepare_run_dir(run_dir: Path, config: TrainConfig, resume: bool | str, is_main: bool) -> Path | None:
    """Check the output folder against the resume setting; returns the checkpoint to resume from."""
    checkpoint = latest_checkpoint(run_dir)
    started = (run_dir / CONFIG_FILE).exists()
    if resume is True and checkpoint is None:
        raise RunFolderError(
            f"{run_dir}: no complete checkpoint to resume from. Run without --resume to start, or check output.dir."
        )
    if resume is False and started:
        raise RunFolderError(
            f"{run_dir}: holds a run already ({CONFIG_FILE} is there). Pass --resume to continue it "
            "(or set resume: auto), or choose a new output.dir."
        )
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:  # on a resume it is written once the checkpoint accepted the config
            write_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    return checkpoint


def tensorboard_available() -> bool:
    from accelerate.utils import is_tensorboard_available

    return is_tensorboard_available()


class RunLog:
    """log.jsonl, skipped.jsonl and the TensorBoard tracker, written by process 0 only.

    Args:
        accelerator: its trackers get every numeric log value (when it was built with log_with).
        start_step: on a resume, what was logged after this step is dropped (it will be logged again).
    """

    def __init__(self, run_dir: Path, accelerator, start_step: int):
        self.accelerator = accelerator
        self.enabled = accelerator.is_main_process
        self.seen_skips: set[tuple] = set()
        self.skipped: list[dict] = []
        self.log: list[dict] = []
        if not self.enabled:
            return
        log_path = run_dir / LOG_FILE
        if log_path.exists():
            self.log = [row for row in read_jsonl(log_path, torn_tail_ok=True) if row.get("step", 0) <= start_step]
            write_jsonl(log_path, self.log)
        skipped_path = run_dir / SKIPPED_FILE
        if skipped_path.exists():
            self.skipped = read_jsonl(skipped_path, torn_tail_ok=True)
            self.seen_skips = {(r["file"], r.get("index", r["line"]), r["reason"]) for r in self.skipped}
        self._log_file = LineAppender(log_path)
        self._skip_file = LineAppender(skipped_path)

    def add_skips(self, notes: list[SkipNote]) -> int:
        """Record skipped samples not seen before; returns how many were new."""
        new = 0
        for note in notes:
            key = (note.file, note.index if note.index >= 0 else note.line, note.reason)
            if key in self.seen_skips:
                continue
            self.seen_skips.add(key)
            row = note.to_dict()
            self.skipped.append(row)
            if self.enabled:
                self._skip_file.write(row)
            new += 1
        return new

    def write(self, row: dict) -> None:
        self.log.append(row)
        if not self.enabled:
            return
        self._log_file.write(row)
        scalars = {k.replace(".", "/"): v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        self.accelerator.log(scalars, step=row["step"])

    def close(self) -> None:
        if self.enabled:
            self._log_file.close()
            self._skip_file.close()
