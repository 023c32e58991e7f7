"""The survey's own numbers: Table 5 of Masson et al., "Pruning Methods for Person Re-identification"
(arXiv 1907.02547), and the benchmarks it reports them on.

ResNet feature extractors trained with batch-hard triplet loss; the pruned rows are ResNet50 at about
half its FLOPs. The survey states neither its input size nor its FLOP convention (its ResNet34 has more
GFLOPS than its ResNet50), so compare FLOP ratios with ours, not absolute GFLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SurveyRow", "TABLE5", "SURVEY_METHODS", "BENCHMARKS", "Benchmark", "survey_row"]


@dataclass(frozen=True)
class Benchmark:
    """A dataset of Table 5: its key in our tables, its ``load_dataset`` layout and its title."""

    key: str
    layout: str
    title: str


# Table 5's column order. CUHK03-NP: the survey does not say detected or labelled; detected is the usual default.
BENCHMARKS: dict[str, Benchmark] = {
    b.key: b
    for b in (
        Benchmark("market", "market1501", "Market-1501"),
        Benchmark("duke", "dukemtmcreid", "DukeMTMC-reID"),
        Benchmark("cuhk03", "cuhk03np_detected", "CUHK03-NP"),
    )
}


@dataclass(frozen=True)
class SurveyRow:
    """One row of Table 5: params (M), GFLOPS (the survey's convention) and (mAP, rank-1) per benchmark."""

    label: str
    params_m: float
    gflops: float
    results: dict[str, tuple[float, float]]


def _row(label: str, params_m: float, gflops: float, *maps_r1: float) -> SurveyRow:
    pairs = [(maps_r1[i], maps_r1[i + 1]) for i in range(0, len(maps_r1), 2)]
    return SurveyRow(label, params_m, gflops, dict(zip(BENCHMARKS, pairs, strict=True)))


# Keyed by our names: architectures for the baselines, registered pruning methods for the pruned ResNet50s.
TABLE5: dict[str, SurveyRow] = {
    "resnet50": _row("ResNet50", 23.48, 6.32, 69.16, 85.07, 59.46, 76.39, 47.57, 48.43),
    "resnet34": _row("ResNet34", 21.28, 6.67, 67.44, 84.09, 58.36, 75.45, 45.51, 47.14),
    "resnet18": _row("ResNet18", 11.12, 3.09, 61.23, 81.18, 52.07, 71.63, 38.27, 39.57),
    "hao_li": _row("Hao Li (R50)", 11.90, 2.96, 67.04, 84.71, 57.51, 75.00, 44.08, 46.50),
    "molchanov": _row("Molchanov (R50)", 12.09, 3.21, 66.35, 84.44, 57.90, 75.72, 44.40, 46.21),
    "auto_balanced": _row("AutoBalanced (R50)", 11.90, 2.96, 65.46, 83.64, 56.45, 74.64, 41.85, 44.21),
    "entropy": _row("Entropy (R50)", 11.90, 2.96, 65.16, 82.39, 56.64, 74.64, 42.44, 44.07),
    "psfp": _row("PSFP (R50)", 11.90, 2.96, 65.92, 83.72, 56.96, 74.66, 42.38, 45.58),
}

SURVEY_METHODS = ("hao_li", "molchanov", "auto_balanced", "entropy", "psfp")


def survey_row(name: str, pruned_arch: str | None = None) -> SurveyRow | None:
    """The survey's row for a baseline architecture or a method; None where it has none.

    A method's row is only the survey's when the pruned network is a ResNet50, as in the survey.
    """
    if name in SURVEY_METHODS and pruned_arch != "resnet50":
        return None
    return TABLE5.get(name)
