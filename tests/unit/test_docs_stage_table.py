"""docs/architecture.md shows the stage table as the code has it: an edited transition shows up there."""

from __future__ import annotations

from pathlib import Path

from davit.operations import stages

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_architecture_document_shows_the_stage_table_of_the_code() -> None:
    diagram = stages.render_table(mermaid=True).strip()
    assert diagram in ARCHITECTURE.read_text(), (
        "docs/architecture.md's stage diagram differs from davit.operations.stages.TABLE; paste the diagrams "
        "`python -m davit.operations.stages` prints into it"
    )
