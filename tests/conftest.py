"""Shared fixtures: every piece of test machinery lives in tests/support and is registered here."""

pytest_plugins = [
    "tests.support.weights",
    "tests.support.services",
    "tests.support.objectstore",
    "tests.support.processor",
    "tests.support.broker",
    "tests.support.stack",
]
