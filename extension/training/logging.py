"""Training logs: ``loss.csv``, a console progress bar, optional tensorboard, and a loss plot
drawn with Pillow (``loss.png``)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

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
        """Draw ``loss.png`` from the history; None when there is nothing to draw."""
        if not any(r.loss is not None or r.validation_loss is not None for r in self.history):
            return None
        image = draw_loss_plot(self.history, title=self.title)
        atomic_write(self.plot_path, lambda tmp: image.save(tmp, format="PNG"))
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


# ---------------------------------------------------------------------------- plot


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as tensorboard smooths)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**i))
    return out


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def draw_loss_plot(rows: list[LogRow], *, title: str = "", size: tuple[int, int] = (900, 520)) -> Image.Image:
    """A line chart of loss (raw and smoothed) and validation loss against step, with the learn
    rate on a second axis at the right."""
    w, h = size
    left, right, top, bottom = 80, 90, 40, 60
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    steps = [r.step for r in rows]
    x_lo, x_hi = min(steps), max(max(steps), min(steps) + 1)
    losses = [(r.step, r.loss) for r in rows if r.loss is not None and math.isfinite(r.loss)]
    vals = [(r.step, r.validation_loss) for r in rows if r.validation_loss is not None and math.isfinite(r.validation_loss)]
    lrs = [(r.step, r.learn_rate) for r in rows if r.learn_rate is not None and math.isfinite(r.learn_rate)]
    ys = [v for _, v in losses] + [v for _, v in vals]
    y_lo, y_hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    pad = (y_hi - y_lo) * 0.05 or max(abs(y_hi) * 0.05, 1e-6)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    lr_hi = max((v for _, v in lrs), default=1.0) * 1.1 or 1.0

    def px(step: float) -> float:
        return left + (step - x_lo) / (x_hi - x_lo) * (w - left - right)

    def py(v: float) -> float:
        return top + (y_hi - v) / (y_hi - y_lo) * (h - top - bottom)

    def py_lr(v: float) -> float:
        return top + (lr_hi - v) / lr_hi * (h - top - bottom)

    # frame, grid and ticks
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for t in _ticks(y_lo, y_hi):
        y = py(t)
        d.line([left, y, w - right, y], fill=(230, 230, 230))
        d.text((left - 6, y), _fmt_tick(t), fill="black", font=font, anchor="rm")
    for t in _ticks(x_lo, x_hi):
        x = px(t)
        d.line([x, h - bottom, x, h - bottom + 4], fill="black")
        d.text((x, h - bottom + 6), _fmt_tick(t), fill="black", font=font, anchor="ma")
    if lrs:
        for t in _ticks(0.0, lr_hi):
            d.text((w - right + 6, py_lr(t)), _fmt_tick(t), fill=(0, 130, 0), font=font, anchor="lm")

    def polyline(points: list[tuple[float, float]], colour, width: int = 1) -> None:
        if len(points) == 1:
            x, y = points[0]
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        elif points:
            d.line(points, fill=colour, width=width)

    if lrs:  # the schedule: a step function
        pts: list[tuple[float, float]] = []
        for i, (s, v) in enumerate(lrs):
            if i:
                pts.append((px(s), py_lr(lrs[i - 1][1])))
            pts.append((px(s), py_lr(v)))
        polyline(pts, (0, 160, 0))
    if losses:
        polyline([(px(s), py(v)) for s, v in losses], (170, 200, 240))
        sm = smooth([v for _, v in losses])
        polyline([(px(s), py(v)) for (s, _), v in zip(losses, sm)], (20, 70, 200), width=2)
    if vals:
        polyline([(px(s), py(v)) for s, v in vals], (230, 110, 0), width=2)
        for s, v in vals:
            x, y = px(s), py(v)
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(230, 110, 0))

    # labels and legend
    d.text((w / 2, h - 18), "step", fill="black", font=font, anchor="mm")
    d.text((12, top + (h - top - bottom) / 2), "loss", fill="black", font=font, anchor="lm")
    if lrs:
        d.text((w - 12, top + (h - top - bottom) / 2), "LR", fill=(0, 130, 0), font=font, anchor="rm")
    if title:
        d.text((left, 14), title, fill="black", font=font, anchor="lm")
    legend = [("loss", (170, 200, 240)), ("smoothed loss", (20, 70, 200))]
    if vals:
        legend.append(("validation loss", (230, 110, 0)))
    if lrs:
        legend.append(("learn rate", (0, 160, 0)))
    x = w - right - 10
    for label, colour in reversed(legend):
        tw = d.textlength(label, font=font)
        x -= tw
        d.text((x, 20), label, fill="black", font=font, anchor="lm")
        d.line([x - 22, 20, x - 4, 20], fill=colour, width=3)
        x -= 36
    return img
