"""Conformance suite run over every registered loss term, plus hand-computed cases."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from autoft_service.errors import DuplicateRegistration, UnknownLossTerm
from workers.loss_terms import LOSS_TERMS, LossInputs, LossTerm, TextTower, register_loss_term
from workers.objective import Objective, snapshot_params


def _inputs(seed: int = 0, requires_grad: bool = True) -> tuple[LossInputs, nn.Module]:
    """A toy dual encoder: ``model`` is the image tower (its output is both features and logits), a
    fixed embedding table the text tower; every term gets everything it may need."""
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    init = snapshot_params(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(5, 4)
    logits = model(x)
    y = torch.tensor([0, 1, 2, 1, 0])
    params = dict(model.named_parameters())
    captions = nn.Embedding(3, 3).requires_grad_(False)
    text = TextTower(captions, torch.arange(3), torch.tensor(2.0))
    n = sum(p.numel() for p in init.values())
    return LossInputs(logits, y, params, init, n, features=logits, text=text), model


@pytest.mark.parametrize("name", LOSS_TERMS.names())
def test_term_contract(name: str) -> None:
    inputs, model = _inputs()
    before_logits = inputs.logits.detach().clone()
    before_init = {k: v.clone() for k, v in inputs.init_params.items()}
    term = LOSS_TERMS.get(name)()
    value = term(inputs)
    assert isinstance(term, LossTerm) and term.summary
    assert value.dim() == 0 and torch.isfinite(value)
    assert value.item() >= 0
    value.backward()
    grads = [p.grad for p in model.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{name} has no gradient"
    assert torch.equal(inputs.logits.detach(), before_logits)
    assert all(torch.equal(inputs.init_params[k], v) for k, v in before_init.items())


@pytest.mark.parametrize("name", LOSS_TERMS.names())
def test_term_is_finite_on_extreme_logits(name: str) -> None:
    inputs, _ = _inputs()
    extreme = dataclasses.replace(inputs, logits=inputs.logits * 1e4, features=inputs.logits * 1e4)
    assert torch.isfinite(LOSS_TERMS.get(name)()(extreme))


def test_hand_computed_values() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.5], [0.0, 1.0, 3.0]])
    y = torch.tensor([0, 1])
    w = torch.tensor([1.0, -2.0])
    w0 = torch.tensor([0.5, 0.0])
    inputs = LossInputs(logits, y, {"w": w}, {"w": w0}, 2)
    get = lambda n: float(LOSS_TERMS.get(n)()(inputs))  # noqa: E731
    # hinge: ex0: relu(0-2+1)+relu(.5-2+1)=0; ex1: relu(0-1+1)+relu(3-1+1)=3 → mean 1.5
    assert get("hinge") == pytest.approx(1.5)
    # dcm: only ex1 is wrong (argmax 2 != 1): its entropy / 2
    p1 = torch.softmax(logits[1], 0)
    assert get("dcm") == pytest.approx(float(-(p1 * p1.log()).sum()) / 2, rel=1e-5)
    assert get("l1_zero") == pytest.approx(1.5)  # (1 + 2) / 2
    assert get("l2_zero") == pytest.approx(2.5)  # (1 + 4) / 2
    assert get("l1_init") == pytest.approx(1.25)  # (0.5 + 2) / 2
    assert get("l2_init") == pytest.approx(2.125)  # (0.25 + 4) / 2
    assert get("entropy") > 0
    assert get("ce") == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y)))


def test_uniform_logits_have_max_entropy() -> None:
    inputs = LossInputs(torch.zeros(3, 4), torch.tensor([0, 1, 2]), {}, {}, 1)
    assert float(LOSS_TERMS.get("entropy")()(inputs)) == pytest.approx(math.log(4))


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(DuplicateRegistration):

        @register_loss_term("ce")
        class Other(LossTerm):  # noqa: F841
            def __call__(self, inputs: LossInputs) -> torch.Tensor:
                return inputs.logits.sum()


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(UnknownLossTerm, match="valid: ce, dcm"):
        LOSS_TERMS.get("nope", field="search.loss_terms.0")


def test_objective_returns_total_and_components() -> None:
    _, model = _inputs()
    init = snapshot_params(model)
    obj = Objective({"ce": 1.0, "l2_init": 2.0, "hinge": 0.0}, model, init)
    out = obj(model(torch.randn(5, 4)), torch.tensor([0, 1, 2, 1, 0]))
    assert set(out) == {"loss", "loss/ce", "loss/l2_init"}  # a zero weight is never evaluated
    assert float(out["loss"]) == pytest.approx(float(out["loss/ce"] + 2.0 * out["loss/l2_init"]))


def test_objective_refuses_a_theta0_view() -> None:
    model = nn.Linear(2, 2)
    views = {n: p.detach() for n, p in model.named_parameters()}  # detach() shares storage
    with pytest.raises(ValueError, match="shares storage"):
        Objective({"l2_init": 1.0}, model, views)


def test_distance_to_init_is_nonzero_after_steps() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    init = snapshot_params(model)
    obj = Objective({"ce": 1.0, "l1_init": 1.0, "l2_init": 1.0}, model, init)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    first = obj(model(x), y)
    assert float(first["loss/l1_init"]) == 0.0
    for _ in range(3):
        out = obj(model(x), y)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    out = obj(model(x), y)
    assert float(out["loss/l1_init"]) > 1e-4 and float(out["loss/l2_init"]) > 1e-8


def test_flyp_term_is_the_clip_loss_against_class_captions() -> None:
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = TextTower(lambda tok: table[tok], torch.tensor([0, 1]), torch.tensor(0.0))  # scale e^0 = 1
    y = torch.tensor([0, 1, 0])
    got = LOSS_TERMS.get("flyp")()(LossInputs(image, y, {}, {}, 1, features=image, text=text))
    i = torch.nn.functional.normalize(image, dim=-1)
    sim = i @ table[y].T  # captions already unit norm
    want = (torch.nn.functional.cross_entropy(sim, torch.arange(3)) +
            torch.nn.functional.cross_entropy(sim.T, torch.arange(3))) / 2  # fmt: skip
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_flyp_term_without_a_text_tower_is_refused() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="text tower"):
        Objective({"ce": 1.0, "flyp": 0.5}, model, snapshot_params(model))
    with pytest.raises(ValueError, match="text tower"):
        LOSS_TERMS.get("flyp")()(LossInputs(torch.zeros(2, 2), torch.tensor([0, 1]), {}, {}, 1))
