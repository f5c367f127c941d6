"""CUDA-graph replay of DSRL-NA's gradient computations (run where a GPU is; skipped on CPU-only machines)."""

import pytest
import torch
from conftest import SMALL_POLICY
from test_sac_diffusion_noise import assert_gradient_steps_give_the_eager_gradients, make_model
from torch import nn
from torch._inductor import config as inductor_config

from dsrl.algorithms.graphed_step import GraphedStep
from dsrl.base_policies import build_base_policy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_graphed_step_replays_the_function_on_new_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1)).cuda()

    def gradients(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss = (net(x) ** 2).mean()
        return (*torch.autograd.grad(loss, list(net.parameters())), loss.detach())

    graphed = GraphedStep(gradients, warmup=2)
    for _ in range(6):
        x = torch.randn(32, 5, device="cuda")
        got = [t.clone() for t in graphed(x)]
        expected = gradients(x)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)
        with torch.no_grad():
            net[0].weight.add_(0.1)  # parameters change in place between calls, as optimizers change them
    assert graphed.graph is not None and graphed.calls == 2
    with pytest.raises(ValueError, match=r"input of shape \(8, 5\), but the graph was captured with \(32, 5\)"):
        graphed(torch.randn(8, 5, device="cuda"))


@pytest.mark.parametrize("torch_compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("precompute", [False, True], ids=["fresh_noise", "pairs"])
def test_graphed_dsrl_na_gradients_equal_eager_ones(precompute, torch_compile):
    torch.manual_seed(0)
    policy = build_base_policy(dict(SMALL_POLICY, obs_dim=2)).freeze().cuda()
    model = make_model(
        policy,
        device="cuda",
        cuda_graphs=True,
        torch_compile=torch_compile,
        precompute_distillation=precompute,
        buffer_size=200,
    )
    with inductor_config.patch(fallback_random=True):  # compiled random draws are then eager's
        model.learn(60)  # 20 train calls of 2 gradient steps: both graphs are captured and replayed
    sac_graph, distillation_graph = model._gradient_steps
    assert sac_graph.graph is not None and distillation_graph.graph is not None
    assert_gradient_steps_give_the_eager_gradients(model)
