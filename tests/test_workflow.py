"""Research workflow: W&B/TensorBoard metrics, evaluation videos, checkpoints and resume."""

import csv
import glob
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import imageio.v2 as imageio
import pytest
import torch
from conftest import HOPPER_CONFIG, STEERING_CONFIG
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dsrl.checkpointing import Checkpointer, load_resume
from dsrl.config import REPO_ROOT, compose_task_config
from dsrl.interrupts import RunInterrupted
from dsrl.run_logging import read_wandb_run, wandb_records
from dsrl.training import prepare_renderer, run

QUICK = ["eval.n_episodes=5", "progress_bar=false", "train.utd=2", "train.noise_critic_grad_steps=2"]
TRAIN_METRICS = {
    "train/env_steps",
    "train/gradient_steps",
    "train/env_steps_per_s",
    "train/episode_return",
    "train/success_rate",
    "train/critic_loss",
    "train/noise_critic_loss",
    "train/noise_critic_gap",
    "train/q_value",
    "train/entropy",
    "train/actor_loss",
    "train/ent_coef",
}
EVAL_METRICS = {f"eval/{p}{m}" for p in ("", "stochastic_") for m in ("success_rate", "return_mean", "return_std")}


def steering(run_dir, *overrides):
    return compose_task_config(STEERING_CONFIG, [f"run_dir={run_dir}", *QUICK, *overrides])


def progress(run_dir):
    with open(os.path.join(run_dir, "progress.csv")) as f:
        return list(csv.DictReader(f))


def test_offline_wandb_tensorboard_videos_and_checkpoint_and_video_artifacts_hold_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))  # the artifacts' staging copies
    every_600 = ["eval.interval_env_steps=600", "save_model_interval=600"]
    artifacts_on = ["wandb.log_checkpoints=true", "wandb.log_videos=true"]
    run(steering(tmp_path, "train.total_env_steps=1200", "video.every_evals=2", *every_600, *artifacts_on))
    (wandb_file,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "run-*.wandb"))
    config, rows = read_wandb_run(wandb_file)
    logged = set().union(*rows)
    assert TRAIN_METRICS | EVAL_METRICS <= logged, sorted(TRAIN_METRICS | EVAL_METRICS - logged)
    evals = [(r["train/env_steps"], r["eval/success_rate"]) for r in rows if "eval/success_rate" in r]
    assert len(evals) == 2 and 600 <= evals[0][0] < 700 and evals[1][0] >= 1200
    assert all(0.0 <= rate <= 1.0 for _, rate in evals)
    assert config["train"]["total_env_steps"] == 1200 and config["run_dir"] == str(tmp_path), "resolved config"

    (events,) = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    tensorboard = EventAccumulator(events)
    tensorboard.Reload()
    assert {"eval/success_rate", "train/env_steps", "train/critic_loss"} <= set(tensorboard.Tags()["scalars"])

    videos = sorted(glob.glob(str(tmp_path / "videos" / "eval_*.mp4")))
    assert len(videos) == 1, "every second evaluation of two"
    frames = imageio.mimread(videos[0])
    assert len(frames) >= 8 and frames[0].shape == (128, 128, 3)
    assert any("eval/video/path" in r for r in rows)

    models = glob.glob(str(tmp_path / "checkpoints" / "model_*.zip"))
    saved = {int(re.fullmatch(r"model_(\d+)\.zip", os.path.basename(path))[1]): path for path in models}
    assert len(saved) == 2 and min(saved) >= 600 and max(saved) >= 1200
    records = list(wandb_records(wandb_file))
    assert records[-1].WhichOneof("record_type") == "exit", "the run file is complete when the run returns"
    artifacts = [record.artifact for record in records if record.WhichOneof("record_type") == "artifact"]
    run_id = os.path.basename(wandb_file)[4:-6]
    assert {(a.name, a.type) for a in artifacts} == {(f"model-{run_id}", "model"), (f"video-{run_id}", "video")}
    video_steps = int(re.fullmatch(r"eval_(\d+)\.mp4", os.path.basename(videos[0]))[1])
    file_of = {("model", steps): path for steps, path in saved.items()} | {("video", video_steps): videos[0]}
    versions = []
    for artifact in artifacts:
        (entry,) = artifact.manifest.contents
        steps = json.loads(artifact.metadata)["env_steps"]
        path = file_of[artifact.type, steps]
        assert entry.path == os.path.basename(path) and entry.size == os.path.getsize(path)
        assert set(artifact.aliases) == {"latest", f"env_steps_{steps}"}
        versions.append((artifact.type, steps))
    assert sorted(versions) == sorted(file_of), "one version per checkpoint and per video, none twice"


def test_no_renderer_warns_once_and_disables_videos(tmp_path, hopper_files, monkeypatch, caplog):
    cfg = compose_task_config(HOPPER_CONFIG, [f"run_dir={tmp_path}", "video.every_evals=1"])
    monkeypatch.setenv("MUJOCO_GL", "no-such-backend")
    with caplog.at_level(logging.WARNING):
        assert not prepare_renderer(cfg.env.suite)
    assert [r.getMessage() for r in caplog.records] == [
        "no MuJoCo offscreen renderer works here (tried MUJOCO_GL=['no-such-backend']): no evaluation videos"
    ]


def latest(run_dir):
    path = os.path.join(run_dir, "checkpoints", "latest.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def test_the_last_checkpoint_is_saved_once_and_holds_the_final_evaluation(tmp_path, monkeypatch):
    saved = []
    save = Checkpointer.save
    monkeypatch.setattr(Checkpointer, "save", lambda self, *args: saved.append(dict(args[1])) or save(self, *args))
    short_run = ["wandb.mode=disabled", "video.every_evals=0", "train.total_env_steps=1200", "save_model_interval=600"]

    run(steering(tmp_path / "aligned", *short_run, "eval.interval_env_steps=600"))
    (first, last) = saved  # the last step saved (and evaluated) at the interval; the end of training adds nothing
    assert 600 <= first["env_steps"] < 1200 <= last["env_steps"] and (first["n_evals"], last["n_evals"]) == (1, 2)

    saved.clear()
    run(steering(tmp_path / "final_evaluation", *short_run, "eval.interval_env_steps=1000"))
    (first, at_interval, at_end) = saved  # the final evaluation came after the last step's save: saved again
    assert 600 <= first["env_steps"] < 1200 <= at_interval["env_steps"] == at_end["env_steps"]
    assert [c["n_evals"] for c in saved] == [0, 1, 2]
    resume = load_resume(str(tmp_path / "final_evaluation"), steering(tmp_path / "final_evaluation", *short_run))
    assert resume.counters["n_evals"] == 2


def test_resume_after_sigkill_continues_counters_and_curve(tmp_path):
    overrides = [f"run_dir={tmp_path}", *QUICK, "wandb.mode=disabled", "save_model_interval=400"]
    overrides += ["eval.interval_env_steps=400", "train.total_env_steps=100000"]
    command = [sys.executable, str(REPO_ROOT / "train_dsrl.py"), f"--config-path={REPO_ROOT / 'cfg/steering'}"]
    process = subprocess.Popen(
        command + ["--config-name=dsrl_steering.yaml", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while (latest(tmp_path) or {}).get("env_steps", 0) < 800 and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / "train_dsrl.log").is_file() and (tmp_path / ".hydra").is_dir(), "Hydra's files in run_dir"
    entry = latest(tmp_path)
    assert entry and entry["env_steps"] >= 800, "the run made no second checkpoint within the deadline"
    for key in ("model", "training_state", "replay_buffer"):
        assert os.path.isfile(tmp_path / "checkpoints" / entry[key]), f"latest.json names a missing {key}"
    before = progress(tmp_path)
    saved = [r for r in before if float(r["train/env_steps"]) <= entry["env_steps"]]
    saved_updates = max(int(r["train/gradient_steps"]) for r in saved)

    resumed_to = entry["env_steps"] + 600
    result = run(
        steering(
            tmp_path,
            "wandb.mode=disabled",
            "save_model_interval=400",
            f"resume={tmp_path}",
            "eval.interval_env_steps=400",
            f"train.total_env_steps={resumed_to}",
        )
    )
    assert 0.0 <= result["success_rate"] <= 1.0
    rows = progress(tmp_path)
    steps = [float(r["train/env_steps"]) for r in rows]
    assert steps == sorted(steps), "one curve: the rows logged after the checkpoint were dropped"
    after = [r for r in rows if float(r["train/env_steps"]) > entry["env_steps"]]
    assert after and steps[-1] >= resumed_to
    assert int(after[0]["train/gradient_steps"]) > saved_updates, "gradient steps continue, not restart"
    assert latest(tmp_path)["env_steps"] >= resumed_to
    assert any(r["eval/success_rate"] for r in after)


@pytest.mark.parametrize("stop_signal, vec_env", [(signal.SIGINT, "subproc"), (signal.SIGTERM, "dummy")])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_that_resumes(tmp_path, stop_signal, vec_env):
    overrides = [f"run_dir={tmp_path}", *QUICK, "wandb.mode=disabled", "save_model_interval=0"]
    overrides += [
        "eval.interval_env_steps=400",
        "train.total_env_steps=100000",
        f"env.vec_env={vec_env}",
        "env.n_envs=2",
    ]
    command = [sys.executable, str(REPO_ROOT / "train_dsrl.py"), f"--config-path={REPO_ROOT / 'cfg/steering'}"]
    process = subprocess.Popen(
        command + ["--config-name=dsrl_steering.yaml", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 240

    def evaluated():
        return os.path.isfile(tmp_path / "progress.csv") and any(r["eval/success_rate"] for r in progress(tmp_path))

    while not evaluated() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert latest(tmp_path) is None, "no checkpoint before the signal (save_model_interval=0)"
    if stop_signal == signal.SIGINT:
        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: the learner and its env workers
    else:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop_signal, stderr[-2000:]
    entry = latest(tmp_path)
    assert entry and 400 <= entry["env_steps"] < 100000
    assert f"stopped by {stop_signal.name} at env step {entry['env_steps']}" in stderr
    assert f"resume={tmp_path}" in stderr
    for key in ("model", "training_state", "replay_buffer"):
        assert os.path.isfile(tmp_path / "checkpoints" / entry[key]), f"latest.json names a missing {key}"
    evaluated = [float(r["train/env_steps"]) for r in progress(tmp_path) if r["eval/success_rate"]]
    assert max(evaluated) < entry["env_steps"], "no final evaluation after the signal"

    resumed_to = entry["env_steps"] + 200
    with pytest.raises(ValueError, match="its run has env.n_envs=2, this config has 4"):
        run(steering(tmp_path, "wandb.mode=disabled", f"resume={tmp_path}", f"train.total_env_steps={resumed_to}"))
    resume = [f"resume={tmp_path}", f"train.total_env_steps={resumed_to}", "env.n_envs=2"]
    run(steering(tmp_path, "wandb.mode=disabled", *resume))
    assert latest(tmp_path)["env_steps"] >= resumed_to


@pytest.mark.parametrize(
    "argv, added",
    [
        (["run_dir=/r", "seed=1"], ["hydra.run.dir=/r"]),
        (
            ["resume=/r", "run_dir=/x"],
            ["hydra.run.dir=/r", "hydra.output_subdir=.hydra/resumed_${now:%Y-%m-%d_%H-%M-%S}"],
        ),
        (["run_dir=/r", "hydra.run.dir=/h"], []),
        (["resume=null", "seed=1"], []),
    ],
)
def test_hydras_own_files_go_to_the_runs_directory(argv, added):
    from dsrl.config import hydra_dir_follows_run_dir

    assert hydra_dir_follows_run_dir(["train_dsrl.py", *argv]) == ["train_dsrl.py", *argv, *added]


def ctrl_c_as_evaluate_is_first_called(monkeypatch, module):
    """Make ``module.evaluate`` send this process a SIGINT (a terminal's Ctrl-C) on its first call, then evaluate."""
    evaluate = module.evaluate

    def ctrl_c_then_evaluate(*args, **kwargs):
        monkeypatch.setattr(module, "evaluate", evaluate)
        os.kill(os.getpid(), signal.SIGINT)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(module, "evaluate", ctrl_c_then_evaluate)


def test_a_stop_while_the_base_policy_is_evaluated_ends_the_run_before_training(tmp_path, monkeypatch):
    import dsrl.evaluation

    ctrl_c_as_evaluate_is_first_called(monkeypatch, dsrl.evaluation)
    overrides = ["wandb.mode=disabled", "eval.base_policy_noise_scales=[1.0]", "train.total_env_steps=400"]
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted, match="SIGINT while evaluating the base policy alone, before training") as stop:
        run(steering(tmp_path, *overrides))
    assert stop.value.exit_status == 130
    assert not os.path.exists(tmp_path / "checkpoints") and not progress(tmp_path), "nothing trained or logged"
    assert signal.getsignal(signal.SIGINT) is handler, "a second Ctrl-C is handled as before the run"

    run(steering(tmp_path, *overrides))  # the same command again
    (base_row,) = [row for row in progress(tmp_path) if row.get("base_policy/noise_x1/return_mean")]
    assert float(base_row["train/env_steps"]) == 0


def test_a_stop_during_an_evaluation_abandons_it_and_the_resumed_run_evaluates_first(tmp_path, monkeypatch):
    import dsrl.callbacks

    ctrl_c_as_evaluate_is_first_called(monkeypatch, dsrl.callbacks)
    overrides = ["wandb.mode=disabled", "eval.interval_env_steps=400"]
    with pytest.raises(RunInterrupted, match="stopped by SIGINT at env step"):
        run(steering(tmp_path, *overrides, "train.total_env_steps=100000"))
    stopped_at = latest(tmp_path)["env_steps"]
    assert 400 <= stopped_at < 500, "stopped in the step that began the evaluation"
    assert not any(r.get("eval/return_mean") for r in progress(tmp_path)), "the abandoned evaluation is not logged"

    run(steering(tmp_path, *overrides, f"resume={tmp_path}", f"train.total_env_steps={stopped_at + 200}"))
    evaluated = [float(r["train/env_steps"]) for r in progress(tmp_path) if r.get("eval/return_mean")]
    assert stopped_at < evaluated[0] < stopped_at + 50, "the resumed run evaluates in its first step"
    assert evaluated[-1] >= stopped_at + 200


def test_a_stop_in_the_last_step_resumes_to_the_final_evaluation_alone(tmp_path, monkeypatch):
    import dsrl.callbacks

    ctrl_c_as_evaluate_is_first_called(monkeypatch, dsrl.callbacks)  # the evaluation due at the last step
    overrides = ["wandb.mode=disabled", "eval.interval_env_steps=400", "train.total_env_steps=400"]
    with pytest.raises(RunInterrupted, match=f"continue with resume={tmp_path}"):
        run(steering(tmp_path, *overrides))
    stopped = latest(tmp_path)
    assert stopped["env_steps"] >= 400 and not any(r.get("eval/return_mean") for r in progress(tmp_path))

    result = run(steering(tmp_path, *overrides, f"resume={tmp_path}"))
    (final,) = [r for r in progress(tmp_path) if r.get("eval/return_mean")]
    assert float(final["eval/return_mean"]) == pytest.approx(result["return_mean"])
    assert float(final["train/env_steps"]) == latest(tmp_path)["env_steps"] == stopped["env_steps"], "no new steps"
    assert load_resume(str(tmp_path), steering(tmp_path, *overrides)).counters["stopped"] == 0
    with pytest.raises(ValueError, match="raise train.total_env_steps to continue it"):
        run(steering(tmp_path, *overrides, f"resume={tmp_path}"))


@pytest.mark.parametrize(
    "saved, interval, due",
    [
        (dict(next_eval=800, eval_interval=400), 400, 800),  # unchanged: the saved due point
        (dict(next_eval=0, eval_interval=0), 400, 1200),  # from "only the final one": the next multiple
        (dict(next_eval=1600, eval_interval=800), 300, 900),  # shorter: the next multiple, not the old point
        (dict(next_eval=800, eval_interval=400), 0, 0),  # to "only the final one"
        (dict(next_eval=800, eval_interval=800), 400, 810),  # the stop cut the evaluation due at 800 short
        (dict(next_eval=800), 300, 800),  # a checkpoint from before intervals were saved: as it was
        ({}, 400, 400),  # a new run
    ],
)
def test_a_resumed_run_evaluates_on_its_new_interval(saved, interval, due):
    from dsrl.callbacks import resumed_due_point

    assert resumed_due_point(dict(saved, env_steps=810) if saved else {}, "eval", interval) == due


def test_a_resumed_run_with_new_intervals_evaluates_and_saves_on_them(tmp_path, monkeypatch):
    saved = []
    save = Checkpointer.save
    monkeypatch.setattr(
        Checkpointer, "save", lambda self, *args: saved.append(args[1]["env_steps"]) or save(self, *args)
    )
    overrides = ["wandb.mode=disabled", "video.every_evals=0"]
    run(steering(tmp_path, *overrides, "train.total_env_steps=600", "eval.interval_env_steps=0"))
    first = latest(tmp_path)["env_steps"]
    saved.clear()
    new_intervals = ["eval.interval_env_steps=400", "save_model_interval=400", "train.total_env_steps=1200"]
    run(steering(tmp_path, *overrides, f"resume={tmp_path}", *new_intervals))
    evaluated = [float(r["train/env_steps"]) for r in progress(tmp_path) if r.get("eval/return_mean")]
    assert [e for e in evaluated if e > first] == saved, "an evaluation and a checkpoint at each interval"
    assert 800 <= saved[0] < 820 and 1200 <= saved[1] < 1220 and len(saved) == 2


def test_a_resume_deletes_what_unfinished_saves_left_so_pruning_keeps_the_latest_checkpoint(tmp_path):
    from dsrl.files import write_json

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    committed = ["model_500.zip", "training_state_500.pt", "model_792.zip", "training_state_792.pt"]
    committed.append("replay_buffer_792.pkl")
    uncommitted = ["model_800.zip", "training_state_800.pt", ".partial.replay_buffer_800.pkl"]
    uncommitted.append("replay_buffer_500.pkl")  # a killed save's previous buffer, not yet removed
    for name in committed + uncommitted:
        (checkpoints / name).write_bytes(b"x")
    entry = dict(env_steps=792, model="model_792.zip", training_state="training_state_792.pt")
    write_json(str(checkpoints / "latest.json"), dict(entry, replay_buffer="replay_buffer_792.pkl"))

    checkpointer = Checkpointer(str(checkpoints), keep=1)
    assert checkpointer.discard_uncommitted() == sorted(uncommitted)
    assert sorted(os.listdir(checkpoints)) == sorted(committed + ["latest.json"])
    checkpointer.prune()
    assert sorted(os.listdir(checkpoints)) == ["latest.json", "model_792.zip", "replay_buffer_792.pkl"] + [
        "training_state_792.pt"
    ]


def test_a_resumed_runs_tensorboard_curve_drops_what_was_logged_after_its_checkpoint(tmp_path):
    from dsrl.run_logging import ContinuingTensorBoardOutputFormat

    before_kill = ContinuingTensorBoardOutputFormat(str(tmp_path))
    for step in range(0, 100, 10):  # a checkpoint at 50, then steps 60-90 logged before a SIGKILL
        before_kill.write({"train/env_steps": float(step)}, {"train/env_steps": None}, step)
    before_kill.close()
    resumed = ContinuingTensorBoardOutputFormat(str(tmp_path), resume_timesteps=50)
    for step in range(60, 80, 10):
        resumed.write({"train/env_steps": step + 0.5}, {"train/env_steps": None}, step)
    resumed.close()
    tensorboard = EventAccumulator(str(tmp_path))
    tensorboard.Reload()
    curve = [(e.step, e.value) for e in tensorboard.Scalars("train/env_steps")]
    assert curve == [(s, float(s)) for s in range(0, 60, 10)] + [(60, 60.5), (70, 70.5)]


def test_a_resume_without_wandb_keeps_the_wandb_run_id_for_later_resumes(tmp_path):
    run(steering(tmp_path, "wandb.mode=offline", "train.total_env_steps=300", "video.every_evals=0"))
    first_id = load_resume(str(tmp_path), steering(tmp_path)).wandb_run_id
    assert first_id
    run(steering(tmp_path, "wandb.mode=disabled", f"resume={tmp_path}", "train.total_env_steps=500"))
    resumed = load_resume(str(tmp_path), steering(tmp_path))
    assert resumed.counters["env_steps"] >= 500 and resumed.wandb_run_id == first_id


def snapshot(directory):
    return {p: (os.path.getsize(p), os.path.getmtime(p)) for p in glob.glob(f"{directory}/**", recursive=True)}


def test_resume_refuses_another_task_other_training_settings_or_a_non_run_directory(tmp_path, hopper_files):
    run_dir = tmp_path / "run"
    run(steering(run_dir, "wandb.mode=disabled", "train.total_env_steps=300", "eval.interval_env_steps=0"))
    before = snapshot(run_dir)
    checkpoint, normalization = hopper_files
    hopper = compose_task_config(
        HOPPER_CONFIG,
        [
            f"run_dir={tmp_path / 'other'}",
            f"resume={run_dir}",
            f"base_policy.checkpoint={checkpoint}",
            f"base_policy.normalization={normalization}",
            "wandb.mode=disabled",
        ],
    )
    with pytest.raises(ValueError, match=r"its run has env.suite='steering', this config has 'gym'"):
        run(hopper)
    with pytest.raises(ValueError, match="is not a DSRL run directory"):
        run(steering(tmp_path / "new", f"resume={run_dir / 'checkpoints'}", "train.total_env_steps=600"))
    changed = (
        r"its run has train.utd=2, this config has 3; .*"
        r"\(only train.total_env_steps, train.cuda_graphs, train.torch_compile, train.autocast_bf16, "
        r"train.overlap_env_steps may change\)"
    )
    with pytest.raises(ValueError, match=changed):
        run(steering(tmp_path / "new", f"resume={run_dir}", "train.total_env_steps=600", "train.utd=3"))
    with pytest.raises(ValueError, match=r"its run has env.max_episode_steps=32, this config has 16"):
        run(steering(tmp_path / "new", f"resume={run_dir}", "train.total_env_steps=600", "env.max_episode_steps=16"))
    with pytest.raises(ValueError, match="raise train.total_env_steps to continue it"):
        run(steering(tmp_path / "new", f"resume={run_dir}", "train.total_env_steps=300"))
    assert snapshot(run_dir) == before
    assert not os.path.exists(tmp_path / "other")
    saved = OmegaConf.load(run_dir / "config.yaml")  # as written by a dsrl from before the setting existed
    del saved.train["precompute_distillation"]
    for speed_setting in ("cuda_graphs", "torch_compile", "autocast_bf16", "overlap_env_steps"):  # these may differ
        del saved.train[speed_setting]
    OmegaConf.save(saved, run_dir / "config.yaml")
    older = (
        r"its run has train.precompute_distillation=<not set>, this config has False; .*; the run predates "
        r"train.precompute_distillation: add it to .*config.yaml with the value that matches how that run trained"
    )
    with pytest.raises(ValueError, match=older):
        run(steering(tmp_path / "new", f"resume={run_dir}", "train.total_env_steps=600"))


def evaluate_script(*args, config=STEERING_CONFIG, status=0):
    command = [sys.executable, str(REPO_ROOT / "scripts/evaluate.py"), *(["--config", config] if config else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == status, result.stderr[-3000:]
    return result.stdout if status == 0 else result.stderr


def test_evaluate_script_seeds_an_agents_sampled_noise_with_its_seed(tmp_path, monkeypatch):
    """Loading an agent seeds torch with its run's seed; the evaluation's draws must come from --seed."""
    import importlib.util

    run(steering(tmp_path, "wandb.mode=disabled", "train.total_env_steps=200", "eval.interval_env_steps=0", "seed=5"))
    (model,) = glob.glob(str(tmp_path / "checkpoints" / "model_*.zip"))
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO_ROOT / "scripts/evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    draws = {}

    def first_draws(agent, venv, episodes, deterministic, seed):
        draws[seed] = torch.rand(4)
        return {"return_mean": 0.0, "return_std": 0.0}

    monkeypatch.setattr(script, "evaluate", first_draws)
    for seed in (1, 2):
        monkeypatch.setattr(sys, "argv", ["evaluate.py", "--agent", model, "--sampled", "--seed", str(seed)])
        script.main()
    torch.manual_seed(1)
    assert torch.equal(draws[1], torch.rand(4)) and not torch.equal(draws[1], draws[2])


def test_evaluate_script_base_policy_and_a_trained_dsrl_sac_agent(tmp_path):
    out = evaluate_script(
        "--episodes", "40", "--seed", "3", "--json", str(tmp_path / "base.json"), "--video", str(tmp_path / "base.mp4")
    )
    with open(tmp_path / "base.json") as f:
        base = json.load(f)
    assert base["mode"] == "base_policy" and base["episodes"] == 40 and 0.0 < base["success_rate"] < 1.0
    assert base["checkpoint"] == "checkpoints/steering/diffusion/state.pt", "shipped files named from the repo"
    half_width = 1.96 * (base["success_rate"] * (1 - base["success_rate"]) / 40) ** 0.5
    assert base["success_rate_ci95"] == pytest.approx(half_width)
    assert f"base_policy: success rate {base['success_rate']:.3f} ± {half_width:.3f}" in out
    assert len(imageio.mimread(tmp_path / "base.mp4")) >= 8
    out = evaluate_script(
        "--episodes", "40", "--seed", "3", "--noise-scale", "0.5", "--json", str(tmp_path / "cold.json")
    )
    with open(tmp_path / "cold.json") as f:
        cold = json.load(f)
    assert cold["mode"] == "base_policy" and cold["noise_scale"] == 0.5 and "noise_scale" not in base
    assert f"base_policy (noise x 0.5): success rate {cold['success_rate']:.3f}" in out

    run_dir = tmp_path / "run"
    run(
        steering(
            run_dir,
            "algorithm=dsrl_sac",
            "wandb.mode=disabled",
            "train.total_env_steps=400",
            "eval.interval_env_steps=0",
            "train.action_magnitude=1.0",
        )
    )
    (model,) = glob.glob(str(run_dir / "checkpoints" / "model_*.zip"))
    saved = OmegaConf.load(run_dir / "config.yaml")  # as written by a dsrl from before these settings existed
    for newer_setting in ("torch_compile", "overlap_env_steps"):
        del saved.train[newer_setting]
    OmegaConf.save(saved, run_dir / "config.yaml")
    refused = evaluate_script("--episodes", "10", "--agent", model, status=1)  # the task config is DSRL-NA's
    assert f"was trained with algorithm='dsrl_sac' ({run_dir / 'config.yaml'}), --config" in refused
    assert "has 'dsrl_na': leave out --config to evaluate the agent as it was trained" in refused
    missing = str(run_dir / "checkpoints" / "model_1.zip")
    refused = evaluate_script("--agent", missing, config=None, status=1)
    assert f"--agent {missing} does not exist; its folder holds ['{os.path.basename(model)}']" in refused
    refused = evaluate_script("--agent", model, "train.action_magnitude=2.0", config=None, status=1)
    assert "acts in the noise space it was trained in (train.action_magnitude=1.0, " in refused
    assert "the override train.action_magnitude=2.0 cannot apply" in refused
    out = evaluate_script("--episodes", "10", "--agent", model, "--json", str(tmp_path / "agent.json"), config=None)
    with open(tmp_path / "agent.json") as f:
        agent = json.load(f)
    assert agent["mode"] == "agent" and 0.0 <= agent["success_rate"] <= 1.0 and agent["checkpoint"] == model
    assert agent["noise"] == "mean" and "agent (mean noise): success rate" in out
    assert agent["config"] == str(run_dir / "config.yaml") and agent["task"] == "steering", "the run's own settings"

    sampled = []
    for name in ("sampled", "again"):
        out = evaluate_script(
            "--episodes", "10", "--agent", model, "--sampled", "--json", str(tmp_path / name), config=None
        )
        with open(tmp_path / name) as f:
            sampled.append(json.load(f))
        assert sampled[-1]["noise"] == "sampled" and "agent (sampled noise): success rate" in out
    assert sampled[0] == sampled[1], "the actor's noise draws are seeded by --seed"
    jsons = [str(tmp_path / name) for name in ("base.json", "cold.json", "agent.json", "sampled", "again")]
    summary = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/summarize_evaluations.py"), *jsons],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert summary.returncode == 0, summary.stderr
    for label, value, spread in [
        ("base policy, noise x1 (dsrl_steering)", base["success_rate"], "(one, no interval)"),
        ("base policy, noise x0.5 (dsrl_steering)", cold["success_rate"], "(one, no interval)"),
        ("agent, mean noise (steering)", agent["success_rate"], "(one, no interval)"),  # the run's config: its task
        ("agent, sampled noise (steering)", sampled[0]["success_rate"], "± 0.0000 (95% t over 2)"),
    ]:
        assert f"{label}: mean success_rate {value:.4f} {spread}" in summary.stdout

    refused = [sys.executable, str(REPO_ROOT / "scripts/evaluate.py"), "--config", STEERING_CONFIG, "--sampled"]
    result = subprocess.run(refused, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "--sampled needs --agent" in result.stderr
