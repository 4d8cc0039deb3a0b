"""Fixtures of the reliability tests (the shared machinery stays in harness)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from harness.processor import ProgressRecorder
from photoenhance.settings import Settings


@pytest.fixture
async def progress(processor_settings: Settings) -> AsyncIterator[ProgressRecorder]:
    """Every progress event the test's workers publish, recorded from before the first upload.

    Keep the event loop free while it records (wait for workers with ``asyncio.to_thread``): a loop
    blocked for longer than the AMQP heartbeat would lose the recorder's connection.
    """
    async with ProgressRecorder(processor_settings) as recorder:
        yield recorder
