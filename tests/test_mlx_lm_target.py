"""The `mlx-lm` target: mlx-lm in an environment without torch, driven through a worker process. The worker's
protocol keeps the library's errors apart from its own death or silence; the target reaches mlx-lm's own loader
code, passes where mlx-lm reads a spelling right, and its recorded defects are caught as known."""

from __future__ import annotations

import subprocess

import pytest

from harness.checks import CHECKS
from harness.engine import run_case
from harness.environments.builder import python_of
from harness.environments.registry import environment_for
from harness.environments.targets import elsewhere
from harness.families import get_family
from harness.targets import load_target
from harness.targets.mlx_lm import client
from harness.targets.mlx_lm.spellings import v4_layout
from harness.verdict import Status


@pytest.fixture(scope="module")
def mlx_target():
    return load_target("mlx-lm")  # builds its environment on first use (uv; seconds from uv's cache)


@pytest.fixture
def worker(mlx_target):
    env = environment_for("mlx-lm")
    assert env is not None
    w = client.Worker(env)
    yield w
    w.close()


def test_its_environment_holds_no_torch_and_is_not_a_place_to_run_the_harness(mlx_target) -> None:
    env = environment_for("mlx-lm")
    assert env is not None and not env.harness
    assert elsewhere(["mlx-lm"], here=False) == {}, "the target runs here and drives its worker there"
    probe = subprocess.run([str(python_of(env)), "-c", "import mlx_lm, torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr


def test_target_fills_its_capabilities(mlx_target) -> None:
    assert mlx_target.capabilities() == ["config_spelling", "model_loader"]
    assert mlx_target.version == "0.32.2"
    assert len(mlx_target.families) >= 25 and {"mixtral", "qwen3_moe", "deepseek_v3"} <= set(mlx_target.families)


def test_a_library_error_comes_back_with_its_type_and_place(worker) -> None:
    with pytest.raises(client.MlxError, match=r"TypeError: .*missing .*required positional argument.*\(at .*\.py:\d+\)"):
        worker.request("build", config={"model_type": "qwen3_moe"}, tokens=2)
    assert worker.request("hello", families=["mixtral"])["families"] == {"mixtral": "mlx_lm.models.mixtral"}


def test_a_dead_worker_is_restarted_by_the_next_request(worker) -> None:
    worker.request("hello", families=[])
    process = worker._process
    assert process is not None
    process.kill()
    process.wait()
    assert worker.request("hello", families=[])["versions"]["mlx-lm"] == "0.32.2"
    assert worker._process is not process


@pytest.mark.parametrize(("script", "says"), [
    ("import sys; sys.stdin.readline(); sys.stderr.write('out of memory\\n'); sys.exit(3)",
     r"died while answering 'hello' \(exit status 3\); its last words:\nout of memory"),
    ("import sys, time; sys.stdin.readline(); time.sleep(60)", r"gave no reply to 'hello' in 0.5 s; it was stopped"),
])
def test_a_worker_dying_or_silent_mid_request_is_its_own_failure(worker, monkeypatch, tmp_path, script, says) -> None:
    """Not mlx-lm's error (a crash or a hang of the process, say an out-of-memory kill): WorkerFailed, with its
    last words; the check reports it as a target error naming that."""
    fake = tmp_path / "worker.py"
    fake.write_text(script)
    monkeypatch.setattr(client, "WORKER", fake)
    monkeypatch.setattr(client, "REPLY_TIMEOUT_S", 0.5)
    with pytest.raises(client.WorkerFailed, match=says):
        worker.request("hello", families=[])
    assert worker._process is None


def test_the_v4_layout_lifts_what_transformers_5_folded_away_and_never_a_judged_spelling() -> None:
    tree = {"hidden_size": 32, "num_attention_heads": 4, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}}
    out = v4_layout(tree, ["rope_theta", "head_dim", "rope_scaling", "num_experts", "vocab_size"])
    assert out == {**tree, "rope_theta": 1e6, "head_dim": 8, "rope_scaling": None}


def test_a_spelling_mlx_lm_reads_passes(mlx_target) -> None:
    verdict = run_case(CHECKS["config-spelling"], mlx_target, get_family("qwen2_moe"), max_examples=5)
    assert verdict.status == Status.PASS, verdict


def test_an_alias_mlx_lm_drops_is_its_recorded_finding(mlx_target) -> None:
    """Mixtral's config.json may say num_experts (transformers' alias); mlx-lm keeps its default of 8 instead."""
    verdict = run_case(CHECKS["config-spelling"], mlx_target, get_family("mixtral"), max_examples=10)
    assert verdict.status == Status.KNOWN, verdict


def test_a_checkpoint_mlx_lm_loads_right_passes_model_parity_through_its_save_and_reload(mlx_target) -> None:
    """Mixtral: per-expert keys stacked by sanitize, strict load, the same logits, in both config forms; saved and
    loaded again, the same."""
    verdict = run_case(CHECKS["model-parity"], mlx_target, get_family("mixtral"), max_examples=4)
    assert verdict.status == Status.PASS, verdict


def test_a_rope_base_mlx_lm_silently_defaults_is_its_recorded_model_parity_finding(mlx_target) -> None:
    """Qwen2-MoE's config.json as transformers 5 writes it: mlx-lm runs rope_theta 1e6, not the checkpoint's."""
    verdict = run_case(CHECKS["model-parity"], mlx_target, get_family("qwen2_moe"), max_examples=6)
    assert verdict.status == Status.KNOWN and verdict.counterexample["form"] == "config.json", verdict


def test_the_loader_config_holds_every_spelling_and_the_v4_fields(mlx_target, worker, tmp_path) -> None:
    from harness.targets.mlx_lm.models import ModelProbe
    from harness.targets.transformers.saved_model import write_model_checkpoint

    write_model_checkpoint("qwen3_moe", 0, tmp_path)
    config = ModelProbe(worker).loader_config(tmp_path)
    assert config["num_experts"] == config["num_local_experts"] == 8  # mlx-lm reads the first, transformers 5 writes the second
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] and config["head_dim"] == 16
