"""Notifier: pushes each batch's progress events to subscribers over WebSocket and SSE."""
