from setuptools import find_packages, setup

setup(
    name="dsrl",
    version="0.1.0",
    description="DSRL: steering pretrained diffusion and flow policies with latent-noise reinforcement learning",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["dsrl", "dsrl.*"]),
    package_data={"dsrl.conf": ["*.yaml", "recipe/*.yaml", "hydra/launcher/*.yaml"]},
    install_requires=[
        "torch>=2.2",
        "numpy>=1.24,<2",  # robomimic 0.3.0 / robosuite 1.4.1 need numpy 1.x
        "gymnasium[mujoco]>=1.0,<2",
        "mujoco==3.3.7",  # mujoco 4.x breaks robosuite 1.4.1
        "stable-baselines3>=2.4,<3",
        "hydra-core>=1.3,<1.4",
        "hydra-joblib-launcher>=1.2",  # local parallel seeds: hydra/launcher=local_seeds
        "hydra-submitit-launcher>=1.2",  # SLURM clusters: hydra/launcher=slurm
        "omegaconf>=2.3",
        "wandb>=0.17",
        "tensorboard>=2.14",
        "h5py>=3.9",
        "tqdm",
        "rich",
        "pyyaml",
        "imageio>=2.30",
        "imageio-ffmpeg>=0.4",  # mp4 evaluation videos
        "scipy>=1.10",
        "matplotlib>=3.7",
        "robosuite==1.4.1",  # the version DPPO's env_meta files were made with
        "robomimic==0.3.0",
        "gymnasium-robotics==1.4.2",  # Fetch tasks
        "gym-pusht==0.1.8",  # PushT (state and pixels)
    ],
    # LeRobot has no extra here: with this package's Robomimic pins pip cannot resolve it (numpy<2 and mujoco 3.3.7
    # against LeRobot's torch<2.11 and its numpy 2 dependencies); scripts/lerobot/make_env.sh builds its environment.
    extras_require={"test": ["pytest>=7"]},
)
