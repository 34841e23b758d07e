"""The generated parse tables: current with the grammar, and the same parser as the grammar's."""

from pathlib import Path

import lark

from dslc.frontend import nn_tables, tables

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_tables_are_generated_from_the_current_grammar():
    # after editing grammar/nn.lark: python -m dslc.frontend.tables
    assert nn_tables.GRAMMAR_SHA256 == tables.grammar_sha256()


def test_the_tables_parse_as_the_grammar_does():
    if nn_tables.LARK_VERSION != lark.__version__:
        assert not tables.tables_are_current()  # then load() builds from the grammar
        return
    loaded, built = tables.load(), tables.build()
    for path in sorted(EXAMPLES.glob("*.nn")):
        text = path.read_text(encoding="utf-8")
        assert loaded.parse(text) == built.parse(text), path.name


def test_stale_tables_are_not_used(monkeypatch):
    monkeypatch.setattr(tables, "grammar_sha256", lambda: "0" * 64)
    assert not tables.tables_are_current()
    calls = []
    monkeypatch.setattr(tables, "build", lambda: calls.append(1) or "built")
    assert tables.load() == "built" and calls == [1]
