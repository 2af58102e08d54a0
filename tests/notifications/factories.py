"""Factories of the notifications app's models (registered with tests.factories.factory_for)."""
