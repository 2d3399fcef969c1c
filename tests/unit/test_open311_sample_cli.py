"""`civicflow open311 set / show` against the SAMPLE Open311 server on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from civicflow.infra import free_ports
from samples.open311_department.app import SampleOpen311Settings, create_app
from samples.open311_department.cli import open311_app
from tests.conftest import served_in_thread

KEY = "unit-test-open311-cli-key-8Hd2"


@pytest.fixture
def sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    (port,) = free_ports(1)
    settings = SampleOpen311Settings(state_dir=tmp_path, open311_api_key=KEY, sample_open311_step_seconds=0)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("CIVICFLOW_SAMPLE_OPEN311_URL", url)
    with served_in_thread(create_app(settings), port):
        yield url, tmp_path


def test_staff_move_a_request_and_see_it(sample: tuple[str, Path]) -> None:
    url, state = sample
    form = {"api_key": KEY, "service_code": "4", "description": "hole", "lat": "41.9", "long": "-87.6"}
    opened = httpx.post(f"{url}/requests.json", data=form).json()[0]["service_request_id"]
    runner = CliRunner()
    moved = runner.invoke(open311_app, ["set", opened, "fixed", "--note", "filled"])
    assert moved.exit_code == 0 and f"{opened} is now fixed" in moved.output
    shown = runner.invoke(open311_app, ["show", opened])
    assert shown.exit_code == 0 and '"status": "fixed"' in shown.output
    assert '"status_notes": "filled"' in (state / "open311" / f"{opened}.json").read_text()
    unknown = runner.invoke(open311_app, ["set", "NOPE", "fixed"])
    assert unknown.exit_code == 1 and "no such service request" in unknown.output
