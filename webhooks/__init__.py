"""Webhooks: a batch's progress events POSTed to a receiver, signed per Standard Webhooks.

- :mod:`webhooks.urls` which URLs may be called (SSRF rules) and the resolver that enforces them
- :mod:`webhooks.signing` secrets, their sealing at rest, and the signature headers
- :mod:`webhooks.sender` the ``photoenhance webhooks`` process (consumes progress, delivers, retries)
"""
