"""Factories of the playground app's models (registered with tests.factories.factory_for)."""
