"""Emotion timelines of media files from trained checkpoints, through the training pipeline's own code.

One implementation: a file becomes features through the per-clip chain (``tasks.clip``), run with the
feature settings stored in the checkpoint; they are written as the very Parquet tables ``avemo
preprocess`` writes (to a temporary folder), read back by ``tasks.learning.features.load_features``, and
scored by ``tasks.learning.inference.trained_posteriors``, as evaluation scores them. A clip that was in
the training features therefore gets the evaluation's posteriors.

``compatibility``: which checkpoints can predict which files; ``speakers``: which speaker each file is,
and the statistics a speaker-normalised model standardises it with; ``windows``: files a window at a
time, features made then scored; ``scoring``: a window's features to posteriors and a timeline;
``documents``: the JSON and CSV outputs.
"""
