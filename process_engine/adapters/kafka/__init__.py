"""Kafka: the trigger consumer, the producer for actions, and consumer-lag sampling."""
