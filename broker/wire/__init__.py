"""The wire: Avro models, the Confluent codec, the registry, compatibility, topic names."""
