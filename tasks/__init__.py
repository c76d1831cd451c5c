"""avemo's stages as plain functions on arrays, tables and paths; no Prefect inside (``flows`` composes them).

``clip`` is the one per-clip chain (audio -> faces -> face features) that preprocess, predict and audit
call; ``audio``, ``video``: its stages; ``corpora``: one adapter per corpus and the manifest; ``learning``:
datasets, the training loop, inference and metrics; ``predict``, ``report``, ``audit``, ``serve``,
``sample``: the functions of the commands of those names.
"""
