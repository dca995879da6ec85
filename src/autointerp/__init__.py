"""autointerp: explain the components of neural networks automatically.

Harvest evidence for every component in one pass (`HarvestLoop`), label each
component with an LLM (`Interpreter`), score the labels on held-out data
(`score`), and show the result (`write_report`).
"""

from autointerp.accumulators import (
    Accumulator,
    CorrelationAcc,
    FiringStatsAcc,
    HarvestContext,
    InputTokenAcc,
    OutputProbAcc,
    RandomWindowAcc,
    ReservoirAcc,
    TensorAccumulator,
    TopActivationAcc,
)
from autointerp.batch import ComponentSpace, FiringBatch, HarvestBatch
from autointerp.harvest import HarvestLoop, HarvestResult, load_harvest
from autointerp.heldout import split_examples
from autointerp.paths import RunPaths
from autointerp.schemas import (
    ActivationExample,
    ComponentCorrelations,
    ComponentData,
    CorrelatedComponent,
    HarvestConfig,
    InterpretationResult,
    LayerSpec,
    ScoreResult,
    TokenStat,
    TokenStats,
    TokenUsage,
)

__all__ = [
    "Accumulator",
    "ActivationExample",
    "ComponentCorrelations",
    "ComponentData",
    "ComponentSpace",
    "CorrelatedComponent",
    "CorrelationAcc",
    "FiringBatch",
    "FiringStatsAcc",
    "HarvestBatch",
    "HarvestConfig",
    "HarvestContext",
    "HarvestLoop",
    "HarvestResult",
    "InputTokenAcc",
    "InterpretationResult",
    "LayerSpec",
    "OutputProbAcc",
    "RandomWindowAcc",
    "RunPaths",
    "ScoreResult",
    "ReservoirAcc",
    "TensorAccumulator",
    "TokenStat",
    "TokenStats",
    "TokenUsage",
    "TopActivationAcc",
    "load_harvest",
    "split_examples",
]

#: names imported on first use: the interpret/score/report halves load SDKs and templates
_LAZY = {
        # interpret
        "Interpreter": "autointerp.interpret",
        "interpret_run": "autointerp.interpret",
        "load_interpretations": "autointerp.interpret",
        "AnthropicBackend": "autointerp.llm.anthropic",
        "OpenAICompatBackend": "autointerp.llm.openai_compat",
        "OfflineBackend": "autointerp.llm.offline",
        "TokenLookupBackend": "autointerp.llm.offline",
        "JobRunner": "autointerp.llm.runner",
        "PriceTable": "autointerp.llm.runner",
        "RunSummary": "autointerp.llm.runner",
        # score
        "score": "autointerp.scoring",
        "score_run": "autointerp.scoring",
        "load_scores": "autointerp.scoring",
        "ScoreReport": "autointerp.scoring",
        "ScoringConfig": "autointerp.scoring",
        "TokenMatchBackend": "autointerp.scoring",
        "compare_label_sets": "autointerp.compare",
        "LabelSetComparison": "autointerp.compare",
        # report
        "write_report": "autointerp.report",
        "open_run": "autointerp.report",
        "export_run": "autointerp.report",
        "register_extras_renderer": "autointerp.report",
        # harvest from real models
        "run_harvest": "autointerp.run_harvest",
        "HarvestOptions": "autointerp.run_harvest",
        "merge_workers": "autointerp.run_harvest",
        "HookHarvestFn": "autointerp.adapters.hooks",
        "run_demo": "autointerp.demo",
}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autointerp' has no attribute {name!r}")
