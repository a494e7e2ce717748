"""Scaling laws: compute-optimal allocation, predicted loss, and a verdict on a run's size/data balance.

Pure functions of plain numbers (no torch, no I/O). Conventions, stated once:

* Training compute C = 6·N·D FLOPs (Kaplan et al. 2020 §2.1; Hoffmann et al. 2022 use the same approximation
  for their frontier), N parameters, D training tokens.
* ``chinchilla``: Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models"), approach 3
  parametric fit L(N, D) = E + A/N^α + B/D^β with E=1.69, A=406.4, B=410.7, α=0.34, β=0.28 (their eq. 10 and
  §3.3). N counts all parameters. Closed form of the frontier (their eq. 4 / appendix D.2): N_opt =
  G·(C/6)^(β/(α+β)), D_opt = G⁻¹·(C/6)^(α/(α+β)), G = (αA/(βB))^(1/(α+β)).
* ``epoch``: Besiroglu et al. 2024 (arXiv 2404.10102, "Chinchilla Scaling: A replication attempt"), same form
  refitted to Hoffmann's data: E=1.8172, A=482.01, B=2085.43, α=0.3478, β=0.3658 (about 20 tokens per
  parameter).
* ``kaplan``: Kaplan et al. 2020 ("Scaling Laws for Neural Language Models"). Allocation from table 6:
  N_opt = 1.3e9·(C / PF-day)^0.73 with 1 PF-day = 8.64e19 FLOPs, D = C/(6·N_opt). Loss from their eq. 1.5 /
  table 2: L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D, α_N=0.076, α_D=0.103, N_c=6.4e13, D_c=1.8e13. N counts
  NON-embedding parameters (Kaplan §2.1; Pearce & Song 2024 trace much of the Kaplan/Chinchilla gap to this).

Losses are nats per token on each paper's own data and tokenizer (MassiveText for chinchilla and epoch,
WebText2 for kaplan): compare them within one law, never across laws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel

from monitor.errors import InputError
from monitor.planning._inputs import fraction, positive, positive_int

PF_DAY_FLOPS = 1e15 * 86400  # one petaFLOP/s sustained for a day (Kaplan et al. 2020, §1.3): 8.64e19 FLOPs

Verdict = Literal["under-trained", "near-optimal", "over-trained"]

# A run is "near-optimal" while its tokens per parameter lie within this factor of the compute-optimal ratio
# at the same compute, either way. Our convention (a factor 2 in D/N is a factor ~√2 in N at fixed C), not a
# published one.
NEAR_OPTIMAL_FACTOR = 2.0


class Allocation(BaseModel):
    """How a law splits compute C between parameters N and tokens D (C = 6·N·D)."""

    law: str
    compute: float
    params: float
    tokens: float
    tokens_per_param: float
    predicted_loss: float | None


class Law(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def param_convention(self) -> str: ...

    def loss(self, params: float, tokens: float) -> float | None: ...

    def optimal(self, compute: float) -> Allocation: ...

    def compute_for_params(self, params: float) -> float: ...


@dataclass(frozen=True)
class ParametricLaw:
    """L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, eq. 2/10) and its closed-form optimal frontier."""

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str
    param_convention: str = "total parameters (embeddings included)"

    @property
    def G(self) -> float:
        # Hoffmann et al. 2022, eq. 4: G = (αA / βB)^(1/(α+β))
        return float((self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta)))

    @property
    def params_exponent(self) -> float:
        """a in N_opt ∝ C^a: β/(α+β)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def tokens_exponent(self) -> float:
        """b in D_opt ∝ C^b: α/(α+β)."""
        return self.alpha / (self.alpha + self.beta)

    def loss(self, params: float, tokens: float) -> float:
        return float(self.E + self.A / params**self.alpha + self.B / tokens**self.beta)

    def optimal(self, compute: float) -> Allocation:
        c6 = compute / 6.0
        n = self.G * c6**self.params_exponent
        d = c6**self.tokens_exponent / self.G
        return _allocation(self, compute, n, d)

    def compute_for_params(self, params: float) -> float:
        """The compute C whose optimal N is ``params`` (inverse of N_opt = G·(C/6)^a)."""
        return 6.0 * (params / self.G) ** (1.0 / self.params_exponent)


@dataclass(frozen=True)
class KaplanLaw:
    """Kaplan et al. 2020: allocation from table 6, loss L(N, D) from eq. 1.5 with table 2's constants."""

    name: str = "kaplan"
    alpha_n: float = 0.076
    alpha_d: float = 0.103
    n_c: float = 6.4e13
    d_c: float = 1.8e13
    n_e: float = 1.3e9  # table 6: N_opt = N_e · C_min^p_N, C_min in PF-days
    p_n: float = 0.73
    source: str = (
        "Kaplan et al. 2020, table 2 (L(N,D) constants) and table 6 (N_opt = 1.3e9·C^0.73, C in PF-days)"
    )
    param_convention: str = "non-embedding parameters"

    def loss(self, params: float, tokens: float) -> float:
        # Kaplan et al. 2020, eq. 1.5: L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D
        return float(
            ((self.n_c / params) ** (self.alpha_n / self.alpha_d) + self.d_c / tokens) ** self.alpha_d
        )

    def optimal(self, compute: float) -> Allocation:
        n = self.n_e * (compute / PF_DAY_FLOPS) ** self.p_n
        return _allocation(self, compute, n, compute / (6.0 * n))

    def compute_for_params(self, params: float) -> float:
        return PF_DAY_FLOPS * (params / self.n_e) ** (1.0 / self.p_n)


CHINCHILLA = ParametricLaw(
    name="chinchilla",
    E=1.69,
    A=406.4,
    B=410.7,
    alpha=0.34,
    beta=0.28,
    source="Hoffmann et al. 2022, approach 3 (eq. 10): E=1.69, A=406.4, B=410.7, α=0.34, β=0.28",
)
EPOCH = ParametricLaw(
    name="epoch",
    E=1.8172,
    A=482.01,
    B=2085.43,
    alpha=0.3478,
    beta=0.3658,
    source="Besiroglu et al. 2024 (arXiv 2404.10102), refit of Hoffmann's approach 3: "
    "E=1.8172, A=482.01, B=2085.43, α=0.3478, β=0.3658",
)
KAPLAN = KaplanLaw()

LAWS: dict[str, Law] = {"chinchilla": CHINCHILLA, "epoch": EPOCH, "kaplan": KAPLAN}


def get_law(name: str) -> Law:
    law = LAWS.get(str(name).strip().lower())
    if law is None:
        raise InputError("--law", f"unknown scaling law {name!r}", f"choose one of: {', '.join(LAWS)}")
    return law


def _allocation(law: Law, compute: float, params: float, tokens: float) -> Allocation:
    return Allocation(
        law=law.name,
        compute=compute,
        params=params,
        tokens=tokens,
        tokens_per_param=tokens / params,
        predicted_loss=law.loss(params, tokens),
    )


def compute_optimal(compute: float, law: str = "chinchilla") -> Allocation:
    """The compute-optimal N and D for ``compute`` FLOPs under ``law``."""
    return get_law(law).optimal(
        positive("--compute", compute, "pass the training compute in FLOPs, e.g. 1e23")
    )


def compare_laws(compute: float) -> list[Allocation]:
    """The allocation of every law for the same compute (``mfu scaling --compare``)."""
    return [compute_optimal(compute, name) for name in LAWS]


class RunAssessment(BaseModel):
    """A run of N parameters on D tokens, judged against the compute-optimal allocation at its compute."""

    name: str | None = None
    law: str
    params: float
    tokens: float
    compute: float
    tokens_per_param: float
    predicted_loss: float | None
    optimal: Allocation
    # (D/N) / (D_opt/N_opt): below 1 the run has too many parameters for its data, above 1 too few.
    ratio_to_optimal: float
    loss_above_optimal: float | None
    verdict: Verdict


def assess_run(
    params: float, tokens: float, law: str = "chinchilla", name: str | None = None
) -> RunAssessment:
    """Tokens per parameter, predicted loss, the compute-optimal alternative at C = 6·N·D, and a verdict."""
    n = positive("--params", params, "pass the parameter count, e.g. 7e9")
    d = positive("--tokens", tokens, "pass the number of training tokens, e.g. 1e12")
    scaling_law = get_law(law)
    compute = 6.0 * n * d
    best = scaling_law.optimal(compute)
    ratio = (d / n) / best.tokens_per_param
    if ratio < 1.0 / NEAR_OPTIMAL_FACTOR:
        verdict: Verdict = "under-trained"
    elif ratio > NEAR_OPTIMAL_FACTOR:
        verdict = "over-trained"
    else:
        verdict = "near-optimal"
    loss = scaling_law.loss(n, d)
    gap = None if loss is None or best.predicted_loss is None else loss - best.predicted_loss
    return RunAssessment(
        name=name,
        law=scaling_law.name,
        params=n,
        tokens=d,
        compute=compute,
        tokens_per_param=d / n,
        predicted_loss=loss,
        optimal=best,
        ratio_to_optimal=ratio,
        loss_above_optimal=gap,
        verdict=verdict,
    )


@dataclass(frozen=True)
class KnownRun:
    name: str
    params: float
    tokens: float
    source: str


# Published sizes and token counts. LLaMA-7B's count is exact from its config (literature.md); Llama-3-8B's is
# derived from its config.json (published-configs.json): 2·128256·4096 + 32·218,112,000 + 4096 =
# 8,030,261,248.
KNOWN_RUNS: tuple[KnownRun, ...] = (
    KnownRun("GPT-3 175B", 175e9, 300e9, "Brown et al. 2020, table 2.1 and section 2.2 (300B tokens)"),
    KnownRun("Gopher 280B", 280e9, 300e9, "Rae et al. 2021, table 1"),
    KnownRun("Chinchilla 70B", 70e9, 1.4e12, "Hoffmann et al. 2022, table 1"),
    KnownRun("LLaMA-7B", 6_738_415_616, 1.0e12, "Touvron et al. 2023a, table 2 (params exact from config)"),
    KnownRun("LLaMA-65B", 65.2e9, 1.4e12, "Touvron et al. 2023a, table 2"),
    KnownRun("Llama-3-8B", 8_030_261_248, 15e12, "Meta 2024 (Llama 3 model card: 15T+ tokens)"),
)


def assess_known_runs(law: str = "chinchilla") -> list[RunAssessment]:
    return [assess_run(run.params, run.tokens, law, name=run.name) for run in KNOWN_RUNS]


class ComputeBudget(BaseModel):
    """What a dollar budget buys: device-hours at a price, and the FLOPs they deliver at a given MFU."""

    budget_usd: float
    price_per_device_hour: float
    num_devices: int
    peak_flops_per_device: float
    mfu: float
    device_hours: float
    wall_clock_hours: float
    compute: float


def compute_from_budget(
    budget_usd: float,
    price_per_device_hour: float,
    peak_flops_per_device: float,
    mfu: float,
    num_devices: int = 1,
) -> ComputeBudget:
    """C = (budget / price) device-hours × 3600 s × peak × MFU; wall clock = device-hours / devices."""
    budget = positive("--budget-usd", budget_usd, "pass a budget in dollars, e.g. 1e6")
    price = positive(
        "--price-per-hour", price_per_device_hour, "pass the price of one device-hour in dollars"
    )
    peak = positive("--peak-tflops", peak_flops_per_device, "pass --gpu NAME or --peak-tflops X")
    utilization = fraction("--mfu", mfu)
    devices = positive_int("--num-gpus", num_devices)
    device_hours = budget / price
    return ComputeBudget(
        budget_usd=budget,
        price_per_device_hour=price,
        num_devices=devices,
        peak_flops_per_device=peak,
        mfu=utilization,
        device_hours=device_hours,
        wall_clock_hours=device_hours / devices,
        compute=device_hours * 3600.0 * peak * utilization,
    )


def optimal_tokens_for_params(params: float, law: str = "chinchilla") -> float:
    """D_opt for a given N: the tokens at the compute whose optimal model has ``params`` parameters."""
    scaling_law = get_law(law)
    n = positive("--params", params)
    compute = scaling_law.compute_for_params(n)
    return compute / (6.0 * n)
