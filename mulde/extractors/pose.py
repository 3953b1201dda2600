"""Pose (P) features: the 17 COCO keypoints of a person, normalised to the person's box.

Each keypoint (kx, ky) becomes ((kx - x1) / w, (ky - y1) / h), so the feature describes the
body's posture independent of where the person stands and how large they appear. The 34
values are laid out x0, y0, x1, y1, ..., x16, y16 in COCO keypoint order (nose, eyes, ears,
shoulders, elbows, wrists, hips, knees, ankles). Keypoints the model could not place keep
their predicted position (YOLO-pose always outputs all 17).
"""

from __future__ import annotations

import numpy as np

from mulde.errors import InputError

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
POSE_DIM = 2 * len(COCO_KEYPOINTS)


def pose_columns() -> list[str]:
    """Names of the P feature's 34 columns."""
    return [f"{name}_{axis}" for name in COCO_KEYPOINTS for axis in ("x", "y")]


def normalize_keypoints(keypoints: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(n, 17, 2|3) pixel keypoints and (n, 4) boxes -> (n, 34) box-relative coordinates."""
    kp = np.asarray(keypoints, np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if kp.ndim != 3 or kp.shape[1] != len(COCO_KEYPOINTS) or kp.shape[2] < 2 or len(kp) != len(boxes):
        raise InputError(
            f"keypoints must have shape (n, 17, 2 or 3) matching {len(boxes)} boxes, got {kp.shape}"
        )
    origin = boxes[:, None, :2]
    size = np.maximum(boxes[:, None, 2:] - boxes[:, None, :2], 1e-6)
    return ((kp[..., :2] - origin) / size).reshape(len(kp), POSE_DIM).astype(np.float32)
