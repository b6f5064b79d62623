"""Shared CLI helpers: shape/range parsing, strict JSON printing, and unwrapped lines off a terminal."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner
from qdeploy_cli._common import console, parse_range, parse_shape, parse_shapes, print_json


def test_parse_shape() -> None:
    assert parse_shape("1,3,64,64") == (1, 3, 64, 64)
    assert parse_shape("1x3x64x64") == (1, 3, 64, 64)
    assert parse_shape(" 2 , 5 ") == (2, 5)
    for bad in ("", "1,,3", "1,-3", "a,b", "1,0"):
        with pytest.raises(click.BadParameter):
            parse_shape(bad)


def test_parse_shapes_bare_named_and_repeated() -> None:
    assert parse_shapes(None) is None
    assert parse_shapes(()) is None
    assert parse_shapes(("1,3,8,8",)) == (1, 3, 8, 8)
    assert parse_shapes("1,3,8,8") == (1, 3, 8, 8)
    assert parse_shapes(("x:1,3,8,8", "ids:2,5")) == {"x": (1, 3, 8, 8), "ids": (2, 5)}
    assert parse_shapes(("x:1,3,8,8;ids:2,5",)) == {"x": (1, 3, 8, 8), "ids": (2, 5)}
    assert parse_shapes(("ns:input:1,3",)) == {"ns:input": (1, 3)}  # the shape follows the last ':'
    for bad in (("1,3", "x:1,3"), ("1,3", "2,3"), ("x:1,3", "x:2,3"), (":1,3",)):
        with pytest.raises(click.BadParameter):
            parse_shapes(bad)


def test_parse_range() -> None:
    assert parse_range("0,255") == (0.0, 255.0)
    assert parse_range("-1.5,1") == (-1.5, 1.0)
    for bad in ("1", "1,0", "0,inf", "a,b", "0,1,2"):
        with pytest.raises(click.BadParameter):
            parse_range(bad)


def test_print_json_is_strict_json_on_stdout_only() -> None:
    @click.command()
    def cmd() -> None:
        console(stderr=True).print("table")
        print_json({"sqnr": float("inf"), "shape": (1, 3), "x": 0.5})

    result = CliRunner().invoke(cmd)
    assert json.loads(result.stdout) == {"sqnr": "inf", "shape": [1, 3], "x": 0.5}
    assert "table" in result.stderr and "table" not in result.stdout


def test_off_a_terminal_long_lines_are_not_cut_in_two(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    path = "exports/swinir-light-x2/" + "very-long-folder-name/" * 4 + "model.w4a4.qdq.onnx"
    line = f"wrote {path}  (cache {path[:-5]}.calib.json, 6 min 53 s, ranges reused from cache)"
    assert len(line) > 160
    console().print(line)
    assert capsys.readouterr().out.splitlines() == [line]  # whole: searchable and copyable in a log
