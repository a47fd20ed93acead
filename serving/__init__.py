"""A local server (and client) speaking TensorFlow Serving's REST API.

``serving.main`` starts it, ``serving.http`` answers requests, ``serving.registry`` keeps the
loaded versions in sync with the serving root.
"""
