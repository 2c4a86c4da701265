"""The benchmark: the trainer's time per optimizer step against the bare cost of the same work.

``python -m extension bench`` (see :mod:`..cli.bench`) runs :func:`.runner.run_benchmark`. The
modules: :mod:`.bare` (the bare step: text encoding and denoiser, forward and backward, gradients
to the vectors only), :mod:`.memory` (process RSS and CUDA peaks without new dependencies),
:mod:`.runner` (settings, the interleaved measurement, the result) and :mod:`.report` (table).
Nothing here imports diffusers or transformers at import time.
"""
