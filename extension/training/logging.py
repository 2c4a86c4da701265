"""Training logs: ``loss.csv``, a console progress bar, optional tensorboard, and the loss chart
``loss.png`` (drawn by :mod:`.charts` with matplotlib)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .outputs import atomic_write

CSV_FIELDS = ("step", "epoch", "loss", "validation_loss", "learn_rate")


@dataclass
class LogRow:
    step: int
    epoch: float
    loss: float | None
    validation_loss: float | None
    learn_rate: float | None


def _num(text: str) -> float | None:
    try:
        return float(text) if text not in ("", None) else None
    except ValueError:
        return None


def read_loss_csv(path: Path) -> list[LogRow]:
    """The rows of a ``loss.csv`` (missing or unreadable values become None)."""
    rows: list[LogRow] = []
    if not Path(path).is_file():
        return rows
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            step = _num(r.get("step", ""))
            if step is None:
                continue
            rows.append(
                LogRow(
                    int(step),
                    _num(r.get("epoch", "")) or 0.0,
                    _num(r.get("loss", "")),
                    _num(r.get("validation_loss", "")),
                    _num(r.get("learn_rate", "")),
                )
            )
    return rows


class TrainLogger:
    """Writes one CSV row per step and keeps the history for the plot.

    Nothing is created until the first row is written. With ``append`` (a resumed run) the rows
    of the earlier run up to ``start_step`` are kept; without it an existing file is replaced.
    """

    def __init__(
        self,
        csv_path: Path,
        plot_path: Path,
        *,
        total_steps: int,
        start_step: int = 0,
        append: bool = False,
        progress_bar: bool = True,
        tensorboard_dir: Path | None = None,
        title: str = "",
    ):
        self.csv_path = Path(csv_path)
        self.plot_path = Path(plot_path)
        self.title = title
        self.history: list[LogRow] = []
        if append:
            self.history = [r for r in read_loss_csv(self.csv_path) if r.step <= start_step]
        # an existing file is rewritten on the first row: kept rows only, or none for a new run
        self._rewrite = self.csv_path.is_file()
        self._bar = None
        if progress_bar:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
            except ImportError:  # tqdm is optional in the web UI
                self._bar = None
        self._tb = None
        self._tb_dir = tensorboard_dir
        self._warned_plot = False
        self._file = None  # kept open for the run: reopening it every step costs measurable time

    # -- writing
    def _writer_open(self):
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if self._rewrite:  # drop rows of an abandoned later part of the run
            self._rewrite = False
            atomic_write(self.csv_path, lambda tmp: self._write_all(tmp))
        new = not self.csv_path.exists()
        f = open(self.csv_path, "a", newline="", encoding="utf-8")
        if new:
            csv.writer(f).writerow(CSV_FIELDS)
        return f

    def _write_all(self, tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_FIELDS)
            for r in self.history:
                w.writerow(_fmt_row(r))

    def log(self, row: LogRow) -> None:
        """Append ``row`` to the CSV, the bar and tensorboard."""
        if self._file is None:
            self._file = self._writer_open()
            self._csv = csv.writer(self._file)
        self._csv.writerow(_fmt_row(row))
        self._file.flush()  # readers (the UI's live plot) see every finished row
        self.history.append(row)
        if self._bar is not None:
            post = {}
            if row.loss is not None:
                post["loss"] = f"{row.loss:.5f}"
            if row.validation_loss is not None:
                post["val"] = f"{row.validation_loss:.5f}"
            if row.learn_rate is not None:
                post["lr"] = f"{row.learn_rate:.2e}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.n = row.step
            self._bar.refresh()
        tb = self._tensorboard()
        if tb is not None:
            if row.loss is not None:
                tb.add_scalar("loss/train", row.loss, row.step)
            if row.validation_loss is not None:
                tb.add_scalar("loss/validation", row.validation_loss, row.step)
            if row.learn_rate is not None:
                tb.add_scalar("learn_rate", row.learn_rate, row.step)

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message)

    def _tensorboard(self):
        if self._tb_dir is None:
            return None
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard not installed: silently off
                self._tb_dir = None
                return None
            self._tb = SummaryWriter(str(self._tb_dir))
        return self._tb

    def plot(self) -> Path | None:
        """Draw ``loss.png`` from the history; None when there is nothing to draw, or when
        matplotlib is missing (a bare command-line install: the CSV holds the same numbers)."""
        try:
            from .charts import loss_figure, save_figure

            fig = loss_figure(self.history, title=self.title)
        except ImportError:
            if not self._warned_plot:
                self._warned_plot = True
                self.write("loss.png is not drawn: matplotlib is not installed (pip install matplotlib)")
            return None
        if fig is None:
            return None
        atomic_write(self.plot_path, lambda tmp: save_figure(fig, tmp))
        return self.plot_path

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _fmt_row(r: LogRow) -> list[str]:
    def f(v: float | None, spec: str) -> str:
        return "" if v is None else format(v, spec)

    return [str(r.step), f(r.epoch, ".4f"), f(r.loss, ".7f"), f(r.validation_loss, ".7f"), f(r.learn_rate, ".6g")]
