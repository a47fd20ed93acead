"""A string tokenizer whose constructor reads its vocabulary (a catalog asset)."""

import tensorflow as tf


class Tokenizer(tf.Module):
    """Splits text on spaces and maps words to ids (unknown words: -1)."""

    def __init__(self, vocabulary: str):
        super().__init__()
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                vocabulary, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER),
            default_value=-1)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def tokenize(self, text):
        words = tf.strings.split(text, " ")
        return {"ids": self.table.lookup(words).to_tensor(default_value=-2)}
