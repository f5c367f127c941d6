#!/usr/bin/env bash
# Regenerate every shipped base policy in checkpoints/ from scratch (datasets go to data/).
# Each step is one command of scripts/make_dataset.py, scripts/pretrain.py and scripts/evaluate.py;
# the settings here are the ones the shipped checkpoints were made with (see each card.yaml).
# Robomimic and Gym steps take hours on a 2-core CPU; run the ones you need.
set -euo pipefail
cd "$(dirname "$0")/.."
task="${1:-all}"

if [[ "$task" == steering || "$task" == all ]]; then
  python scripts/make_dataset.py steering --out data/steering
  for type in diffusion flow; do
    python scripts/pretrain.py --config-path=cfg/pretrain --config-name=steering.yaml dataset=data/steering \
      policy_type=$type overwrite=true
  done
fi

# robomimic TASK BC_STEPS SAVE_EVERY EVAL_EPISODES: scripted demos -> behaviour cloning -> 100-episode evaluation.
# The checkpoints are early on purpose (as in the DSRL paper), so that DSRL has room to improve them.
robomimic() {
  python scripts/make_dataset.py robomimic --task "$1" --demos 150 --out "data/robomimic/$1"
  python scripts/pretrain.py --config-path=cfg/pretrain --config-name="robomimic_$1.yaml" dataset="data/robomimic/$1" \
    train.steps="$2" train.save_every="$3" eval.n_episodes="$4" eval.n_envs=4 overwrite=true
  python scripts/evaluate.py --config "cfg/robomimic/dsrl_$1.yaml" --episodes 100 --n-envs 4 --seed 0 \
    --json "checkpoints/robomimic/$1/diffusion/evaluation.json"
}
if [[ "$task" == lift || "$task" == all ]]; then robomimic lift 1500 250 50; fi
if [[ "$task" == can || "$task" == all ]]; then robomimic can 10000 2000 20; fi
if [[ "$task" == square || "$task" == all ]]; then robomimic square 30000 5000 20; fi
# flow SUITE TASK BC_STEPS SAVE_EVERY EVAL_EPISODES: a flow policy from the demonstrations its diffusion policy was
# cloned from (run after that task; a Gym dataset's summary.json is copied along) -> 100-episode evaluation.
flow() {
  python scripts/pretrain.py --config-path=cfg/pretrain --config-name="$1_$2.yaml" dataset="data/$1/$2" \
    policy_type=flow train.steps="$3" train.save_every="$4" eval.n_episodes="$5" eval.n_envs=4 overwrite=true
  if [[ -f "data/$1/$2/summary.json" ]]; then cp "data/$1/$2/summary.json" "checkpoints/$1/$2/flow/dataset_summary.json"; fi
  python scripts/evaluate.py --config "cfg/$1/dsrl_$2.yaml" --episodes 100 --n-envs 4 --seed 0 \
    --json "checkpoints/$1/$2/flow/evaluation.json" base_policy.type=flow \
    base_policy.checkpoint="checkpoints/$1/$2/flow/state.pt" \
    base_policy.normalization="checkpoints/$1/$2/flow/normalization.npz"
}
if [[ "$task" == can_flow || "$task" == all ]]; then flow robomimic can 10000 2000 20; fi

# fetch NAME TASK BC_STEPS: scripted demos (only successes) -> behaviour cloning -> 100-episode evaluation.
fetch() {
  python scripts/make_dataset.py fetch --task "$2" --demos 100 --out "data/fetch/$1"
  python scripts/pretrain.py --config-path=cfg/pretrain --config-name="fetch_$1.yaml" dataset="data/fetch/$1" \
    train.steps="$3" train.save_every=250 eval.n_episodes=50 eval.n_envs=4 overwrite=true
  python scripts/evaluate.py --config "cfg/fetch/dsrl_$1.yaml" --episodes 100 --n-envs 4 --seed 0 \
    --json "checkpoints/fetch/$1/diffusion/evaluation.json"
}
if [[ "$task" == pick_and_place || "$task" == all ]]; then fetch pick_and_place FetchPickAndPlace-v4 1000; fi
if [[ "$task" == push || "$task" == all ]]; then fetch push FetchPush-v4 1000; fi

# pusht NAME OBS_TYPE CONFIG DEMOS SEEDS: DEMOS scripted demos with each expert seed 0..SEEDS-1 (one fixed expert
# style acting with 10 px noise, its noise-free targets recorded; successes at 90% goal coverage), joined into
# data/pusht/NAME -> behaviour cloning (steps and batch in cfg/pretrain/pusht_NAME.yaml) -> 100-episode evaluation.
# The seeds' datasets are independent: with the cores, make them in parallel.
pusht() {
  local parts=()
  for ((seed = 0; seed < $5; seed++)); do
    python scripts/make_dataset.py pusht --obs-type "$2" --out "data/pusht/$1_seed$seed" --seed "$seed" --noise 10 \
      --no-vary-style --success-threshold 0.9 --demos "$4"
    parts+=("data/pusht/$1_seed$seed")
  done
  python scripts/make_dataset.py join --out "data/pusht/$1" "${parts[@]}"
  python scripts/pretrain.py --config-path=cfg/pretrain --config-name="pusht_$1.yaml" dataset="data/pusht/$1" \
    overwrite=true
  python scripts/evaluate.py --config "cfg/pusht/$3.yaml" --episodes 100 --n-envs 4 --seed 0 \
    --json "checkpoints/pusht/$1/diffusion/evaluation.json"
}
if [[ "$task" == pusht_state || "$task" == all ]]; then pusht state environment_state_agent_pos dsrl_pusht 300 2; fi
if [[ "$task" == pusht_pixels || "$task" == all ]]; then pusht pixels pixels_agent_pos dsrl_pusht_pixels 300 2; fi

# gym NAME ENV_ID EXPERT_STEPS: SB3 SAC expert for EXPERT_STEPS steps; the snapshot nearest a third of its best
# return collects 200k steps (D4RL "medium"); behaviour cloning; 100-episode evaluation.
gym() {
  python scripts/make_dataset.py gym --env "$2" --out "data/gym/$1" --expert-steps "$3"
  python scripts/pretrain.py --config-path=cfg/pretrain --config-name="gym_$1.yaml" dataset="data/gym/$1" \
    train.steps=5000 train.save_every=2500 eval.n_episodes=10 eval.n_envs=4 overwrite=true
  cp "data/gym/$1/summary.json" "checkpoints/gym/$1/diffusion/dataset_summary.json"
  python scripts/evaluate.py --config "cfg/gym/dsrl_$1.yaml" --episodes 100 --n-envs 4 --seed 0 \
    --json "checkpoints/gym/$1/diffusion/evaluation.json"
}
if [[ "$task" == hopper || "$task" == all ]]; then gym hopper Hopper-v5 200000; fi
if [[ "$task" == hopper_flow || "$task" == all ]]; then flow gym hopper 5000 2500 10; fi
if [[ "$task" == walker2d || "$task" == all ]]; then gym walker2d Walker2d-v5 200000; fi
if [[ "$task" == halfcheetah || "$task" == all ]]; then gym halfcheetah HalfCheetah-v5 150000; fi
