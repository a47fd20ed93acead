"""A local server (and client) speaking TensorFlow Serving's REST API; see ``serving.server``."""
