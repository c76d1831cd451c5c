"""Faces: the AVEF 16-frame rule, box and crop maths, the speaker rule, the search-region cascade, MTCNN."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import generateBoundingBox, imresample
from PIL import Image
from skimage import data as skdata

from avemo.config import FaceParams
from avemo.ffmpeg import ffmpeg_exe
from tasks.demux import iter_video_frames
from tasks.probe import probe
from tasks.video.faces import (
    FaceDetector,
    FaceError,
    FaceTrack,
    choose_speaker,
    crop_face,
    decode_size,
    detect_clip_faces,
    extend_box,
    interpolate_track,
    iou,
    key_frames,
)
from tasks.video.frame_rule import segment_frame_indices
from tasks.video.mtcnn import (
    level_crops,
    level_span,
    pnet_proposals,
    pyramid_min_face_size,
    pyramid_scales,
    roi_scales,
    search_region,
)

PARAMS = FaceParams()
AVEF_FRAMES = 16  # the paper's frames per segment


@dataclass
class Span:
    t_begin: float
    t_end: float


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the pipeline; tiny convolutions only lose from more threads
    yield FaceDetector()
    torch.set_num_threads(threads)


def astronaut_face(side: int) -> np.ndarray:
    """The astronaut's head and shoulders (a real face), side x side."""
    return np.asarray(Image.fromarray(skdata.astronaut()[0:256, 128:384]).resize((side, side)))


# --- the AVEF 16-frame rule -------------------------------------------------------------------------


def test_paper_example_drops_two_first_and_two_last() -> None:
    # [100 ms, 755 ms] at 30 fps holds frames 3..22 (20 frames): the paper removes two at each end
    assert segment_frame_indices(0.1, 0.755, 30.0, 1000, AVEF_FRAMES) == list(range(5, 21))


def test_twelve_frames_repeat_first_and_last_twice() -> None:
    indices = segment_frame_indices(0.0, 11 / 25, 25.0, 1000, AVEF_FRAMES)
    assert indices == [0, 0, 0, *list(range(1, 11)), 11, 11, 11]


def test_sixteen_frames_are_kept_as_they_are() -> None:
    assert segment_frame_indices(1.0, 1.0 + 15 / 25, 25.0, 1000, AVEF_FRAMES) == list(range(25, 41))


def test_odd_excess_drops_the_first_frame_first() -> None:
    assert segment_frame_indices(0.0, 16 / 25, 25.0, 1000, AVEF_FRAMES) == list(range(1, 17))  # 17 frames


def test_one_frame_gives_sixteen_copies() -> None:
    assert segment_frame_indices(0.5, 0.5, 10.0, 100, AVEF_FRAMES) == [5] * 16


def test_frames_past_the_video_end_are_clamped_to_its_last_frame() -> None:
    assert segment_frame_indices(0.0, 0.655, 30.0, 10, AVEF_FRAMES) == [0, 0, 0, *list(range(10)), 9, 9, 9]


def test_a_segment_ending_before_it_begins_is_refused() -> None:
    with pytest.raises(FaceError, match="ends before it begins"):
        segment_frame_indices(1.0, 0.5, 25.0, 100, AVEF_FRAMES)


# --- boxes, crops, speaker, interpolation, schedule ---------------------------------------------------


def test_margin_grows_width_and_height_by_thirty_percent_around_the_centre() -> None:
    assert extend_box((100, 100, 200, 200), 0.3, 1000, 1000) == (85, 85, 215, 215)


def test_extended_box_is_clipped_to_the_frame() -> None:
    assert extend_box((0, 10, 50, 110), 0.3, 60, 100) == (0, 0, 58, 100)


def test_crop_without_margin_at_native_size_is_the_box_region() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop = crop_face(rgb, (40, 20, 104, 84), 0.0, 64)
    assert crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, rgb[20:84, 40:104])


def test_crop_is_resized_to_crop_size() -> None:
    rgb = np.full((360, 480, 3), 77, dtype=np.uint8)
    crop = crop_face(rgb, (10.5, 20.2, 300.7, 200.1), PARAMS.margin, PARAMS.crop_size)
    assert crop.shape == (PARAMS.crop_size, PARAMS.crop_size, 3)
    assert (crop == 77).all()


def test_iou_of_known_boxes() -> None:
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_speaker_rule_prefers_overlap_with_the_previous_box_else_area_times_probability() -> None:
    boxes = np.array([[0, 0, 50, 50], [100, 100, 200, 200], [300, 0, 380, 80]], dtype=float)
    probs = np.array([0.99, 0.7, 0.95])
    assert choose_speaker(boxes, probs, None) == 1  # 10000 x 0.7 beats 6400 x 0.95
    assert choose_speaker(boxes, np.array([0.99, 0.5, 0.99]), None) == 2
    assert choose_speaker(boxes, probs, (5, 5, 45, 45)) == 0
    assert choose_speaker(boxes, probs, (500, 500, 600, 600)) == 1  # no overlap: back to the area rule


def _track(index: int, box: tuple[float, float, float, float], prob: float) -> FaceTrack:
    landmarks = np.array(box[:2], dtype=np.float32) + np.zeros((5, 2), dtype=np.float32)
    return FaceTrack(index, box, prob, landmarks, no_face=False, multiple_faces=False, detected=True)


def test_interpolation_is_linear_in_box_landmarks_and_probability() -> None:
    middle = interpolate_track(_track(10, (0, 0, 100, 100), 0.9), _track(14, (40, 20, 140, 120), 1.0), 11)
    assert middle.box == pytest.approx((10, 5, 110, 105))
    assert middle.probability == pytest.approx(0.925)
    np.testing.assert_allclose(middle.landmarks, np.tile([10, 5], (5, 1)))
    assert not middle.detected and not middle.no_face


def test_frames_are_decoded_with_their_shorter_side_capped_and_aspect_kept() -> None:
    assert decode_size(700, 700, 360) == (360, 360)
    assert decode_size(1280, 720, 360) == (640, 360)
    assert decode_size(720, 1280, 360) == (360, 640)
    assert decode_size(480, 360, 360) == (480, 360)  # CREMA-D: already that small
    assert decode_size(1920, 1080, None) == (1920, 1080)


def test_key_frames_cover_every_run_from_its_first_to_its_last_frame() -> None:
    assert key_frames(range(12), 5) == [0, 5, 10, 11]
    assert key_frames([0, 1, 2, 3, 10, 11, 12], 5) == [0, 3, 10, 12]
    assert key_frames([7], 5) == [7]


def test_smallest_face_is_snapped_onto_the_default_pyramid() -> None:
    assert pyramid_min_face_size(0.15, 360) == pytest.approx(20 / 0.709**2)  # 54 px wanted -> 39.8
    assert pyramid_min_face_size(0.01, 360) == 20.0


def test_pyramid_is_detect_faces_own() -> None:
    scales = pyramid_scales(20.0, 360)
    assert scales[0] == pytest.approx(0.6) and scales[1] == pytest.approx(0.6 * 0.709)
    assert 360 * scales[-1] >= 12 > 360 * scales[-1] * 0.709


def test_search_levels_have_windows_near_the_face_side() -> None:
    windows = [12 / s / 130 for s in roi_scales(130.0, 360)]
    assert len(windows) == 6 and all(0.3 <= w <= 1.9 for w in windows)  # 0.709 apart: ratio 6.3 spans 6


def test_search_region_grows_the_box_by_one_side_and_is_clipped() -> None:
    assert search_region((100, 50, 200, 130), 480, 360) == (0.0, 0.0, 300.0, 230.0)


def test_level_span_starts_on_pnet_grid_and_keeps_whole_windows() -> None:
    first, stop = level_span(480, 103, 101.0, 290.0)
    assert first % 2 == 0 and (stop - first) % 2 == 0 and first <= 101 * 103 / 480 and stop >= 290 * 103 / 480
    assert level_span(480, 20, 400.0, 480.0) == (8, 20)  # a whole 12 px window, ending on the level's end


def test_level_crop_equals_that_region_of_the_whole_resampled_level() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    size = (int(360 * 0.15 + 1), int(480 * 0.15 + 1))
    whole = imresample(torch.from_numpy(rgb).permute(2, 0, 1)[None].float(), size)
    whole = (whole[0] - 127.5) * 0.0078125
    ((_, pixels, cell_row, cell_col),), _ = level_crops(rgb, [0.15], (101.0, 77.0, 290.0, 250.0))
    rows, cols = pixels.shape[1:]
    region = whole[:, 2 * cell_row : 2 * cell_row + rows, 2 * cell_col : 2 * cell_col + cols]
    torch.testing.assert_close(pixels, region, atol=1e-5, rtol=0)


def test_pnet_proposals_equal_generate_bounding_box_on_the_whole_level() -> None:
    """Crops' PNet outputs give the proposals generateBoundingBox gives with each crop placed in a zero
    tensor of the whole level (what the batched path skips)."""
    rng = np.random.default_rng(3)
    reg = torch.tensor(rng.normal(0, 0.1, (3, 4, 9, 11)), dtype=torch.float32)
    probs = torch.tensor(rng.uniform(0, 1, (3, 9, 11)), dtype=torch.float32)
    first_cells = [(0, 0), (17, 5), (40, 33)]  # (x, y) cells on the whole level
    boxes, crop_inds = pnet_proposals(reg, probs, 0.2366, 0.6, torch.tensor(first_cells, dtype=torch.float32))
    for k, (col, row) in enumerate(first_cells):
        level_probs = torch.zeros((1, row + 9, col + 11))
        level_reg = torch.zeros((1, 4, row + 9, col + 11))
        level_probs[0, row:, col:] = probs[k]
        level_reg[0, :, row:, col:] = reg[k]
        expected, _ = generateBoundingBox(level_reg, level_probs, 0.2366, 0.6)
        assert len(expected) > 0
        assert torch.equal(boxes[crop_inds == k], expected)


# --- MTCNN on frames ------------------------------------------------------------------------------------


def test_uniform_grey_frame_has_no_face_and_keeps_the_whole_frame(detector: FaceDetector) -> None:
    track = detector.detect({0: np.full((240, 320, 3), 128, dtype=np.uint8)}, PARAMS)[0]
    assert track.no_face and track.probability == 0.0
    assert track.box == (0.0, 0.0, 320.0, 240.0)
    assert np.isnan(track.landmarks).all()


def _two_faces() -> np.ndarray:
    canvas = np.full((300, 520, 3), 128, dtype=np.uint8)
    canvas[20:260, 10:250] = astronaut_face(240)
    canvas[80:240, 330:490] = astronaut_face(160)
    return canvas


def test_two_faces_are_flagged_and_the_rule_picks_the_expected_one(detector: FaceDetector) -> None:
    frame = _two_faces()
    largest = detector.detect({0: frame}, PARAMS)[0]
    assert largest.multiple_faces and largest.probability > 0.9
    assert largest.box[2] < 260  # the larger face, on the left
    followed = detector.detect({0: frame}, PARAMS, previous_box=(330, 80, 490, 240))[0]
    assert followed.multiple_faces and followed.box[0] > 320  # the smaller one the track was on


def test_face_found_on_every_cremad_clip_as_full_resolution_mtcnn_finds_it(
    shared_data: Path, detector: FaceDetector
) -> None:
    reference = MTCNN(keep_all=True)
    clips = sorted((shared_data / "cremad" / "VideoFlash").glob("*.flv"))
    assert len(clips) == 6
    for path in clips:
        info = probe(path)
        frame = next(iter_video_frames(path, info.video_fps, info.video_width, info.video_height, wanted=[20]))
        track = detector.detect({20: frame.rgb}, PARAMS)[20]
        assert not track.no_face and track.probability > 0.9, path.name
        x1, y1, x2, y2 = track.box
        assert 0 <= x1 < x2 <= 480 and 0 <= y1 < y2 <= 360
        assert 0.1 * 480 < x2 - x1 < 0.6 * 480 and 0.8 < (y2 - y1) / (x2 - x1) < 1.6
        ref_boxes, _ = reference.detect(frame.rgb)
        assert max(iou(track.box, box) for box in ref_boxes) > 0.99  # same pyramid levels, same box


def test_search_near_the_last_box_gives_full_mtcnns_box_on_real_frames(
    shared_data: Path, detector: FaceDetector
) -> None:
    reference = MTCNN(keep_all=True)
    for path in sorted((shared_data / "cremad" / "VideoFlash").glob("*.flv"))[:3]:
        info = probe(path)
        frames = {f.index: f.rgb.copy() for f in iter_video_frames(path, info.video_fps, 480, 360, wanted=[30, 35])}
        near_box = detector.detect({30: frames[30]}, PARAMS)[30].box
        track = detector.detect_near({35: frames[35]}, near_box, PARAMS)[35]
        ref_boxes, _ = reference.detect(frames[35])
        assert track.detected and not track.no_face
        assert max(iou(track.box, box) for box in ref_boxes) >= 0.95, path.name


def test_search_near_a_box_far_from_the_face_finds_nothing(detector: FaceDetector) -> None:
    frame = np.full((300, 520, 3), 128, dtype=np.uint8)
    frame[20:260, 10:250] = astronaut_face(240)
    assert detector.detect_near({0: frame}, (400, 100, 480, 180), PARAMS)[0].no_face


# --- a whole clip: interpolation, re-detection at a cut, 16 frames per segment --------------------------


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    height, width = frames[0].shape[:2]
    command = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24"]
    command += ["-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:", "-c:v", "mjpeg", "-q:v", "2", str(path)]
    subprocess.run(command, input=b"".join(f.tobytes() for f in frames), check=True)


def test_clip_interpolates_a_moving_face_and_redetects_after_a_cut(tmp_path: Path, detector: FaceDetector) -> None:
    face = astronaut_face(200)
    frames = []
    for index in range(32):
        canvas = np.full((240, 320, 3), 128, dtype=np.uint8)
        if index < 24:  # the face slides right 1 px every second frame, then the scene cuts to grey
            canvas[20:220, 20 + index // 2 : 220 + index // 2] = face
        frames.append(canvas)
    path = tmp_path / "moving.avi"
    _write_video(path, frames, fps=25)
    info = probe(path)
    faces = detect_clip_faces(path, info, [Span(0.0, 0.6), Span(0.6, 1.24)], detector, PARAMS)

    assert [len(indices) for indices in faces.segment_frames] == [16, 16]
    assert set(faces.tracks) == set(faces.crops) == {i for s in faces.segment_frames for i in s}
    assert all(crop.shape == (PARAMS.crop_size, PARAMS.crop_size, 3) for crop in faces.crops.values())
    decoded = {f.index: f.rgb.copy() for f in iter_video_frames(path, 25.0, 320, 240, wanted=faces.tracks)}
    direct = detector.detect(decoded, PARAMS)
    interpolated = [t for t in faces.tracks.values() if not t.detected]
    assert interpolated, "nothing was interpolated"
    for track in interpolated:
        assert not track.no_face
        assert iou(track.box, direct[track.frame_index].box) > 0.9
    for index, track in faces.tracks.items():
        assert track.no_face == direct[index].no_face, index  # the cut is found frame-exactly


def test_a_clip_decoded_smaller_gives_boxes_in_native_pixels(tmp_path: Path, detector: FaceDetector) -> None:
    frames = []
    for index in range(16):
        canvas = np.full((480, 640, 3), 128, dtype=np.uint8)
        canvas[60:380, 100 + 2 * index : 420 + 2 * index] = astronaut_face(320)
        frames.append(canvas)
    path = tmp_path / "large.avi"
    _write_video(path, frames, fps=25)
    spans = [Span(0.0, 0.6)]
    info = probe(path)
    native = detect_clip_faces(path, info, spans, detector, PARAMS.model_copy(update={"decode_short_side": None}))
    small = detect_clip_faces(path, info, spans, detector, PARAMS.model_copy(update={"decode_short_side": 240}))
    assert set(small.tracks) == set(native.tracks)
    for index, track in small.tracks.items():
        assert not track.no_face and iou(track.box, native.tracks[index].box) > 0.8, index  # unscaled: ~0.25
        assert np.abs(track.landmarks - native.tracks[index].landmarks).max() < 8.0  # native pixels
        assert small.crops[index].shape == (PARAMS.crop_size, PARAMS.crop_size, 3)


def test_a_face_jumping_far_away_is_refound_by_full_detection(tmp_path: Path, detector: FaceDetector) -> None:
    face = astronaut_face(160)
    frames = []
    for index in range(20):
        canvas = np.full((240, 480, 3), 128, dtype=np.uint8)
        left = 10 if index < 3 else 310  # the face jumps across the frame between two key frames
        canvas[40:200, left : left + 160] = face
        frames.append(canvas)
    path = tmp_path / "jump.avi"
    _write_video(path, frames, fps=25)
    faces = detect_clip_faces(path, probe(path), [Span(0.0, 0.76)], detector, PARAMS)
    for index, track in faces.tracks.items():
        assert not track.no_face, index
        assert (track.box[0] > 300) == (index >= 3), index
