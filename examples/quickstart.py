"""The whole pipeline from Python on the embedded demo model: harvest, label, score, report.

    python examples/quickstart.py          # writes .data/autointerp/quickstart/

No network, GPU or API key needed: labels come from the offline token-lookup
baseline and scores from the token-match baseline judge. With ANTHROPIC_API_KEY
set, swap in ``AnthropicBackend("claude-haiku-4-5-20251001")`` for both.
"""

import torch

from autointerp import (
    CorrelationAcc,
    HarvestLoop,
    InputTokenAcc,
    Interpreter,
    OfflineBackend,
    OutputProbAcc,
    RandomWindowAcc,
    ReservoirAcc,
    RunPaths,
    TopActivationAcc,
    score,
    write_report,
)
from autointerp.adapters.demo import load_demo

demo = load_demo()
harvest_fn = demo.harvest_fn()  # tokens [B, S] -> HarvestBatch of the MLP neurons
ids = torch.tensor(demo.encode(demo.text()))
ids = ids[: len(ids) // 128 * 128].reshape(-1, 128)
batches = (harvest_fn(ids[i : i + 32]) for i in range(0, len(ids), 32))

loop = HarvestLoop(
    [ReservoirAcc(k=40, context_tokens=10), TopActivationAcc(k=20, context_tokens=10), CorrelationAcc(),
     InputTokenAcc(), OutputProbAcc(), RandomWindowAcc()],
    threshold=1.0, seed=0, decode=demo.decode, model=demo.description(),
    dataset={"name": "demo-text", "description": "held-out Python documentation"},
)
result = loop.run(batches)
run = RunPaths.of("quickstart")
result.save(run.harvest)
print(result)

labels = Interpreter(OfflineBackend()).run(result, run)
report = score(result, labels, limit=24, scores_dir=run.scores)
print(report.table())
print("report:", write_report(run).resolve())
