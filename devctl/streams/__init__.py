"""Kafka-side domain: offsets, topics, consumer groups."""
