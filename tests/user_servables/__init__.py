"""Servables written as a new user writes them, following the README.

Each module is exported through a catalog entry (see ``catalog.yaml``), the way
``runner.py`` exports it: Keras functional, Sequential and subclassed models with
declared inputs, a ``tf.Module`` with a variable and two signatures, and a
tokenizer whose constructor reads a vocabulary asset.
"""
