"""The analysis report's labels: titled by the command that wrote it, and with a precision search, each
tensor's final precision beside the grid it was analysed at (not only the starting width)."""

from __future__ import annotations

from qdeploy.analyze.report import render_markdown


def _table(markdown: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the "Most harmful tensors" table."""
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("## Most harmful"))
    table = [ln for ln in lines[start + 2:] if ln.startswith("|")]
    split = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    rows = []
    for row in split[2:]:
        if len(row) != len(split[0]):
            break
        rows.append(row)
    return split[0], rows


def test_report_shows_the_final_map_and_names_its_command(w4a4_searched) -> None:
    result, plan = w4a4_searched
    source = {"QDQ model": "out/m.onnx", "command": "qdeploy calibrate m.onnx --data d --target-sqnr 25"}
    text = render_markdown(result, plan, top=50, source=source)
    assert text.splitlines()[0] == "# qdeploy calibrate: m.onnx"
    header, rows = _table(text)
    assert "bits" not in header and header.index("final") == header.index("analysed at") + 1
    by_name = {row[header.index("ONNX name")]: row[header.index("final")] for row in rows}
    assert by_name == {name: plan.precision_map[name] for name in by_name} and len(by_name) == len(result.tensors)
    assert set(by_name.values()) != {row[header.index("analysed at")] for row in rows}  # the search raised some
    plain, _ = _table(render_markdown(result, None, top=50, source={"QDQ model": "m.onnx"}))
    assert "final" not in plain
    assert render_markdown(result, None, source={"QDQ model": "m.onnx"}).startswith("# qdeploy analyze: m.onnx")
