"""avemo: audio-visual emotion recognition, from a labelled video corpus to versioned features and models."""

__version__ = "0.1.0"
