"""Generate mfu-monitor's Grafana dashboards (dashboards/grafana/*.json) with grafana-foundation-sdk.

    python dashboards/build.py            # rewrite dashboards/grafana/*.json
    python dashboards/build.py --check    # exit 1 if a committed file differs from what this script generates

The JSON files are generated: edit this script, not them (tests/test_dashboards.py holds them equal).

Every query follows the conventions of dashboards/prometheus/rules.yml (docs/dashboards.md):
- run MFU = sum of the ranks' model-FLOP rates / sum of their per-device peaks (PaLM, Chowdhery et al. 2022,
  appendix B), over the ranks that know their peak; never the mean of per-rank ratios;
- tokens/s = sum over ranks of rate(training_tokens_total) (each rank counts the tokens it processed);
- step-time quantiles pool all ranks' step durations (histogram_quantile over the summed bucket rates).
Panels that need NVML GPU telemetry say so in their description (GPU_MARK); a CPU-only run leaves them empty.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders import bargauge as bargauge_builder
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import prometheus as prometheus_builder
from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.builders import table as table_builder
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

OUT_DIR = Path(__file__).resolve().parent / "grafana"
GPU_MARK = "Needs GPU telemetry (NVML)."
MFU_ALERT_THRESHOLD = 0.25  # TrainingMFULow: run MFU below 0.25 for 10 minutes

DATASOURCE = dashboard_model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RUN = 'job=~"$job", run=~"$run"'
RANK = 'job=~"$job", run=~"$run", rank=~"$rank"'
RATE = "$__rate_interval"


# --- PromQL building blocks (the same formulas as the recording rules in dashboards/prometheus/rules.yml) ---
def run_mfu(selector: str = RUN) -> str:
    """Run MFU: sum of FLOP rates of ranks with a known peak / sum of peaks."""
    return (
        f"sum by (job, run) (rate(training_model_flops_total{{{selector}}}[{RATE}])"
        f" and on (job, instance, run, rank) training_peak_flops_per_second{{{selector}}})"
        f" / sum by (job, run) (training_peak_flops_per_second{{{selector}}})"
    )


def run_mfu_loss(selector: str = RUN) -> str:
    """Run-level points of the MFU gap per cause (docs/attribution.md): each rank's points weighted by its
    peak, over the sum of peaks — the same weighting as the run MFU, so the gap causes sum to 1 - run MFU."""
    return (
        f"sum by (job, run, cause) (training_mfu_loss_ratio{{{selector}}}"
        f" * on (job, instance, run, rank) group_left () training_peak_flops_per_second{{{selector}}})"
        f" / on (job, run) group_left () sum by (job, run) (training_peak_flops_per_second{{{selector}}})"
    )


def run_tokens_per_second(selector: str = RUN) -> str:
    return f"sum by (job, run) (rate(training_tokens_total{{{selector}}}[{RATE}]))"


def step_quantile(q: float, selector: str = RUN) -> str:
    return (
        f"histogram_quantile({q}, sum by (job, run, le) "
        f"(rate(training_step_duration_seconds_bucket{{{selector}}}[{RATE}])))"
    )


def rank_mean_step_seconds(selector: str) -> str:
    return (
        f"(sum by (job, run, rank) (rate(training_step_duration_seconds_sum{{{selector}}}[{RATE}]))"
        f" / sum by (job, run, rank) (rate(training_step_duration_seconds_count{{{selector}}}[{RATE}])))"
    )


def rank_over_median(selector: str = RANK) -> str:
    """Each selected rank's mean step time over the median of all its run's ranks."""
    return (
        f"{rank_mean_step_seconds(selector)} / on (job, run) group_left () "
        f"quantile by (job, run) (0.5, {rank_mean_step_seconds(RUN)})"
    )


# --- Panel specifications ---
@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    kind: Literal["stat", "timeseries", "table", "bargauge"]
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    width: int = 12
    height: int = 8
    gpu: bool = False  # needs NVML telemetry: empty on CPU-only runs
    thresholds: tuple[tuple[float | None, str], ...] = ()
    threshold_line: bool = False  # draw the thresholds as a dashed line on a time series
    min: float | None = None
    max: float | None = None
    no_value: str | None = None
    stacked: bool = False  # a time series stacked to a total


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    filename: str
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    extra_variables: tuple[str, ...] = field(default=())  # names of extra variables (see _variables)
    alert_annotations: bool = False  # mark the shipped alerts' firing periods on every panel


MFU_THRESHOLDS: tuple[tuple[float | None, str], ...] = ((None, "red"), (MFU_ALERT_THRESHOLD, "green"))


OVERVIEW = Dashboard(
    filename="mfu-overview.json",
    uid="mfu-overview",
    title="MFU / Run overview",
    description="Live model FLOPs utilization, throughput and step time of a training run (mfu-monitor).",
    extra_variables=("target_tokens",),
    alert_annotations=True,
    rows=(
        Row(
            "Now",
            (
                Panel(
                    "stat",
                    "Run MFU",
                    "Sum of the ranks' model FLOP rates over the sum of their peak FLOP/s (ranks with a "
                    "known peak). Red below 25%, where TrainingMFULow fires after 10 minutes.",
                    (Query(run_mfu(), "{{run}}"),),
                    unit="percentunit",
                    width=6,
                    height=5,
                    thresholds=MFU_THRESHOLDS,
                ),
                Panel(
                    "stat",
                    "Tokens / s",
                    "Tokens processed per second by all ranks together.",
                    (Query(run_tokens_per_second(), "{{run}}"),),
                    width=5,
                    height=5,
                ),
                Panel(
                    "stat",
                    "Tokens so far",
                    "Tokens processed by all ranks since the processes started (counters restart with them).",
                    (Query(f"sum by (job, run) (training_tokens_total{{{RUN}}})", "{{run}}"),),
                    width=5,
                    height=5,
                ),
                Panel(
                    "stat",
                    "Steps",
                    "Optimizer steps since the processes started (the furthest rank).",
                    (Query(f"max by (job, run) (training_steps_total{{{RUN}}})", "{{run}}"),),
                    width=4,
                    height=5,
                ),
                Panel(
                    "stat",
                    "ETA",
                    "Time left to reach the token budget ($target_tokens, a dashboard variable) at the "
                    "current tokens/s.",
                    (
                        Query(
                            "clamp_min($target_tokens - "
                            f"sum by (job, run) (training_tokens_total{{{RUN}}}), 0)"
                            f" / {run_tokens_per_second()}",
                            "{{run}}",
                        ),
                    ),
                    unit="s",
                    width=4,
                    height=5,
                ),
            ),
        ),
        Row(
            "Why is MFU low",
            (
                Panel(
                    "bargauge",
                    "Where the MFU gap goes",
                    "Points of peak FLOPs lost per measured cause (training_mfu_loss_ratio, peak-weighted "
                    "over ranks): input_wait + stragglers + throttling + recomputation + unexplained = 100% "
                    "- MFU; padding is the part of the MFU spent on padding tokens. A cause the monitor "
                    "cannot measure here (no NVML, one rank, no attention mask) is absent, its time in "
                    "unexplained. See docs/attribution.md.",
                    (Query(run_mfu(), "MFU"), Query(run_mfu_loss(), "{{cause}}")),
                    unit="percentunit",
                    width=10,
                    min=0,
                    max=1,
                ),
                Panel(
                    "timeseries",
                    "MFU and the causes of its gap, over time",
                    "Stacked to 100% of the peak: the run MFU at the bottom, then each cause of the gap "
                    "(padding left out: it is inside the MFU).",
                    (
                        Query(run_mfu(), "MFU"),
                        Query(run_mfu_loss(RUN + ', cause!="padding"'), "{{cause}}"),
                    ),
                    unit="percentunit",
                    width=14,
                    min=0,
                    stacked=True,
                ),
            ),
        ),
        Row(
            "Over time",
            (
                Panel(
                    "timeseries",
                    "Run MFU",
                    "Sum of model FLOP rates over sum of peaks, all ranks. Dashed line: the 25% alert "
                    "threshold.",
                    (Query(run_mfu(), "{{run}}"),),
                    unit="percentunit",
                    thresholds=MFU_THRESHOLDS,
                    threshold_line=True,
                    min=0,
                ),
                Panel(
                    "timeseries",
                    "Tokens per second",
                    "All ranks together.",
                    (Query(run_tokens_per_second(), "{{run}}"),),
                    min=0,
                ),
                Panel(
                    "timeseries",
                    "Step time quantiles",
                    "Quantiles of the step durations of all ranks (histogram_quantile over the summed "
                    "buckets; exact only to the bucket bounds).",
                    (
                        Query(step_quantile(0.5), "{{run}} p50"),
                        Query(step_quantile(0.9), "{{run}} p90"),
                        Query(step_quantile(0.99), "{{run}} p99"),
                    ),
                    unit="s",
                    min=0,
                ),
                Panel(
                    "timeseries",
                    "Model FLOP/s and peak",
                    "Model FLOP rate of the ranks that know their peak, and the sum of their peaks.",
                    (
                        Query(
                            f"sum by (job, run) (rate(training_model_flops_total{{{RUN}}}[{RATE}])"
                            f" and on (job, instance, run, rank) training_peak_flops_per_second{{{RUN}}})",
                            "{{run}} model FLOP/s",
                        ),
                        Query(
                            f"sum by (job, run) (training_peak_flops_per_second{{{RUN}}})",
                            "{{run}} peak FLOP/s",
                        ),
                    ),
                    unit="flops",
                    min=0,
                ),
            ),
        ),
        Row(
            "Health",
            (
                Panel(
                    "stat",
                    "Time since last step",
                    "Seconds since the most recent optimizer step of any rank (TrainingStalled fires per "
                    "rank after 300 s while its process is up).",
                    (
                        Query(
                            f"time() - max by (job, run) (training_last_step_timestamp_seconds{{{RUN}}})",
                            "{{run}}",
                        ),
                    ),
                    unit="s",
                    width=6,
                    thresholds=((None, "green"), (60, "orange"), (300, "red")),
                ),
                Panel(
                    "table",
                    "Active alerts",
                    "Pending and firing alerts of the shipped rules (dashboards/prometheus/rules.yml) for "
                    "the selected runs.",
                    (Query(f"ALERTS{{{RUN}}}", instant=True),),
                    width=18,
                    no_value="No alerts",
                ),
            ),
        ),
    ),
)

RANKS = Dashboard(
    filename="mfu-ranks.json",
    uid="mfu-ranks",
    title="MFU / Ranks and stragglers",
    description="Per-rank step time, throughput and MFU; the slowest rank against the median rank.",
    rows=(
        Row(
            "Stragglers",
            (
                Panel(
                    "stat",
                    "Slowest rank / median rank",
                    "Mean step time of the slowest rank over that of the median rank (1 = even). "
                    "TrainingStraggler fires above 1.2 for 10 minutes.",
                    (
                        Query(
                            f"max by (job, run) ({rank_mean_step_seconds(RUN)})"
                            f" / quantile by (job, run) (0.5, {rank_mean_step_seconds(RUN)})",
                            "{{run}}",
                        ),
                    ),
                    unit="none",
                    width=6,
                    thresholds=((None, "green"), (1.1, "orange"), (1.2, "red")),
                ),
                Panel(
                    "timeseries",
                    "Step time / run median, per rank",
                    "Each rank's mean step time divided by the median over its run's ranks. In lock-step "
                    "data parallelism collectives even out step times: look at GPU telemetry too.",
                    (Query(rank_over_median(), "rank {{rank}}"),),
                    unit="none",
                    width=18,
                    thresholds=((None, "green"), (1.2, "red")),
                    threshold_line=True,
                ),
            ),
        ),
        Row(
            "Per rank",
            (
                Panel(
                    "timeseries",
                    "Mean step time per rank",
                    "rate(sum) / rate(count) of each rank's step-duration histogram.",
                    (Query(rank_mean_step_seconds(RANK), "rank {{rank}}"),),
                    unit="s",
                    min=0,
                ),
                Panel(
                    "timeseries",
                    "Tokens per second per rank",
                    "Tokens each rank processed per second.",
                    (
                        Query(
                            f"sum by (job, run, rank) (rate(training_tokens_total{{{RANK}}}[{RATE}]))",
                            "rank {{rank}}",
                        ),
                    ),
                    min=0,
                ),
                Panel(
                    "timeseries",
                    "MFU per rank",
                    "Each rank's own MFU as the monitor computes it over its window (training_mfu_ratio); "
                    "absent for a rank whose peak is unknown.",
                    (Query(f"training_mfu_ratio{{{RANK}}}", "rank {{rank}}"),),
                    unit="percentunit",
                    thresholds=MFU_THRESHOLDS,
                    threshold_line=True,
                    min=0,
                ),
                Panel(
                    "timeseries",
                    "Time since last step per rank",
                    "Seconds since each rank's last optimizer step.",
                    (
                        Query(
                            f"time() - training_last_step_timestamp_seconds{{{RANK}}}",
                            "rank {{rank}}",
                        ),
                    ),
                    unit="s",
                    min=0,
                ),
            ),
        ),
    ),
)

GPUS = Dashboard(
    filename="mfu-gpus.json",
    uid="mfu-gpus",
    title="MFU / GPUs",
    description="NVML telemetry of the GPUs the ranks use, next to MFU: power, energy per token, memory, "
    "clocks, temperature.",
    rows=(
        Row(
            "Utilization and energy",
            (
                Panel(
                    "timeseries",
                    "GPU busy vs MFU",
                    "NVML utilization (share of time a kernel ran) next to each rank's MFU: a busy GPU at "
                    f"low MFU runs slow kernels, an idle one waits on data or communication. {GPU_MARK}",
                    (
                        Query(f"training_gpu_utilization_ratio{{{RANK}}}", "rank {{rank}} gpu {{gpu}} busy"),
                        Query(f"training_mfu_ratio{{{RANK}}}", "rank {{rank}} MFU"),
                    ),
                    unit="percentunit",
                    min=0,
                    max=1,
                    gpu=True,
                ),
                Panel(
                    "timeseries",
                    "Tensor-core activity vs MFU",
                    "Share of time the tensor cores were busy (NVML GPM, Hopper and later; "
                    "training_gpu_tensor_active_ratio, kind any) next to each rank's MFU. Dense MFU cannot "
                    "exceed tensor activity: MFU above it (training_mfu_suspect_reason) means the FLOPs "
                    f"model or the peak overcounts. Empty before Hopper and on MIG slices. {GPU_MARK}",
                    (
                        Query(
                            f'training_gpu_tensor_active_ratio{{{RANK}, kind="any"}}',
                            "rank {{rank}} gpu {{gpu}} tensor active",
                        ),
                        Query(f"training_mfu_ratio{{{RANK}}}", "rank {{rank}} MFU"),
                    ),
                    unit="percentunit",
                    min=0,
                    max=1,
                    gpu=True,
                ),
                Panel(
                    "timeseries",
                    "Energy per token",
                    "Joules per token, all GPUs of the run: rate of the NVML energy counters over the run's "
                    f"tokens/s. {GPU_MARK}",
                    (
                        Query(
                            f"sum by (job, run) (rate(training_gpu_energy_joules_total{{{RUN}}}[{RATE}]))"
                            f" / {run_tokens_per_second()}",
                            "{{run}}",
                        ),
                    ),
                    unit="J",
                    min=0,
                    gpu=True,
                ),
                Panel(
                    "timeseries",
                    "Power",
                    f"Board power draw per GPU, and the run's total. {GPU_MARK}",
                    (
                        Query(f"training_gpu_power_watts{{{RANK}}}", "rank {{rank}} gpu {{gpu}}"),
                        Query(f"sum by (job, run) (training_gpu_power_watts{{{RUN}}})", "{{run}} total"),
                    ),
                    unit="watt",
                    min=0,
                    gpu=True,
                ),
                Panel(
                    "timeseries",
                    "Memory used",
                    f"Device memory in use per GPU (all processes on it). {GPU_MARK}",
                    (Query(f"training_gpu_memory_used_bytes{{{RANK}}}", "rank {{rank}} gpu {{gpu}}"),),
                    unit="bytes",
                    min=0,
                    gpu=True,
                ),
            ),
        ),
        Row(
            "Clocks and throttling",
            (
                Panel(
                    "timeseries",
                    "SM clock",
                    f"Streaming-multiprocessor clock per GPU; drops under load mean throttling. {GPU_MARK}",
                    (Query(f"training_gpu_sm_clock_hertz{{{RANK}}}", "rank {{rank}} gpu {{gpu}}"),),
                    unit="hertz",
                    gpu=True,
                ),
                Panel(
                    "timeseries",
                    "SM clock vs its highest in range",
                    "Each GPU's SM clock over the highest it reached in the dashboard's time range: below 1 "
                    f"while busy = throttled (power, thermal or sync boost). {GPU_MARK}",
                    (
                        Query(
                            f"training_gpu_sm_clock_hertz{{{RANK}}}"
                            f" / max_over_time(training_gpu_sm_clock_hertz{{{RANK}}}[$__range])",
                            "rank {{rank}} gpu {{gpu}}",
                        ),
                    ),
                    unit="percentunit",
                    max=1,
                    gpu=True,
                ),
                Panel(
                    "timeseries",
                    "Temperature",
                    "GPU temperature; thermal slowdown begins near the board's limit (often 85-90 °C). "
                    f"{GPU_MARK}",
                    (Query(f"training_gpu_temperature_celsius{{{RANK}}}", "rank {{rank}} gpu {{gpu}}"),),
                    unit="celsius",
                    gpu=True,
                ),
            ),
        ),
    ),
)

HEALTH = Dashboard(
    filename="mfu-monitor-health.json",
    uid="mfu-monitor-health",
    title="MFU / Monitor health",
    description="Is the monitor itself healthy: scrapes, errors, ranks reporting, freshness.",
    rows=(
        Row(
            "Monitor",
            (
                Panel(
                    "stat",
                    "Ranks reporting",
                    "Ranks whose metrics the last scrape returned.",
                    (Query(f"count by (job, run) (training_steps_total{{{RUN}}})", "{{run}}"),),
                    width=6,
                ),
                Panel(
                    "stat",
                    "Monitor errors",
                    "Errors the monitor caught and survived since start (it never raises into training). "
                    "See the run log or the process output for what they were.",
                    (Query(f"sum by (job, run) (training_monitor_errors_total{{{RUN}}})", "{{run}}"),),
                    width=6,
                    thresholds=((None, "green"), (1, "orange")),
                ),
                Panel(
                    "timeseries",
                    "Monitor errors per minute",
                    "Per rank.",
                    (
                        Query(
                            "60 * sum by (job, run, rank) "
                            f"(rate(training_monitor_errors_total{{{RANK}}}[{RATE}]))",
                            "rank {{rank}}",
                        ),
                    ),
                    width=12,
                    min=0,
                ),
            ),
        ),
        Row(
            "Scrapes",
            (
                Panel(
                    "timeseries",
                    "Targets up",
                    "1 when Prometheus reached a rank's /metrics endpoint (one target per rank).",
                    (Query('up{job=~"$job"}', "{{instance}}"),),
                    min=0,
                    max=1,
                ),
                Panel(
                    "timeseries",
                    "Scrape duration",
                    "How long each /metrics scrape took: the monitor computes its figures at scrape time.",
                    (Query('scrape_duration_seconds{job=~"$job"}', "{{instance}}"),),
                    unit="s",
                    min=0,
                ),
                Panel(
                    "timeseries",
                    "Samples per scrape",
                    "Series each target exposes.",
                    (Query('scrape_samples_scraped{job=~"$job"}', "{{instance}}"),),
                    min=0,
                ),
                Panel(
                    "table",
                    "Run info",
                    "training_run_info: what each rank reports about its run (model, device, dtype, ...).",
                    (Query(f"training_run_info{{{RANK}}}", instant=True),),
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (OVERVIEW, RANKS, GPUS, HEALTH)


# --- Builders ---
def _variables(extra: Sequence[str]) -> list[Any]:
    refresh = dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED
    sort = dashboard_model.VariableSort.NATURAL_ASC
    variables: list[Any] = [
        dashboard_builder.DatasourceVariable("datasource").label("Data source").type("prometheus"),
    ]
    for name, label, query in (
        ("job", "Job", "label_values(training_steps_total, job)"),
        ("run", "Run", 'label_values(training_steps_total{job=~"$job"}, run)'),
        ("rank", "Rank", 'label_values(training_steps_total{job=~"$job", run=~"$run"}, rank)'),
    ):
        variables.append(
            dashboard_builder.QueryVariable(name)
            .label(label)
            .datasource(DATASOURCE)
            .query(query)
            .refresh(refresh)
            .sort(sort)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dashboard_model.VariableOption(selected=True, text="All", value="$__all"))
        )
    if "target_tokens" in extra:
        variables.append(
            dashboard_builder.TextBoxVariable("target_tokens")
            .label("Token budget")
            .description("Tokens the run will process in all (for the ETA), e.g. 2e12.")
            .default_value("1e12")
        )
    return variables


def _annotations(spec: Dashboard) -> list[Any]:
    """Grafana's built-in annotations, and on the overview the shipped alerts' firing periods."""
    out: list[Any] = [
        dashboard_builder.AnnotationQuery()
        .name("Annotations & Alerts")
        .datasource(dashboard_model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .built_in(1)
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
    ]
    if spec.alert_annotations:
        out.append(
            dashboard_builder.AnnotationQuery()
            .name("Training alerts firing")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("red")
            .expr(f'ALERTS{{alertname=~"Training.*", alertstate="firing", {RUN}}}')
        )
    return out


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dashboard_builder.ThresholdsConfig:
    return (
        dashboard_builder.ThresholdsConfig()
        .mode(dashboard_model.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_model.Threshold(value=value, color=color) for value, color in steps])
    )


def _panel(spec: Panel, panel_id: int) -> Any:
    builder: Any
    if spec.kind == "stat":
        builder = (
            stat_builder.Panel()
            .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
            .graph_mode(common_model.BigValueGraphMode.AREA)
        )
    elif spec.kind == "table":
        builder = table_builder.Panel()
    elif spec.kind == "bargauge":
        builder = (
            bargauge_builder.Panel()
            .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]))
            .orientation(common_model.VizOrientation.HORIZONTAL)
            .display_mode(common_model.BarGaugeDisplayMode.GRADIENT)
        )
    else:
        builder = timeseries_builder.Panel().legend(
            common_builder.VizLegendOptions()
            .display_mode(common_model.LegendDisplayMode.LIST)
            .placement(common_model.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        if spec.stacked:
            builder = builder.stacking(
                common_builder.StackingConfig().mode(common_model.StackingMode.NORMAL)
            ).fill_opacity(60)
        if spec.threshold_line:
            builder = builder.thresholds_style(
                common_builder.GraphThresholdsStyleConfig().mode(common_model.GraphThresholdsStyleMode.DASHED)
            )
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
    )
    if spec.thresholds:
        builder = builder.thresholds(_thresholds(spec.thresholds))
    if spec.min is not None:
        builder = builder.min(spec.min)
    if spec.max is not None:
        builder = builder.max(spec.max)
    if spec.no_value is not None:
        builder = builder.no_value(spec.no_value)
    for index, query in enumerate(spec.queries):
        target = (
            prometheus_builder.Dataquery()
            .expr(query.expr)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
        if query.legend:
            target = target.legend_format(query.legend)
        if query.instant:
            target = target.instant().format(prometheus_builder.prometheus.PromQueryFormat.TABLE)
        builder = builder.with_target(target)
    return builder


def build(spec: Dashboard) -> dict[str, Any]:
    """One dashboard as the JSON object Grafana imports."""
    board = (
        dashboard_builder.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["mfu-monitor", "training"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dashboard_model.DashboardCursorSync.CROSSHAIR)
        .variables(_variables(spec.extra_variables))
        .annotations(_annotations(spec))
        .link(
            dashboard_builder.DashboardLink("MFU dashboards")
            .type(dashboard_model.DashboardLinkType.DASHBOARDS)
            .tags(["mfu-monitor"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    panel_id = 0
    for row in spec.rows:
        panel_id += 1
        board = board.with_row(dashboard_builder.Row(row.title).id(panel_id))
        for panel in row.panels:
            panel_id += 1
            board = board.with_panel(_panel(panel, panel_id))
    built: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return built


def render(spec: Dashboard) -> str:
    """The exact text of the committed file: sorted keys, two-space indent, trailing newline."""
    return json.dumps(build(spec), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a file is stale")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: grafana/)")
    args = parser.parse_args(argv)
    stale = []
    for spec in DASHBOARDS:
        path = args.out / spec.filename
        text = render(spec)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("stale (run python dashboards/build.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
