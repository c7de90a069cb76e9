"""Print the supported-ops table (Markdown) from the rule registry, for the README.

    python tools/ops_table.py            # print
    python tools/ops_table.py --check    # exit 1 when README.md's table is stale
    python tools/ops_table.py --write    # rewrite the table in README.md
"""
from __future__ import annotations

import sys
from pathlib import Path

from onnx_gig.autodiff import get_rule_set, rule_set_names

BEGIN, END = "<!-- ops-table:begin -->", "<!-- ops-table:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def table() -> str:
    """One row per op type; one column per rule set saying 'plain' or 'guided' (overridden)."""
    sets = [get_rule_set(n) for n in rule_set_names()]
    plain = get_rule_set("ig")
    ops = sorted(set().union(*(s.ops() for s in sets)))
    rows = ["| op | " + " | ".join(f"`{s.name}`" for s in sets) + " |",
            "|---|" + "---|" * len(sets)]
    for op in ops:
        cells = []
        for s in sets:
            rule = s.lookup(op)
            cells.append("—" if rule is None else ("guided" if rule is not plain.lookup(op) else "✓"))
        rows.append(f"| {op} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def replaced(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    if "--check" in argv or "--write" in argv:
        text = README.read_text(encoding="utf-8")
        new = replaced(text)
        if "--write" in argv:
            README.write_text(new, encoding="utf-8")
            return 0
        if new != text:
            print("README.md's ops table is stale: run python tools/ops_table.py --write", file=sys.stderr)
            return 1
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
