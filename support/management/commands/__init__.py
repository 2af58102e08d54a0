"""Management commands of the support app (`manage.py <command>`), for
operators.

A command parses its arguments, finds its objects and calls a service with `actor=None` (the
system), then prints what it did: it changes nothing itself, so the service's rules and audit
event apply as they do to an API call.
"""
