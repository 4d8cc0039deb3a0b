"""Ingest: the HTTP API that starts batches, hands out presigned uploads, reports status and
streams results, and serves the web page."""
