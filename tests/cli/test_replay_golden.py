"""`detector replay` decides exactly as it did before the layout change: byte-identical decisions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from detector.cli import main
from detector.evaluation.sim import simulate, write_events

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "replay.sha256"


def _sample(_: Path) -> Path:
    return REPO / "data" / "sample-events.jsonl"


def _simulated(folder: Path) -> Path:
    path = folder / "day.jsonl"
    write_events(simulate("mix", duration=6 * 3600, seed=5), path)
    return path


CASES: dict[str, Callable[[Path], Path]] = {"sample-events": _sample, "simulated-mix-6h-seed-5": _simulated}


def decisions_digest(events: Path, folder: Path) -> str:
    out = folder / f"{events.stem}.decisions.jsonl"
    result = CliRunner().invoke(
        main, ["replay", str(events), "--decisions", str(out)], env={"DETECTOR_POLICY": None}
    )
    assert result.exit_code == 0, result.output
    return hashlib.sha256(out.read_bytes()).hexdigest()


def golden() -> dict[str, str]:
    lines = [line.split() for line in GOLDEN.read_text().splitlines() if line and not line.startswith("#")]
    return {name: digest for name, digest in lines}


@pytest.mark.parametrize("case", sorted(CASES))
def test_decisions_are_byte_identical_to_the_golden_digest(case: str, tmp_path: Path) -> None:
    digest = decisions_digest(CASES[case](tmp_path), tmp_path)
    assert digest == golden()[case], f"the decisions of {case} changed (see {GOLDEN.name} if that is meant)"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        header = [line for line in GOLDEN.read_text().splitlines() if line.startswith("#")]
        digests = [f"{name} {decisions_digest(make(Path(tmp)), Path(tmp))}" for name, make in CASES.items()]
        GOLDEN.write_text("\n".join(header + digests) + "\n")
        print("\n".join(digests))
