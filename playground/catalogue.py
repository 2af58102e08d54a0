"""The seeded catalogue: the providers and models a fresh installation offers.

Prices are micro-units of the currency (USD) per million tokens, the providers' list prices;
staff change them in the admin. The seeded providers name the environment variables of their
keys (OPENAI_API_KEY, ANTHROPIC_API_KEY): until one is set, its models are served by the
local provider. Loaded by the catalogue's data migration and by `manage.py load_demo_data`
(idempotently: existing rows are left as staff edited them).
"""

PROVIDERS = [
    {
        "name": "openai",
        "kind": "openai",
        "base_url": "https://api.openai.com/v1",
        "api_key_env": "OPENAI_API_KEY",
    },
    {
        "name": "anthropic",
        "kind": "anthropic",
        "base_url": "",
        "api_key_env": "ANTHROPIC_API_KEY",
    },
]

_M = 1_000_000  # one currency unit in micro-units

# name, provider, upstream model, context window, max output, input $/M, output $/M, fallbacks
MODELS = [
    ("gpt-4", "openai", "gpt-4", 8_192, 4_096, 30, 60, ["gpt-4-turbo"]),
    ("gpt-4-turbo", "openai", "gpt-4-turbo", 128_000, 4_096, 10, 30, ["gpt-4"]),
    ("gpt-3.5-turbo", "openai", "gpt-3.5-turbo", 16_385, 4_096, 0.5, 1.5, []),
    ("o1-preview", "openai", "o1-preview", 128_000, 32_768, 15, 60, []),
    ("o1-mini", "openai", "o1-mini", 128_000, 65_536, 3, 12, []),
    ("claude-3-opus", "anthropic", "claude-3-opus-20240229", 200_000, 4_096, 15, 75, []),
    ("claude-3-sonnet", "anthropic", "claude-3-sonnet-20240229", 200_000, 4_096, 3, 15, []),
    ("claude-3-haiku", "anthropic", "claude-3-haiku-20240307", 200_000, 4_096, 0.25, 1.25, []),
]


def seed_catalogue(provider_model, model_model) -> int:
    """Create the missing seeded providers and models; returns how many models were added."""
    providers = {}
    for spec in PROVIDERS:
        providers[spec["name"]], _ = provider_model.objects.get_or_create(
            name=spec["name"], defaults=spec
        )
    added = 0
    for name, provider, upstream, context, output, price_in, price_out, fallbacks in MODELS:
        _, created = model_model.objects.get_or_create(
            name=name,
            defaults={
                "provider": providers[provider],
                "upstream_model": upstream,
                "context_window": context,
                "max_output_tokens": output,
                "input_price_micros": round(price_in * _M),
                "output_price_micros": round(price_out * _M),
                "fallbacks": fallbacks,
            },
        )
        added += created
    return added
