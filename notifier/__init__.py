"""Notifier: pushes each batch's progress events to subscribers over WebSocket and SSE.

- ``app``: the aiohttp app factory and its routes; ``cli``: ``photoenhance notifier``.
- ``auth``: who may subscribe (one refusal for every bad input); ``context``: shared dependencies.
- ``hub``: this process's queue on the progress exchange, per-batch bindings and fan-out.
- ``stream``: one subscriber's stream, the seam between the database replay and live events.
- ``ws`` and ``sse``: the two transports; ``metrics``: Prometheus metrics.

The messages themselves are a contract shared with clients: ``photoenhance/contracts/progress_stream.py``.
"""
