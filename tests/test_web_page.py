"""The page at GET / in a real Chromium (Playwright) against a real server of the shipped models:
drawing a digit, reviews, votes, a photo (answered by a resnet50 stand-in, and with none served),
keyboard-only use, a phone viewport, accessible names, and no console errors or CSP violations.
Full-page screenshots go to tests/artifacts/ (gitignored) for a human to look at."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from service.settings import Settings
from tests.conftest import FIXTURES, MODELS_DIR
from tests.server import running_server
from tests.task_models import export_standin, photo_bytes, standin_model
from training.votes import LABELS, SHIPPED_DATA, VOTE_COLUMNS, read_votes

pytest_plugins = ["tests.gateway_fixtures"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}
TIMEOUT_MS = 30_000
PHOTO = "kserve_dog.jpg"  # from ../shared/data/photos

# Digits as polylines in canvas fractions (0..1), one list of points per stroke.
DIGIT_STROKES = {
    1: [[(0.5, 0.15), (0.5, 0.85)]],
    7: [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]],
}
POSITIVE_REVIEW = (
    "An absolute masterpiece. Brilliant acting, a beautiful score and a moving story; "
    "I loved every minute of it and will watch it again."
)
NEGATIVE_REVIEW = (
    "A dreadful, boring mess. The plot is stupid, the acting is awful and the jokes fall flat. "
    "The worst film I have seen in years; a complete waste of time."
)

expect.set_options(timeout=TIMEOUT_MS)


@dataclass
class Tab:
    """A page of the site and what went wrong in it: console errors (CSP violations included)
    and uncaught exceptions."""

    page: Page
    problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's `chromium` package "
            "(apt-get install chromium; CI installs it)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_tab(browser: Browser, url: str, viewport: dict[str, int]) -> Iterator[Tab]:
    """The page, loaded, its models' status shown; fails at teardown on problems a test did not
    expect (see accept_photo_404)."""
    context = browser.new_context(base_url=url, viewport=viewport)
    context.set_default_timeout(TIMEOUT_MS)
    tab = Tab(context.new_page())

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.problems.append(message.text)

    tab.page.on("console", on_console)
    tab.page.on("pageerror", lambda error: tab.problems.append(f"uncaught: {error}"))
    tab.page.goto("/")
    expect(tab.page.locator("#digits-status")).to_have_attribute("data-state", "ready")
    yield tab
    context.close()
    assert not tab.problems, f"errors in the browser console: {tab.problems}"


@pytest.fixture
def tab(browser: Browser, shipped_server: str) -> Iterator[Tab]:
    yield from open_tab(browser, shipped_server, DESKTOP)


@pytest.fixture
def phone_tab(browser: Browser, shipped_server: str) -> Iterator[Tab]:
    yield from open_tab(browser, shipped_server, PHONE)


def draw(page: Page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw with the mouse on #digit-canvas, points given as fractions of its size."""
    box = page.locator("#digit-canvas").bounding_box()
    assert box is not None
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for _, (x, y) in pairwise(points):
            page.mouse.move(x, y, steps=15)
        page.mouse.up()


def typical_votes(party: str) -> dict[str, str]:
    """Each bill voted the way most of the party's members voted on it (UCI data)."""
    votes, parties = read_votes(SHIPPED_DATA)
    leaning = votes[parties == LABELS.index(party)].mean(axis=0)
    return {bill: "y" if m > 0 else "n" for bill, m in zip(VOTE_COLUMNS, leaning, strict=True)}


def cast_votes(page: Page, votes: dict[str, str]) -> None:
    for bill, vote in votes.items():
        page.locator(f"input[name='{bill}'][value='{vote}']").check()


def model_version(model: str) -> re.Pattern[str]:
    return re.compile(rf"model {model} version \d+")


def choose_photo(page: Page) -> None:
    photo = Image.linear_gradient("L").resize((160, 120)).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    page.locator("#photo-input").set_input_files(
        [{"name": "gradient.png", "mimeType": "image/png", "buffer": buffer.getvalue()}]
    )


def accept_photo_404(tab: Tab) -> None:
    """The browser logs the photo card's 404 (no resnet50 served) as a console error: expected,
    as long as nothing else went wrong."""
    assert len(tab.problems) == 1 and "404" in tab.problems[0], tab.problems
    tab.problems.clear()


def fill_every_card(page: Page) -> None:
    """An answer (or, for photos without resnet50, an error) in every card."""
    draw(page, DIGIT_STROKES[7])
    page.locator("#digit-predict").click()
    choose_photo(page)
    page.locator("#review-text").fill(POSITIVE_REVIEW)
    page.locator("#review-submit").click()
    cast_votes(page, typical_votes("democrat"))
    page.locator("#votes-submit").click()
    for card, model in (("digit", "digits"), ("review", "sentiment"), ("votes", "votes")):
        expect(page.locator(f"#{card}-result")).to_contain_text(model_version(model))
    expect(page.locator("#photo-error")).not_to_be_empty()


# --- the page ---------------------------------------------------------------------------------


def test_page_loads_clean_with_links_and_model_status(tab: Tab) -> None:
    page = tab.page
    expect(page).to_have_title(re.compile("modelserve"))
    expect(page.get_by_role("link", name="API docs")).to_have_attribute("href", "/docs")
    expect(page.get_by_role("link", name="Metrics")).to_have_attribute("href", "/metrics")
    for card in ("digits", "review", "votes"):
        expect(page.locator(f"#{card}-status")).to_have_text(re.compile(r"version \d+ ready"))
    expect(page.locator("#photos-status")).to_have_text("not loaded")
    expect(page.get_by_text("modelserve train resnet50")).to_be_visible()
    expect(page.locator("#votes-form fieldset")).to_have_count(len(VOTE_COLUMNS))
    assert page.request.get("/docs").ok
    csp = page.request.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert not tab.problems, f"errors in the browser console: {tab.problems}"


def test_controls_and_regions_are_accessible(tab: Tab) -> None:
    page = tab.page
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll("input, textarea, button, select")]
            .filter((control) => !(control.labels?.length || control.getAttribute("aria-label")
              || (control.tagName === "BUTTON" && control.textContent.trim())))
            .map((control) => control.id || control.outerHTML)"""
    )
    assert unnamed == []
    canvas = page.get_by_role("img", name="Drawing pad for one digit")
    expect(canvas).to_have_accessible_description(re.compile("Draw one digit"))
    for card in ("digit", "photo", "review", "votes"):
        expect(page.locator(f"#{card}-result")).to_have_attribute("aria-live", "polite")
        expect(page.locator(f"#{card}-error")).to_have_attribute("role", "alert")
    expect(page.get_by_role("group", name="Handicapped infants")).to_be_visible()


# --- digits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("digit", sorted(DIGIT_STROKES))
def test_drawn_digit_is_recognised(tab: Tab, digit: int) -> None:
    page = tab.page
    draw(page, DIGIT_STROKES[digit])
    page.locator("#digit-predict").click()
    expect(page.locator("#digit-value")).to_have_text(str(digit))
    result = page.locator("#digit-result")
    expect(result).to_contain_text("confident")
    expect(result).to_contain_text(model_version("digits"))
    expect(result.locator(".bar")).to_have_count(10)


def test_digit_pad_predicts_when_drawing_stops_and_clears(tab: Tab) -> None:
    page = tab.page
    page.locator("#digit-predict").click()
    expect(page.locator("#digit-error")).to_have_text("Draw a digit first.")
    draw(page, DIGIT_STROKES[1])
    expect(page.locator("#digit-value")).to_have_text("1")  # no click: predicted on pointer-up
    expect(page.locator("#digit-error")).to_be_empty()
    page.locator("#digit-clear").click()
    expect(page.locator("#digit-result")).to_be_empty()
    page.locator("#digit-predict").click()
    expect(page.locator("#digit-error")).to_have_text("Draw a digit first.")


def test_digit_from_a_picture(tab: Tab) -> None:
    tab.page.locator("#digit-file").set_input_files(FIXTURES / "mnist" / "test0000_label7.png")
    expect(tab.page.locator("#digit-value")).to_have_text("7")


# --- reviews, votes, photos -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("review", "label"), [(POSITIVE_REVIEW, "positive"), (NEGATIVE_REVIEW, "negative")]
)
def test_review_sentiment(tab: Tab, review: str, label: str) -> None:
    page = tab.page
    page.locator("#review-text").fill(review)
    page.locator("#review-submit").click()
    expect(page.locator("#review-value")).to_have_text(label)
    result = page.locator("#review-result")
    expect(result).to_contain_text(model_version("sentiment"))
    expect(result.locator(".bar")).to_have_count(2)


def test_empty_review_is_not_sent(tab: Tab) -> None:
    tab.page.locator("#review-submit").click()
    expect(tab.page.locator("#review-error")).to_have_text("Write a review first.")


@pytest.mark.parametrize("party", LABELS)
def test_party_from_typical_votes(tab: Tab, party: str) -> None:
    page = tab.page
    cast_votes(page, typical_votes(party))
    page.locator("#votes-submit").click()
    expect(page.locator("#votes-value")).to_have_text(party)
    result = page.locator("#votes-result")
    expect(result).to_contain_text(model_version("votes"))
    expect(result.locator(".bar")).to_have_count(2)


def test_reset_votes_clears_the_answer(tab: Tab) -> None:
    page = tab.page
    cast_votes(page, typical_votes("democrat"))
    page.locator("#votes-submit").click()
    expect(page.locator("#votes-value")).to_have_text("democrat")
    page.locator("#votes-reset").click()
    expect(page.locator("#votes-result")).to_be_empty()
    expect(page.locator("#votes-form input[value='?']:checked")).to_have_count(len(VOTE_COLUMNS))


def test_photo_without_resnet50_says_how_to_create_it(tab: Tab) -> None:
    page = tab.page
    choose_photo(page)
    expect(page.locator("#photo-preview")).to_be_visible()
    expect(page.locator("#photo-preview")).to_have_attribute("src", re.compile("^blob:"))
    error = page.get_by_role("alert").filter(has_text="resnet50")
    expect(error).to_be_visible()
    expect(error).to_contain_text("modelserve train resnet50")
    expect(page.locator("#photo-result")).to_be_empty()
    accept_photo_404(tab)


@pytest.fixture(scope="module")
def photo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """digits and a small stand-in for resnet50 (tests/task_models.py) with random weights,
    served with --allow-random-weights, so its answers come with the warning."""
    repo = tmp_path_factory.mktemp("photo-server")
    shutil.copytree(MODELS_DIR / "digits", repo / "digits")
    export_standin(repo, standin_model(), "random")
    settings = Settings(model_base_path=repo, poll_interval_seconds=0, allow_random_weights=True)
    with running_server(settings, timeout=180) as url:
        yield url


def test_photo_answer_shows_the_top_classes_and_the_warning(
    browser: Browser, photo_server: str
) -> None:
    photo = photo_bytes(PHOTO)
    expected = httpx.post(
        f"{photo_server}/api/v1/images?top_k=5", files={"file": (PHOTO, photo, "image/jpeg")}
    ).json()
    for tab in open_tab(browser, photo_server, DESKTOP):
        page = tab.page
        page.locator("#photo-input").set_input_files(
            [{"name": PHOTO, "mimeType": "image/jpeg", "buffer": photo}]
        )
        expect(page.locator("#photo-preview")).to_be_visible()
        top = [entry["label"] for entry in expected["predictions"][0]]
        expect(page.locator("#photo-value")).to_have_text(top[0])
        result = page.locator("#photo-result")
        expect(result.locator(".warning")).to_have_text(expected["warning"])
        expect(result.locator(".bar-label")).to_have_text(top)
        expect(result).to_contain_text(f"model resnet50 version {expected['version']}")


# --- keyboard, layout -------------------------------------------------------------------------


def focused(page: Page) -> str:
    return page.evaluate("() => document.activeElement.id || document.activeElement.textContent")


def test_keyboard_only(tab: Tab) -> None:
    page = tab.page
    order: list[str] = []
    while len(order) < 10 and (not order or order[-1] != "review-text"):
        page.keyboard.press("Tab")
        order.append(focused(page))
    assert order == [
        "API docs",
        "Metrics",
        "digit-predict",
        "digit-clear",
        "digit-file",
        "photo-input",
        "review-text",
    ]
    outline = page.locator("#review-text").evaluate("node => getComputedStyle(node).outlineStyle")
    assert outline == "solid", "no visible focus style"

    page.keyboard.type(NEGATIVE_REVIEW)
    page.keyboard.press("Tab")
    assert focused(page) == "review-submit"
    page.keyboard.press("Enter")
    expect(page.locator("#review-value")).to_have_text("negative")

    page.keyboard.press("Shift+Tab")
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type(POSITIVE_REVIEW)
    page.keyboard.press("ControlOrMeta+Enter")
    expect(page.locator("#review-value")).to_have_text("positive")


def no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def card_lefts(page: Page) -> list[float]:
    return page.locator(".card").evaluate_all(
        "cards => cards.map((card) => card.getBoundingClientRect().left)"
    )


def test_desktop_layout_and_screenshot(tab: Tab) -> None:
    page = tab.page
    fill_every_card(page)
    assert no_horizontal_scroll(page)
    digits, photos, review, votes = card_lefts(page)
    assert digits < photos < review, "the first three cards should sit side by side"
    assert votes == digits
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web-page.png", full_page=True)
    accept_photo_404(tab)


def test_phone_layout_and_screenshot(phone_tab: Tab) -> None:
    page = phone_tab.page
    fill_every_card(page)
    assert no_horizontal_scroll(page)
    assert len(set(card_lefts(page))) == 1, "on a phone the cards should stack"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web-page-phone.png", full_page=True)
    accept_photo_404(phone_tab)
