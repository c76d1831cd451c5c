"""The video stages: MTCNN face tracking on the frames of kept segments, AVEF's frame rule, crops and
their expression embeddings."""

from avemo.errors import AvemoError


class FaceError(AvemoError):
    """Face detection was asked something impossible (no video stream, bad segment times, mixed frame sizes)."""
