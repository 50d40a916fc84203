"""ShiftProbeModule: loss/metrics, optimizer from a partial, initial weights kept and checkpointed."""

import functools

import pytest
import torch

from shiftprobe.errors import ShiftProbeError
from shiftprobe.lit.module import INITIAL_STATE_KEY, ShiftProbeModule
from shiftprobe.models.lab import LabCNN


def make_module(seed: int = 0, **kw) -> ShiftProbeModule:
    torch.manual_seed(seed)
    opt = functools.partial(torch.optim.Adam, lr=1e-3)
    return ShiftProbeModule(net=LabCNN(**kw), optimizer=opt, config={"seed": seed, "model": {"pool": "max"}})


def test_keeps_net_and_a_deep_copy_of_its_initial_state():
    module = make_module()
    assert isinstance(module.net, LabCNN)
    start = {k: v.clone() for k, v in module.net.state_dict().items()}
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(1.0)
    assert set(module.initial_net_state) == set(start)
    for k, v in start.items():
        assert torch.equal(module.initial_net_state[k], v)
    # the same init seed gives the same initial network
    again = make_module()
    for k, v in again.initial_net_state.items():
        assert torch.equal(module.initial_net_state[k], v)


def test_initial_state_goes_through_checkpoints():
    module = make_module()
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    other = make_module(seed=5)
    other.on_load_checkpoint(checkpoint)
    for k, v in checkpoint[INITIAL_STATE_KEY].items():
        assert torch.equal(other.initial_net_state[k], v)


def test_hparams_hold_the_config_not_the_net():
    module = make_module()
    assert "net" not in module.hparams and "optimizer" not in module.hparams
    assert module.hparams.config["seed"] == 0


def test_optimizer_built_from_partial():
    module = make_module()
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-3
    n_params = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n_params == sum(p.numel() for p in module.parameters())


def test_no_optimizer_is_a_clear_error():
    module = ShiftProbeModule(net=LabCNN())
    with pytest.raises(ShiftProbeError, match="optimizer"):
        module.configure_optimizers()


def test_training_step_loss_is_nll_of_log_probs():
    module = make_module()
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    loss = module.training_step((x, y), 0)
    expected = torch.nn.functional.nll_loss(module.net(x)[0], y)
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("bias", ["nan", "inf", "huge"])
def test_diverged_loss_stops_with_a_message(bias):
    module = make_module()
    values = {"nan": torch.full((10,), float("nan")), "inf": torch.full((10,), float("inf"))}
    with torch.no_grad():  # "huge": finite logits so large that the true class has probability ~e^-9e6
        module.net.fc2.bias.copy_(values.get(bias, torch.arange(10.0) * 1e6))
    x, y = torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ShiftProbeError) as err:
        module.training_step((x, y), 3)
    msg = str(err.value)
    assert "train/loss" in msg and "step 0" in msg and "optimizer.lr" in msg
