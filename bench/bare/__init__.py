"""A bench-only Django project: one async view, no middleware, no database.

It answers a poll-shaped JSON body, so its requests/s are the bare cost of a
Django request on a given ASGI server, the baseline of the short-poll case.
"""
