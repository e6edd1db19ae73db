"""Every relative link in the README and the documentation pages leads somewhere: the file
exists, and an `#anchor` into a markdown file names one of its headings (GitHub's slugs)."""

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(
    [
        REPO_ROOT / "README.md",
        REPO_ROOT / "SECURITY.md",
        REPO_ROOT / "k8s" / "README.md",
        REPO_ROOT / "deploy" / "README.md",
        REPO_ROOT / "training" / "data" / "README.md",
        *(REPO_ROOT / "docs").glob("*.md"),
    ]
)
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
EXTERNAL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str, keep_code: bool = False) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed unless kept."""
    lines: list[str] = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line if keep_code else INLINE_CODE.sub("", line))
    return lines


def links(page: Path) -> list[str]:
    found: list[str] = []
    for line in prose_lines(page.read_text(encoding="utf-8")):
        found += INLINE_LINK.findall(line)
        found += REFERENCE_LINK.findall(line)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result: set[str] = set()
    for line in prose_lines(page.read_text(encoding="utf-8"), keep_code=True):
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_the_pages_are_there() -> None:
    assert all(page.is_file() for page in PAGES), [p for p in PAGES if not p.is_file()]
    assert len(PAGES) > 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_lead_somewhere(page: Path) -> None:
    broken: list[str] = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO_ROOT)}")
    assert not broken, broken


def test_slugs_follow_github() -> None:
    assert slug("ResNet50 ImageNet weights (`resnet50`)") == "resnet50-imagenet-weights-resnet50"
    assert slug("TF Serving's `model_config_list`") == "tf-servings-model_config_list"
    assert slug("Deploying: Docker and Kubernetes") == "deploying-docker-and-kubernetes"
