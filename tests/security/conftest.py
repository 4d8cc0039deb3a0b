"""Fixtures for the security tests, borrowed from the suites that own them (nothing is copied).

The root conftest already registers harness (stores, broker, database, workers, stacks).
The in-process ingest and notifier servers live in their suites' conftests, and Chromium in
tests/web/test_page.py, which pytest only loads for tests under those folders; importing the
fixture functions here registers them for tests/security as well.
"""

from tests.ingest.conftest import start_ingest
from tests.notifier.conftest import http, notifier, start_notifier
from tests.web.test_page import browser_context

__all__ = ["browser_context", "http", "notifier", "start_ingest", "start_notifier"]
