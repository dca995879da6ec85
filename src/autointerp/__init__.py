"""autointerp: explain the components of neural networks automatically.

Harvest evidence for every component in one pass (`HarvestLoop`), label each
component with an LLM (`Interpreter`), score the labels on held-out data
(`score`), and show the result (`write_report`).
"""

#: every public name, imported on first use (``autointerp.HarvestLoop``, ``from autointerp import
#: Interpreter``): importing the package imports nothing heavy, so ``autointerp --help`` starts
#: without torch, numpy or the SDKs (tests/test_cli_startup.py)
_LAZY = {
        # the data model and the harvest
        "Accumulator": "autointerp.accumulators",
        "CorrelationAcc": "autointerp.accumulators",
        "FiringStatsAcc": "autointerp.accumulators",
        "HarvestContext": "autointerp.accumulators",
        "InputTokenAcc": "autointerp.accumulators",
        "OutputProbAcc": "autointerp.accumulators",
        "RandomWindowAcc": "autointerp.accumulators",
        "ReservoirAcc": "autointerp.accumulators",
        "TensorAccumulator": "autointerp.accumulators",
        "TopActivationAcc": "autointerp.accumulators",
        "ComponentSpace": "autointerp.batch",
        "FiringBatch": "autointerp.batch",
        "HarvestBatch": "autointerp.batch",
        "SparseActivations": "autointerp.batch",
        "HarvestLoop": "autointerp.harvest",
        "HarvestResult": "autointerp.harvest",
        "load_harvest": "autointerp.harvest",
        "split_examples": "autointerp.heldout",
        "RunPaths": "autointerp.paths",
        "ActivationExample": "autointerp.schemas",
        "ComponentCorrelations": "autointerp.schemas",
        "ComponentData": "autointerp.schemas",
        "CorrelatedComponent": "autointerp.schemas",
        "HarvestConfig": "autointerp.schemas",
        "InterpretationResult": "autointerp.schemas",
        "LayerSpec": "autointerp.schemas",
        "ScoreResult": "autointerp.schemas",
        "TokenStat": "autointerp.schemas",
        "TokenStats": "autointerp.schemas",
        "TokenUsage": "autointerp.schemas",
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
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'autointerp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
