"""Tessera streams: the pure domain core (`streams.core`) and the Kafka/Faust edge."""
