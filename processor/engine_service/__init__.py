"""The engine in its own process: one process holds the models, worker processes feed it.

:mod:`~processor.engine_service.wire` is the frame contract, :mod:`~processor.engine_service.server`
the engine process's side, :mod:`~processor.engine_service.client` the worker's, and
:mod:`~processor.engine_service.cli` the ``photoenhance engine`` command.
"""
