"""Aspect-ratio buckets and the micro-batch stream (no model needed)."""

from __future__ import annotations

import math
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.training.buckets import make_buckets, nearest_bucket
from extension.training.dataset import DatasetOptions, ImageRecord, TrainingDataset
from extension.training.latent_cache import LatentCache


def make_dataset(bucket_of: list[int], repeats: int = 1) -> TrainingDataset:
    """A dataset whose image i lives in bucket ``bucket_of[i]`` (latents are not needed here)."""
    sizes = [(64, 64), (48, 80), (80, 48), (56, 72)]
    records = [
        ImageRecord(Path(f"{i}.png"), f"caption {i}", None, (100, 100), sizes[b], (0, 0))
        for i, b in enumerate(bucket_of)
    ]
    options = DatasetOptions(Path("unused"), width=64, height=64, repeats=repeats, buckets=True)
    return TrainingDataset(options, "emb", records, ["[name]"], LatentCache("once", 1.0), {}, [], 8)


def test_buckets_for_512():
    buckets = make_buckets(512, 512, 64)
    assert (512, 512) in buckets and (384, 640) in buckets and (640, 384) in buckets
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert all(max(w, h) / min(w, h) <= 2 for w, h in buckets)
    ratios = [w / h for w, h in buckets]
    assert ratios == sorted(ratios)
    assert set(buckets) == {(h, w) for w, h in buckets}  # symmetric


def test_buckets_small_step_and_base_size_always_present():
    assert make_buckets(64, 64, 8) == [(48, 80), (56, 72), (64, 64), (72, 56), (80, 48)]
    assert (520, 520) in make_buckets(520, 520, 64)
    with pytest.raises(ValueError):
        make_buckets(64, 64, 0)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 32), st.integers(1, 32), st.sampled_from([8, 16, 64]), st.floats(1.0, 4.0))
def test_bucket_properties(wk, hk, step, ratio):
    width, height = 8 * wk, 8 * hk
    buckets = make_buckets(width, height, step, ratio)
    assert (width, height) in buckets
    for w, h in buckets:
        assert w * h <= width * height
        if (w, h) != (width, height):
            assert w % step == 0 and h % step == 0 and max(w, h) / min(w, h) <= ratio + 1e-9


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 5000))
def test_nearest_bucket_has_the_nearest_ratio(w, h):
    buckets = make_buckets(512, 512, 64)
    chosen = nearest_bucket((w, h), buckets)
    distance = lambda b: abs(math.log(b[0] / b[1]) - math.log(w / h))  # noqa: E731
    assert distance(chosen) <= min(distance(b) for b in buckets) + 1e-9


def test_nearest_bucket_examples():
    buckets = make_buckets(512, 512, 64)
    assert nearest_bucket((1000, 1000), buckets) == (512, 512)
    assert nearest_bucket((1920, 1080), buckets) == (640, 384)
    assert nearest_bucket((1080, 1920), buckets) == (384, 640)
    assert nearest_bucket((5000, 100), buckets) == max(buckets, key=lambda b: b[0] / b[1])


def test_epoch_order_is_a_seeded_permutation_of_indices_times_repeats():
    ds = make_dataset([0] * 7, repeats=3)
    order = ds.epoch_order(5, 0)
    assert Counter(order) == {i: 3 for i in range(7)}
    assert order == ds.epoch_order(5, 0)
    assert order != ds.epoch_order(5, 1) and order != ds.epoch_order(6, 0)


stream_cases = st.tuples(
    st.lists(st.integers(0, 3), min_size=1, max_size=12),
    st.integers(1, 3),  # repeats
    st.integers(1, 6),  # batch size
    st.integers(0, 2**40),  # seed
)


@settings(max_examples=80, deadline=None)
@given(stream_cases)
def test_stream_keeps_every_example_and_never_mixes_buckets(case):
    bucket_of, repeats, batch_size, seed = case
    ds = make_dataset(bucket_of, repeats)
    epochs = 4
    orders = [ds.epoch_order(seed, e) for e in range(epochs)]
    # Every index appears exactly `repeats` times in each epoch.
    for order in orders:
        assert Counter(order) == {i: repeats for i in range(len(bucket_of))}
    # The batches completed by the items of those epochs come first in the stream: per bucket,
    # floor(items / batch_size) of them.
    in_bucket = Counter(bucket_of)
    n_batches = sum(epochs * repeats * n // batch_size for n in in_bucket.values())
    batches = list(islice(ds.micro_batches(batch_size, seed), n_batches))
    for batch in batches:
        assert len(batch) == batch_size
        assert len({bucket_of[i] for i in batch}) == 1  # homogeneous
    # Per bucket, the emitted indices are exactly the epochs' indices in order: nothing dropped,
    # nothing reordered, leftovers carried over the epoch boundary, fewer than a batch still queued.
    flat = [i for order in orders for i in order]
    for bucket in in_bucket:
        emitted = [i for b in batches if bucket_of[b[0]] == bucket for i in b]
        expected = [i for i in flat if bucket_of[i] == bucket]
        assert emitted == expected[: len(emitted)]
        assert 0 <= len(expected) - len(emitted) < batch_size


@settings(max_examples=60, deadline=None)
@given(stream_cases, st.integers(0, 30))
def test_start_equals_dropping_batches(case, k):
    bucket_of, repeats, batch_size, seed = case
    ds = make_dataset(bucket_of, repeats)
    full = list(islice(ds.micro_batches(batch_size, seed), k + 10))
    resumed = list(islice(ds.micro_batches(batch_size, seed, start=k), 10))
    assert resumed == full[k:]


def test_stream_is_deterministic_and_seed_dependent():
    ds = make_dataset([0, 1, 0, 1, 0, 1, 0, 1, 2, 2])
    a = list(islice(ds.micro_batches(2, 1), 50))
    assert a == list(islice(ds.micro_batches(2, 1), 50))
    assert a != list(islice(ds.micro_batches(2, 2), 50))


def test_leftovers_are_carried_across_epochs():
    ds = make_dataset([0] * 5)
    batches = list(islice(ds.micro_batches(2, 0), 5))  # 10 items = exactly 2 epochs of 5
    first, second = ds.epoch_order(0, 0), ds.epoch_order(0, 1)
    assert [i for b in batches for i in b] == first + second
    assert batches[2] == [first[4], second[0]]  # the odd one out of epoch 0 opens batch 3


def test_batch_larger_than_dataset_repeats_images_instead_of_stalling():
    ds = make_dataset([0, 0, 0])
    batch = next(ds.micro_batches(5, 0))
    assert len(batch) == 5 and set(batch) == {0, 1, 2}


def test_stream_argument_errors():
    ds = make_dataset([0, 0])
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="batch size"):
            ds.micro_batches(bad, 0)
    with pytest.raises(ValueError, match="start"):
        ds.micro_batches(1, 0, start=-1)


def test_prompts_from_records_are_deterministic_per_generator():
    import torch

    ds = make_dataset([0, 0, 0])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert ds.prompts([0, 2], g1) == ds.prompts([0, 2], g2) == ["emb", "emb"]
    with pytest.raises(IndexError, match="out of range"):
        ds.prompts([3], g1)
