"""Shared fixtures: every piece of test machinery lives in harness and is registered here."""

import signal

pytest_plugins = [
    "harness.weights",
    "harness.services",
    "harness.objectstore",
    "harness.processor",
    "harness.broker",
    "harness.stack",
]


def pytest_configure() -> None:
    """Let the services and CLIs the tests start hear SIGINT, as a terminal's Ctrl-C reaches them.

    A suite started in the background (``cmd &`` in a script, nohup) inherits SIGINT ignored, and
    an ignored signal stays ignored in every child: the CLI tests' Ctrl-C and the services' graceful
    stops then did nothing (three CLI tests timed out that way). A handler, unlike "ignored", is
    reset to the default in each child.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
