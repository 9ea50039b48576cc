"""Randomly initialised model folders built from real architectures' shapes, for speed and memory runs.

A *shape* is a transformers config as a small JSON file (``bench/shapes/qwen2.5-7b.json``: its
``model_type`` and the public sizes). Throughput and memory depend on the sizes, not on the weights'
values, so a machine that no weights can reach (the GPU machine) can still measure a 7B model:

    python -m bench.model_shapes bench/shapes/qwen2.5-0.5b.json /tmp/qwen0.5b --device cuda
    python -m bench.inner_loop --model /tmp/qwen0.5b --data FILE --device cuda

The tokenizer is a real one when given (``--tokenizer DIR``: any saved Hugging Face tokenizer, such as
the embedded default model's, which ``scripts/gpu-check.sh --prepare`` copies), so sequences have the
lengths they would have with a real model; otherwise a byte-level BPE is trained here on the bench's
texts (or a built-in corpus), with the ChatML conventions of SmolLM2 and Qwen2.5. The tokenizer may be
smaller than the shape's vocabulary: the output head keeps the shape's size, and ids beyond the
tokenizer's are dropped when decoded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

SHAPES = Path(__file__).with_name("shapes")
TRAINED_VOCAB = 8192  # a trained tokenizer's size: SmolLM2-like token lengths on English, trained in seconds
MARKER = ".seal-shape.json"  # written last: a folder holding it with the same key is complete
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome. Question: What is the answer? Answer: 42.",
    "A student reads the passage, writes implications, and answers questions about it in a few words.",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong walked there first. Numbers: 0 1 2 3 4 5 6 7 8 9 100.",
]


def load_shape(path: Path | str) -> Any:
    """The transformers config a shape file describes (``model_type`` picks the config class)."""
    fields = json.loads(Path(path).read_text())
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def parameter_count(path: Path | str) -> int:
    """Parameters of a model of this shape, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(load_shape(path))
    return sum(p.numel() for p in model.parameters())


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerBase:
    """A byte-level BPE trained on ``texts``, wrapped as SmolLM2's is (ChatML; eos = pad = ``<|im_end|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_CORPUS, *texts], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=IM_END,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def data_texts(data: Path | None) -> list[str]:
    """Every passage, question, answer and recorded self-edit of a SQuAD-style file (none without one)."""
    if data is None:
        return []
    texts = []
    for entry in json.loads(Path(data).read_text()):
        texts.append(entry.get("context", ""))
        texts += entry.get("completions", [])
        texts += [f"{q['question']} {q['answer']}" for q in entry.get("questions", [])]
    return texts


def build_model_folder(
    shape: Path | str,
    folder: Path | str,
    tokenizer: Path | str | None = None,
    data: Path | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Path:
    """Save a randomly initialised model of ``shape`` with a tokenizer into ``folder``; return it.

    Weights are drawn on ``device`` (a 7B model initialises in seconds on a GPU, minutes on a CPU) in the
    shape's dtype; the global RNG is left as it was. A folder already built from the same shape,
    tokenizer and seed is reused as it is.
    """
    folder = Path(folder)
    key = _build_key(shape, tokenizer, data, seed)
    marker = folder / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
        return folder
    started = time.perf_counter()
    config = load_shape(shape)
    if tokenizer:
        tok = AutoTokenizer.from_pretrained(tokenizer)
    else:
        tok = train_tokenizer(data_texts(data), min(TRAINED_VOCAB, config.vocab_size))
    if len(tok) > config.vocab_size:
        raise SystemExit(f"{tokenizer}: {len(tok)} tokens do not fit the shape's vocabulary of {config.vocab_size}")
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=config.dtype or torch.float32)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    count = sum(p.numel() for p in model.parameters())
    del model
    info = {"key": key, "shape": str(shape), "parameters": count, "seconds": time.perf_counter() - started}
    marker.write_text(json.dumps(info, indent=2))
    return folder


def _build_key(shape: Path | str, tokenizer: Path | str | None, data: Path | None, seed: int) -> str:
    """What a built folder depends on: the shape's text, the tokenizer's source and the seed."""
    parts = [Path(shape).read_text(), str(tokenizer), str(data) if not tokenizer else "", str(seed)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.model_shapes SHAPE FOLDER [--tokenizer DIR] [--data FILE] [--device cuda]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", type=Path, help="Shape file (a transformers config as JSON).")
    parser.add_argument("folder", type=Path, help="Where to save the model folder.")
    parser.add_argument("--tokenizer", default=None, help="A saved tokenizer's folder (default: train one here).")
    parser.add_argument("--data", type=Path, default=None, help="SQuAD-style file to train the tokenizer on.")
    parser.add_argument("--device", default="cpu", help="Where to draw the weights: cpu or cuda.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
    args = parser.parse_args(argv)
    transformers.logging.disable_progress_bar()
    folder = build_model_folder(args.shape, args.folder, args.tokenizer, args.data, args.device, args.seed)
    info = json.loads((folder / MARKER).read_text())
    print(f"{folder}: {info['parameters'] / 1e9:.2f}B parameters of {args.shape.name} ({info['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
