"""Flow-grid features: motion lands in the right cell and orientation bin, static is zero,
layout and dimension as documented, flow carried across chunks."""

from __future__ import annotations

import numpy as np
import pytest

from mulde.datasets.video import ArrayVideo, open_video
from mulde.errors import InputError
from mulde.extractors.flowgrid import FlowGridExtractor, feature_names, flowgrid_dim
from mulde.extractors.registry import create_extractor

H, W = 96, 128  # working size = frame size (short side below work_size: never upscaled)


def moving_square(n: int = 24, dx: int = 2, dy: int = 0, x0: int = 36, y0: int = 28) -> ArrayVideo:
    """A 16x16 textured square on a dark background moving (dx, dy) pixels per frame."""
    rng = np.random.default_rng(0)
    patch = rng.integers(80, 256, (16, 16), dtype=np.uint8)
    frames = np.full((n, H, W), 20, np.uint8)
    for t in range(n):
        x, y = x0 + dx * t, y0 + dy * t
        frames[t, y : y + 16, x : x + 16] = patch
    return ArrayVideo(frames)


def cell(values: np.ndarray, row: int, col: int, ext: FlowGridExtractor) -> np.ndarray:
    per = ext.cfg.n_bins + len(ext.cfg.mag_edges)
    k = row * ext.cfg.grid[1] + col
    return values[..., k * per : (k + 1) * per]


def test_square_moving_right_fills_the_right_bin_of_its_cell():
    # Farneback keeps the flat background still, so the layout can be checked exactly; DIS (the
    # default) fills textureless regions from their neighbours (next test).
    ext = FlowGridExtractor(method="farneback")
    table = ext.extract(moving_square(dx=2), progress=False)["flowgrid"]
    assert len(table) == 24 and table.frame_idx.tolist() == list(range(24))
    # The square spans x 36..98 over the video, rows 28..44: grid row 1, columns 1..2.
    crossed = cell(table.values[12], 1, 1, ext)
    ori, mag = crossed[:8], crossed[8:]
    assert ori.argmax() == 0  # bin 0 = rightwards
    assert ori[0] > 3 * (ori.sum() - ori[0])
    assert mag.sum() > 0.05  # a visible part of the cell moves
    # Cells far from the square stay still.
    assert np.abs(cell(table.values[12], 3, 0, ext)).max() < 1e-3
    assert np.abs(cell(table.values[12], 0, 3, ext)).max() < 1e-3


def test_default_dis_flow_puts_the_motion_in_the_right_cell_and_bin():
    ext = FlowGridExtractor()
    assert ext.cfg.method == "dis"
    values = ext.extract(moving_square(dx=2), progress=False)["flowgrid"].values[12]
    crossed = cell(values, 1, 1, ext)
    assert crossed[:8].argmax() == 0 and crossed[0] > 0.5
    # Every cell's motion points right, and the far bottom row has under a tenth of it.
    per_cell = values.reshape(16, 13)[:, :8]
    assert (per_cell[:, 1:] < 1e-3).all()
    assert np.abs(values.reshape(4, 4, 13)[3]).max() < 0.1 * crossed[0]


@pytest.mark.parametrize("dx,dy,expected_bin", [(-2, 0, 4), (0, 2, 2), (0, -2, 6)])
def test_orientation_bins_follow_the_documented_convention(dx, dy, expected_bin):
    ext = FlowGridExtractor()
    x0, y0 = (80, 28) if dx < 0 else (40, 8 if dy > 0 else 60)
    values = ext.extract(moving_square(20, dx, dy, x0, y0), progress=False)["flowgrid"].values
    per_bin = values[10].reshape(16, 13)[:, :8].sum(axis=0)
    assert per_bin.argmax() == expected_bin


def test_static_video_has_zero_features():
    frames = np.repeat(moving_square(1).frames, 20, axis=0)
    values = FlowGridExtractor().extract(ArrayVideo(frames), progress=False)["flowgrid"].values
    assert values.shape == (20, 208)
    assert np.abs(values).max() < 1e-6


def test_dimension_and_layout_match_the_documentation():
    ext = FlowGridExtractor()
    assert ext.dim == flowgrid_dim() == 208 == 4 * 4 * (8 + 5) == len(feature_names())
    names = feature_names()
    assert names[:9] == [f"r0c0_ori{k}" for k in range(8)] + ["r0c0_mag0"]
    assert names[13] == "r0c1_ori0" and names[-1] == "r3c3_mag4"
    small = FlowGridExtractor(grid=(2, 3), n_bins=4, mag_edges=(1.0,))
    table = small.extract(moving_square(18), progress=False)["flowgrid"]
    assert table.values.shape == (18, 2 * 3 * 5) == (18, small.dim)
    assert table.meta["feature_type"] == "flowgrid" and table.meta["dim"] == 30
    assert table.meta["grid"] == [2, 3]


def test_flow_continues_across_chunks_and_window_is_pooled():
    video = moving_square(30)
    a = FlowGridExtractor(chunk_size=7).extract(video, progress=False)["flowgrid"].values
    b = FlowGridExtractor(chunk_size=64).extract(video, progress=False)["flowgrid"].values
    np.testing.assert_allclose(a, b, atol=1e-6)
    # Per-frame descriptors: frame 0 has no motion, later frames do.
    desc = FlowGridExtractor(chunk_size=7).frame_descriptors(video, progress=False)
    assert desc.shape == (30, 16, 13)
    assert np.abs(desc[0]).max() == 0 and desc[7].sum() > 0 and desc[8].sum() > 0


def test_magnitude_bins_are_fractions_and_speed_moves_energy_up():
    ext = FlowGridExtractor()
    slow = ext.frame_descriptors(moving_square(12, dx=1), progress=False)[6]
    fast = ext.frame_descriptors(moving_square(12, dx=3), progress=False)[6]
    for desc in (slow, fast):
        assert np.all(desc[:, 8:] >= 0) and np.all(desc[:, 8:].sum(axis=1) <= 1 + 1e-9)
    assert fast[:, :8].sum() > 1.5 * slow[:, :8].sum()  # more speed, more oriented energy


def test_clip_step_and_no_padding():
    video = moving_square(30)
    full = FlowGridExtractor().extract(video, progress=False)["flowgrid"].values
    stepped = FlowGridExtractor(clip_step=4).extract(video, progress=False)["flowgrid"].values
    np.testing.assert_allclose(stepped[9], full[8], atol=1e-6)  # frame 9 -> centre 8
    with pytest.raises(InputError, match="spans 16 frames"):
        FlowGridExtractor(pad=False).extract(moving_square(10), progress=False)


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="unknown flowgrid option"):
        FlowGridExtractor(bins=8)
    with pytest.raises(InputError, match="unknown flow method"):
        FlowGridExtractor(method="raft")
    with pytest.raises(InputError, match="mag_edges"):
        FlowGridExtractor(mag_edges=(2.0, 1.0))
    with pytest.raises(InputError, match="grid"):
        FlowGridExtractor(grid=(0, 4))
    ext = create_extractor("flowgrid", grid=[3, 3])
    assert ext.name == "flowgrid" and ext.feature_types == ("flowgrid",)
    assert FlowGridExtractor.config_class.__name__ == "FlowGridConfig"
    assert ext.config()["grid"] == [3, 3] and "chunk_size" not in ext.config()


def test_real_ucsd_frames_move(shared_data):
    folder = shared_data / "ucsd_ped2" / "testing" / "frames" / "01"
    with open_video(folder) as reader:
        frames = reader.get(range(40))
    values = FlowGridExtractor().extract(ArrayVideo(frames), progress=False)["flowgrid"].values
    assert values.shape == (40, 208) and np.isfinite(values).all()
    assert (values > 0).mean() > 0.05  # pedestrians walk in this clip
