"""PhotoEnhance's shared package: settings, message contracts and the command line.

The services live beside it: ``ingest`` (clients in), ``processor`` (events to results),
``notifier`` (results out to people) and ``db`` (state).
"""

__version__ = "0.1.0"
