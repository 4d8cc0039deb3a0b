"""Contracts between the parts of the pipeline: keys, bucket notifications, options, accepted formats, states and
progress events. Each has one home here and is imported wherever it is used."""
