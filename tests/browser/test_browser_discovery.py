"""Which browser the browser tests take, in order, with fake PATHs and folders (no real browser runs)."""
import os
import subprocess

import pytest

from .conftest import BrowserNotFound, chromium_executable, find_chromium, install_playwright_chromium


def fake_exe(folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def places(tmp_path):
    """A fake Playwright browser folder and two fake PATH folders, all empty."""
    return {"pw": tmp_path / "ms-playwright" / "chromium-1" / "chrome-linux", "bin1": tmp_path / "bin1",
            "bin2": tmp_path / "bin2", "tmp": tmp_path}


def env_with(places, **extra):
    return {"PATH": os.pathsep.join(str(places[k]) for k in ("bin1", "bin2")), **extra}


def pw_at(places):
    return lambda: str(places["pw"] / "chrome")


def test_rw_chromium_comes_first(places):
    mine = fake_exe(places["tmp"] / "mine", "my-chrome")
    fake_exe(places["pw"], "chrome")
    fake_exe(places["bin1"], "chromium")
    assert find_chromium(env_with(places, RW_CHROMIUM=mine), pw_at(places))[:2] == (mine, "RW_CHROMIUM")


def test_a_wrong_rw_chromium_is_an_error_not_a_fallback(places):
    fake_exe(places["bin1"], "chromium")
    with pytest.raises(BrowserNotFound, match="RW_CHROMIUM=/no/such/chrome is not an executable"):
        find_chromium(env_with(places, RW_CHROMIUM="/no/such/chrome"), pw_at(places))


def test_playwrights_chromium_before_the_system_one(places):
    own = fake_exe(places["pw"], "chrome")
    fake_exe(places["bin1"], "chromium")
    path, where, tried = find_chromium(env_with(places), pw_at(places))
    assert (path, where) == (own, "playwright") and tried == ["RW_CHROMIUM: not set"]


@pytest.mark.parametrize("present, expected", [
    (["chromium", "chromium-browser", "google-chrome"], "chromium"),
    (["chromium-browser", "google-chrome"], "chromium-browser"),
    (["google-chrome"], "google-chrome"),
])
def test_system_browsers_in_order(places, present, expected):
    for name in reversed(present):  # a later name earlier on PATH must not win
        fake_exe(places["bin1"], name)
    path, where, tried = find_chromium(env_with(places), pw_at(places))
    assert (path, where) == (str(places["bin1"] / expected), f"PATH ({expected})")
    assert tried[1].startswith("Playwright's Chromium: not installed (expected ") and str(places["pw"]) in tried[1]


def test_path_order_decides_between_folders(places):
    fake_exe(places["bin2"], "chromium")
    fake_exe(places["bin1"], "google-chrome")  # earlier folder, later name: the name order wins
    assert find_chromium(env_with(places), pw_at(places))[0] == str(places["bin2"] / "chromium")


def test_a_non_executable_file_is_passed_over(places):
    places["bin1"].mkdir()
    (places["bin1"] / "chromium").write_text("not a program")
    chrome = fake_exe(places["bin2"], "google-chrome")
    assert find_chromium(env_with(places), pw_at(places))[0] == chrome


def test_none_found_says_why_for_each_place(places):
    def broken():
        raise RuntimeError("driver missing")
    path, where, tried = find_chromium(env_with(places), broken)
    assert (path, where) == (None, "")
    assert tried == ["RW_CHROMIUM: not set", "Playwright's Chromium: cannot ask Playwright (RuntimeError: driver missing)",
                     "system browsers: none of chromium, chromium-browser, google-chrome on PATH"]


def test_nothing_found_installs_playwrights_chromium_then_uses_it(places):
    calls = []

    def install():
        calls.append(1)
        fake_exe(places["pw"], "chrome")
        return None
    assert chromium_executable(env_with(places), pw_at(places), install) == str(places["pw"] / "chrome")
    assert calls == [1]


def test_a_found_browser_installs_nothing(places):
    fake_exe(places["bin1"], "chromium")
    assert chromium_executable(env_with(places), pw_at(places), lambda: pytest.fail("installed")).endswith("chromium")


def test_a_failed_install_fails_with_the_reason_and_the_apt_hint(places):
    with pytest.raises(pytest.fail.Exception) as failed:
        chromium_executable(env_with(places), pw_at(places), lambda: "`python -m playwright install chromium` exited with "
                                                                      "status 1: Error: getaddrinfo EAI_AGAIN")
    text = str(failed.value)
    assert "exited with status 1: Error: getaddrinfo EAI_AGAIN" in text
    assert "sudo apt-get install -y chromium" in text and "RW_CHROMIUM" in text
    assert "none of chromium, chromium-browser, google-chrome on PATH" in text


def test_an_install_that_leaves_no_browser_fails(places):
    with pytest.raises(pytest.fail.Exception, match="reported success, yet Playwright's Chromium: not installed"):
        chromium_executable(env_with(places), pw_at(places), lambda: None)


def test_rw_no_browser_install_never_installs(places):
    with pytest.raises(pytest.fail.Exception, match="not tried \\(RW_NO_BROWSER_INSTALL is set\\)"):
        chromium_executable(env_with(places, RW_NO_BROWSER_INSTALL="1"), pw_at(places),
                            lambda: pytest.fail("must not install"))


def test_install_command_and_its_failures():
    seen = {}

    def ok(cmd, **kw):
        seen.update(cmd=cmd, timeout=kw["timeout"])
        return subprocess.CompletedProcess(cmd, 0, "", "")
    assert install_playwright_chromium(timeout=42, run=ok) is None
    assert seen["cmd"][1:] == ["-m", "playwright", "install", "chromium"] and seen["timeout"] == 42

    def slow(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])
    assert install_playwright_chromium(timeout=5, run=slow) == "`python -m playwright install chromium` did not finish in 5 s"

    def offline(cmd, **kw):  # what Playwright prints where only package registries are reachable
        out = ("Downloading Chrome for Testing 159.0 (playwright chromium v1255)\x1b[2m from "
               "https://cdn.playwright.dev/builds/chrome-linux64.zip\x1b[22m\n"
               "Error: getaddrinfo ENOTFOUND cdn.playwright.dev\n"
               "    at GetAddrInfoReqWrap.onlookupall [as oncomplete] (node:internal/dns/promises:101:17) {\n"
               "  errno: -3008,\n  hostname: 'cdn.playwright.dev'\n}\nError: Download failure, code=1\n")
        return subprocess.CompletedProcess(cmd, 1, out, "")
    assert install_playwright_chromium(run=offline) == (
        "`python -m playwright install chromium` exited with status 1: Error: getaddrinfo ENOTFOUND "
        "cdn.playwright.dev; Error: Download failure, code=1 (downloading https://cdn.playwright.dev/builds/chrome-linux64.zip)")

    def fails(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 2, "", "one\ntwo\nthree\nfour\n")
    assert install_playwright_chromium(run=fails).endswith("exited with status 2: two | three | four")
