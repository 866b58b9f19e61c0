"""The one-shot GPU check (bench/gpu_check.py), run end to end on CPU with the quick plan."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from bench import gpu_check as gc

CPU_PARTS = tuple(p for p in gc.PARTS if p != "pytest_cuda")  # the pytest subprocess is tested alone


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    summary = gc.run_check(gc.plan_for("cpu", quick=True), out, CPU_PARTS, echo=False)
    return summary, out


def small_plan() -> gc.Plan:
    """The quick plan cut further, for the runs that only need the exactness part."""
    return dataclasses.replace(
        gc.plan_for("cpu", quick=True),
        exact_lanes_default=(3,),
        exact_lanes_paper=(2,),
        exact_steps_default=12,
        exact_steps_paper=6,
        roundtrip_default=(2, 24),
        roundtrip_paper=(2, 8),
    )


def test_quick_run_passes_and_writes_its_summary(quick_run: tuple[dict, Path]) -> None:
    summary, out = quick_run
    assert summary["ok"], gc.markdown(summary)
    assert list(summary["parts"]) == list(CPU_PARTS)
    for name, part in summary["parts"].items():
        assert part["status"] == "ok", (name, part)
        assert part["seconds"] >= 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["parts"].keys() == summary["parts"].keys()
    text = (out / "summary.md").read_text()
    assert text.startswith("# shazip GPU check: PASS")
    assert "Exactness, default model" in text and "Throughput, paper model" in text


def test_exactness_really_compares(quick_run: tuple[dict, Path]) -> None:
    ex = quick_run[0]["parts"]["exactness"]
    plan = gc.plan_for("cpu", quick=True)
    for label, lanes, steps in (
        ("default", plan.exact_lanes_default, plan.exact_steps_default),
        ("paper", plan.exact_lanes_paper, plan.exact_steps_paper),
    ):
        tables = ex[label]["tables"]
        assert [t["lanes"] for t in tables] == list(lanes)
        for t in tables:
            assert t["equal"] and not t.get("stopped_early")
            assert t["tables_compared"] == (steps + 1) * t["lanes"]  # every step, every lane
        rt = ex[label]["roundtrip"]
        assert rt["identical_shz"] and rt["cpu_to_device"] and rt["device_to_cpu"]
        assert rt["model_frames"] == 2  # the model really coded the data (not zstd/stored)
    assert ex["reference"] == "cpu (numba)" and ex["device_side"] == "cpu (torch)"


def test_throughput_and_training_structure(quick_run: tuple[dict, Path]) -> None:
    parts = quick_run[0]["parts"]
    tp = parts["throughput"]
    plan = gc.plan_for("cpu", quick=True)
    assert [r["lanes"] for r in tp["default"]] == list(plan.speed_lanes_default)
    for row in tp["default"] + tp["paper"]:
        assert row["engine_bytes_per_s"] > 0 and row["advance_bytes_per_s"] > 0
        api = row["api"]
        assert api["compress_bytes_per_s"] > 0 and api["decompress_bytes_per_s"] > 0
        assert api["roundtrip_ok"] and api["frames"] == {"mix": 1}
    assert tp["coder"]["coder_us_per_symbol"] > 0
    assert set(tp["targets"]) == {"default", "paper"}
    tr = parts["training"]
    assert tr["steps"] == plan.train_steps and tr["bytes_per_s"] > 0
    assert all(np.isfinite(tr["train_bpb"]))
    env = parts["environment"]
    assert env["torch"] and env["python"] and "cuda.matmul.allow_tf32" in env["tf32_at_start"]
    models = parts["models"]
    assert models["paper"]["config"]["d_model"] == 32  # quick: the tiny config stands in for enwik8


def test_a_table_difference_is_caught(tmp_path: Path) -> None:
    def tamper(label: str, lanes: int, step: int, table: np.ndarray) -> np.ndarray:
        if label == "default" and step == 5:
            table = table.copy()
            table[1, 0] += 1  # one count moved: still a valid-looking table
            table[1, 1] -= 1
        return table

    summary = gc.run_check(
        small_plan(), tmp_path, ("models", "exactness"), gc.Hooks(tamper_tables=tamper), echo=False
    )
    ex = summary["parts"]["exactness"]
    assert ex["status"] == "fail" and not summary["ok"]
    bad = ex["default"]["tables"][0]
    assert not bad["equal"] and bad["first_mismatch_step"] == 5 and bad["first_mismatch_lane"] == 1
    assert all(t["equal"] for t in ex["paper"]["tables"])  # untouched
    assert "DIFFER at step 5 lane 1" in (tmp_path / "summary.md").read_text()


def test_a_shz_difference_is_caught(tmp_path: Path) -> None:
    def tamper(label: str, blob: bytes) -> bytes:
        if label != "paper":
            return blob
        middle = len(blob) // 2
        return blob[:middle] + bytes([blob[middle] ^ 1]) + blob[middle + 1 :]

    summary = gc.run_check(
        small_plan(), None, ("models", "exactness"), gc.Hooks(tamper_shz=tamper), echo=False
    )
    ex = summary["parts"]["exactness"]
    assert ex["status"] == "fail"
    assert ex["default"]["roundtrip"]["equal"]
    rt = ex["paper"]["roundtrip"]
    assert not rt["identical_shz"] and not rt["device_to_cpu"] and "device_to_cpu_error" in rt
    assert rt["cpu_to_device"]  # the CPU-written file still decodes on the other side


def test_a_failing_or_slow_part_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: gc.Context) -> dict:
        raise RuntimeError("broken on purpose")

    def endless(ctx: gc.Context) -> dict:
        ctx.partial["rows"] = ["measured before the time box closed"]
        while True:
            time.sleep(0.01)

    monkeypatch.setitem(gc.PART_FUNCTIONS, "models", broken)
    monkeypatch.setitem(gc.PART_FUNCTIONS, "training", endless)
    plan = dataclasses.replace(
        gc.plan_for("cpu", quick=True), budgets={**gc.plan_for("cpu", True).budgets, "training": 0.3}
    )
    summary = gc.run_check(plan, None, ("models", "training", "environment"), echo=False)
    parts = summary["parts"]
    assert parts["models"]["status"] == "error" and "broken on purpose" in parts["models"]["error"]
    assert parts["training"]["status"] == "timeout" and parts["training"]["seconds"] < 5
    assert parts["training"]["rows"] == ["measured before the time box closed"]  # partial results kept
    assert parts["environment"]["status"] == "ok"
    assert not summary["ok"]
    assert "models error: RuntimeError: broken on purpose" in gc.markdown(summary)


def test_exactness_without_the_paper_model_fails() -> None:
    ctx = gc.Context(plan=small_plan(), hooks=gc.Hooks())
    ctx.deadline = gc.Deadline.after(60)
    from shazip.modelfile import ModelFile, default_model_path

    ctx.models["default"] = ModelFile.load(default_model_path())
    result = gc.part_exactness(ctx)
    assert result["status"] == "fail" and "error" in result["paper"]
    assert result["default"]["tables"][0]["equal"]


def test_pytest_part_helpers() -> None:
    assert "tests/test_engine_contract.py" in gc.cuda_test_files()
    assert gc.pytest_counts("1 failed, 3 passed, 2 skipped, 7 deselected, 1 error in 4.20s") == {
        "failed": 1,
        "passed": 3,
        "skipped": 2,
        "deselected": 7,
        "error": 1,
    }


def test_command_line_writes_to_out(tmp_path: Path) -> None:
    assert gc.main(["--device", "cpu", "--quick", "--parts", "environment", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["ok"] is True
    with pytest.raises(SystemExit):
        gc.main(["--parts", "nonsense", "--out", str(tmp_path)])
