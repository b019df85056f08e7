"""The JupyterLab extension in a real browser, against a real JupyterLab.

Each JupyterLab runs as a subprocess with this repository's extension build;
Chromium is Debian's, driven by Playwright (see tests/browser_fixtures.py).
Screenshots of each state are saved in test-artifacts/jupyterlab/.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.browser_fixtures import save_screenshot

pytestmark = pytest.mark.usefixtures("browser")

PLUGIN_ID = "akko-jupyter-llm:plugin"
ITEM = "#jp-main-statusbar .akko-llm-StatusItem"
PANEL = "#akko-llm-gateway-panel"
DEFAULT_CHAT_MODEL = "qwen2.5:3b"
# The test upstream's reply to every non-streamed chat completion.
UPSTREAM_REPLY = "Hello from the test upstream."

# WCAG 2.1 contrast ratio of an element's text against its effective background.
CONTRAST_SCRIPT = """
(element) => {
  const parse = value => {
    const match = value.match(/rgba?\\(([^)]+)\\)/);
    const parts = match[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
    return { rgb: parts.slice(0, 3), alpha: parts.length > 3 ? parts[3] : 1 };
  };
  let node = element;
  let background = null;
  while (node) {
    const color = parse(getComputedStyle(node).backgroundColor);
    if (color.alpha > 0.5) { background = color.rgb; break; }
    node = node.parentElement;
  }
  background = background || [255, 255, 255];
  const text = parse(getComputedStyle(element).color).rgb;
  const luminance = ([r, g, b]) => {
    const channel = c => {
      c /= 255;
      return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  };
  const [light, dark] = [luminance(text), luminance(background)].sort((a, b) => b - a);
  return (light + 0.05) / (dark + 0.05);
}
"""


@pytest.fixture
def jp_asyncio_loop():
    """Replace pytest-jupyter's autouse loop fixture for this module.

    Its loop would be the one that Playwright's sync API keeps running in the
    main thread, which can be neither run nor closed from a fixture.
    """
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def jp_server_cleanup():
    """Replace pytest-jupyter's autouse cleanup: no in-process server runs here."""
    yield


def open_lab(page, lab, *, health: str | None = None) -> None:
    """Load JupyterLab and wait until the status item shows a checked state."""
    page.goto(lab.lab_url)
    page.wait_for_selector("#jp-main-statusbar", timeout=60_000)
    state = f"[data-health='{health}']" if health else ":not([data-health='unknown'])"
    page.wait_for_selector(f"{ITEM}{state}", timeout=30_000)


def open_panel(page) -> None:
    page.click(f"{ITEM} button")
    page.wait_for_selector(f"{PANEL} .akko-llm-Check", timeout=10_000)


def execute(page, command: str, args: dict | None = None):
    """Run a JupyterLab command through window.jupyterapp and return its result."""
    return page.evaluate(
        "([command, args]) => window.jupyterapp.commands.execute(command, args)",
        [command, args or {}],
    )


def check_item(page, name: str):
    return page.locator(f"{PANEL} .akko-llm-Check[data-check='{name}']")


# ----------------------------------------------------------------- healthy


def test_status_item_shows_healthy_model(page, healthy_lab):
    open_lab(page, healthy_lab, health="ok")
    item = page.locator(ITEM)
    button = item.locator("button")

    assert DEFAULT_CHAT_MODEL in button.inner_text()
    assert item.get_attribute("data-health") == "ok"
    assert button.locator(".akko-llm-StatusItem-mark").inner_text() == "\u2713"
    tooltip = button.get_attribute("title")
    assert "healthy" in tooltip
    assert healthy_lab.upstream_url in tooltip
    label = button.get_attribute("aria-label")
    assert DEFAULT_CHAT_MODEL in label
    assert "healthy" in label
    assert page.console_errors == []

    save_screenshot(page.locator("#jp-main-statusbar"), "status-bar-healthy")
    save_screenshot(page, "status-healthy")


def test_panel_lists_checks_and_endpoint(page, healthy_lab):
    open_lab(page, healthy_lab, health="ok")
    open_panel(page)

    names = page.locator(f"{PANEL} .akko-llm-Check").evaluate_all(
        "items => items.map(item => item.dataset.check)"
    )
    assert names[:4] == [
        "settings_valid",
        "gateway_reachable",
        "key_accepted",
        "models_served",
    ]
    statuses = page.locator(f"{PANEL} .akko-llm-Check").evaluate_all(
        "items => items.map(item => item.dataset.status)"
    )
    assert "error" not in statuses
    assert (
        check_item(page, "default_chat_model")
        .locator(".akko-llm-Check-status")
        .inner_text()
        == "OK"
    )

    endpoint = page.locator("#akko-llm-endpoint-url")
    assert endpoint.input_value() == f"{healthy_lab.url}/akko-llm/v1"
    assert endpoint.get_attribute("readonly") is not None
    assert not page.locator(f"{PANEL} button", has_text="Copy URL").is_disabled()

    save_screenshot(page, "healthy", docs=True)


def test_live_test_reports_first_token(page, healthy_lab, lab_upstream):
    open_lab(page, healthy_lab, health="ok")
    open_panel(page)
    streamed_before = sum(
        1
        for request in lab_upstream.server.requests
        if request.path == "/v1/chat/completions" and (request.json or {}).get("stream")
    )

    page.click(f"{PANEL} .akko-llm-Panel-liveButton")
    result = page.locator(f"{PANEL} .akko-llm-Panel-liveResult")
    result.filter(has_text="Time to first token").wait_for(timeout=30_000)

    text = result.inner_text()
    match = re.search(r"Time to first token: (\d+) ms", text)
    assert match, text
    assert int(match.group(1)) < 30_000
    assert DEFAULT_CHAT_MODEL in text
    assert check_item(page, "live_test").count() == 1
    streamed_after = sum(
        1
        for request in lab_upstream.server.requests
        if request.path == "/v1/chat/completions" and (request.json or {}).get("stream")
    )
    assert streamed_after == streamed_before + 1
    assert (
        page.locator(f"{PANEL} .akko-llm-Panel-liveButton").inner_text()
        == "Run live test"
    )

    save_screenshot(page, "live-test", docs=True)


def test_plain_fetch_post_rejected(page, healthy_lab):
    """The panel's POST works only because ServerConnection adds the token or XSRF."""
    open_lab(page, healthy_lab, health="ok")
    status = page.evaluate(
        "url => fetch(url, {method: 'POST'}).then(response => response.status)",
        f"{healthy_lab.url}/akko-llm/status",
    )
    assert status == 403


def test_insert_cell_command_runs_cell(page, healthy_lab):
    open_lab(page, healthy_lab, health="ok")
    execute(page, "notebook:create-new", {"kernelName": "python3"})
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=30_000)
    page.wait_for_selector(
        ".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']",
        timeout=60_000,
    )

    # From the command palette, as a user would.
    page.keyboard.press("Control+Shift+C")
    palette_input = page.locator(".lm-CommandPalette-input")
    palette_input.fill("Insert a Cell That Calls the Default Model")
    page.locator(".lm-CommandPalette-item.lm-mod-active").wait_for()
    page.keyboard.press("Enter")

    cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell")
    cells.nth(1).wait_for(timeout=10_000)
    assert cells.count() == 2
    source = cells.nth(1).locator(".jp-InputArea-editor").inner_text()
    assert "openai_client()" in source
    assert f'model="{DEFAULT_CHAT_MODEL}"' in source

    execute(page, "notebook:run-cell")
    output = cells.nth(1).locator(".jp-OutputArea-output")
    output.filter(has_text=UPSTREAM_REPLY).wait_for(timeout=60_000)
    assert "Error" not in output.inner_text()

    save_screenshot(page, "insert-cell", docs=True)


def test_status_item_keyboard_reachable(page, healthy_lab):
    open_lab(page, healthy_lab, health="ok")
    button = page.locator(f"{ITEM} button")
    assert button.evaluate("node => node.tagName") == "BUTTON"

    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(f"{PANEL} .akko-llm-Check", timeout=10_000)
    focused = page.evaluate("document.activeElement.id")
    assert focused == "akko-llm-panel-heading"

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Check again"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Run live test"
    # The dock panel labels the panel with its tab, whose label is the title.
    tab_id = page.locator(PANEL).get_attribute("aria-labelledby")
    assert page.locator(f"[id='{tab_id}']").inner_text() == "Model gateway"
    assert (
        page.locator(f"{PANEL} .akko-llm-Panel-liveResult").get_attribute("role")
        == "status"
    )


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_text_readable_in_theme(page, healthy_lab, theme):
    open_lab(page, healthy_lab, health="ok")
    execute(page, "apputils:change-theme", {"theme": theme})
    page.wait_for_function(
        "theme => document.body.dataset.jpThemeName === theme",
        arg=theme,
        timeout=20_000,
    )
    open_panel(page)
    page.wait_for_timeout(500)  # let the theme's transitions finish

    selectors = [
        f"{ITEM} .akko-llm-StatusItem-label",
        f"{ITEM} .akko-llm-StatusItem-mark",
        f"{PANEL} h2",
        f"{PANEL} .akko-llm-Panel-summary",
        f"{PANEL} .akko-llm-Check-status",
        f"{PANEL} .akko-llm-Check-message",
        f"{PANEL} .akko-llm-Check-time",
        f"{PANEL} .akko-llm-Button",
        "#akko-llm-endpoint-url",
    ]
    for selector in selectors:
        ratio = page.locator(selector).first.evaluate(CONTRAST_SCRIPT)
        # 4.5:1 is WCAG AA for normal text; the mark is a large bold symbol (3:1).
        minimum = 3.0 if selector.endswith("mark") else 4.5
        assert ratio >= minimum, f"{selector} in {theme}: contrast {ratio:.2f}"

    name = "dark" if "Dark" in theme else "light"
    save_screenshot(page, f"panel-{name}", docs=name == "dark")
    execute(page, "apputils:change-theme", {"theme": "JupyterLab Light"})


# ------------------------------------------------------------------- down


def test_status_item_shows_unreachable_gateway(page, down_lab):
    open_lab(page, down_lab, health="error")
    button = page.locator(f"{ITEM} button")

    assert button.locator(".akko-llm-StatusItem-mark").inner_text() == "\u2715"
    tooltip = button.get_attribute("title")
    assert 'not working: the check "Gateway reachable" failed' in tooltip
    # The gateway's address is 127.0.0.1, so the hint is about a local model server.
    assert "model server on this machine" in tooltip
    assert "kubectl" not in tooltip
    assert down_lab.upstream_url.removesuffix("/v1") in tooltip
    assert "not working" in button.get_attribute("aria-label")

    save_screenshot(page.locator("#jp-main-statusbar"), "status-bar-down")


def test_panel_shows_hint_when_gateway_down(page, down_lab):
    open_lab(page, down_lab, health="error")
    open_panel(page)

    reachable = check_item(page, "gateway_reachable")
    assert reachable.get_attribute("data-status") == "error"
    assert reachable.locator(".akko-llm-Check-status").inner_text() == "Error"
    assert (
        down_lab.upstream_url.removesuffix("/v1")
        in reachable.locator(".akko-llm-Check-message").inner_text()
    )
    hint = reachable.locator(".akko-llm-Check-hint").inner_text()
    assert hint.startswith("What to do:")
    assert "model server on this machine" in hint
    assert "kubectl" not in hint

    skipped = check_item(page, "models_served")
    assert skipped.get_attribute("data-status") == "skipped"
    assert "gateway_reachable" in skipped.inner_text()
    summary = page.locator(f"{PANEL} .akko-llm-Panel-summary").inner_text()
    assert 'not working: the check "Gateway reachable" failed' in summary

    save_screenshot(page, "gateway-down", docs=True)


def test_check_command_notifies_problem(page, down_lab):
    open_lab(page, down_lab, health="error")
    execute(page, "akko-llm:check-gateway")
    toast = page.locator(".Toastify__toast", has_text="Gateway reachable")
    toast.wait_for(timeout=15_000)
    assert down_lab.upstream_url.removesuffix("/v1") in toast.inner_text()
    assert page.locator(PANEL).is_visible()


# --------------------------------------------------------------- settings


def test_setting_hides_status_item(page, healthy_lab):
    healthy_lab.put_settings(PLUGIN_ID, {"showStatusItem": False})
    try:
        page.goto(healthy_lab.lab_url)
        page.wait_for_selector("#jp-main-statusbar", timeout=60_000)
        # The plugin is active once its command exists; then the item must be absent.
        page.wait_for_function(
            "() => window.jupyterapp && "
            "window.jupyterapp.commands.hasCommand('akko-llm:check-gateway')",
            timeout=30_000,
        )
        page.wait_for_timeout(1000)
        assert page.locator(ITEM).count() == 0 or not page.locator(ITEM).is_visible()
    finally:
        healthy_lab.put_settings(PLUGIN_ID, {})


def test_poll_interval_setting_repeats_checks(page, healthy_lab):
    healthy_lab.put_settings(PLUGIN_ID, {"pollInterval": 1})
    status_requests: list[str] = []
    page.on(
        "request",
        lambda request: (
            status_requests.append(request.method)
            if request.url.split("?")[0].endswith("/akko-llm/status")
            else None
        ),
    )
    try:
        open_lab(page, healthy_lab, health="ok")
        page.wait_for_timeout(3500)
        assert status_requests.count("GET") >= 3
    finally:
        healthy_lab.put_settings(PLUGIN_ID, {})

    # Back to the default (60 s): one check at start, none in the next seconds.
    page.goto("about:blank")  # stops the timer of the page loaded with 1 s
    status_requests.clear()
    open_lab(page, healthy_lab, health="ok")
    page.wait_for_timeout(2500)
    assert status_requests.count("GET") == 1
