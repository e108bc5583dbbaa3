"""Benchmarks for Larder (`make bench`, i.e. `python -m bench`): serving, syncing, freshness, profiles.

Everything runs against real processes started here (memcached, gunicorn, the `larder` command)
on temporary projects, so what is measured is the product as shipped.
"""
