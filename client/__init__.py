"""The command-line client: ``photoenhance enhance`` (see :mod:`client.cli`).

- :mod:`client.inputs`: the paths given, checked and fingerprinted
- :mod:`client.state`: the resume state kept in the output folder
- :mod:`client.api`: calls to the ingest API
- :mod:`client.batches`: making a batch through the API or straight into the bucket
- :mod:`client.uploads`: presigned POST/PUT uploads with progress and retries
- :mod:`client.follow`: the WebSocket progress stream, resumed with ``since``
- :mod:`client.downloads`: results into the output folder, atomically
- :mod:`client.report`: progress bars and per-file lines
- :mod:`client.enhance`: one run, from plan to summary
"""
