"""The one decoding core: what a request generates, for the plain generator and the engine alike.

- :mod:`~aigc.decoding.group`: :class:`SequenceGroup`, one request being decoded (its contexts,
  its seeded generator, guidance, the refill rule, stops and end-of-text), and :class:`Sampling`.
- :mod:`~aigc.decoding.batch`: :class:`Batch`, the rows of a runner shared by groups (one decode
  step, grouped sampling), :func:`prefill`, and :func:`run`, the loop of one group alone.
- :mod:`~aigc.decoding.runner`: :class:`ModelRunner`, all the core asks of a model (prefill rows,
  decode rows, capacity), with :class:`SlotRunner` for the families' slot caches.
- :mod:`~aigc.decoding.prefix`: :class:`PrefixCache`, the keys and values of prompt prefixes run
  before (a chat template's header, a system prompt), which a slot runner's prefills reuse.

:class:`~aigc.generation.TextGenerator` runs one group on a batch of its own; the serving engine
runs many groups per batch. Both call the same functions, which is what makes a request's
output the same batched as alone.
"""

from aigc.decoding.batch import Batch, Pick, Prefilled, choose_tokens, prefill, run
from aigc.decoding.group import Chunk, SampleStream, Sampling, SequenceGroup, refill_window
from aigc.decoding.prefix import PrefixCache
from aigc.decoding.runner import ForwardRunner, ModelRunner, SlotRunner

__all__ = [
    "Batch", "Chunk", "ForwardRunner", "ModelRunner", "Pick", "PrefixCache", "Prefilled", "SampleStream",
    "Sampling", "SequenceGroup", "SlotRunner", "choose_tokens", "prefill", "refill_window", "run",
]
