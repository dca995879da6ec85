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
    ReservoirAcc,
    TensorAccumulator,
    TopActivationAcc,
)
from autointerp.batch import ComponentSpace, FiringBatch, HarvestBatch
from autointerp.harvest import HarvestLoop, HarvestResult, load_harvest
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
    "ScoreResult",
    "ReservoirAcc",
    "TensorAccumulator",
    "TokenStat",
    "TokenStats",
    "TokenUsage",
    "TopActivationAcc",
    "load_harvest",
]
