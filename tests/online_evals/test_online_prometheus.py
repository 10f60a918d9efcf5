"""deploy/prometheus/mallard-rules.yml: `promtool check rules` accepts it, `promtool test rules`
fires its rules on synthetic series (and stays quiet where it should), and a loosened threshold
makes the unit tests fail, so they can. promtool is Debian's `prometheus` package."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install -y prometheus; "
    "scripts/install-services.sh installs it)",
)


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_and_tests_the_rules() -> None:
    checked = promtool("check", "rules", "mallard-rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = promtool("test", "rules", "mallard-rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_unit_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    rules = (RULES / "mallard-rules.yml").read_text()
    loosened = rules.replace(") > 0.05\n", ") > 0.5\n", 1)
    assert loosened != rules
    (tmp_path / "mallard-rules.yml").write_text(loosened)
    shutil.copy(RULES / "mallard-rules.test.yml", tmp_path)
    tested = promtool("test", "rules", "mallard-rules.test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "MallardLLMErrorRateHigh" in tested.stdout + tested.stderr
