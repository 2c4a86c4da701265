"""The benchmark's console table."""

from __future__ import annotations

import statistics

from .runner import TARGET_RATIO, BenchResult, Timing


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def _rate(value: float) -> str:
    return f"{value:.2f}" if value >= 1 else f"{value:.3g}"  # full-size models on a CPU: 0.011


def _timing_row(label: str, t: Timing) -> str:
    return f"{label:<27}{_ms(t.median):>11}{_ms(min(t.times)):>11}{_ms(max(t.times)):>11}{_rate(t.samples_per_second):>11}"


def _cpu_row(label: str, t: Timing) -> str:
    c = t.cpu_times
    return f"{label:<27}{_ms(statistics.median(c)):>11}{_ms(min(c)):>11}{_ms(max(c)):>11}"


def _flop_amount(value: float | None) -> str:
    """``value`` FLOPs with an SI prefix: "1.234 TFLOP", "45.6 GFLOP"."""
    if value is None:
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}FLOP"
    return f"{value:.0f} FLOP"


def _flop_lines(flops: dict | None) -> list[str]:
    if not flops:
        return []
    lines = [
        f"model FLOPs            {_flop_amount(flops['per_step'])} per step ({_flop_amount(flops['per_sample'])} "
        "per sample): text encoders + UNet, forward and backward, counted by torch's FlopCounterMode",
        f"achieved               trainer {_flop_amount(flops['achieved_trainer_flops_per_s'])}/s, "
        f"bare {_flop_amount(flops['achieved_bare_flops_per_s'])}/s",
    ]
    if flops["mfu_trainer"] is None:
        lines.append(f"MFU                    {flops['peak']}")
    else:
        lines.append(
            f"MFU                    trainer {flops['mfu_trainer']:.1%}, bare {flops['mfu_bare']:.1%} "
            f"of {flops['peak']}"
        )
    return lines


def format_table(result: BenchResult) -> str:
    """A human-readable summary of ``result``."""
    s, m, c = result.settings, result.model, result.checks
    ratio = result.ratio
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    lines = [
        f"TI Trainer benchmark: {m['source']} ({m['family']}, {m['prediction_type']}) on "
        f"{result.machine['device']}, {m['dtype']} weights, {m['precision']} compute, "
        f"{result.machine['torch_threads']} torch thread(s)",
        f"batch {s.batch_size} x accumulation {s.grad_accumulation} at {m['size']}x{m['size']} px, "
        f"{s.vectors} vector(s); medians of {len(result.trainer.times)} steps after {s.warmup} warm-up "
        "steps, trainer and bare steps alternating on the same batches",
        "",
        f"{'':<27}{'median':>11}{'min':>11}{'max':>11}{'samples/s':>11}",
        _timing_row("trainer step", result.trainer),
        _timing_row(f"bare step ({result.bare_text})", result.bare),
    ]
    if result.trainer.cpu_times and result.bare.cpu_times:
        lines += [
            _cpu_row("trainer step, CPU time", result.trainer),
            _cpu_row("bare step, CPU time", result.bare),
        ]
    lines += [
        "",
        f"trainer overhead       {ratio:.3f} x bare (median step times; {verdict} the target <= {TARGET_RATIO})",
        f"  other estimates      {result.paired_ratio:.3f} median of paired steps, {result.min_ratio:.3f} fastest steps"
        + (f", {result.cpu_ratio:.3f} CPU time" if result.cpu_ratio is not None else ""),
        f"latent caching         {_ms(result.caching_per_image_s)} per image "
        f"(median of {s.cache_repeats} passes over {result.caching_images} images)",
        f"peak RSS               {_mib(result.memory.get('rss_peak_bytes'))} process; during steps: trainer "
        f"{_mib(result.memory.get('rss_peak_trainer_bytes'))}, bare {_mib(result.memory.get('rss_peak_bare_bytes'))}",
    ]
    if result.memory.get("cuda_max_allocated_trainer_bytes") is not None:
        lines.append(
            f"CUDA max allocated     trainer {_mib(result.memory['cuda_max_allocated_trainer_bytes'])}, "
            f"bare {_mib(result.memory['cuda_max_allocated_bare_bytes'])}"
        )
    lines += _flop_lines(result.flops)
    same = (
        "same"
        if c["first_step_loss_abs_diff"] <= 1e-5 * max(1.0, abs(c["first_step_loss_bare"]))
        else "DIFFERENT"
    )
    lines.append(
        f"checks                 first-step loss: trainer {c['first_step_loss_trainer']:.6f}, bare "
        f"{c['first_step_loss_bare']:.6f} ({same}); model "
        f"{'unchanged' if c['model_unchanged'] else 'CHANGED'}; parameters with .grad: {c['params_with_grad']}"
    )
    if result.builtin:
        theirs = result.builtin.get("median_step_s")
        ours = result.trainer.median if result.trainer else None
        if theirs and ours:
            lines.append(
                f"web UI trainer         {theirs * 1e3:.1f} ms per step (median): ours is "
                f"{theirs / ours:.2f}x its steps per second"
            )
        else:
            lines.append("web UI trainer         no figures (see the JSON)")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
