"""Batch tokens open their batch only; API keys open any."""

from photoenhance.contracts.tokens import hash_token, is_api_key, may_read_batch, new_batch_token


def test_token_opens_its_batch_only() -> None:
    token, stored = new_batch_token()
    other, other_stored = new_batch_token()
    assert token != other and len(token) >= 40
    assert stored == hash_token(token) and token not in stored
    assert may_read_batch(token, stored, api_keys=())
    assert not may_read_batch(token, other_stored, api_keys=())
    assert not may_read_batch(None, stored, api_keys=())
    assert not may_read_batch("", stored, api_keys=())
    assert not may_read_batch(token, None, api_keys=())


def test_api_keys_open_any_batch() -> None:
    _, stored = new_batch_token()
    assert may_read_batch("k2", stored, api_keys=("k1", "k2"))
    assert may_read_batch("k1", None, api_keys=("k1",))
    assert not is_api_key("k3", ("k1", "k2")) and not is_api_key("", ("",))
