"""The README's "Try the API" block, run as a reader would: with bash, top to bottom, twice,
against the live quick start."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.live

README = Path(__file__).resolve().parents[2] / "README.md"
README_HOST = "localhost:8000"

# Each curl of the block goes through this function: the body still reaches the block (which
# pipes the token into jq) and a copy of every exchange (arguments, status, body) is kept in
# $CAPTURE, numbered in order, for the checks below. `command curl` is the real one.
CAPTURING_CURL = r"""
curl() {
  local n
  n=$(( $(cat "$CAPTURE/count") + 1 ))
  echo "$n" > "$CAPTURE/count"
  printf '%s\n' "$*" > "$CAPTURE/$n.args"
  command curl "$@" --output "$CAPTURE/$n.body" --write-out '%{http_code}' > "$CAPTURE/$n.status"
  cat "$CAPTURE/$n.body"
}
"""


def try_the_api_block() -> str:
    """The ```bash block that follows the line "Try the API:"."""
    match = re.search(r"^Try the API:\s*\n+```bash\n(.*?)^```", README.read_text(), re.M | re.S)
    assert match, 'README has no ```bash block after "Try the API:"'
    return match.group(1)


def run_block(block: str, host_port: str, capture: Path) -> list[dict]:
    """Run the block with bash -euo pipefail and -x (so a failure shows the command); returns
    every curl exchange in order."""
    capture.mkdir()
    (capture / "count").write_text("0")
    script = CAPTURING_CURL + "set -x\n" + block.replace(README_HOST, host_port)
    result = subprocess.run(  # noqa: S603
        ["bash", "-euo", "pipefail", "-c", script],  # noqa: S607
        # A reader's PATH, and none of the test process's settings or proxies.
        env={"PATH": os.environ["PATH"], "HOME": str(capture), "CAPTURE": str(capture)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    exchanges = []
    for n in range(1, int((capture / "count").read_text()) + 1):
        body = (capture / f"{n}.body").read_text()
        exchanges.append(
            {
                "args": (capture / f"{n}.args").read_text().strip(),
                "status": int((capture / f"{n}.status").read_text()),
                "body": json.loads(body) if body else None,
            }
        )
    return exchanges


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")),
    reason="the README block needs curl and jq on PATH",
)
def test_try_the_api_runs_twice_top_to_bottom(quick_start, tmp_path):
    block = try_the_api_block()
    curls = len(re.findall(r"\bcurl\b", block))
    for run in (1, 2):
        exchanges = run_block(block, quick_start.host_port, tmp_path / f"run{run}")
        assert len(exchanges) == curls
        errors = [
            exchange
            for exchange in exchanges
            if isinstance(exchange["body"], dict) and "error" in exchange["body"]
        ]
        assert errors == [], f"run {run}"
        assert all(exchange["status"] < 400 for exchange in exchanges), (run, exchanges)
        last = exchanges[-1]
        assert "-X POST" in last["args"]
        assert "/api/v1/tenants/" in last["args"]
        assert last["status"] == 201, (run, last)
    quick_start.assert_healthy()
