#!/usr/bin/env bash
# Build the environment the LeRobot adapter runs in (.venv-lerobot at the repo root), then check the adapter.
#
# LeRobot 0.4.4 needs torch < 2.11 and numpy 2, the main install pins torch 2.13 and numpy < 2 (robosuite 1.4.1),
# so LeRobot gets its own environment: torch 2.9.1 + torchvision 0.24.1 (PyPI's build; several GB on x86_64),
# lerobot, and dsrl installed without its Robomimic pins. Robomimic tasks are not available in it; PushT, Gym and
# Fetch are.
#
#   scripts/lerobot/make_env.sh            # build (or update) .venv-lerobot, then run check_adapter.py
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv .venv-lerobot
. .venv-lerobot/bin/activate
pip install "torch==2.9.1" "torchvision==0.24.1" "lerobot==0.4.4"
pip install --no-deps -e .
pip install "stable-baselines3>=2.4,<3" "hydra-core>=1.3,<1.4" "omegaconf>=2.3" "tensorboard>=2.14" "h5py>=3.9" \
  tqdm rich pyyaml "imageio-ffmpeg>=0.4" "scipy>=1.10" "matplotlib>=3.7" "gymnasium[mujoco]>=1.1,<2" \
  "gym-pusht==0.1.8" "gymnasium-robotics==1.4.2" "mujoco==3.3.7"
python scripts/lerobot/check_adapter.py
