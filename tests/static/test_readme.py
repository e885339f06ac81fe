"""The README in the azd template gallery's shape: its first screen says what the template
is, what it costs, the two commands and the `azd init -t` line, with the security notice;
the sections the gallery's README rules ask for are all there; the depth lives in docs/."""

import re

from static_support import ROOT

README = (ROOT / "README.md").read_text()
# What a newcomer sees before scrolling: about 40 lines.
FIRST_SCREEN = "\n".join(README.splitlines()[:40])


def test_the_first_screen_says_what_it_is_what_it_costs_and_the_commands():
    assert "Azure Developer CLI" in FIRST_SCREEN and "Dapr" in FIRST_SCREEN
    cost = re.search(r"\$(\d+) a month", FIRST_SCREEN)
    assert cost, "the monthly cost"
    # The figure is the sum of docs/azure.md's estimate, resource by resource.
    azure = (ROOT / "docs/azure.md").read_text()
    table = azure[azure.index("| resource | rate | month |"):azure.index("To spend less")]
    months = [row.rstrip(" |").rsplit("|", 1)[1] for row in table.splitlines()[2:] if row.startswith("| ")]
    total = sum(float(re.search(r"\$([\d.]+)", month)[1]) for month in months)
    assert len(months) >= 6 and round(total) == int(cost[1]), f"the README says ${cost[1]}, docs/azure.md's rows add up to ${total:.2f}"
    for command in ("./scripts/run.sh", "./scripts/test.sh", "azd init -t ", "azd up"):
        assert command in FIRST_SCREEN, command
    assert "> [!IMPORTANT]" in FIRST_SCREEN, "the security notice"


def test_every_section_the_gallery_asks_for_is_present():
    headings = re.findall(r"(?m)^## (.+)$", README)
    for section in ("Features", "Getting Started", "Guidance", "Resources"):
        assert section in headings, f"## {section} missing: {headings}"


def test_the_readme_has_a_picture_of_the_azure_resources_and_codespaces_badges():
    assert README.count("```mermaid") >= 2
    assert "Container Apps environment" in README and "PostgreSQL" in README
    assert "codespaces.new/" in README and "Dev Containers" in README


def test_the_readme_stays_short_and_links_the_depth():
    assert len(README.splitlines()) <= 260, "move detail to docs/"
    for doc in ("docs/design.md", "docs/local.md", "docs/testing.md", "docs/azure.md"):
        assert f"({doc}" in README, doc
        assert (ROOT / doc).is_file(), doc
