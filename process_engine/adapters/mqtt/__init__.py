"""MQTT: the publisher service actions send through."""
