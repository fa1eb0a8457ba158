"""A rater in a real browser (headless Chromium via selenium): enters a name, plays audio,
clicks through every trial, sees the finished page; the server restarts on the same database
and the answers, and the error rate computed from them, are exactly the clicked ones."""

from __future__ import annotations

import shutil

import pytest

from espnet_probe.listening.analysis import human_error_rows
from espnet_probe.listening.store import Store
from tests.listening_support import make_db, serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromedriver on PATH "
                                       "(tools/install.sh installs them)")


@pytest.fixture
def browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio",
                "--window-size=1000,800"):
        options.add_argument(arg)
    # an explicit driver: selenium-manager must never try to download one
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def test_rater_completes_test_in_browser(tmp_path, browser):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shows(element_id, text):
        """The page shows `text` in `element_id` and has finished loading. A click submits a
        form and the browser swaps documents asynchronously; a lookup during the swap fails
        with a stale or inspector error (CI hit both), which here just means 'not yet'."""
        def loaded(driver):
            try:
                return (driver.find_element(By.ID, element_id).text == text
                        and driver.execute_script("return document.readyState") == "complete")
            except WebDriverException:
                return False
        WebDriverWait(browser, 10).until(loaded, f"page never showed {element_id}={text!r}")

    db = make_db(tmp_path, per_layer=3)  # 6 trials over 2 layers
    with Store(db) as s:
        truth = dict(s.conn.execute("SELECT id, answer FROM trials").fetchall())
        layer_of = dict(s.conn.execute("SELECT id, layer FROM trials").fetchall())
    clicked, expected = [], {}
    with serving(db) as base:
        browser.get(base + "/")
        browser.find_element(By.ID, "name").send_keys("Ann <b>Tester</b>")
        browser.find_element(By.ID, "start").click()
        for k in range(1, len(truth) + 1):
            shows("progress", f"{k} / {len(truth)}")  # differs from the previous page's text
            assert "Ann <b>Tester</b>:" in browser.find_element(By.CLASS_NAME, "small").text
            if k == 1:  # the browser loads and decodes the served wav (0.1 s)
                duration = browser.execute_script(
                    "const a = document.getElementById('audio-X'); a.preload = 'auto'; a.load();"
                    "return new Promise(r => { a.onloadedmetadata = () => r(a.duration);"
                    " a.onerror = () => r(-1); });")
                assert duration == pytest.approx(0.1, abs=0.01)
            trial = int(browser.find_element(By.NAME, "trial").get_attribute("value"))
            wrong = k % 3 == 0  # every third answer is a known mistake
            choice = {"A": "B", "B": "A"}[truth[trial]] if wrong else truth[trial]
            browser.find_element(By.ID, f"answer-{choice}").click()
            clicked.append((trial, choice))
            n, e = expected.get(layer_of[trial], (0, 0))
            expected[layer_of[trial]] = (n + 1, e + wrong)
        shows("done", "Thank you, Ann <b>Tester</b>!")

    with serving(db) as base:  # a new server process state on the same database
        browser.get(base + "/")  # the cookie brings the rater back: still finished
        shows("done", "Thank you, Ann <b>Tester</b>!")
        with Store(db) as s:
            answers = s.answer_rows()
            groups = s.trial_groups()
    assert [(a["trial"], a["choice"]) for a in answers] == clicked
    rows = {r["layer"]: r for r in human_error_rows(groups, answers)}
    assert sum(e for _, e in expected.values()) == 2
    for layer, (n, errors) in expected.items():
        assert rows[layer]["n"] == n and rows[layer]["value"] == pytest.approx(errors / n)
