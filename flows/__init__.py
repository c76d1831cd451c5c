"""One module per DVC stage or command, composing ``tasks``; the only place Prefect is imported.

``preprocess``, ``train``, ``evaluate`` and ``serve`` are Prefect flows; ``sample``, ``ingest``, ``report``,
``predict`` and ``audit`` are plain functions, since they gain nothing from a Prefect server but its
start-up time.
"""
