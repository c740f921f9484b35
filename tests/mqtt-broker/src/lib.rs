//! A real MQTT broker for the tests, as a process of its own.
