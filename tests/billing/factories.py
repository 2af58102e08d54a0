"""Factories of the billing app's models (registered with tests.factories.factory_for)."""
