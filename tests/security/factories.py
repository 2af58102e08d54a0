"""Factories of the security app's models (registered with tests.factories.factory_for)."""
