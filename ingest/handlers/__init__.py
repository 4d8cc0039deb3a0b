"""HTTP handlers of the ingest API, one module per resource."""
