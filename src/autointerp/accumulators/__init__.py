"""Built-in accumulators, one a file, and the base classes for your own."""

from autointerp.accumulators.base import Accumulator, HarvestContext, TensorAccumulator
from autointerp.accumulators.correlation import CorrelationAcc
from autointerp.accumulators.firing_stats import FiringStatsAcc
from autointerp.accumulators.histogram import ActivationHistogramAcc, LogBins
from autointerp.accumulators.input_tokens import InputTokenAcc
from autointerp.accumulators.output_probs import OutputProbAcc
from autointerp.accumulators.quantile_examples import QuantileExampleAcc
from autointerp.accumulators.reservoir import ReservoirAcc
from autointerp.accumulators.sampling import KeyedSampler
from autointerp.accumulators.top_activations import TopActivationAcc
from autointerp.accumulators.window_pool import RandomWindowAcc

__all__ = [
    "Accumulator",
    "ActivationHistogramAcc",
    "CorrelationAcc",
    "FiringStatsAcc",
    "HarvestContext",
    "InputTokenAcc",
    "KeyedSampler",
    "LogBins",
    "OutputProbAcc",
    "QuantileExampleAcc",
    "RandomWindowAcc",
    "ReservoirAcc",
    "TensorAccumulator",
    "TopActivationAcc",
]
