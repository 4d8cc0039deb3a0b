"""Shared fixtures: every piece of test machinery lives in harness and is registered here."""

pytest_plugins = [
    "harness.weights",
    "harness.services",
    "harness.objectstore",
    "harness.processor",
    "harness.broker",
    "harness.stack",
]
