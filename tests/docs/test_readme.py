"""The README is a front page: at most 15,000 bytes, its commands compose, its links and the docs' links
lead somewhere, and its notebook instructions work after its set-up command."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
from conftest import CONF_DIR, ROOT

from shiftprobe.app.command_line import command_line_problem

README = ROOT / "README.md"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def without_code(text: str) -> str:
    """The markdown text without fenced blocks and inline code spans (links in code are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path) -> set[str]:
    """Every heading anchor of a markdown file (a repeated heading gets -1, -2, ... as on GitHub)."""
    found: set[str] = set()
    for heading in re.findall(r"^#+ +(.+?) *$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M):
        base, n = slug(heading), 0
        name = base
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def relative_links(path) -> list[str]:
    return [t for t in LINK.findall(without_code(path.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_readme_is_at_most_15000_bytes():
    size = len(README.read_bytes())
    assert size <= 15_000, f"README.md is {size:,} bytes: move details to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    links = relative_links(page)
    broken = []
    for link in links:
        target, _, anchor = link.partition("#")
        file = (page.parent / target).resolve() if target else page
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{link}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, broken


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    """The check above is not vacuous: a missing file and a missing heading are both caught."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: yes\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-code-heading-yes) [no](missing.md) [bad](other.md#nope)\n"
                    "`[not a link](nowhere.md)`\n```\n[nor this](nowhere.md)\n```\n", encoding="utf-8")
    assert relative_links(page) == ["other.md#a-code-heading-yes", "missing.md", "other.md#nope"]
    assert anchors(tmp_path / "other.md") == {"other-page", "a-code-heading-yes"}


@pytest.mark.parametrize("page", [*PAGES, *sorted((ROOT / "docs" / "findings").rglob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_issue_numbers_in_the_docs(page):
    """History belongs in CHANGELOG.md, and none of it by issue number: the docs say what is true today."""
    found = re.findall(r"\bissues? *#?\d+|\(#\d+\)", page.read_text(encoding="utf-8"), re.I)
    assert not found, found


def commands(path) -> list[tuple[str, str]]:
    """Every ``python train.py ...`` / ``python eval.py ...`` of a page's bash blocks and code spans:
    (entry point, its arguments), ``<placeholders>`` filled in, shell comments left out."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    spans = [] if path != README else re.findall(r"`(python (?:train|eval)\.py[^`]*)`", FENCE.sub("", text))
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()] + spans
    found = []
    for line in lines:
        for match in re.finditer(r"python (train|eval)\.py([^#&;|]*)", line):
            arguments = re.sub(r"<[^>\s]+>", "x", match.group(2)).strip()
            found.append((match.group(1), arguments))
    return found


DOCUMENTED = [(page, entry, args) for page in (README, ROOT / "docs" / "usage.md") for entry, args in commands(page)]


def test_the_readme_documents_the_main_commands():
    readme = [(entry, args) for page, entry, args in DOCUMENTED if page == README]
    assert ("train", "") in readme  # the set-up command's python train.py
    assert ("train", "trainer.max_epochs=1 callbacks.shift_probe.max_images=1000") in readme  # the lab in 3 minutes
    assert any(entry == "eval" for entry, _ in readme) and len(readme) >= 10


@pytest.mark.parametrize(("page", "entry", "arguments"), DOCUMENTED,
                         ids=[f"{p.name}:{e}.py {a}"[:90] for p, e, a in DOCUMENTED])
def test_every_documented_command_composes(page, entry, arguments):
    """Each command line of the README and docs/usage.md is one Hydra composes without an error line."""
    assert command_line_problem(CONF_DIR, entry, shlex.split(arguments)) is None


def test_a_broken_command_would_be_caught():
    assert command_line_problem(CONF_DIR, "train", ["callbacks.shift_probe.max_imags=10"])


# -- the lab notebook: `pip install -e ".[notebook]"`, then `MNIST_ROOT=$(...) jupyter lab ...` ---------
def notebook_commands() -> list[str]:
    block = next(b for b in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
                 if "jupyter lab" in b)
    return block.strip().splitlines()


def test_the_notebook_extra_provides_jupyter_lab():
    install, run = notebook_commands()
    assert install == 'pip install -e ".[notebook]"'
    extra = re.search(r"^notebook = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    assert re.search(r"[\"']jupyterlab\b", extra), extra  # the jupyter lab command, nbconvert, ipykernel
    notebook = run.split()[-1]
    assert " jupyter lab " in f" {run} " and (ROOT / notebook).is_file(), run


@pytest.mark.skipif(shutil.which("realpath") is None, reason="needs the realpath command")
@pytest.mark.parametrize("layout", ["fresh", "shared_data"])
def test_the_notebook_reads_the_mnist_of_the_setup_command(tmp_path, layout):
    """Where ../shared/data exists the set-up command read MNIST from it, else it downloaded MNIST into
    data/: the notebook command's MNIST_ROOT is that folder, as an absolute path (the kernel runs in
    notebooks/)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    if layout == "shared_data":
        (tmp_path / "shared" / "data").mkdir(parents=True)
    expression = re.search(r"MNIST_ROOT=(\$\(.*\)) jupyter", notebook_commands()[1]).group(1)
    done = subprocess.run(["bash", "-c", f'printf "%s" {expression}'], cwd=checkout, capture_output=True,
                          text=True, timeout=30)
    expected = tmp_path / "shared" / "data" if layout == "shared_data" else checkout / "data"
    assert done.stdout == str(expected.resolve()) and done.stderr == "", done.stderr


@pytest.mark.skipif(shutil.which("jupyter-lab") is None, reason="jupyterlab is not installed (pip install -e '.[notebook]')")
def test_jupyter_lab_runs_where_the_extra_is_installed():
    done = subprocess.run(["jupyter", "lab", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
