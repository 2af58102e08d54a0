"""Factories of the analytics app's models (registered with tests.factories.factory_for)."""
