"""Example endpoints and their tasks: the jobs people most often push to the background.

Delete this package, its `include_router` line in `api/__init__.py`, `ExampleSettings` from the
bases of `Settings` and its jobs module from `TASK_MODULES` to start bare.
"""
