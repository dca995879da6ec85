"""Train the embedded demo model (autointerp/demo_model/) on text that needs no network.

The corpus is Python's own documentation: ``pydoc_data.topics`` (the language
reference topics that ``help()`` shows) plus the docstrings of a fixed list of
standard-library modules. Every 5th pydoc topic (sorted by name) is held out:
it is the validation set and the demo's bundled text (``demo_text.txt``).

    python scripts/train_demo_model.py --minutes 13 --out src/autointerp/demo_model

Deterministic for a seed up to thread scheduling in torch's CPU kernels.
Writes config.json (with the validation loss), model.pt (float16),
tokenizer.json and demo_text.txt; see docs/demo_model.md.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import random
import time
from pathlib import Path

import torch

from autointerp.adapters.demo import TinyLM, TinyLMConfig, save_tiny_lm

STDLIB_MODULES = """
os os.path re json collections itertools functools pathlib typing argparse logging subprocess threading
asyncio unittest email http.client urllib.request urllib.parse xml.etree.ElementTree sqlite3 datetime decimal
fractions statistics random string textwrap inspect dataclasses enum abc contextlib shutil tempfile csv
configparser socket ssl hashlib heapq bisect array struct io codecs pickle copy pprint traceback warnings
zipfile tarfile gzip bz2 lzma difflib doctest pdb timeit operator math cmath queue sched secrets uuid base64
binascii html html.parser smtplib ftplib optparse getopt glob fnmatch locale gettext calendar time selectors
signal mmap multiprocessing concurrent.futures importlib pkgutil ast dis tokenize keyword numbers weakref
types graphlib ipaddress mimetypes mailbox wave colorsys shlex stat filecmp fileinput platform sysconfig
""".split()


def stdlib_docstrings() -> list[str]:
    docs: list[str] = []
    seen: set[str] = set()
    for name in STDLIB_MODULES:
        try:
            mod = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module missing on this platform is simply skipped
            continue
        objs = [mod] + [v for _, v in sorted(vars(mod).items()) if inspect.isclass(v) or inspect.isroutine(v)]
        for obj in objs:
            members = [obj]
            if inspect.isclass(obj):
                members += [v for _, v in sorted(vars(obj).items()) if inspect.isroutine(v)]
            for m in members:
                d = inspect.getdoc(m)
                if d and len(d) > 80 and d not in seen:
                    seen.add(d)
                    docs.append(d)
    return docs


def corpus() -> tuple[str, str]:
    from pydoc_data.topics import topics

    names = sorted(topics)
    val = [topics[n] for i, n in enumerate(names) if i % 5 == 0]
    train = [topics[n] for i, n in enumerate(names) if i % 5 != 0] + stdlib_docstrings()
    return "\n\n".join(train), "\n\n".join(val)


def train_tokenizer(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return tok


@torch.no_grad()
def evaluate(model: TinyLM, ids: torch.Tensor, S: int) -> float:
    model.eval()
    n = (len(ids) - 1) // S
    x = ids[: n * S].view(n, S)
    y = ids[1 : n * S + 1].view(n, S)
    total = 0.0
    for i in range(0, n, 64):
        logits = model(x[i : i + 64])
        total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y[i : i + 64].flatten(), reduction="sum"))
    model.train()
    return total / (n * S)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="src/autointerp/demo_model")
    p.add_argument("--minutes", type=float, default=13.0, help="training time budget (wall clock)")
    p.add_argument("--max_steps", type=int, default=100_000)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vocab_size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train_text, val_text = corpus()
    print(f"corpus: {len(train_text):,} train chars, {len(val_text):,} validation chars")
    tok = train_tokenizer(train_text, args.vocab_size)
    train_ids = torch.tensor(tok.encode(train_text).ids, dtype=torch.long)
    val_ids = torch.tensor(tok.encode(val_text).ids, dtype=torch.long)
    print(f"tokens: {len(train_ids):,} train, {len(val_ids):,} validation")

    cfg = TinyLMConfig(vocab_size=tok.get_vocab_size())
    model = TinyLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    S, B = cfg.context_length, args.batch_size
    g = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60
    t0 = time.time()
    warmup = 100
    step = 0
    # schedule by elapsed time so a budget in minutes still ends with a cooled learning rate
    while step < args.max_steps:
        frac = (time.time() - t0) / budget
        if frac >= 1:
            break
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train_ids) - S - 1, (B,), generator=g)
        x = torch.stack([train_ids[s : s + S] for s in starts])
        y = torch.stack([train_ids[s + 1 : s + S + 1] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.3f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)
        if step % 1000 == 0:
            print(f"  validation loss {evaluate(model, val_ids, S):.3f}", flush=True)
    train_loss = evaluate(model, train_ids[:200_000], S)
    val_loss = evaluate(model, val_ids, S)
    elapsed = time.time() - t0
    print(f"done: {step} steps in {elapsed:.0f}s; train loss {train_loss:.3f}, validation loss {val_loss:.3f} nats/token")
    tok.save(str(out / "tokenizer.json"))
    (out / "demo_text.txt").write_text(val_text, encoding="utf-8")
    save_tiny_lm(model, out, extra={
        "n_parameters": n_params,
        "train_tokens_seen": step * B * S,
        "train_steps": step,
        "batch_size": B,
        "train_minutes": round(elapsed / 60, 2),
        "train_loss": round(train_loss, 4),
        "validation_loss": round(val_loss, 4),
        "validation_tokens": len(val_ids),
        "corpus": "pydoc_data.topics (every 5th topic held out) + docstrings of standard-library modules",
        "seed": args.seed,
    })
    sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    print(json.dumps(sizes), f"total {sum(sizes.values()) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
