"""The survey's experiments (Masson et al., "Pruning Methods for Person Re-identification", 2019):
its Table 5 and its pruning scenarios across domains, as resumable runs (``tools/reproduce_table5.py``,
``tools/scenarios.py``)."""

from reidcompress.survey.reference import BENCHMARKS, SURVEY_METHODS, TABLE5
from reidcompress.survey.runs import Overrides
from reidcompress.survey.scenarios import ScenarioConfig, run_scenarios, scenarios_markdown
from reidcompress.survey.table5 import Table5Config, run_table5, table5_markdown

__all__ = [
    "BENCHMARKS",
    "SURVEY_METHODS",
    "TABLE5",
    "Overrides",
    "ScenarioConfig",
    "run_scenarios",
    "scenarios_markdown",
    "Table5Config",
    "run_table5",
    "table5_markdown",
]
