"""A sample clip's face: the bundled astronaut photo, warped into the emotion's expression, moving its head and
mouth frame by frame."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage
from skimage import data as skimage_data
from skimage import transform

from tasks.sample.styles import FPS, FRAME_SIZE, EmotionStyle, SpeakerLook

# Landmarks of the astronaut's face in the 512 x 512 source image, as MTCNN reports them.
_SOURCE_SIZE = 512
_FACE_CENTRE = (225.0, 117.0)  # x, y


_MOUTH_CENTRE = (223.5, 140.5)
_MOUTH_WIDTH = 43.0


_BROW_Y = 88.0
_FACE_IN_FRAME = (128, 120)  # where the face centre sits in a still frame


_CANVAS_MARGIN = 32  # padding that keeps head motion inside the picture
_HEAD_MOTION_PX = 4.0


_MOUTH_MAX_OPEN_PX = 7.0
_MOUTH_COLOUR = np.array([70.0, 25.0, 30.0], dtype=np.float32)


@functools.cache
def _astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def _to_canvas(point: tuple[float, float], look: SpeakerLook) -> tuple[float, float]:
    """Map a source-image (x, y) into the speaker's mirrored, zoomed, padded canvas."""
    x, y = point
    if look.mirror:
        x = _SOURCE_SIZE - 1 - x
    return x * look.zoom + _CANVAS_MARGIN, y * look.zoom + _CANVAS_MARGIN


def speaker_canvas(look: SpeakerLook) -> np.ndarray:
    """The astronaut as this speaker looks: mirrored, zoomed, tinted, padded (float32 RGB, 0..255)."""
    image = _astronaut()[:, ::-1] if look.mirror else _astronaut()
    zoomed = transform.rescale(image, look.zoom, channel_axis=-1, order=1, preserve_range=True)
    tinted = np.clip(zoomed * np.asarray(look.tint), 0.0, 255.0)
    pad = ((_CANVAS_MARGIN, _CANVAS_MARGIN), (_CANVAS_MARGIN, _CANVAS_MARGIN), (0, 0))
    return np.pad(tinted, pad, mode="reflect").astype(np.float32)


def express(canvas: np.ndarray, look: SpeakerLook, style: EmotionStyle) -> np.ndarray:
    """Warp the face on ``canvas`` into the emotion's expression: mouth-corner curve and brow height.

    Only vertical displacements, smooth and local, so the face stays a face MTCNN detects.
    """
    zoom = look.zoom
    mouth_x, mouth_y = _to_canvas(_MOUTH_CENTRE, look)
    face_x, brow_y = _to_canvas((_FACE_CENTRE[0], _BROW_Y), look)
    top, bottom = int(brow_y - 40 * zoom), int(mouth_y + 40 * zoom)
    left, right = int(face_x - 80 * zoom), int(face_x + 80 * zoom)
    rows, cols = np.mgrid[top:bottom, left:right].astype(np.float64)
    across = (cols - mouth_x) / (0.5 * _MOUTH_WIDTH * zoom)
    corners = across**2 * np.exp(-(across**2) / 1.5) * np.exp(-(((rows - mouth_y) / (12 * zoom)) ** 2))
    brows = np.exp(-(((rows - brow_y) / (10 * zoom)) ** 2) - ((cols - face_x) / (35 * zoom)) ** 2)
    shift = zoom * (-style.smile_px * corners + style.brow_px * brows)
    warped = canvas.copy()
    for channel in range(3):
        warped[top:bottom, left:right, channel] = ndimage.map_coordinates(
            canvas[..., channel], [rows - shift, cols], order=1, mode="nearest"
        )
    return warped


def _draw_open_mouth(frame: np.ndarray, centre: tuple[float, float], half_width: float, half_height: float) -> None:
    """Blend the dark gap between parted lips, a soft-edged ellipse, into ``frame`` in place."""
    centre_x, centre_y = centre
    top, left = int(centre_y - half_height), int(centre_x - half_width)
    rows, cols = np.mgrid[top : int(centre_y + half_height) + 2, left : int(centre_x + half_width) + 2]
    radius = ((cols - centre_x) / half_width) ** 2 + ((rows - centre_y) / half_height) ** 2
    alpha = np.clip(3.0 * (1.0 - radius), 0.0, 1.0)[..., None]
    window = frame[top : top + rows.shape[0], left : left + rows.shape[1]]
    window[:] = np.round(window * (1.0 - alpha) + _MOUTH_COLOUR * alpha)


def render_face_frames(
    canvas: np.ndarray, look: SpeakerLook, opening: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Frames (n, FRAME_SIZE, FRAME_SIZE, 3) uint8: slow head sway, mouth opening per ``opening``."""
    n_frames = opening.size
    times = np.arange(n_frames) / FPS
    rates, phases = rng.uniform(0.3, 0.7, size=2), rng.uniform(0.0, 2.0 * np.pi, size=2)
    sway_x = _HEAD_MOTION_PX * np.sin(2.0 * np.pi * rates[0] * times + phases[0])
    sway_y = 0.5 * _HEAD_MOTION_PX * np.sin(2.0 * np.pi * rates[1] * times + phases[1])
    face_x, face_y = _to_canvas(_FACE_CENTRE, look)
    mouth_x, mouth_y = _to_canvas(_MOUTH_CENTRE, look)
    frames = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    for index, (open_share, dx, dy) in enumerate(zip(opening, sway_x, sway_y, strict=True)):
        left = round(face_x - _FACE_IN_FRAME[0] + dx)
        top = round(face_y - _FACE_IN_FRAME[1] + dy)
        frames[index] = np.round(canvas[top : top + FRAME_SIZE, left : left + FRAME_SIZE])
        half_height = open_share * _MOUTH_MAX_OPEN_PX * look.zoom
        if half_height > 0.5:
            half_width = 0.35 * _MOUTH_WIDTH * look.zoom * (1.0 + 0.3 * open_share)
            _draw_open_mouth(frames[index], (mouth_x - left, mouth_y + 1 - top), half_width, half_height)
    return frames
