"""Factories of the support app's models (registered with tests.factories.factory_for)."""
