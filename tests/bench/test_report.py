"""The HTML report opened in a real headless browser (Debian's chromium + chromedriver through
selenium): its tables and embedded images render, sorting works, no console errors. Skips with
the reason where no browser is installed (.ci/run installs one)."""
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

import pubsuite
from bench import plots, publish as pub, report

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def write_report(folder: Path) -> Path:
    eps = 10.0 ** (-np.arange(0, 9) / 4)
    data = pubsuite.synthetic({"a": 1.5, "b": 2.0}, eps)
    board = pub.leaderboard(data)
    path = folder / "report.html"
    report.write(report.render(data, board, pub.summary(board), plots.draw(data, board), "test"), path)
    return path


def test_report_is_self_contained(tmp_path):
    text = write_report(tmp_path).read_text()
    assert text.count("data:image/png;base64,") == 4
    assert "src=\"http" not in text and "href=" not in text       # nothing fetched from elsewhere
    assert "abc" in text and "torch x" in text                     # git commit and versions from the runs


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip(f"no browser: {CHROMIUM} or {DRIVER} missing (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_in_browser(browser, tmp_path):
    from selenium.webdriver.common.by import By
    path = write_report(tmp_path)
    browser.get(path.as_uri())
    tables = browser.find_elements(By.CSS_SELECTOR, "table")
    assert len(tables) == 4                    # summary, problem (brief + full rows), environment
    assert all(t.is_displayed() or t.find_element(By.XPATH, "./ancestor::details") for t in tables)
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == 4
    for img in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 100
    # sorting: the brief leaderboard by solver, ascending then descending
    brief = tables[1]
    header = brief.find_elements(By.TAG_NAME, "th")[0]
    first = lambda: brief.find_elements(By.CSS_SELECTOR, "tbody tr td")[0].text  # noqa: E731
    header.click()
    assert first() == "a"
    header.click()
    assert first() == "b"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
