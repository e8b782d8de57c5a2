"""Drift: is the live schema what the migrations produce, and what would bring it back (no gRPC in here).

Rooms:
  catalog.py   one catalog query per kind of object, giving (qualified name, definition), and the diff
  verify.py    builds a scratch database from the files up to the live version and diffs the catalogs
  repair.py    the SQL that brings a drifted database back (`verify --plan-repair`)
"""
