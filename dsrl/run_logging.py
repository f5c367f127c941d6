"""Where a run's metrics go: console, ``progress.csv``, TensorBoard and W&B.

Every record carries ``train/env_steps`` (simulator steps, chunk length
included); W&B plots ``train/*`` and ``eval/*`` against it. A resumed run
appends to its ``progress.csv`` and TensorBoard files, dropping what was
logged after its checkpoint, and continues its W&B run (same id).
"""

from __future__ import annotations

import csv
import json
import os
import struct
import sys
from typing import Any, Iterator

import numpy as np
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.logger import (
    CSVOutputFormat,
    HumanOutputFormat,
    KVWriter,
    Logger,
    TensorBoardOutputFormat,
)
from torch.utils.tensorboard import SummaryWriter

from dsrl.files import write_atomic

ENV_STEPS = "train/env_steps"


class WandbOutputFormat(KVWriter):
    """SB3 logger output that sends every dumped record's numbers to a W&B run."""

    def __init__(self, run: Any):
        self.run = run

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        self.run.log({k: v for k, v in key_values.items() if isinstance(v, (int, float, np.number))})


class ContinuingCSVOutputFormat(CSVOutputFormat):
    """SB3's CSV output, continuing an existing file when resuming.

    Rows logged after the checkpoint a run resumes from (the work an
    interruption lost, which is done again) are dropped first, so the file
    stays one curve with increasing ``train/env_steps``.

    :param filename: the CSV file
    :param resume_env_steps: simulator steps of the checkpoint resumed from (None: a new file)
    """

    def __init__(self, filename: str, resume_env_steps: int | None = None):
        if resume_env_steps is None or not os.path.isfile(filename):
            super().__init__(filename)
            return
        with open(filename, newline="") as f:
            header, *rows = list(csv.reader(f)) or [[]]
        column = header.index(ENV_STEPS) if ENV_STEPS in header else None
        kept = [r for r in rows if column is None or not r[column] or float(r[column]) <= resume_env_steps]

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerows([header] + kept if header else [])

        write_atomic(filename, write)
        self.file = open(filename, "r+")
        self.file.seek(0, os.SEEK_END)
        self.keys = list(header)
        self.separator = ","
        self.quotechar = '"'


class ContinuingTensorBoardOutputFormat(TensorBoardOutputFormat):
    """SB3's TensorBoard output; when resuming, TensorBoard discards what the run logged after the checkpoint it
    resumes from (``SummaryWriter``'s ``purge_step``), as :class:`ContinuingCSVOutputFormat` drops those rows.

    :param folder: the run directory
    :param resume_timesteps: the checkpoint's SB3 timesteps (``num_timesteps``, the step TensorBoard records;
        None: a new run)
    """

    def __init__(self, folder: str, resume_timesteps: int | None = None):
        purge_step = None if resume_timesteps is None else resume_timesteps + 1
        self.writer = SummaryWriter(log_dir=folder, purge_step=purge_step)
        self._is_closed = False


def make_logger(
    cfg: DictConfig,
    run_dir: str,
    resume_env_steps: int | None = None,
    resume_timesteps: int | None = None,
    wandb_run_id: str | None = None,
) -> tuple[Logger, Any]:
    """SB3 logger writing stdout, CSV, TensorBoard (if enabled) and W&B (unless disabled).

    :param resume_env_steps: when resuming, the checkpoint's simulator steps (see :class:`ContinuingCSVOutputFormat`)
    :param resume_timesteps: when resuming, the checkpoint's SB3 timesteps (see
        :class:`ContinuingTensorBoardOutputFormat`)
    :param wandb_run_id: when resuming, the W&B run to continue
    :return: the logger and the W&B run (None when disabled)
    """
    formats: list[KVWriter] = [
        HumanOutputFormat(sys.stdout),
        ContinuingCSVOutputFormat(os.path.join(run_dir, "progress.csv"), resume_env_steps),
    ]
    if cfg.tensorboard:
        formats.append(ContinuingTensorBoardOutputFormat(run_dir, resume_timesteps))
    wandb_run = None
    if cfg.wandb.mode != "disabled":
        import wandb

        wandb_run = wandb.init(
            mode=cfg.wandb.mode,
            project=cfg.wandb.project,
            group=cfg.wandb.group,
            name=cfg.wandb.name,
            dir=run_dir,
            id=wandb_run_id,
            resume="allow" if wandb_run_id else None,
            config=OmegaConf.to_container(cfg, resolve=True),
        )
        wandb_run.define_metric(ENV_STEPS)
        for prefix in ("train", "eval", "rollout", "time", "base_policy"):
            wandb_run.define_metric(f"{prefix}/*", step_metric=ENV_STEPS)
        formats.append(WandbOutputFormat(wandb_run))
    return Logger(run_dir, formats), wandb_run


def finish_wandb_run(wandb_run: Any) -> None:
    """Finish the W&B run and wait until its ``run-<id>.wandb`` file is complete on disk.

    ``run.finish()`` returns once W&B's service has handled the run's exit, but
    the service writes the file's buffered tail (its last, unfilled 32 KiB
    block, often every history row of a short run) only when it closes the
    run's stream afterwards, so a reader right after ``finish()`` can see a
    truncated file (1 in 40 runs of 2,000 rows on the busy 2-core CPU).
    ``wandb.teardown()`` returns after the service has closed every stream; the
    next ``wandb.init`` starts a fresh service.
    """
    import wandb

    wandb_run.finish()
    wandb.teardown()


def log_file_artifact(wandb_run: Any, kind: str, path: str, env_steps: int) -> None:
    """Log a file the run saved as a version of the W&B artifact ``<kind>-<run id>`` (type ``kind``).

    ``kind`` is ``model`` for checkpoints, ``video`` for evaluation videos. The
    version holds the file (copied to W&B's staging area, so pruning the
    checkpoint later loses nothing), metadata ``env_steps``, and the aliases
    ``latest`` and ``env_steps_<N>``; an offline run keeps it for ``wandb sync``.
    """
    import wandb

    artifact = wandb.Artifact(f"{kind}-{wandb_run.id}", type=kind, metadata={"env_steps": env_steps})
    artifact.add_file(path)
    wandb_run.log_artifact(artifact, aliases=["latest", f"env_steps_{env_steps}"])


WANDB_BLOCK = 32768
WANDB_HEADER = 7  # b":W&B", a 2-byte magic number and a version byte
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: str) -> Iterator[Any]:
    """The records (``wandb_internal_pb2.Record``) of a W&B ``run-<id>.wandb`` file, a LevelDB-style log of 32 KiB
    blocks; a complete file ends with the ``exit`` record."""
    from wandb.proto import wandb_internal_pb2

    for payload in wandb_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def wandb_payloads(path: str) -> Iterator[bytes]:
    """The serialised records of a W&B ``run-<id>.wandb`` file, in order."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b":W&B":
        raise ValueError(f"{path!r} is not a W&B run file (no ':W&B' header)")
    position, pending = WANDB_HEADER, b""
    while position + 7 <= len(data):
        block_left = WANDB_BLOCK - position % WANDB_BLOCK
        if block_left < 7:
            position += block_left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
        else:
            position += block_left - 7 - length


def read_wandb_run(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The config (top-level key -> value) and the logged rows (metric name -> value) of a W&B run file.

    :param path: e.g. ``<run_dir>/wandb/offline-run-*/run-<id>.wandb``
    """
    config: dict[str, Any] = {}
    rows = []
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = record.history.item
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
        elif kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            config.update({item.key: json.loads(item.value_json) for item in updates})
    return config, rows
