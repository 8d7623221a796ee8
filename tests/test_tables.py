"""finetune/reporting/tables.py: the one table renderer and number formatter every printed table uses."""

import pytest

from finetune.reporting.tables import fmt_value, markdown_table, text_table


@pytest.mark.parametrize(
    "value,kwargs,shown",
    [
        (None, {}, "-"),
        (True, {}, "true"),
        (12000, {}, "12,000"),
        (0.85125, {}, "0.8512"),  # (round half to even, as Python's format does)
        (0.9, {}, "0.9000"),
        (0.9, {"trim": True}, "0.9"),
        (0.0, {"trim": True}, "0"),
        (3e-05, {}, "3e-05"),
        (123456.7, {}, "1.235e+05"),
        (float("nan"), {}, "nan"),
        (12.345, {"digits": 1}, "12.3"),
        ([1, 0.5], {"trim": True}, "1, 0.5"),
        ("a|b", {"text": lambda t: t.replace("|", "\\|")}, "a\\|b"),
    ],
)
def test_fmt_value(value, kwargs, shown):
    assert fmt_value(value, **kwargs) == shown


def test_text_table_aligns_each_column_as_asked():
    table = text_table(["model", "acc", "s"], [["bert", "0.9000", "12"], ["scratch-model", "0.81", "3"]], align="lr")
    lines = table.splitlines()
    rule, header, _, first, second, _ = lines
    assert set(rule) == {"-"} and len(rule) == len(header) == len(first) == len(second)
    assert header == "model             acc   s"
    assert first == "bert           0.9000  12"
    assert second == "scratch-model    0.81   3"


def test_text_table_without_rules_indents_and_trims_trailing_spaces():
    assert text_table(["a", "bb"], [["xyz", ""]], rules=False, indent="  ").splitlines() == ["  a    bb", "  xyz"]


def test_markdown_table():
    assert markdown_table(["a", "b"], [["1", "2"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |"]
