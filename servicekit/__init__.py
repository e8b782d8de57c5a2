"""Plumbing shared by both services: error details, JSON logs, server start-up and draining.

Neither service imports the other; both import this package.
"""
