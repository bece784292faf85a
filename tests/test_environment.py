"""Every environment variable benchxfer reads is checked at start-up and listed in docs/errors.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchxfer.environment import VARIABLES, check
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast
ROOT = Path(__file__).parents[1]


def test_every_variable_the_package_reads_is_checked():
    names = {v.name for v in VARIABLES}
    read = set()
    for path in (ROOT / "benchxfer").rglob("*.py"):
        read |= set(re.findall(r"\bBENCHXFER_[A-Z_]+\b", path.read_text()))
    assert read <= names, sorted(read - names)
    assert {"MLFLOW_TRACKING_URI", "RAY_ADDRESS"} <= names


def test_docs_list_every_variable():
    doc = (ROOT / "docs" / "errors.md").read_text()
    for var in VARIABLES:
        assert f"| `{var.name}` |" in doc, var.name


@pytest.mark.parametrize("var, value", [
    ("BENCHXFER_PLACEMENT_TIMEOUT_S", "30"), ("BENCHXFER_PLACEMENT_TIMEOUT_S", "0.5"),
    ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"), ("MLFLOW_TRACKING_URI", "https://mlflow.example.org/x"),
    ("MLFLOW_TRACKING_URI", "sqlite:////tmp/m.db"), ("MLFLOW_TRACKING_URI", "file:///tmp/mlruns"),
    ("MLFLOW_TRACKING_URI", "databricks"), ("RAY_ADDRESS", "auto"), ("RAY_ADDRESS", "10.0.0.5:6379"),
    ("RAY_ADDRESS", "ray://head:10001"),
])
def test_good_values_pass(var, value):
    check({var: value})


@pytest.mark.parametrize("var, value, problem", [
    ("BENCHXFER_PLACEMENT_TIMEOUT_S", "abc", "not a number"), ("BENCHXFER_PLACEMENT_TIMEOUT_S", "-5", "positive"),
    ("BENCHXFER_PLACEMENT_TIMEOUT_S", "inf", "positive"), ("BENCHXFER_PLACEMENT_TIMEOUT_S", "0", "positive"),
    ("MLFLOW_TRACKING_URI", "not-a-url", "not a tracking URI"), ("MLFLOW_TRACKING_URI", "http://", "not a tracking"),
    ("RAY_ADDRESS", "head:0", "not a Ray address"), ("BENCHXFER_CACHE", "", "empty"),
])
def test_bad_values_are_one_line_naming_variable_value_and_allowed(var, value, problem):
    with pytest.raises(BenchxferError) as err:
        check({var: value})
    msg = str(err.value)
    assert msg.startswith(f"${var}={value!r}: ") and problem in msg and "allowed: " in msg and "\n" not in msg


def test_a_link_to_nothing_and_a_loop_are_named(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "deeper")
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere").rmdir()
    with pytest.raises(BenchxferError, match="is a symbolic link to .*, which does not exist"):
        check({"BENCHXFER_CACHE": str(tmp_path / "dangling" / "cache")})
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(BenchxferError, match=r"/zoo': .*/a is a symbolic link loop; allowed"):
        check({"BENCHXFER_ZOO": str(tmp_path / "a" / "zoo")})
