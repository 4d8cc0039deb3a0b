"""Processor: turns bucket notifications into enhanced results.

``processor.engine`` is the enhancement library (models, no I/O); the runtime around it consumes
the queue, talks to storage and the database, and publishes progress.
"""
