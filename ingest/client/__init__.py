"""The command-line client: ``photoenhance enhance`` (see :mod:`ingest.client.cli`).

- :mod:`ingest.client.inputs`: the paths given, checked and fingerprinted
- :mod:`ingest.client.state`: the resume state kept in the output folder
- :mod:`ingest.client.api`: calls to the ingest API
- :mod:`ingest.client.batches`: making a batch through the API or straight into the bucket
- :mod:`ingest.client.uploads`: presigned POST/PUT uploads with progress and retries
- :mod:`ingest.client.follow`: the WebSocket progress stream, resumed with ``since``
- :mod:`ingest.client.downloads`: results into the output folder, atomically
- :mod:`ingest.client.report`: progress bars and per-file lines
- :mod:`ingest.client.enhance`: one run, from plan to summary
"""
