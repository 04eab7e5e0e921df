"""TPGM and FTP keep every constrained tensor within its radius of θ0; hand-computed projection cases."""

from __future__ import annotations

import pytest
import torch

from tests.unit.ft_methods.helpers import run
from workers.ft_methods import create_method
from workers.ft_methods.ftp import FTPAdamW
from workers.ft_methods.projection import deviation_norm, project_onto_ball
from workers.prepared import PreparedTask, build_model

TOL = 1e-5


def test_project_onto_ball_by_hand() -> None:
    w0 = torch.zeros(2)
    assert torch.allclose(
        project_onto_ball(torch.tensor([3.0, 4.0]), w0, 1.0, "l2"), torch.tensor([0.6, 0.8])
    )
    inside = torch.tensor([0.3, 0.4])
    assert torch.equal(project_onto_ball(inside, w0, 1.0, "l2"), inside)  # untouched, bit for bit
    # mars: each row's L1 norm is capped separately
    w = torch.tensor([[3.0, -1.0], [0.2, 0.1]])
    out = project_onto_ball(w, torch.zeros(2, 2), 2.0, "mars")
    assert torch.allclose(out, torch.tensor([[1.5, -0.5], [0.2, 0.1]]))
    assert deviation_norm(w, "mars").flatten().tolist() == pytest.approx([4.0, 0.3])


def _distances(prepared: PreparedTask, model: torch.nn.Module, norm: str) -> dict[str, torch.Tensor]:
    start = build_model(prepared, "random", 0, torch.device("cpu")).state_dict()
    return {
        n: deviation_norm(p.detach() - start[n], norm)  # type: ignore[arg-type]
        for n, p in model.named_parameters()
        if n.startswith("backbone.")
    }


@pytest.mark.parametrize("norm", ["l2", "mars"])
def test_tpgm_fixed_radius_holds_after_steps(prepared: PreparedTask, norm: str) -> None:
    method = create_method("tpgm", {"mode": "fixed", "radius_fraction": 0.05, "norm": norm})
    result = run(method, prepared, steps=4, lr=5e-2)
    pretrained = prepared.data.backbone.state_dict()
    dist = _distances(prepared, result.model, norm)
    for n, d in dist.items():
        radius = 0.05 * deviation_norm(pretrained[n.removeprefix("backbone.")], norm)  # type: ignore[arg-type]
        assert (d <= radius * (1 + TOL) + 1e-7).all(), n
    assert any((d > 0).any() for d in dist.values())  # it did move
    # the head is not constrained: with lr 5e-2 it moves far from its init
    start = build_model(prepared, "random", 0, torch.device("cpu")).state_dict()
    assert float((result.model.head.weight.detach() - start["head.weight"]).norm()) > 0.1


def test_tpgm_learned_radius_holds_after_steps(prepared: PreparedTask) -> None:
    method = create_method("tpgm", {"mode": "learned", "proj_freq": 2, "proj_iters": 3})
    result = run(method, prepared, steps=5, lr=5e-2)  # step 5 is not a projection step: finalize projects
    radii = method.radii()  # type: ignore[attr-defined]
    dist = _distances(prepared, result.model, "l2")
    assert set(radii) == set(dist)
    for n, d in dist.items():
        assert float(d) <= float(radii[n]) * (1 + TOL) + 1e-7, n
    assert result.info["tpgm/radius"] == pytest.approx({n: float(r) for n, r in radii.items()})


def test_ftp_radius_update_by_hand() -> None:
    # L(w) = −w[0, 0] (gradient (−1, 0)), θ0 = 0, lr 0.1, one row, mars norm.
    w = torch.nn.Parameter(torch.zeros(1, 2))
    opt = FTPAdamW([{"params": [w], "anchors": [torch.zeros(1, 2)]}], lr=0.1)

    def step() -> None:
        opt.zero_grad()
        (-w[0, 0]).backward()
        opt.step()

    step()  # γ1 = 1e-8: Adam's step to (0.1, 0) is scaled back to γ1·c/‖c‖
    assert float(w.detach()[0, 0]) == pytest.approx(1e-8, rel=1e-4)
    step()
    # ∇γ = ⟨g2, c1⟩/‖c1‖ = −1; Adam on γ with t = 2: m̂ = −0.1/0.19, v̂ = 0.001/0.001999
    gamma2 = 1e-8 + 1e-2 * (0.1 / 0.19) / ((0.001 / 0.001999) ** 0.5 + 1e-8)
    assert float(opt.state[w]["ftp_gamma"]) == pytest.approx(gamma2, rel=1e-5)
    assert float(w.detach()[0, 0]) == pytest.approx(gamma2, rel=1e-5)  # ‖c2‖ ≈ 0.1 > γ2: projected onto γ2
    assert float(w.detach()[0, 1]) == 0.0


def test_ftp_keeps_rows_within_the_trained_radius(prepared: PreparedTask) -> None:
    method = create_method("ftp")
    result = run(method, prepared, steps=6, lr=5e-2)
    opt = method._optimizer  # type: ignore[attr-defined]
    names = dict(result.model.named_parameters())
    radii = {n: opt.radii()[id(p)] for n, p in names.items() if id(p) in opt.radii()}
    assert set(radii) == {n for n in names if n.startswith("backbone.")}  # the head is excluded
    for n, d in _distances(prepared, result.model, "mars").items():
        assert (d <= radii[n] * (1 + TOL) + 1e-7).all(), n
    assert set(result.info["ftp/radius"]) == set(radii)
