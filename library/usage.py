"""Token usage and estimated cost of self-edits.

One request may return several samples (OpenAI's ``n``, vLLM's parallel sampling) and report its
tokens once; each sample then gets an even share, so the per-self-edit figures add up to the bill.
Prices are list prices in USD per million tokens; an estimate, not an invoice: override them with
``--api-price-in`` / ``--api-price-out`` when they change or for a model not listed.
"""

from __future__ import annotations

from protocol.messages import Usage

# (input, output) USD per million tokens, list prices as published in 2025; longest prefix wins.
LIST_PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}


def price_per_mtok(model: str, override: tuple[float, float] | None = None) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for ``model``: ``override``, else the list, else None."""
    if override is not None:
        return override
    matches = [prefix for prefix in LIST_PRICES_PER_MTOK if model.startswith(prefix)]
    return LIST_PRICES_PER_MTOK[max(matches, key=len)] if matches else None


def shares(total: int, n: int) -> list[int]:
    """``total`` split into ``n`` non-negative integers that differ by at most one and add up to it."""
    base, extra = divmod(total, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def usage(input_tokens: int, output_tokens: int, prices: tuple[float, float] | None) -> Usage:
    """A Usage record; the cost is None without prices."""
    cost = None
    if prices is not None:
        cost = round((input_tokens * prices[0] + output_tokens * prices[1]) / 1e6, 8)
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, estimated_cost_usd=cost)


def split_usage(input_tokens: int, output_tokens: int, n: int, prices: tuple[float, float] | None) -> list[Usage]:
    """One request's usage as ``n`` per-sample records that add up to it."""
    return [usage(i, o, prices) for i, o in zip(shares(input_tokens, n), shares(output_tokens, n), strict=True)]
