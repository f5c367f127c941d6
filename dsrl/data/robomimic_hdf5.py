"""Robomimic's hdf5 demonstration format, written and read.

Layout (as Robomimic's released ``low_dim_v15.hdf5`` files)::

    data.attrs["env_args"]   JSON: env_name, type (1 = robosuite), env_kwargs
    data.attrs["total"]      number of steps over all demos
    data/demo_<i>/obs/<key>  (L, key_dim) one array per observation key
    data/demo_<i>/actions    (L, action_dim)
    data/demo_<i>/rewards    (L,)
    data/demo_<i>/dones      (L,)
    data/demo_<i>/states     (L, sim_state_dim) flattened MuJoCo states
    data/demo_<i>.attrs["num_samples"] = L

Our scripted experts write it and a user's real file is read by the same
:func:`read_low_dim`, which concatenates the listed low-dimensional keys in
order (the observation the policy sees) into :class:`Trajectories`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import h5py
import numpy as np

from dsrl.data.trajectories import Trajectories, concatenate
from dsrl.files import write_atomic

ROBOSUITE_ENV_TYPE = 1


def write_demos(path: str, env_meta: dict[str, Any], demos: Sequence[dict[str, Any]]) -> None:
    """Write demonstrations to a Robomimic hdf5 file (replacing it).

    :param env_meta: env name and kwargs, stored as ``data.attrs["env_args"]``
    :param demos: per demo ``obs`` (a list of per-step dicts key -> array),
        ``actions`` (L, action_dim), ``rewards`` (L,), ``dones`` (L,),
        ``states`` (L, sim_state_dim)
    """
    write_atomic(path, lambda tmp: write_demo_file(tmp, env_meta, demos))


def write_demo_file(path: str, env_meta: dict[str, Any], demos: Sequence[dict[str, Any]]) -> None:
    """The body of :func:`write_demos`, written straight to ``path``."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(
            {"env_name": env_meta["env_name"], "type": ROBOSUITE_ENV_TYPE, "env_kwargs": env_meta["env_kwargs"]}
        )
        total = 0
        for i, demo in enumerate(demos):
            group = data.create_group(f"demo_{i}")
            length = len(demo["actions"])
            group.attrs["num_samples"] = length
            for key in demo["obs"][0]:
                group.create_dataset(f"obs/{key}", data=np.stack([np.asarray(o[key]) for o in demo["obs"]]))
            for key in ("actions", "rewards", "dones", "states"):
                group.create_dataset(key, data=np.asarray(demo[key]))
            total += length
        data.attrs["total"] = total


def demo_names(path: str, data: h5py.Group) -> list[str]:
    """The file's ``demo_<i>`` groups in index order; a file without any raises."""
    names = sorted((k for k in data if k.startswith("demo_")), key=lambda k: int(k.split("_", 1)[1]))
    if not names:
        raise ValueError(f"{path}: the 'data' group holds no demo_<i> groups")
    return names


def open_data(path: str) -> h5py.File:
    """Open a Robomimic hdf5 for reading; a missing file or one without a ``data`` group raises."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Robomimic hdf5 {path!r} does not exist")
    f = h5py.File(path, "r")
    if "data" not in f:
        f.close()
        raise ValueError(f"{path}: no 'data' group; not a Robomimic demonstration file")
    return f


def read_env_meta(path: str) -> dict[str, Any]:
    """The ``env_args`` JSON of a Robomimic hdf5 (env name, type, env kwargs)."""
    with open_data(path) as f:
        if "env_args" not in f["data"].attrs:
            raise ValueError(f"{path}: data has no 'env_args' attribute")
        return json.loads(f["data"].attrs["env_args"])


def read_low_dim(path: str, obs_keys: Sequence[str]) -> Trajectories:
    """Read every demo's low-dim observations (``obs_keys`` concatenated in order), actions, rewards and dones.

    :return: trajectories in simulator units; ``terminals`` are the file's ``dones``
    """
    episodes = []
    with open_data(path) as f:
        for name in demo_names(path, f["data"]):
            demo = f["data"][name]
            for key in ("actions", "rewards", "dones"):
                if key not in demo:
                    raise ValueError(f"{os.path.basename(path)}: {name} lacks {key!r}")
            missing = [k for k in obs_keys if f"obs/{k}" not in demo]
            if missing:
                raise ValueError(
                    f"{os.path.basename(path)}: {name} lacks obs key {missing[0]!r}; it has {sorted(demo['obs'])}"
                )
            length = len(demo["actions"])
            states = np.concatenate([np.asarray(demo[f"obs/{k}"]).reshape(length, -1) for k in obs_keys], axis=1)
            arrays = {k: demo[k][()] for k in ("actions", "rewards")}
            episodes.append(dict(arrays, states=states, terminals=demo["dones"][()]))
    return concatenate(episodes).validate(path)
