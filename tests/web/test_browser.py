"""The web page in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by selenium, against a live daemon managing a simulated terminal over HTTPS.

Logs in, sees a pushed record appear within a second, opens a door and watches its state
change and come back, locks the site down and sees it on every open page, logs out, and finds
a write without a session refused. Skipped, with the reason, where chromium, chromedriver or
selenium are absent (CI installs them). ``EDGED_SCREENSHOTS=docs/ui`` writes the screenshots
of docs/ui.md there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gpiozero.pins.mock import MockFactory

from edged import config
from tests.conftest import LiveDaemon
from tests.simfix import free_port, make_sim, managed_config
from tests.web.helpers import NAME, PASSWORD

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is absent (Debian: chromium)"),
    pytest.mark.skipif(DRIVER is None, reason="chromedriver is absent (Debian: chromium-driver)"),
]
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SHOTS = os.environ.get("EDGED_SCREENSHOTS")


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1200,1000",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=DRIVER)
    browser = webdriver.Chrome(options=options, service=service)
    browser.set_page_load_timeout(20)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def gateway(
    tmp_path: Path, mock_factory: MockFactory, start_live: Callable[[config.Config], LiveDaemon]
) -> Iterator[tuple[LiveDaemon, Any]]:
    sim = make_sim(tmp_path, firmware="1.3.0")
    asyncio.run(sim.start())
    try:
        state = tmp_path / "state"
        state.mkdir()
        base = managed_config(state, sim, gateway_port=free_port(), door="lobby")
        data = config.to_dict(base, mask=False)
        data["gpio"]["pin_factory"] = "mock"
        data["doors"] = [{"name": "lobby", "lock": {"pin": 17}, "unlock_time": 1.5}]
        data["web"].update(enabled=True, login_attempts=3)
        cfg = config.parse(config.to_toml(data), "browser.toml")
        from edged.web import accounts

        accounts.set_password(cfg.web.accounts_path(cfg.storage.state_dir), NAME, PASSWORD)
        live = start_live(cfg)
        deadline = time.monotonic() + 20
        while not sim.registered and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.registered, "the simulated terminal was not registered"
        yield live, sim
    finally:
        asyncio.run(sim.stop())


def shot(browser: Any, name: str, width: int = 1200, height: int = 1000) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        browser.set_window_size(width, height)
        browser.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
        browser.set_window_size(1200, 1000)


def wait(browser: Any, test: Callable[[Any], Any], seconds: float = 5.0) -> Any:
    # a page the script reloads (after a mode switch) leaves stale elements for a moment
    ignored = (StaleElementReferenceException, NoSuchElementException)
    return WebDriverWait(browser, seconds, poll_frequency=0.05, ignored_exceptions=ignored).until(
        test
    )


def text_of(browser: Any, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def test_the_page_in_a_real_browser(gateway: tuple[LiveDaemon, Any], driver: Any) -> None:
    live, sim = gateway
    base = live.admin_url

    # log in: the page sends a browser without a session to the login, and back after it
    driver.get(f"{base}/ui/events")
    wait(driver, lambda d: "/ui/login" in d.current_url)
    shot(driver, "login", 412, 700)
    driver.find_element(By.ID, "name").send_keys(NAME)
    driver.find_element(By.ID, "password").send_keys("not the password")
    driver.find_element(By.ID, "login").click()
    wait(driver, lambda d: d.find_elements(By.ID, "login-error"))  # the answer page loaded
    assert "wrong name or password" in text_of(driver, "#login-error")
    driver.find_element(By.ID, "name").send_keys(NAME)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    wait(driver, lambda d: d.current_url.endswith("/ui/events"))
    wait(driver, lambda d: text_of(d, "#live-state") == "live")

    # a record pushed by the terminal appears within a second of its push
    before = len(driver.find_elements(By.CSS_SELECTOR, "#events tbody tr"))
    pushed_at = time.monotonic()
    sim.emit(1)
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#events tbody tr")) > before)
    seen_after = time.monotonic() - pushed_at
    assert seen_after < 1.0, f"the record showed after {seen_after:.2f} s"
    row = driver.find_element(By.CSS_SELECTOR, "#events tbody tr")
    assert "recognition" in row.text and "lobby" in row.text
    shot(driver, "events")
    row.find_element(By.CSS_SELECTOR, "a").click()  # the event opens its why
    wait(driver, lambda d: "/ui/events/" in d.current_url)
    assert driver.find_element(By.ID, "why").text
    shot(driver, "event")

    # open the door from the overview and watch it unlock, then lock again by itself
    driver.get(f"{base}/ui/")
    lock = "#door-lobby .lock"
    assert text_of(driver, lock) == "locked"
    shot(driver, "overview")
    shot(driver, "overview-phone", 412, 1400)
    driver.find_element(By.ID, "open-lobby").click()
    wait(driver, lambda d: text_of(d, lock) == "UNLOCKED", 3)
    wait(driver, lambda d: text_of(d, lock) == "locked", 5)  # unlock_time 1.5 s, pushed back
    log = httpx.get(f"{base}/api/v1/doors/log").json()["entries"]
    assert any(e["action"] == "open" and e["source"].startswith(f"web:{NAME}@") for e in log)

    # lockdown from one page is seen on every page: a second window shows it live
    first = driver.current_window_handle
    driver.switch_to.new_window("window")
    driver.get(f"{base}/ui/events")
    wait(driver, lambda d: text_of(d, "#live-state") == "live")
    events_window = driver.current_window_handle
    driver.switch_to.window(first)
    driver.find_element(By.ID, "lockdown-on").click()
    wait(driver, lambda d: d.switch_to.alert).accept()  # "Lock the whole site down?"
    wait(driver, lambda d: "lockdown ON" in text_of(d, "#mode-lockdown"))
    driver.switch_to.window(events_window)
    wait(
        driver,
        lambda d: "lockdown" in (d.find_element(By.TAG_NAME, "body").get_attribute("class") or ""),
    )
    modes = httpx.get(f"{base}/api/v1/modes").json()
    assert modes["changes"][0]["by"] == f"web:{NAME}"
    metrics = httpx.get(f"{base}/metrics").text
    assert "edged_site_lockdown 1.0" in metrics
    driver.close()
    driver.switch_to.window(first)
    shot(driver, "lockdown")

    # people: search and show
    driver.get(f"{base}/ui/people")
    shot(driver, "people")
    driver.get(f"{base}/ui/people/import")
    shot(driver, "import")

    # log out: the pages are gone, and a write from the browser without a session is refused
    driver.get(f"{base}/ui/")
    driver.find_element(By.ID, "logout").click()
    wait(driver, lambda d: "/ui/login" in d.current_url)
    driver.get(f"{base}/ui/")
    wait(driver, lambda d: "/ui/login" in d.current_url)
    status = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/api/v1/doors/lobby/open', {method: 'POST', credentials: 'same-origin'})"
        ".then(r => done(r.status)).catch(e => done(String(e)));"
    )
    assert status == 401
    assert httpx.get(f"{base}/api/v1/doors").json()["doors"][0]["locked"] is True
