"""Clip sampler: windows around each frame, edge padding, nearest-centre assignment."""

from __future__ import annotations

import numpy as np
import pytest

from mulde.errors import InputError
from mulde.extractors.clips import (
    assign_nearest,
    clip_centres,
    clip_indices,
    clip_offsets,
    clip_span,
    window_mean,
)


def test_sixteen_frame_clip_covers_c_minus_8_to_c_plus_7():
    assert clip_offsets(16, 1).tolist() == list(range(-8, 8))
    assert clip_offsets(16, 2).tolist() == list(range(-16, 16, 2))
    idx = clip_indices(np.array([20]), 100)
    assert idx.tolist() == [list(range(12, 28))]
    assert clip_span(16, 1) == 16 and clip_span(16, 4) == 61


def test_every_frame_is_a_centre_with_padding():
    n = 30
    centres = clip_centres(n, step=1)
    assert centres.tolist() == list(range(n))
    idx = clip_indices(centres, n)
    assert idx.shape == (n, 16)
    # Edges repeat the first / last frame.
    assert idx[0].tolist() == [0] * 9 + list(range(1, 8))
    assert idx[-1].tolist() == list(range(21, 30)) + [29] * 7
    assert idx.min() == 0 and idx.max() == n - 1


def test_padding_works_for_videos_shorter_than_a_clip():
    idx = clip_indices(clip_centres(3, 1), 3)
    assert idx.shape == (3, 16)
    assert set(np.unique(idx)) == {0, 1, 2}


def test_no_padding_keeps_windows_inside_and_rejects_short_videos():
    centres = clip_centres(40, 1, pad=False)
    assert centres[0] == 8 and centres[-1] == 40 - 1 - 7
    idx = clip_indices(centres, 40, pad=False)
    assert idx.min() == 0 and idx.max() == 39
    with pytest.raises(InputError, match=r"10 frames.*spans 16 frames"):
        clip_centres(10, 1, pad=False)
    with pytest.raises(InputError, match=r"spans 31 frames"):
        clip_centres(20, 1, clip_len=16, stride=2, pad=False)
    with pytest.raises(InputError, match="pad=True"):
        clip_indices(np.array([2]), 40, pad=False)


def test_nearest_centre_assignment():
    assign = assign_nearest(12, np.array([0, 5, 10]))
    assert assign.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    # Without padding the edge frames take the first / last valid clip.
    centres = clip_centres(40, 4, pad=False)
    assign = assign_nearest(40, centres)
    assert assign.shape == (40,)
    assert assign[0] == 0 and assign[-1] == len(centres) - 1
    assert np.all(np.abs(centres[assign] - np.arange(40)) <= 8)  # frame 0 -> centre 8


def test_clip_step_reaches_every_frame_within_half_a_step():
    n, step = 101, 8
    centres = clip_centres(n, step)
    assert centres.tolist() == list(range(0, n, step))
    dist = np.abs(centres[assign_nearest(n, centres)] - np.arange(n))
    assert dist.max() <= step // 2


@pytest.mark.parametrize("n,stride,clip_len,pad", [
    (1, 1, 16, True), (7, 1, 16, True), (50, 1, 16, True), (50, 3, 16, True),
    (50, 2, 5, True), (50, 1, 16, False), (70, 3, 16, False), (33, 2, 4, False),
])
def test_window_mean_equals_mean_over_clip_indices(n, stride, clip_len, pad):
    rng = np.random.default_rng(n + stride)
    values = rng.normal(size=(n, 4))
    centres = clip_centres(n, 1, clip_len, stride, pad)
    expected = values[clip_indices(centres, n, clip_len, stride, pad)].mean(axis=1)
    np.testing.assert_allclose(window_mean(values, centres, clip_len, stride, pad), expected,
                               rtol=1e-5, atol=1e-5)


def test_bad_arguments_raise_input_errors():
    with pytest.raises(InputError, match="clip_step"):
        clip_centres(10, 0)
    with pytest.raises(InputError, match="0 frames"):
        clip_centres(0, 1)
    with pytest.raises(InputError, match="increasing"):
        assign_nearest(5, np.array([3, 1]))
    with pytest.raises(InputError, match="shape"):
        window_mean(np.zeros(5), np.array([0]))
