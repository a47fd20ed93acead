"""Deliberately broken servables: each module is a tiny tf.Module the evaluator must reject.

Every module exports ``make()`` (the object), ``METHOD`` (the method to export as
``serving_default``) and ``EXAMPLE`` (a catalog example, as in ``evaluation_spec()``, that
the servable gets wrong).
"""
