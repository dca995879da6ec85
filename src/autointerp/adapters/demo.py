"""The embedded demo model: a tiny GPT-style causal LM shipped inside the package.

It exists so that ``autointerp demo`` and ``autointerp harvest demo`` run with no
network, no GPU and no API key. The weights, the tokenizer and a slice of
held-out text live in ``autointerp/demo_model/``; ``scripts/train_demo_model.py``
made them (see docs/demo_model.md). The components are the MLP neurons: the
output of each block's ``mlp.act`` (a ReLU), captured by the generic hook adapter.

>>> from autointerp.adapters.demo import load_demo
>>> demo = load_demo()
>>> harvest_fn = demo.harvest_fn()          # a HookHarvestFn over blocks.*.mlp.act
>>> ids = demo.encode("def main():")
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from autointerp.adapters.targets import Target, TargetRequest
from autointerp.data import Tokenizer
from autointerp.demo_model import demo_dir



@dataclass
class TinyLMConfig:
    vocab_size: int = 2048
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 512
    context_length: int = 128


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_mlp)
        self.act = nn.ReLU()  # a module of its own so hooks can capture the neurons
        self.fc_out = nn.Linear(d_mlp, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg.d_model, cfg.d_mlp)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """A pre-LayerNorm GPT: token + learned position embeddings, ReLU MLPs, tied unembedding.

    ``forward(tokens [B, S]) -> logits [B, S, V]``.
    """

    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init)
        for b in self.blocks:  # GPT-2's scaled init of residual writes
            for lin in (b.attn.out, b.mlp.fc_out):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        S = tokens.shape[1]
        if S > self.cfg.context_length:
            raise ValueError(f"sequence length {S} exceeds the model's context length {self.cfg.context_length}")
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(S, device=tokens.device))
        for b in self.blocks:
            x = b(x)
        return self.ln_f(x) @ self.tok_emb.weight.T


def save_tiny_lm(model: TinyLM, directory: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``config.json`` and ``model.pt`` (float16 weights, half the bytes of float32)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items()}
    torch.save(state, directory / "model.pt")
    meta = {"architecture": "TinyLM", **asdict(model.cfg), **(extra or {})}
    (directory / "config.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")


def load_tiny_lm(directory: str | Path, device: str | torch.device = "cpu") -> tuple[TinyLM, dict[str, Any]]:
    directory = Path(directory)
    meta = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    names = set(TinyLMConfig.__dataclass_fields__)
    cfg = TinyLMConfig(**{k: v for k, v in meta.items() if k in names})
    model = TinyLM(cfg)
    state = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval(), meta


class DemoModel:
    """The embedded model, its tokenizer and its bundled text, ready to harvest."""

    def __init__(self, directory: str | Path | None = None, device: str | torch.device = "cpu"):
        self.directory = Path(directory) if directory is not None else demo_dir()
        if not (self.directory / "model.pt").exists():
            raise FileNotFoundError(
                f"the demo model is missing from {self.directory} (expected model.pt, config.json, tokenizer.json); "
                "reinstall autointerp or run scripts/train_demo_model.py"
            )
        self.model, self.meta = load_tiny_lm(self.directory, device)
        self.device = torch.device(device)
        from tokenizers import Tokenizer as BPETokenizer

        self.tokenizer = BPETokenizer.from_file(str(self.directory / "tokenizer.json"))
        if self.tokenizer.get_vocab_size() != self.model.cfg.vocab_size:
            raise ValueError(
                f"the demo tokenizer has {self.tokenizer.get_vocab_size()} tokens but the model expects "
                f"{self.model.cfg.vocab_size}; the demo_model folder is inconsistent"
            )

    @property
    def cfg(self) -> TinyLMConfig:
        return self.model.cfg

    @property
    def layers(self) -> list[str]:
        return [f"blocks.{i}.mlp.act" for i in range(self.cfg.n_layers)]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, token_id: int) -> str:
        """One token as text (byte-level BPE: a token may be part of a UTF-8 character, shown as U+FFFD)."""
        return self.tokenizer.decode([int(token_id)])

    def text(self) -> str:
        """The bundled held-out text (not seen in training)."""
        return (self.directory / "demo_text.txt").read_text(encoding="utf-8")

    def description(self) -> dict[str, Any]:
        n = self.cfg.n_layers
        return {
            "class": "TinyLM (autointerp demo model)",
            "n_layers": n,
            "d_model": self.cfg.d_model,
            "d_mlp": self.cfg.d_mlp,
            "vocab_size": self.cfg.vocab_size,
            "context_length": self.cfg.context_length,
            "summary": (
                f"a tiny {n}-layer GPT-style language model (d_model={self.cfg.d_model}, ReLU MLPs of "
                f"{self.cfg.d_mlp} neurons) trained on Python's documentation"
            ),
            "layer_descriptions": {
                name: f"MLP neurons (ReLU output) in layer {i} of {n}" for i, name in enumerate(self.layers)
            },
            "validation_loss": self.meta.get("validation_loss"),
        }

    def harvest_fn(self, layers: Sequence[str] | None = None):  # -> HookHarvestFn
        from autointerp.adapters.hooks import HookHarvestFn

        return HookHarvestFn(
            self.model,
            list(layers) if layers is not None else self.layers,
            capture="output",
            vocab_size=self.cfg.vocab_size,
            context_length=self.cfg.context_length,
            description=self.description(),
            unembedding=self.unembedding(),
        )

    def unembedding(self):  # -> autointerp.logit_lens.Unembedding
        """The tied unembedding (``tok_emb``) after ``ln_f``, as ``TinyLM.forward`` computes the logits."""
        from autointerp.adapters.output_directions import final_norm_of
        from autointerp.logit_lens import Unembedding

        return Unembedding(self.model.tok_emb.weight.detach(), final_norm_of(self.model.ln_f, "ln_f"),
                           "the tied input embeddings (tok_emb)")


def load_demo(device: str | torch.device = "cpu") -> DemoModel:
    return DemoModel(device=device)


#: the demo model's neurons are ReLU outputs; above this they count as firing (see docs/demo_model.md)
DEMO_THRESHOLD = 1.0


def load_demo_target(request: TargetRequest) -> Target:
    """The ``demo`` target kind: every MLP neuron (or ``request.layers``), the demo text, `DEMO_THRESHOLD`."""
    demo = DemoModel(device=request.device)
    if request.dtype is not None:
        demo.model.to(request.dtype)
    return Target(
        demo.harvest_fn(request.layers),
        tokenizer=Tokenizer(demo.tokenizer, name="autointerp demo tokenizer"),
        default_dataset="demo",
        default_context_length=demo.cfg.context_length,
        default_threshold=DEMO_THRESHOLD,
    )
