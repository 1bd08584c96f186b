"""RecordProducer without a broker: what it holds on to."""
import gc
import weakref
from dataclasses import replace

from vigil.streams.devtools.producer import RecordProducer
from vigil.streams.runtime.codec import AvroCodec
from vigil.streams.runtime.settings import Settings


def test_a_closed_producer_is_freed_at_once_not_at_the_next_garbage_collection():
    # Its librdkafka producer's error callback refers back to it: a cycle that kept the producer reconnecting to a
    # stopped broker ("Connection refused" lines at the end of every demo) until the garbage collector ran.
    settings = replace(Settings.from_env({}), broker_hosts=("127.0.0.1:9",))
    gc.disable()
    try:
        kept, closed = RecordProducer(settings, AvroCodec()), RecordProducer(settings, AvroCodec())
        kept_ref, closed_ref = weakref.ref(kept), weakref.ref(closed)
        closed.close()
        del kept, closed
        assert closed_ref() is None
        assert kept_ref() is not None  # what the demo's producers did before close()
    finally:
        gc.enable()
        gc.collect()
