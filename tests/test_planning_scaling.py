"""Scaling laws against their papers: frontier = argmin L(N, D) on C = 6ND, Epoch's ~20, Kaplan's table 6."""

from __future__ import annotations

import json
import math

import pytest

from monitor.cli import main
from monitor.errors import InputError
from monitor.planning.scaling import (
    CHINCHILLA,
    EPOCH,
    KAPLAN,
    PF_DAY_FLOPS,
    assess_known_runs,
    assess_run,
    compare_laws,
    compute_from_budget,
    compute_optimal,
    optimal_tokens_for_params,
)


def _grid_argmin(law: object, compute: float) -> float:
    """Brute force: the N on a fine log grid minimising L(N, C/(6N)) (independent of the closed form)."""
    best_n, best_loss = 0.0, math.inf
    for i in range(20001):
        n = 10 ** (3 + i * (math.log10(compute / 6) - 6) / 20000)
        loss = law.loss(n, compute / (6 * n))  # type: ignore[attr-defined]
        if loss < best_loss:
            best_n, best_loss = n, loss
    return best_n


@pytest.mark.parametrize("law", [CHINCHILLA, EPOCH])
@pytest.mark.parametrize("compute", [1e20, 5.76e23, 1e25])
def test_closed_form_frontier_is_the_minimum(law: object, compute: float) -> None:
    best = law.optimal(compute)  # type: ignore[attr-defined]
    assert best.params == pytest.approx(_grid_argmin(law, compute), rel=2e-3)
    assert 6 * best.params * best.tokens == pytest.approx(compute)


def test_chinchilla_constants_and_g() -> None:
    # G = (αA/βB)^(1/(α+β)) with the printed constants
    g = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    assert pytest.approx(g) == CHINCHILLA.G
    assert CHINCHILLA.loss(70e9, 1.4e12) == pytest.approx(1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28)


def test_epoch_is_about_20_tokens_per_parameter() -> None:
    for compute in (1e22, 1e23, 1e24):
        assert 15 <= EPOCH.optimal(compute).tokens_per_param <= 25


def test_kaplan_table6_allocation() -> None:
    one = KAPLAN.optimal(PF_DAY_FLOPS)
    assert one.params == pytest.approx(1.3e9)
    assert KAPLAN.optimal(1000 * PF_DAY_FLOPS).params == pytest.approx(1.3e9 * 1000**0.73)
    # eq. 1.5 at D → ∞ reduces to L(N) = (N_c/N)^α_N (table 2)
    assert KAPLAN.loss(1e9, 1e30) == pytest.approx((6.4e13 / 1e9) ** 0.076, rel=1e-6)


def test_optimal_tokens_for_params_inverts_the_frontier() -> None:
    for law in ("chinchilla", "epoch", "kaplan"):
        alloc = compute_optimal(3e23, law)
        assert optimal_tokens_for_params(alloc.params, law) == pytest.approx(alloc.tokens, rel=1e-9)


def test_known_run_verdicts() -> None:
    by_epoch = {r.name: r for r in assess_known_runs("epoch")}
    assert by_epoch["GPT-3 175B"].verdict == "under-trained"
    assert by_epoch["Gopher 280B"].verdict == "under-trained"
    assert by_epoch["Chinchilla 70B"].verdict == "near-optimal"
    assert by_epoch["Llama-3-8B"].verdict == "over-trained"
    assert by_epoch["GPT-3 175B"].tokens_per_param == pytest.approx(300 / 175)
    assert by_epoch["Chinchilla 70B"].compute == pytest.approx(6 * 70e9 * 1.4e12)
    # the compute-optimal alternative spends the same compute and predicts a loss no higher
    for run in by_epoch.values():
        assert run.optimal.compute == pytest.approx(run.compute)
        assert run.optimal.predicted_loss <= run.predicted_loss + 1e-12
    gpt3 = {r.name: r for r in assess_known_runs("chinchilla")}["GPT-3 175B"]
    assert gpt3.verdict == "under-trained"


def test_budget_to_compute() -> None:
    b = compute_from_budget(1e6, 2.0, 989.4e12, 0.4, num_devices=64)
    assert b.device_hours == 5e5
    assert b.wall_clock_hours == pytest.approx(5e5 / 64)
    assert b.compute == pytest.approx(5e5 * 3600 * 989.4e12 * 0.4)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: compute_optimal(0), "--compute"),
        (lambda: compute_optimal(-1e20), "--compute"),
        (lambda: compute_optimal(float("nan")), "--compute"),
        (lambda: compute_optimal(float("inf")), "--compute"),
        (lambda: compute_optimal(1e23, "hoffmann"), "--law"),
        (lambda: compute_from_budget(0, 2, 1e15, 0.4), "--budget-usd"),
        (lambda: compute_from_budget(-5, 2, 1e15, 0.4), "--budget-usd"),
        (lambda: compute_from_budget(float("nan"), 2, 1e15, 0.4), "--budget-usd"),
        (lambda: compute_from_budget(1e6, 2, 1e15, 1.2), "--mfu"),
        (lambda: compute_from_budget(1e6, 2, 1e15, 0), "--mfu"),
        (lambda: compute_from_budget(1e6, 0, 1e15, 0.4), "--price-per-hour"),
        (lambda: assess_run(7e9, -1), "--tokens"),
    ],
)
def test_bad_input_names_the_field(call: object, field: str) -> None:
    with pytest.raises(InputError) as err:
        call()  # type: ignore[operator]
    assert err.value.field == field and err.value.fix


def test_cli_scaling_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scaling", "--compute", "5.76e23", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"params", "tokens", "predicted_loss"} <= set(out)
    assert out["params"] == pytest.approx(CHINCHILLA.optimal(5.76e23).params)
    assert main(["scaling", "--compute", "1e23", "--law", "kaplan", "--compare", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [a["law"] for a in out["compare"]] == ["chinchilla", "epoch", "kaplan"]
    assert out["compare"] == json.loads(json.dumps([a.model_dump() for a in compare_laws(1e23)]))


def test_cli_scaling_budget_run_and_known_runs(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["scaling", "--budget-usd", "1e6", "--gpu", "H100", "--mfu", "0.4", "--price-per-hour", "2",
            "--num-gpus", "64", "--params", "7e9", "--tokens", "2e12", "--known-runs", "--json"]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["budget"]["compute"] == pytest.approx(
        5e5 * 3600 * out["budget"]["peak_flops_per_device"] * 0.4
    )
    assert out["tokens"] * out["params"] * 6 == pytest.approx(out["budget"]["compute"])
    assert out["run"]["tokens_per_param"] == pytest.approx(2e12 / 7e9)
    assert {r["name"] for r in out["known_runs"]} >= {
        "GPT-3 175B",
        "Gopher 280B",
        "Chinchilla 70B",
        "Llama-3-8B",
    }


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--compute", "0"], "--compute"),
        (["--compute", "nan"], "--compute"),
        (["--compute", "1e23", "--law", "moore"], "--law"),
        (["--budget-usd", "-1", "--gpu", "H100", "--mfu", "0.4", "--price-per-hour", "2"], "--budget-usd"),
        (["--budget-usd", "1e6", "--gpu", "H100", "--mfu", "1.5", "--price-per-hour", "2"], "--mfu"),
        (["--budget-usd", "1e6", "--gpu", "Q1", "--mfu", "0.4", "--price-per-hour", "2"], "--gpu"),
        (["--budget-usd", "1e6", "--gpu", "H100", "--price-per-hour", "2"], "--mfu"),
        (["--params", "7e9"], "--params/--tokens"),
        ([], "--compute"),
    ],
)
def test_cli_scaling_bad_input(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    assert main(["scaling", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
