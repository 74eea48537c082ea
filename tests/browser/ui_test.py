"""The web UI in headless Chromium, driven by Playwright (run by the `the_ui_in_a_real_browser`
test of services/cli, which starts every service and hands over their addresses).

Each scenario asserts what a person would see, through the browser, and saves a screenshot of the
screen. Prints `browser: all scenarios passed` at the end; any failed check raises.
"""

import http.server
import os
import re
import threading
import time
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

UI = os.environ["UI_URL"].rstrip("/")
API_KEY = os.environ["API_KEY"]
SIM_URL = os.environ["SIM_URL"]
SIM_TOKEN = os.environ["SIM_TOKEN"]
SOURCE = os.environ["SOURCE"]
SPACE = os.environ["SPACE"]
OTHER_SPACE = os.environ["OTHER_SPACE"]
HOSTILE = os.environ["HOSTILE_TITLE_PART"]
RELEASE_TITLE = os.environ["RELEASE_TITLE"]
JIRA_KEY = os.environ["JIRA_KEY"]
SHOTS = Path(os.environ["SCREENSHOT_DIR"])
CHROMIUM = os.environ["CHROMIUM"]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

expect.set_options(timeout=15_000)


def step(name: str) -> None:
    print(f"browser: {name}", flush=True)


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, key: str) -> None:
    page.goto(f"{UI}/")
    expect(page).to_have_url(re.compile(r"/signin"))
    page.get_by_label("Api key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def wrong_key_cannot_sign_in(page: Page) -> None:
    step("a wrong key cannot sign in")
    sign_in(page, "not-the-key-at-all-0000")
    expect(page.get_by_role("alert")).to_have_text("That is not the api key.")
    expect(page).to_have_url(re.compile(r"/signin"))
    assert not [c for c in page.context.cookies() if c["name"] == "pagestream_session"]
    page.goto(f"{UI}/sources")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fsources"))
    shot(page, "01-sign-in-wrong-key")


def signs_in(page: Page) -> None:
    step("sign in")
    page.get_by_label("Api key").fill(API_KEY)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{UI}/sources")
    expect(page.get_by_role("heading", name="Sources")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "pagestream_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert API_KEY not in page.content()
    shot(page, "02-sources-empty")


def adds_a_source(page: Page) -> None:
    step("add a source: field errors first, the token never echoed")
    page.get_by_role("link", name="Add a source").click()
    page.get_by_label("Site URL").fill(SIM_URL)
    page.get_by_label("Space keys").fill(SPACE)
    page.get_by_label("Source key (optional)").fill(SOURCE)
    page.get_by_label("E-mail").fill("sim@example.com")
    page.get_by_label("API token").fill("wrong-token-must-not-echo")
    page.get_by_role("button", name="Check and add").click()
    expect(page.locator("#f-auth-api_token ~ .error, #credentials-error")).to_contain_text(
        "rejected the credentials"
    )
    assert "wrong-token-must-not-echo" not in page.content()
    expect(page.get_by_label("API token")).to_have_value("")
    expect(page.get_by_label("Site URL")).to_have_value(SIM_URL)
    # A bad interval is named next to its field.
    page.get_by_label("API token").fill(SIM_TOKEN)
    page.get_by_label("Incremental sync interval (seconds)").fill("5")
    page.get_by_role("button", name="Check and add").click()
    interval = page.get_by_label("Incremental sync interval (seconds)")
    expect(interval).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-settings-incremental_interval_secs-error")).to_contain_text("at least 60")
    assert SIM_TOKEN not in page.content()
    shot(page, "03-add-source-field-errors")
    # Data Center shows its own token field (keyboard: arrow keys move within the radio group).
    page.get_by_label("Cloud").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_label("Personal access token")).to_be_visible()
    expect(page.get_by_label("API token")).to_be_hidden()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_label("API token")).to_be_visible()
    page.get_by_label("API token").fill(SIM_TOKEN)
    interval.fill("900")
    # Many spaces: a comma-separated list, each checked against Confluence; or all spaces.
    spaces = page.get_by_label("Space keys")
    spaces.fill(f"{SPACE}, NOPE")
    page.get_by_role("button", name="Check and add").click()
    expect(page.locator("#f-spaces-error")).to_contain_text('no space "NOPE"')
    expect(spaces).to_have_value(f"{SPACE}, NOPE")
    page.get_by_label("API token").fill(SIM_TOKEN)
    page.get_by_label("All spaces the credentials can read").check()
    page.get_by_role("button", name="Check and add").click()
    expect(page.locator("#f-spaces-error")).to_contain_text("not both")
    expect(page.get_by_label("All spaces the credentials can read")).to_be_checked()
    page.get_by_label("All spaces the credentials can read").uncheck()
    page.get_by_label("API token").fill(SIM_TOKEN)
    spaces.fill(f"{SPACE}, {OTHER_SPACE}")
    page.get_by_role("button", name="Check and add").click()
    expect(page).to_have_url(re.compile(rf"/sources/{SOURCE}\?added=1"))
    expect(page.get_by_role("status")).to_contain_text("Source added")
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"space {SPACE}, {OTHER_SPACE}")
    expect(page.get_by_text(f"/webhooks/confluence/{SOURCE}")).to_be_visible()


def watches_the_run(page: Page) -> None:
    step("full sync: the bars reach the end without a reload")
    page.get_by_role("button", name="Full sync").click()
    expect(page).to_have_url(re.compile(rf"/sources/{SOURCE}\?run="))
    page.evaluate("window.__sameDocument = 'still here'")
    shot(page, "04-source-run-started")
    # A locator, not wait_for_function: the UI's CSP (no 'unsafe-eval') refuses evaluated strings.
    expect(page.locator("#live")).to_have_attribute("data-finished", "true", timeout=120_000)
    assert page.evaluate("window.__sameDocument") == "still here", "the page was reloaded"
    expect(page.locator("#run [data-field=label]")).to_have_text("done")
    for stage in ["fetched", "converted", "embedded", "indexed"]:
        bar = page.locator(f"#bar-{stage}")
        value, maximum = int(bar.get_attribute("value")), int(bar.get_attribute("max"))
        assert value == maximum and maximum >= 40, (stage, value, maximum)
    assert page.locator("#bar-failed").get_attribute("value") == "0"
    # The source's counts follow the run too.
    expect(page.locator("#live p.site")).to_contain_text(f"{maximum} pages")
    expect(page.locator("table tbody tr").first).to_contain_text("done")
    shot(page, "05-source-run-done")
    page.get_by_role("link", name="Sources").click()
    card = page.locator(f'li.source[data-source="{SOURCE}"]')
    expect(card).to_contain_text("done")
    expect(card).to_contain_text("scheduled every 15 min")
    shot(page, "06-sources")


def searches(page: Page) -> str:
    step("search by words, then by a Jira key; the URL holds the query")
    page.get_by_role("link", name="Search").click()
    page.get_by_role("searchbox", name="Search").fill("payments release checklist")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?q=payments\+release\+checklist"))
    first = page.locator(".result").first
    expect(first.get_by_role("heading")).to_have_text(RELEASE_TITLE)
    expect(first.locator("mark").first).to_be_visible()
    shot(page, "07-search-words")
    shared = page.url
    page.get_by_text("Filters").click()
    page.get_by_label("Jira issue").fill(JIRA_KEY)
    page.get_by_label("Source").select_option(SOURCE)
    page.get_by_role("searchbox", name="Search").fill("checklist")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page).to_have_url(re.compile(rf"jira={JIRA_KEY}"))
    results = page.locator(".result")
    expect(results.first.get_by_role("heading")).to_have_text(RELEASE_TITLE)
    titles = set(results.locator("h2").all_inner_texts())
    assert titles == {RELEASE_TITLE}, titles
    shot(page, "08-search-jira-key")
    # A bad filter is named next to its field.
    page.get_by_label("Subtree").fill("not-a-path")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("#f-path-error")).to_contain_text("path of page ids")
    # The shared URL gives the same results in a fresh tab.
    other = page.context.new_page()
    other.goto(shared)
    expect(other.locator(".result").first.get_by_role("heading")).to_have_text(RELEASE_TITLE)
    other.close()
    return shared


def opens_a_result(page: Page, shared: str) -> None:
    step("open a result")
    page.goto(shared)
    page.locator(".result h2 a").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(RELEASE_TITLE)
    expect(page.locator(".markdown h2").first).to_have_text("Before the release")
    expect(page.get_by_label("Page metadata")).to_contain_text(JIRA_KEY)
    expect(page.get_by_label("Page metadata")).to_contain_text("ui-test")
    expect(page.get_by_role("link", name="Open in Confluence")).to_have_attribute(
        "href", re.compile(r"^http")
    )
    shot(page, "09-page")


def hostile_page_is_inert(page: Page, dialogs: list) -> None:
    step("a page full of script injections renders inert")
    page.goto(f"{UI}/search?q=hostile+page+ends+here&source={SOURCE}")
    page.locator(".result h2 a", has_text=HOSTILE).first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("onerror")
    page.wait_for_timeout(500)
    assert dialogs == [], f"a dialog opened: {dialogs}"
    assert page.evaluate("typeof window.__pwned") == "undefined", "an injected script ran"
    scripts = page.evaluate("[...document.scripts].map(s => s.src)")
    assert scripts == [f"{UI}/assets/ui.js"], scripts
    handlers = page.evaluate(
        "[...document.querySelectorAll('*')].filter(e => [...e.attributes]"
        ".some(a => a.name.startsWith('on'))).length"
    )
    assert handlers == 0, f"{handlers} elements carry event handlers"
    hrefs = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
    assert not [h for h in hrefs if h.lower().startswith("javascript:")], hrefs
    assert page.locator("iframe, svg, img").count() == 0
    # The text is there, as text.
    expect(page.locator(".markdown")).to_contain_text("Hostile page")
    page.get_by_text("click me").click()
    page.wait_for_timeout(300)
    assert dialogs == [] and page.evaluate("typeof window.__pwned") == "undefined"
    shot(page, "10-hostile-page-inert")


def retries_a_dead_letter(page: Page) -> None:
    step("retry a dead letter")
    page.goto(f"{UI}/dead-letters")
    letters = page.locator("li.letter")
    expect(letters.first).to_be_visible()
    expect(letters.first).to_contain_text("malformed cloudevent")
    shot(page, "11-dead-letters")
    sequence = letters.first.get_attribute("data-sequence")
    letters.first.get_by_role("button", name=f"Retry dead letter {sequence}").click()
    expect(page.get_by_role("status")).to_contain_text("Retried 1 event")
    expect(page.locator(f'li.letter[data-sequence="{sequence}"]')).to_have_count(0)
    shot(page, "12-dead-letter-retried")


class ForgedSite(http.server.BaseHTTPRequestHandler):
    """Another site (localhost, not 127.0.0.1) whose page posts to the UI on load."""

    def do_GET(self):  # noqa: N802 (the standard library's name)
        body = f"""<!doctype html><html><body><p>Win a prize!</p>
<form id="f" method="post" action="{UI}/sources/{SOURCE}/remove">
<input type="hidden" name="csrf" value="guessed"></form>
<script>document.getElementById('f').submit()</script></body></html>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def forged_posts_are_refused(page: Page) -> None:
    step("a forged cross-site POST is refused")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ForgedSite)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://localhost:{server.server_address[1]}/")
        expect(page.get_by_role("heading", name="Refused")).to_be_visible()
        assert page.url.startswith(f"{UI}/sources/{SOURCE}/remove"), page.url
        shot(page, "13-forged-post-refused")
    finally:
        server.shutdown()
    # With the session cookie but without the form's token (a script that got the cookie sent).
    response = page.context.request.post(
        f"{UI}/sources/{SOURCE}/sync", form={"mode": "full"}, max_redirects=0
    )
    assert response.status == 403, response.status
    response = page.context.request.post(
        f"{UI}/dead-letters/retry", form={"all": "1", "csrf": "00" * 32}, max_redirects=0
    )
    assert response.status == 403, response.status
    page.goto(f"{UI}/sources")
    expect(page.locator(f'li.source[data-source="{SOURCE}"]')).to_be_visible()


def narrow_and_keyboard(browser, state) -> None:
    step("360 px wide, keyboard only")
    context = browser.new_context(viewport={"width": 360, "height": 740}, storage_state=state)
    page = context.new_page()
    page.goto(f"{UI}/sources")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the sources page is {width} px wide at 360"
    shot(page, "14-sources-360px")
    page.goto(f"{UI}/sources/{SOURCE}")
    shot(page, "15-source-360px")
    page.goto(f"{UI}/search")
    page.keyboard.type("rolling back")
    page.keyboard.press("Enter")
    expect(page.locator(".result").first).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the search page is {width} px wide at 360"
    # Tab reaches the first result's link; Enter opens it.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('.result h2') !== null"):
            break
    else:
        raise AssertionError("Tab never reached a search result")
    page.keyboard.press("Enter")
    expect(page.locator("article.page")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page view is {width} px wide at 360"
    shot(page, "16-page-360px")
    context.close()


def signs_out(page: Page) -> None:
    step("sign out")
    page.goto(f"{UI}/sources")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin"))
    page.goto(f"{UI}/sources")
    expect(page).to_have_url(re.compile(r"/signin"))


def main() -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        dialogs: list = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        errors: list = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        wrong_key_cannot_sign_in(page)
        signs_in(page)
        adds_a_source(page)
        watches_the_run(page)
        shared = searches(page)
        opens_a_result(page, shared)
        hostile_page_is_inert(page, dialogs)
        retries_a_dead_letter(page)
        forged_posts_are_refused(page)
        narrow_and_keyboard(browser, context.storage_state())
        signs_out(page)
        assert errors == [], f"script errors on the pages: {errors}"
        browser.close()
    print(f"browser: all scenarios passed in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
