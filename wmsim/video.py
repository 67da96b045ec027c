"""Videos of dreams: frames side by side, labelled, written as a looping GIF or an MP4.

Imports no torch: the bundle path of ``wmsim dream`` and the clients use it too.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np

from wmsim.errors import UserError
from wmsim.files import atomic_write_bytes

SCALE, GAP, BAR = 4, 8, 24


def _panel(frame: np.ndarray, label: str) -> np.ndarray:
    """A labelled, enlarged frame: (64, 64, 3) uint8 -> (BAR + 256, 256, 3)."""
    big = cv2.resize(frame, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    bar = np.full((BAR, big.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, label, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1)
    return np.concatenate([bar, big])


def side_by_side(
    real: np.ndarray, dream: np.ndarray, context: int, tokens: np.ndarray | None = None
) -> np.ndarray:
    """Frames (N, 64, 64, 3) uint8 -> video frames (N, BAR + 256, P * 256 + (P - 1) * GAP, 3).

    P = 2 panels, real and dream; ``tokens``, the real frames through a token
    model's tokenizer, adds a middle one: what the dream could at best show.
    """
    frames = []
    for t in range(len(real)):
        when = f"context {t + 1}/{context}" if t < context else f"step {t - context + 1}"
        panels = [_panel(real[t], f"real  {when}")]
        if tokens is not None:
            panels.append(_panel(tokens[t], "real, tokenized"))
        panels.append(_panel(dream[t], f"dream  {when}" if t >= context else f"real  {when}"))
        gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
        row = [part for panel in panels for part in (gap, panel)][1:]  # gaps between panels
        frames.append(np.concatenate(row, 1))
    return np.stack(frames)


def write_video(path: Path, frames: np.ndarray, fps: int = 15) -> None:
    """Write (N, H, W, 3) uint8 RGB frames as a looping GIF or an MP4, by the suffix, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        from PIL import Image

        images = [Image.fromarray(frame) for frame in frames]
        buffer = io.BytesIO()
        images[0].save(
            buffer,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 / fps),
            loop=0,
        )
        atomic_write_bytes(path, buffer.getvalue())
        return
    # OpenCV picks the container by the suffix, so the temporary name keeps it
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        writer = cv2.VideoWriter(
            str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames.shape[2:0:-1]
        )
        if not writer.isOpened():
            raise UserError(
                f"this OpenCV build cannot write {path.suffix} video; write a .gif instead"
            )
        for frame in frames:
            writer.write(frame[..., ::-1])
        writer.release()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
