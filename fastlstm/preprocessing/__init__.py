"""`keras.preprocessing`: `sequence` (`sequence.pad_sequences`), as Keras 3.15 has it.

Keras 3 has no `preprocessing.text` (Keras 2's `Tokenizer`), and neither has fastlstm.
`pad_sequences` and `to_categorical` stay here too, for fastlstm's earlier spelling
(`from fastlstm.preprocessing import pad_sequences`); they are `fastlstm.utils`'s.
"""
from fastlstm.preprocessing import sequence
from fastlstm.utils.numerical_utils import to_categorical
from fastlstm.utils.sequence_utils import pad_sequences

__all__ = ["sequence", "pad_sequences", "to_categorical"]
