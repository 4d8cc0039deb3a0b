"""SSRF rules for webhook URLs: each bad case refused with its code, at creation and at delivery."""

from __future__ import annotations

import pytest

from photoenhance.settings import Settings
from webhooks.urls import CheckedResolver, WebhookUrlError, parse_webhook_url, resolve_checked

STRICT = Settings.from_env(environ={})
DEV = STRICT.replace(webhook_allow_http=True, webhook_allow_private=("127.0.0.0/8",))


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("not a url", "webhook_url_invalid"),
        (42, "webhook_url_invalid"),
        ("ftp://example.com/hook", "webhook_url_scheme"),
        ("http://example.com/hook", "webhook_url_scheme"),  # http only by setting
        ("https://" + "a" * 2050 + ".com/", "webhook_url_too_long"),
        ("https://user:secret@example.com/hook", "webhook_url_credentials"),
        ("https://:9999/hook", "webhook_url_invalid"),
        ("https://example.com:99999/", "webhook_url_invalid"),
    ],
)
def test_urls_refused_before_any_dns(url: object, code: str) -> None:
    with pytest.raises(WebhookUrlError) as refused:
        parse_webhook_url(url, STRICT)
    assert refused.value.code == code
    print(f"{url!r:.60} -> {code}: {refused.value.reason}")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",  # a name that resolves to loopback
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://172.16.0.1/hook",
        "https://169.254.169.254/latest/meta-data/",  # cloud metadata
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
        "https://100.64.0.1/hook",  # carrier-grade NAT
        "https://224.0.0.1/hook",
    ],
)
async def test_addresses_that_are_not_public_are_refused(url: str) -> None:
    with pytest.raises(WebhookUrlError) as refused:
        await resolve_checked(parse_webhook_url(url, STRICT), STRICT)
    assert refused.value.code == "webhook_url_not_public"
    print(f"{url} -> {refused.value.code}: {refused.value.reason}")


async def test_private_addresses_pass_only_when_listed() -> None:
    target = parse_webhook_url("http://localhost:8999/hook", DEV)
    assert await resolve_checked(target, DEV) == ["127.0.0.1"] or "127.0.0.1" in await resolve_checked(target, DEV)
    with pytest.raises(WebhookUrlError):
        await resolve_checked(parse_webhook_url("http://10.0.0.1/", DEV), DEV)


async def test_the_delivery_resolver_checks_the_addresses_it_connects_to() -> None:
    # A name that resolves to loopback now (a rebinding attack's second answer): refused at
    # connect time, whatever was checked at creation.
    with pytest.raises(WebhookUrlError):
        await CheckedResolver(STRICT).resolve("localhost", 443)
    allowed = await CheckedResolver(DEV).resolve("localhost", 443)
    assert {r["host"] for r in allowed} <= {"127.0.0.1"} and allowed
