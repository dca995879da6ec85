"""Score labels on held-out data: can a judge who reads only the label tell where a component fires?

Five built-in scorers (docs/scoring.md): `detection` and `fuzzing` (balanced
accuracy, chance 0.5), `simulation` (token-level precision/recall/F1 and the
correlation of predicted with real activations), `intruder` (accuracy, chance
1/(n_real+1); needs no label) and `output` (the output side: pick the
component's promoted tokens among other components' lists; accuracy, chance
1/n_candidates); `register_scorer` adds one by name. Every label
is reported next to two baselines: labels shuffled between components and
offline token-lookup labels.

>>> from autointerp.scoring import score
>>> report = score(harvest, labels)          # labels: {key: label} or InterpretationResults
>>> print(report.table())
>>> report.for_component("h.0.mlp:12")       # ScoreResult objects
"""

from autointerp.scoring.base import InsufficientEvidence, Scorer, Trial
from autointerp.scoring.baselines import LABEL_SOURCES, derangement, shuffled_labels, token_lookup_labels
from autointerp.scoring.detection import DetectionConfig, DetectionScorer, detection
from autointerp.scoring.evidence import ComponentEvidence, EvidenceWindow, WindowPool, build_evidence
from autointerp.scoring.fuzzing import FuzzingConfig, FuzzingScorer, fuzzing
from autointerp.scoring.intruder import IntruderConfig, IntruderScorer, intruder
from autointerp.scoring.metrics import binary_metrics, mean_ci, pearson
from autointerp.scoring.options import ScoreOptions, ScoringConfig
from autointerp.scoring.output import OutputCandidates, OutputConfig, OutputList, OutputScorer, output, output_list
from autointerp.scoring.prompts import ScorerTask, check_answer, parse_scorer_prompt, render_request
from autointerp.scoring.registry import SCORERS, register_scorer, scorer_class, scorer_names, unregister_scorer
from autointerp.scoring.run import default_backend, demo_stage, load_scores, score, score_async, score_run
from autointerp.scoring.summary import ScoreReport, SummaryRow, format_summary, summarize
from autointerp.scoring.simulation import SimulationConfig, SimulationScorer, simulation
from autointerp.scoring.token_match import TOKEN_MATCH_MODEL, TokenMatchBackend, label_tokens

__all__ = [
    "LABEL_SOURCES",
    "SCORERS",
    "TOKEN_MATCH_MODEL",
    "ComponentEvidence",
    "DetectionConfig",
    "DetectionScorer",
    "EvidenceWindow",
    "FuzzingConfig",
    "FuzzingScorer",
    "InsufficientEvidence",
    "IntruderConfig",
    "IntruderScorer",
    "OutputCandidates",
    "OutputConfig",
    "OutputList",
    "OutputScorer",
    "ScoreOptions",
    "ScoreReport",
    "Scorer",
    "ScorerTask",
    "ScoringConfig",
    "SimulationConfig",
    "SimulationScorer",
    "SummaryRow",
    "TokenMatchBackend",
    "Trial",
    "WindowPool",
    "binary_metrics",
    "build_evidence",
    "check_answer",
    "default_backend",
    "demo_stage",
    "derangement",
    "detection",
    "format_summary",
    "fuzzing",
    "intruder",
    "label_tokens",
    "load_scores",
    "mean_ci",
    "output",
    "output_list",
    "parse_scorer_prompt",
    "pearson",
    "register_scorer",
    "render_request",
    "score",
    "score_async",
    "score_run",
    "scorer_class",
    "scorer_names",
    "shuffled_labels",
    "simulation",
    "summarize",
    "token_lookup_labels",
    "unregister_scorer",
]
