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


def test_bearer_credential_is_read_one_way_for_every_service() -> None:
    from photoenhance.contracts.tokens import bearer_credential

    assert bearer_credential("Bearer abc") == "abc"
    assert bearer_credential("bearer   abc  ") == "abc"
    assert bearer_credential("Basic abc") is None
    assert bearer_credential("Bearer ") is None
    assert bearer_credential(None) is None and bearer_credential("") is None


def test_may_open_refuses_a_batch_that_does_not_exist_even_to_an_api_key() -> None:
    from photoenhance.contracts.tokens import may_open, new_batch_token

    token, token_hash = new_batch_token()
    assert may_open(token, token_hash, [], exists=True)
    assert may_open("key-1", None, ["key-1"], exists=True)
    assert not may_open("guess", token_hash, [], exists=True)
    assert not may_open(token, token_hash, [], exists=False)
    assert not may_open("key-1", None, ["key-1"], exists=False)
    assert not may_open(None, token_hash, ["key-1"], exists=True)
