"""Reliability and safety (issue 7) through ``run.py`` and the runner.

- bad input: one line naming the setting, non-zero exit, no traceback (several bad configs
  are launched in parallel, each as its own ``run.py`` process);
- nothing lost: a run killed with SIGKILL after its first sample, then resumed, gives the
  same results.jsonl as an uninterrupted run; a resumed sweep skips its finished jobs;
- faults: GPU out-of-memory, NaN logits and bad output ids end with a message naming the
  sample; SIGTERM stops with one line;
- safe loading: ``torch.load`` only with ``weights_only=True``, ``trust_remote_code`` off by
  default and passed through, no secrets in any file a run writes.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from longspec.data.sample import Sample
from longspec.decoding.sampling import Generation
from longspec.errors import (
    USER_ERRORS,
    Interrupted,
    InvalidOutput,
    NonFiniteLogits,
    OutOfMemory,
    exit_on_user_error,
)
from longspec.finite import check_finite
from longspec.memory import kv_cache_bytes
from longspec.results import ResultsLog
from longspec.resume import config_diff
from longspec.runner import Job, decode_all, stop_on_signals

ROOT = Path(__file__).resolve().parent.parent
TINY = ["model=tiny_llama", "~decode@baseline"]
SECRETS = {
    "WANDB_API_KEY": "wandb-secret-0123456789abcdef",
    "HF_TOKEN": "hf_secretTOKENabcdefghijklmnop",
    "LONGSPEC_TEST_SECRET": "very-secret-value-42",
}


def cli(run_dir: Path, cache: Path, *overrides: str, env: dict | None = None) -> list:
    """argv + kwargs of one ``run.py`` process."""
    if "-m" in overrides:  # multirun: the flag goes first, the sweep dir is an override
        argv = [sys.executable, str(ROOT / "run.py"), "-m", *(o for o in overrides if o != "-m")]
    else:
        argv = [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={run_dir}", *overrides]
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # One torch thread: on a small shared machine the tiny model runs many times faster.
    full_env.update(LONGSPEC_CACHE=str(cache), OMP_NUM_THREADS="1", **(env or {}))
    return [argv, {"cwd": ROOT, "env": full_env, "text": True}]


def start(run_dir: Path, cache: Path, *overrides: str, env: dict | None = None):
    argv, kw = cli(run_dir, cache, *overrides, env=env)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def run(run_dir: Path, cache: Path, *overrides: str, env: dict | None = None):
    argv, kw = cli(run_dir, cache, *overrides, env=env)
    return subprocess.run(argv, capture_output=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def write_jsonl(path: Path, prompts: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts))
    )
    return path


CODE = "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"


# ---------------------------------------------------------------------------------------------
# Bad input through run.py (launched in parallel)


def bad_inputs(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (overrides, strings the error output must contain)."""
    broken = tmp / "broken.jsonl"
    broken.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c",\n')
    too_long = write_jsonl(tmp / "long.jsonl", ["x" * 4200, "y" * 5000])
    cases = {
        "hydra_bad_value": (["generation.max_new_tokens=abc"], ["generation.max_new_tokens"]),
        "hydra_unknown_option": (["decode=nosuch"], ["decode/nosuch"]),
        "tree_shape": (["decode=tree", "decode.tree_shape=[4,0,2]"], ["decode.tree_shape"]),
        "jsonl_broken_line": (
            ["data=jsonl", f"data.path={broken}"],
            [f"{broken}: line 3 is not valid JSON"],
        ),
        "data_file_missing": (["data=jsonl", f"data.path={tmp}/none.jsonl"], ["data.path="]),
        "draft_missing": (
            ["decode=seq", f"model.draft.path={tmp}/no_draft"],
            ["model.draft.path=", "does not exist"],
        ),
        "nothing_fits": (
            [
                "decode=vanilla",
                "data=jsonl",
                f"data.path={too_long}",
                "generation.max_new_tokens=8",
            ],
            ["no prompt fits", "generation.max_new_tokens"],
        ),
    }
    if not torch.cuda.is_available():
        cases["device_cuda"] = (["device=cuda"], ["device=cuda", "no CUDA GPU"])
    return cases


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict:
    tmp = tmp_path_factory.mktemp("bad")
    cases = bad_inputs(tmp)
    procs = {
        name: start(tmp / name, cache, *TINY, *overrides) for name, (overrides, _) in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        results[name] = (proc.returncode, out, err, cases[name][1])
    return results


BAD_CASES = [
    "hydra_bad_value",
    "hydra_unknown_option",
    "tree_shape",
    "jsonl_broken_line",
    "data_file_missing",
    "draft_missing",
    "nothing_fits",
    "device_cuda",
]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_through_run_py(bad_runs: dict, name: str) -> None:
    if name not in bad_runs:
        pytest.skip("this machine has a GPU")
    code, out, err, expected = bad_runs[name]
    assert code != 0, (out, err)
    for text in expected:
        assert text in err, err
    assert "Traceback" not in err + out
    if not name.startswith("hydra"):
        assert code == 2
        (last,) = [line for line in err.splitlines() if line.startswith("error: ")]
        assert err.rstrip().endswith(last)


# ---------------------------------------------------------------------------------------------
# Nothing lost: kill, resume, compare


@pytest.fixture(scope="module")
def kill_and_resume(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> dict:
    """A run SIGKILLed after its first sample and resumed; an uninterrupted run (with
    secrets in its environment); a second resume of the finished run."""
    tmp = tmp_path_factory.mktemp("resume")
    prompts = [CODE * 2, CODE[:60], "x" * 5000, CODE * 3, "import os\n" * 12]  # p2 too long
    data = write_jsonl(tmp / "prompts.jsonl", prompts)
    args = [*TINY, "decode=vanilla", "data=jsonl", f"data.path={data}"]
    args += ["generation.max_new_tokens=128", "warmup=true"]
    killed, ref = tmp / "killed", tmp / "ref"
    reference = start(ref, cache, *args, "+model.hub_token=${oc.env:HF_TOKEN}", env=SECRETS)

    proc = start(killed, cache, *args)
    results = killed / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    lines_at_kill = results.read_text().splitlines()

    resumed = run(killed, cache, *args, "resume=true")
    ref_out, ref_err = reference.communicate(timeout=600)
    summary_mtime = (killed / "summary.json").stat().st_mtime_ns
    again = run(killed, cache, *args, "resume=true")
    return {
        "killed": killed,
        "ref": ref,
        "lines_at_kill": lines_at_kill,
        "kill_code": proc.returncode,
        "resumed": resumed,
        "reference": (reference.returncode, ref_out, ref_err),
        "again": again,
        "summary_mtime": summary_mtime,
    }


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_killed_run_keeps_finished_samples_and_resumes_identically(kill_and_resume) -> None:
    k = kill_and_resume
    assert k["kill_code"] == -signal.SIGKILL
    assert 1 <= len(k["lines_at_kill"]) < 4, "the run was not interrupted mid-way"
    resumed = k["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    code, _, ref_err = k["reference"]
    assert code == 0, ref_err[-3000:]
    got, want = rows(k["killed"]), rows(k["ref"])
    assert [r["id"] for r in got] == [r["id"] for r in want] == ["p0", "p1", "p3", "p4"]
    assert [r["output_ids"] for r in got] == [r["output_ids"] for r in want]
    # Finished samples were not decoded again: their lines are untouched.
    assert [json.dumps(r) for r in got[: len(k["lines_at_kill"])]] == [
        json.dumps(json.loads(line)) for line in k["lines_at_kill"]
    ]
    assert len({r["batch"] for r in got}) == 4  # batch numbers go on after a resume
    summary = json.loads((k["killed"] / "summary.json").read_text())
    ref_summary = json.loads((k["ref"] / "summary.json").read_text())
    assert summary["n_samples"] == ref_summary["n_samples"] == 4
    assert summary["new_tokens"] == ref_summary["new_tokens"] == sum(r["new_tokens"] for r in got)
    assert summary["skipped"] == ref_summary["skipped"] == 1
    assert f"resume: {len(k['lines_at_kill'])} sample(s) done" in resumed.stdout + resumed.stderr


def test_prompt_that_does_not_fit_is_skipped_with_a_warning(kill_and_resume) -> None:
    _, out, err = kill_and_resume["reference"]
    assert "skipping 1 prompt(s) longer than" in out + err and "p2 (5001)" in out + err


def test_resuming_a_finished_run_only_reports_it(kill_and_resume) -> None:
    again = kill_and_resume["again"]
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already complete" in again.stdout and "samples:" not in again.stderr
    summary = kill_and_resume["killed"] / "summary.json"
    assert summary.stat().st_mtime_ns == kill_and_resume["summary_mtime"]


def test_no_secret_in_any_file_of_the_run(kill_and_resume) -> None:
    ref = kill_and_resume["ref"]
    files = [p for p in ref.rglob("*") if p.is_file()]
    assert {"summary.json", "results.jsonl", "config.yaml", "run_config.json"} <= {
        p.name for p in files
    }
    for path in files:
        text = path.read_text(errors="replace")
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked into {path}"
    summary = json.loads((ref / "summary.json").read_text())
    assert summary["config"]["model"]["hub_token"] == "<redacted>"
    _, out, err = kill_and_resume["reference"]
    assert not any(v in out + err for v in SECRETS.values())


def test_resume_refuses_another_config(kill_and_resume, cache: Path) -> None:
    """Resuming with a different setting would mix results: error before any model loads."""
    killed = kill_and_resume["killed"]
    data = json.loads((killed / "run_config.json").read_text())["data"]["path"]
    proc = run(
        killed, cache, *TINY, "decode=vanilla", "data=jsonl", f"data.path={data}",
        "generation.max_new_tokens=100", "resume=true",
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "generation.max_new_tokens: 128 there, 100 now" in proc.stderr


def test_resumed_sweep_skips_finished_jobs(tmp_path: Path, cache: Path) -> None:
    """Job 0 finishes, job 1 fails (bad setting); the resumed sweep only reports job 0."""
    sweep = tmp_path / "sweep"
    args = [*TINY, "decode=vanilla", "data=pycode", "data.num_samples=1", "data.prompt_tokens=32"]
    args += ["-m", f"hydra.sweep.dir={sweep}", "generation.max_new_tokens=4,5000"]
    first = run(tmp_path, cache, *args)
    assert first.returncode == 1, first.stderr[-3000:]  # a job failed; the sweep completed
    assert (sweep / "0" / "summary.json").is_file() and not (sweep / "1" / "summary.json").exists()
    assert "generation.max_new_tokens=5000 must be below" in (sweep / "1" / "error.txt").read_text()
    assert "generation.max_new_tokens=5000" in (sweep / "summary.md").read_text()
    mtime = (sweep / "0" / "summary.json").stat().st_mtime_ns
    again = run(tmp_path, cache, *args, "resume=true")
    assert again.returncode == 1
    assert "already complete" in again.stdout
    assert (sweep / "0" / "summary.json").stat().st_mtime_ns == mtime


def test_finished_run_is_found_under_another_logger(tmp_path: Path) -> None:
    """A finished run is reported again whatever the logger (it changes neither samples nor
    timings), but not when a setting that shapes results changed."""
    from longspec.resume import finished_summary

    config = {"model": {"name": "m"}, "logger": {"_target_": "NoLogger"}, "data": {"n": 2}}
    summary = {"tau": 2.0, "config": config}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    wandb = {**config, "logger": {"_target_": "WandbLogger", "quiet": True}, "resume": True}
    assert finished_summary(tmp_path, wandb) == summary
    assert finished_summary(tmp_path, {**config, "data": {"n": 3}}) is None


# ---------------------------------------------------------------------------------------------
# Faults inside the runner (fake strategy and target: fast, no model)


class FakeStrategy:
    max_nodes = 68

    def __init__(self, fail=None, ids=None):
        self.calls: list[list[list[int]]] = []
        self.planned: list[list[int]] | None = None
        self.fail = fail
        self.ids = ids

    def plan(self, prompts):
        self.planned = prompts

    def generate(self, target, prompts, gen, pad_id, timer=None):
        self.calls.append(prompts)
        if self.fail is not None and timer is not None:
            raise self.fail
        return [
            SimpleNamespace(
                output_ids=self.ids or [len(p) % 50, 1, 2],
                new_tokens=3,
                target_forwards=3,
                tau=1.0,
                accept_lengths=[1, 1, 1],
            )
            for p in prompts
        ]


def fake_target():
    return SimpleNamespace(
        device=torch.device("cpu"),
        vocab_size=100,
        n_layers=32,
        n_kv_heads=8,
        head_dim=128,
        dtype=torch.float16,
        static=False,  # no pooled cache to reserve
    )


def samples(n: int) -> list[Sample]:
    return [Sample(f"s{i}", "x", list(range(10 + i))) for i in range(n)]


def decode(strategy, out: Path, n: int = 4, resume: bool = False, batch_size: int = 2):
    cfg = OmegaConf.create({"resume": resume, "warmup": True, "batch_size": batch_size})
    gen = Generation(max_new_tokens=1000, eos_ids=(1,))
    tokenizer = SimpleNamespace(decode=lambda ids, **kw: "text")
    job = Job(cfg, fake_target(), tokenizer, gen, 0, out)
    return decode_all(strategy, job, samples(n), out)


def test_out_of_memory_names_sizes_and_what_to_lower(tmp_path: Path) -> None:
    strategy = FakeStrategy(fail=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(OutOfMemory) as info:
        decode(strategy, tmp_path)
    message = str(info.value)
    want_bytes = kv_cache_bytes(fake_target(), 2, 11 + 1000 + 68 + 2)
    assert want_bytes == 2 * 32 * 8 * 128 * 2 * 2 * 1081
    for text in (
        "sample s0",
        "prompt 11 tokens",
        "batch 2",
        "max_new_tokens 1000",
        "68 draft nodes",
        f"target KV cache {want_bytes / 2**30:.2f} GiB",
        "lower generation.max_new_tokens, batch_size",
    ):
        assert text in message, message
    assert isinstance(info.value, USER_ERRORS)


def test_nan_logits_stop_with_sample_and_step(tmp_path: Path) -> None:
    logits = torch.zeros(2, 10)
    logits[1, 3] = float("nan")
    try:
        check_finite(logits, None, step=5)  # as the decode loop calls it (batch rows only)
    except NonFiniteLogits as err:
        fail = err
    with pytest.raises(NonFiniteLogits, match="for sample s1 at decode step 5"):
        decode(FakeStrategy(fail=fail), tmp_path)
    results = tmp_path / "results.jsonl"
    assert not results.exists() or results.read_text() == ""  # no record for the failed batch


def test_invalid_output_ids_are_caught(tmp_path: Path) -> None:
    with pytest.raises(InvalidOutput, match="sample s0: output id 100 at position 1"):
        decode(FakeStrategy(ids=[5, 100]), tmp_path)


def test_resume_decodes_only_missing_samples(tmp_path: Path) -> None:
    first = FakeStrategy()
    records = decode(first, tmp_path, n=3, batch_size=1)
    assert [r["batch"] for r in records] == [0, 1, 2]
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    # Killed while writing the third line: a cut line without its newline.
    path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:25])
    resumed = FakeStrategy()
    records = decode(resumed, tmp_path, n=4, resume=True, batch_size=1)
    assert [r["id"] for r in records] == ["s0", "s1", "s2", "s3"]
    assert [r["batch"] for r in records] == [0, 1, 2, 3]
    assert len(resumed.calls) == 3  # warm-up + s2 + s3
    assert resumed.planned == [list(range(12)), list(range(13))]  # what is left to decode
    assert resumed.calls[0] == [list(range(12))] and resumed.calls[1] == [list(range(12))]
    assert all(json.loads(line) for line in path.read_text().splitlines())
    done = FakeStrategy()
    assert len(decode(done, tmp_path, n=4, resume=True)) == 4
    assert done.calls == []  # nothing left: no warm-up either


def test_results_log_repair(tmp_path: Path) -> None:
    log = ResultsLog(tmp_path / "r.jsonl")
    log.append({"id": "a"})
    with log.path.open("a") as f:
        f.write('{"id": "b", "output')
    log.repair()
    log.append({"id": "c"})
    assert [r["id"] for r in log.read()] == ["a", "c"]


def test_sigterm_stops_with_one_line(tmp_path: Path, capsys) -> None:
    def body() -> int:
        with stop_on_signals(tmp_path):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(body)
    assert info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == previous
    err = capsys.readouterr().err
    assert err.startswith("error: stopped by SIGTERM") and "resume=true" in err
    assert err.count("\n") == 1
    assert issubclass(Interrupted, USER_ERRORS)


def test_run_errors_print_one_line(capsys) -> None:
    def body() -> int:
        raise OutOfMemory("GPU out of memory on sample x\n(prompt 5 tokens)")

    with pytest.raises(SystemExit) as info:
        exit_on_user_error(body)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: GPU out of memory on sample x (prompt 5 tokens)\n"


@pytest.fixture
def as_hydra_job(monkeypatch: pytest.MonkeyPatch):
    """Set the running Hydra config's mode (RUN or MULTIRUN) as ``@hydra.main`` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from longspec.config import register

    register()
    holder = HydraConfig.instance()
    monkeypatch.setattr(holder, "cfg", holder.cfg)  # restored after the test

    def set_mode(mode) -> None:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"hydra.mode={mode.name}"], return_hydra_config=True)
        holder.set_config(cfg)

    return set_mode


def test_user_error_in_a_multirun_job_raises_for_hydra(as_hydra_job, capsys) -> None:
    """A sweep job's user error is raised (Hydra marks the job failed, the sweep goes on);
    a single run prints one line and exits 2; SIGTERM exits in both."""
    from hydra.types import RunMode

    def bad() -> int:
        raise ValueError("generation.max_new_tokens=5000 must be below model.context=4096")

    as_hydra_job(RunMode.MULTIRUN)
    with pytest.raises(ValueError, match="must be below"):
        exit_on_user_error(bad)
    assert capsys.readouterr().err == ""

    def stopped() -> int:
        raise Interrupted("stopped by SIGTERM", signal.SIGTERM)

    with pytest.raises(SystemExit) as info:
        exit_on_user_error(stopped)
    assert info.value.code == 128 + signal.SIGTERM

    as_hydra_job(RunMode.RUN)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(bad)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: generation.max_new_tokens=5000")


def test_config_diff() -> None:
    old = {"a": {"b": 1, "c": [1, 2]}, "resume": False, "data": {"num_samples": 2}}
    new = {"a": {"b": 1, "c": [1, 3]}, "resume": True, "data": {"num_samples": 4}}
    assert config_diff(old, new) == ["a.c", "data.num_samples", "resume"]
    assert config_diff(old, new, ignore=("resume", "data.num_samples")) == ["a.c"]


# ---------------------------------------------------------------------------------------------
# Safe loading


def package_sources() -> list[Path]:
    return sorted((ROOT / "longspec").rglob("*.py")) + [ROOT / "run.py"]


def test_torch_load_only_with_weights_only() -> None:
    calls = 0
    for path in package_sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            assert name not in ("pickle.load", "pickle.loads", "dill.load"), f"{path}: {name}"
            if name == "torch.load" or name.endswith(".torch.load"):
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                ok = "weights_only" in kw and ast.literal_eval(kw["weights_only"]) is True
                assert ok, f"{path}:{node.lineno}: torch.load without weights_only=True"
            for k in node.keywords:
                if k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant):
                    assert k.value.value is False, f"{path}:{node.lineno}: trust_remote_code"
    assert calls >= 1


def test_trust_remote_code_defaults_off_and_is_passed_through(monkeypatch) -> None:
    from hydra import compose, initialize_config_dir

    import longspec.build as build
    import longspec.loading as loading
    from longspec.config import RunConfig, register

    assert RunConfig().trust_remote_code is False
    register()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_llama"])
    assert cfg.trust_remote_code is False

    seen = []

    class Stop(Exception):
        pass

    def fake_load_target(spec, **kw):
        seen.append(kw["trust_remote_code"])
        raise Stop

    monkeypatch.setattr(build, "load_target", fake_load_target)
    for value in (False, True):
        cfg.trust_remote_code = value
        with pytest.raises(Stop):
            build.build_target(cfg, torch.device("cpu"), torch.float32)
    assert seen == [False, True]

    calls = []

    def fake_from_pretrained(source, **kw):
        calls.append(kw.get("trust_remote_code"))
        raise Stop

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    with pytest.raises(Stop):
        loading.load_pretrained("x", dtype="auto", device="cpu")
    with pytest.raises(Stop):
        loading.load_pretrained("x", dtype="auto", device="cpu", trust_remote_code=True)
    assert calls == [False, True]


def test_configs_never_read_secrets_from_the_environment() -> None:
    """Secrets reach a config only if the user types them: no shipped config reads them."""
    for path in (ROOT / "conf").rglob("*.yaml"):
        for line in path.read_text().splitlines():
            if "oc.env" in line:
                upper = line.upper()
                assert not any(w in upper for w in ("TOKEN", "KEY", "SECRET", "PASSWORD")), (
                    f"{path}: {line}"
                )
