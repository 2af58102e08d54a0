"""Token counting and cost: the documented rules the gateway meters with.

Counting rule (the `local` provider's, exactly; an estimate for upstreams, whose own
tokenizers decide): a token is a run of letters, digits and underscores, or any other single
character that is not white space. Each message adds `MESSAGE_OVERHEAD` tokens (its role and
separators) and every prompt `PROMPT_OVERHEAD` (the assistant's reply priming), as OpenAI's
chat format does.

Reservation estimate: an upstream's tokenizer may split text finer than this rule (long words,
other scripts), so the prompt's worst case is the larger of the rule's count and one token per
three characters. The estimate only sizes the reservation: the upstream's reported usage is
what is metered (see docs/gateway.md, "Metering").

Cost: prices are integer micro-units of the currency per million tokens, so a call's cost is
`(prompt * input price + completion * output price) / 1,000,000` micro-units, rounded half-up
once per call. Integers throughout: no float ever touches money.
"""

import math
import re

_TOKEN = re.compile(r"\w+|[^\w\s]")
MESSAGE_OVERHEAD = 3
PROMPT_OVERHEAD = 3
MILLION = 1_000_000


def count_tokens(text: str) -> int:
    """Tokens of `text` under the counting rule."""
    return sum(1 for _ in _TOKEN.finditer(text))


def split_tokens(text: str) -> list[str]:
    """`text` cut into its tokens, each with the white space before it, so that joining them
    gives `text` back without its trailing white space."""
    pieces, position = [], 0
    for match in _TOKEN.finditer(text):
        pieces.append(text[position : match.end()])
        position = match.end()
    return pieces


def prompt_tokens(messages) -> int:
    """The prompt's tokens under the counting rule."""
    return PROMPT_OVERHEAD + sum(
        MESSAGE_OVERHEAD + count_tokens(message.get("content") or "") for message in messages
    )


def estimate_prompt_tokens(messages) -> int:
    """The prompt's worst case for a reservation: the rule's count or one token per three
    characters, whichever is larger, per message."""
    total = PROMPT_OVERHEAD
    for message in messages:
        text = message.get("content") or ""
        total += MESSAGE_OVERHEAD + max(count_tokens(text), math.ceil(len(text) / 3))
    return total


def cost_micros(
    *, prompt_tokens: int, completion_tokens: int, input_price: int, output_price: int
) -> int:
    """The cost of one call in micro-units: prices are micro-units per million tokens; the
    result is rounded half-up once."""
    numerator = prompt_tokens * input_price + completion_tokens * output_price
    return (numerator + MILLION // 2) // MILLION
