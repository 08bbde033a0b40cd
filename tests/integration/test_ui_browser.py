"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright, against
a real server and real agent processes.

What an operator does and sees: a wrong token is refused, the right one shows the hosts;
a port goes ACTIVE and a host is lost and comes back, all without reloading the page; one
host's tables; the membership graph. Screenshots go to ``artifacts/ui/`` (the README's is
``docs/img/ui.png``, rewritten when ``L2POP_UPDATE_SCREENSHOT=1``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from channel_harness import Cluster

from l2pop.bench.ui_browser import CHROMIUM, CHROMIUM_ARGS, TOKEN_KEY

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "ui"
README_SHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "ui.png"
TIMEOUT_MS = 20_000

if not CHROMIUM.exists() and os.environ.get("CI") != "true":
    pytest.skip(
        "Debian's chromium is not installed (scripts/bootstrap installs it)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    try:
        yield page
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def cell(page: Page, host: str, column: str):
    return page.locator(f'#hosts tbody tr[data-host="{host}"] td[data-col="{column}"]')


def test_an_operator_watches_ports_and_hosts_live(cluster: Cluster, page: Page) -> None:
    cluster.add_hosts(5)
    cluster.start_agents(["h1", "h2", "h3", "h4"])
    lone = cluster.start_agents(["h5"])
    blue = cluster.network("blue", vni=1001)
    red = cluster.network("red", vni=1002, arp_suppression="proxy")
    for i, (net, host) in enumerate([(blue, "h1"), (blue, "h2"), (blue, "h5"), (red, "h3")], 1):
        cluster.wait_status(cluster.port(net, host, f"198.19.0.{i}"), "ACTIVE")
    cluster.converge()

    page.goto(cluster.server.url + "/ui/")
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#token", "not-the-admin-token")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("wrong token")
    expect(page.locator("#app")).to_be_hidden()
    shot(page, "1-wrong-token")

    page.fill("#token", cluster.server.admin_token)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#live")).to_have_text("live")
    for host in ("h1", "h2", "h3", "h4", "h5"):
        expect(cell(page, host, "in_sync")).to_have_text("yes")
    expect(page.locator("#hosts-in-sync")).to_have_text("5")
    assert cluster.server.admin_token not in page.url  # the token never goes in a URL
    stored = page.evaluate("(key) => sessionStorage.getItem(key)", TOKEN_KEY)
    assert stored == cluster.server.admin_token
    page.evaluate("() => { window.notReloaded = true; }")

    # a port goes ACTIVE: the event appears with its members' apply time
    port = cluster.port(red, "h4", "198.19.0.9")
    event = page.locator('#events li[data-kind="port ACTIVE"]:has-text("on h4")')
    expect(event.locator("[data-applied]")).to_contain_text("applied by 2 hosts")
    cluster.wait_status(port, "ACTIVE")
    shot(page, "2-port-active")

    # an agent is killed: its host goes out of sync and stands out, then comes back
    lone.kill()
    expect(cell(page, "h5", "connected")).to_have_text("no")
    expect(page.locator('#hosts tbody tr[data-host="h5"]')).to_have_class("down")
    expect(page.locator('#events li[data-kind="host lost"]')).to_contain_text("h5")
    expect(page.locator("#hosts-in-sync")).to_have_text("4")
    shot(page, "3-host-lost")
    lone.start()
    expect(cell(page, "h5", "in_sync")).to_have_text("yes")
    expect(page.locator("#hosts-in-sync")).to_have_text("5")
    assert page.evaluate("() => window.notReloaded === true"), "the page was reloaded"

    # one host's tables beside what its agent reports
    page.click('#hosts tbody tr[data-host="h1"] a.host-link')
    detail = page.locator("#host-detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-status")).to_contain_text("applied everything")
    fdb = detail.locator(f'[data-network="{blue}"] table[data-table="fdb"]')
    expect(fdb).to_contain_text("192.0.2.2")  # h2's port in blue
    expect(fdb).to_contain_text("192.0.2.5")  # h5's, back after its restart
    expect(detail.locator(f'[data-network="{blue}"] h3')).to_contain_text("agent: applied")
    shot(page, "4-host-tables")

    # the membership graph, coloured by sync state
    page.click('[data-tab="graph"]')
    expect(page.locator("#graph svg g[data-host]")).to_have_count(5)
    expect(page.locator('#graph g[data-host="h5"] circle')).to_have_class("host-ok")
    shot(page, "5-graph")
    page.click('[data-tab="networks"]')
    expect(
        page.locator(f'#networks tr[data-network="{blue}"] td[data-col="members"]')
    ).to_have_text("3: h1 h2 h5")
    if os.environ.get("L2POP_UPDATE_SCREENSHOT") == "1":
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / "3-host-lost.png", README_SHOT)


def test_a_saved_token_that_stops_working_signs_out(cluster: Cluster, page: Page) -> None:
    page.goto(cluster.server.url + "/ui/")
    page.evaluate("(key) => sessionStorage.setItem(key, 'stale')", TOKEN_KEY)
    page.reload()
    expect(page.locator("#signin-error")).to_contain_text("refused")
    page.fill("#token", cluster.server.admin_token)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#live")).to_have_text("live")
    page.click("#sign-out")
    expect(page.locator("#signin")).to_be_visible()
    assert page.evaluate("(key) => sessionStorage.getItem(key)", TOKEN_KEY) is None
