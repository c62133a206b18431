"""Example endpoints and their tasks, after the articles this template answers.

Delete this package and its `include_router` line in `api/__init__.py` to start bare.
"""
