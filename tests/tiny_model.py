"""Build a tiny, randomly initialised Llama causal LM as a local Hugging Face folder, offline.

Tests use it in place of the real default model: it loads through `library.models.load_model`
like any user folder, generates in milliseconds, and its tokenizer mirrors SmolLM2's
conventions (ChatML chat template, bos `<|im_start|>`, eos = pad = `<|im_end|>`, no bos added
on encode) so code tested against it behaves the same with the real model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]  # ids 0, 1, 2 as in SmolLM2
MAX_POSITIONS = 512

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# A few sentences so the BPE learns some common English merges; byte-level coverage (the
# full 256-byte alphabet) is what guarantees any text round-trips, not this corpus.
_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Question: What is the answer? Answer: The answer is 42, not 41.",
    "A student reads the passage, writes implications, and answers questions about it.",
    "The teacher proposes self-edits; the auditor checks each candidate and returns a verdict.",
    "In 1969, Apollo 11 landed on the Moon; Neil Armstrong walked there first!",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 -7 (x + y) = z * 2 / 4 % 5 [a] {b} \"c\" 'd'",
]


def build_tokenizer(vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the built-in corpus and wrap it for transformers."""
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False keeps decode(encode(text)) == text exactly.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=IM_END,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=MAX_POSITIONS,
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast, head_dim: int = 16) -> LlamaConfig:
    """A Llama config small enough to build and run in milliseconds (GQA and tied embeddings as SmolLM2).

    `head_dim` is the attention head size; 4 heads and 2 key/value heads either way. The default
    (16, hidden size 64) is what the tests rely on; vLLM's CPU attention kernels need a supported
    head size such as 64 (hidden size 256).
    """
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=4 * head_dim,
        intermediate_size=8 * head_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        # Wider than the usual 0.02: with tied embeddings this bounds the logits' range, and 0.02
        # leaves a 64-wide model unable to become confident, so LoRA training could not show a fact.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_model(folder: Path, seed: int = 0, head_dim: int = 16) -> Path:
    """Save a tiny random Llama model and its tokenizer into `folder`; return `folder`.

    The weights depend only on `seed` (and `head_dim`, see `tiny_config`); the global torch RNG
    is left untouched.
    """
    folder = Path(folder)
    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer, head_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
