"""Reads of the support app that more than one caller needs (views,
services, tasks, the admin): the queryset with its joins and annotations, or one object, built
in one place.

A selector takes keyword arguments, changes nothing and records nothing; one over
tenant-owned rows takes the tenant and filters by it. A read only one view makes stays in that
view's `scope_queryset()`.
"""
