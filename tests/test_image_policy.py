"""Image-conditioned base policies: encoder, crops, checkpoint round trip, config errors."""

import numpy as np
import pytest
import torch
from conftest import SMALL_POLICY

from dsrl.base_policies import build_base_policy, load_base_policy
from dsrl.base_policies.checkpoint import save_checkpoint
from dsrl.base_policies.image_encoder import ImageEncoder, SpatialSoftmax

IMAGE_POLICY = dict(
    SMALL_POLICY,
    obs_dim=3 * 16 * 16 + 2,
    cond_steps=2,
    image_shape=[3, 16, 16],
    image_encoder=dict(channels=[4, 8], feature_dim=6, crop_size=12, groups=2),
)


def image_obs(batch, cond_steps=2, seed=0):
    return (
        torch.rand(batch, cond_steps * IMAGE_POLICY["obs_dim"], generator=torch.Generator().manual_seed(seed)) * 2 - 1
    )


@pytest.mark.parametrize("kind", ["diffusion", "flow"])
def test_image_policy_round_trips_through_a_dppo_checkpoint(tmp_path, kind):
    torch.manual_seed(0)
    spec = dict(IMAGE_POLICY, type=kind)
    policy = build_base_policy(spec).freeze()
    assert policy.feature_dim == 2 * (6 + 2), "per observation step: 6 image features and the 2 state numbers"
    path = str(tmp_path / "image.pt")
    save_checkpoint(path, policy, policy, epoch=1)
    loaded = load_base_policy(dict(spec, checkpoint=path))
    obs, noise = image_obs(5), torch.randn(5, 4, 2)
    torch.testing.assert_close(loaded(obs, noise), policy(obs, noise))
    state = obs.view(5, 2, -1)[:, :, -2:]
    torch.testing.assert_close(policy.encode(obs).view(5, 2, 8)[:, :, 6:], state)
    other = build_base_policy(dict(spec, image_encoder=dict(IMAGE_POLICY["image_encoder"], channels=[4, 16])))
    save_checkpoint(str(tmp_path / "other.pt"), other, other, epoch=1)
    with pytest.raises(ValueError, match="image_encoder.backbone"):
        load_base_policy(dict(spec, checkpoint=str(tmp_path / "other.pt")))


def test_training_crops_randomly_and_evaluation_crops_the_centre():
    torch.manual_seed(0)
    encoder = ImageEncoder([1, 10, 10], channels=[2], crop_size=8, groups=1)
    images = torch.arange(100.0).view(1, 1, 10, 10).expand(64, 1, 10, 10)
    encoder.eval()
    centre = encoder.crop(images)
    assert centre.shape == (64, 1, 8, 8) and torch.equal(centre[0, 0], images[0, 0, 1:9, 1:9])
    encoder.train()
    crops = encoder.crop(images)
    corners = {int(c[0, 0, 0]) for c in crops}
    assert crops.shape == (64, 1, 8, 8) and corners <= {0, 1, 2, 10, 11, 12, 20, 21, 22} and len(corners) >= 5
    for crop in crops:
        top, left = divmod(int(crop[0, 0, 0]), 10)
        assert torch.equal(crop[0], images[0, 0, top : top + 8, left : left + 8]), "each crop is one contiguous window"


def test_spatial_softmax_finds_the_peak():
    heat = torch.full((1, 1, 5, 9), -50.0)
    heat[0, 0, 4, 0] = 50.0
    np.testing.assert_allclose(SpatialSoftmax()(heat).numpy(), [[-1.0, 1.0]], atol=1e-4)


def test_image_policy_refuses_state_observations():
    with pytest.raises(ValueError, match=r"base_policy.obs_dim=5 is smaller than base_policy.image_shape \[3, 16"):
        build_base_policy(dict(IMAGE_POLICY, obs_dim=5))
    with pytest.raises(ValueError, match="image_encoder.pool='max'"):
        build_base_policy(dict(IMAGE_POLICY, image_encoder=dict(pool="max")))


def test_offline_image_transitions_hold_the_policys_features_of_each_steps_observation(tmp_path, monkeypatch):
    import dsrl.data.offline
    from dsrl.data.offline import agent_observations, chunk_transitions
    from dsrl.data.trajectories import Trajectories, load_dppo

    torch.manual_seed(0)
    policy = build_base_policy(dict(IMAGE_POLICY, cond_steps=1)).freeze()
    rng = np.random.default_rng(0)
    normalizer = Trajectories(
        states=rng.uniform(0, 512, (5, 2)).astype(np.float32),
        actions=rng.uniform(-1, 1, (5, 2)).astype(np.float32),
        rewards=np.arange(5, dtype=np.float32),
        terminals=np.array([0, 0, 1, 0, 0], bool),
        traj_lengths=np.array([3, 2]),
        images=rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8),
    ).save_dppo(str(tmp_path))
    data = load_dppo(str(tmp_path / "train.npz"))  # states normalised, images as stored
    monkeypatch.setattr(dsrl.data.offline, "EMBED_BATCH", 2)  # three batches
    features = agent_observations(data, normalizer, policy)
    full_obs = np.concatenate([data.images.reshape(5, -1) / 255.0 * 2 - 1, data.states], axis=1)  # as the env's
    expected = policy.encode(torch.as_tensor(full_obs, dtype=torch.float32)).numpy()
    assert features.shape == (5, policy.feature_dim)
    np.testing.assert_allclose(features, expected, atol=1e-5)
    transitions = chunk_transitions(data, features, chunk=2)
    np.testing.assert_array_equal(transitions["next_obs"], features[[2, 2, 2, 4, 4]])
