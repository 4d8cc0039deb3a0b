"""Reliability tests: real worker processes under faults (kills, broker and store restarts, SQLite
lock storms, a full disk, a long soak), each ending with the exactly-once check of
:mod:`tests.reliability.exactly_once`."""
